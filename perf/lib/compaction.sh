# Shared by perf/compaction-latency.sh and perf/compaction-toggle.sh: one
# tidelog whose cleaner has a keyed topic to rewrite, and the produce load
# that keeps it dirty. Source scripts/lib/broker.sh first.

# start_compaction_broker BROKER_CORES CLEANER_IO_MAX RESULTS_NAME [TOPIC_CREATE_ARG]...
#
# BROKER_CORES empty: broker (2 shards) and load generators share every
# CPU. K: the broker gets CPUs 0..K-1 and K shards (the whole process
# confined there with taskset), the load generators the rest, as on a
# dedicated broker node; with BROKER_FIRST_CPU=F set, CPUs F..F+K-1 instead
# (on a VM whose disk interrupts all land on one CPU, that CPU can be the
# broker's, as on a dedicated node, and not the load generators'). Starts the broker with log.cleaner.backoff.ms=500
# and the given log.cleaner.io.max.bytes.per.second (stopped on exit),
# creates the topic "load" (4 partitions, cleanup.policy=delete, 1 MiB
# segments, min.cleanable.dirty.ratio=0.01, then any TOPIC_CREATE_ARGs,
# such as --config KEY=VALUE) and sets: clients (the prefix
# every client command runs under), boot (the bootstrap address), out
# (bench-results/RESULTS_NAME-<time>, created) and topic() (the topic CLI
# against this broker).
start_compaction_broker() {
    local broker_cores="$1" cleaner_io_max="$2" results_name="$3"
    shift 3
    clients=()
    if [ -n "$broker_cores" ]; then
        local cpus
        cpus=$(nproc --all)
        local first="${BROKER_FIRST_CPU:-0}"
        if [ "$broker_cores" -lt 1 ] || [ "$broker_cores" -ge "$cpus" ] ||
            [ "$first" -lt 0 ] || [ $((first + broker_cores)) -gt "$cpus" ]; then
            echo "--broker-cores must be between 1 and $((cpus - 1)), and the broker's CPUs" \
                "($first and on) within the $cpus of this machine" >&2
            exit 2
        fi
        local rest=() cpu
        for ((cpu = 0; cpu < cpus; cpu++)); do
            if [ "$cpu" -lt "$first" ] || [ "$cpu" -ge $((first + broker_cores)) ]; then rest+=("$cpu"); fi
        done
        local client_cpus
        client_cpus=$(IFS=,; echo "${rest[*]}")
        export BROKER_CORES=$broker_cores BROKER_CPUS="$first-$((first + broker_cores - 1))"
        clients=(taskset -c "$client_cpus")
        echo "broker on CPUs $BROKER_CPUS ($broker_cores shards), load generators on CPUs $client_cpus"
    fi
    trap stop_broker EXIT
    start_broker --log-cleaner-backoff-ms 500 --log-cleaner-io-max-bytes-per-second "$cleaner_io_max"
    boot="127.0.0.1:$BROKER_PORT"
    out=bench-results/$results_name-$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$out"
    topic create --topic load --partitions 4 --config cleanup.policy=delete \
        --config segment.bytes=1048576 --config min.cleanable.dirty.ratio=0.01 "$@"
}

topic() { "${clients[@]}" "$TIDELOG_BIN" topic --bootstrap-server "$boot" "$@" >/dev/null; }

# start_load RATE SECONDS: the background load (200 B updates over 10,000
# keys, one producer, no consumer) into "load" for SECONDS at RATE msg/s,
# in the background; its output goes to $out/load.txt and its pid to load.
start_load() {
    "${clients[@]}" "$TIDELOG_BIN" bench --bootstrap "$boot" --quiet --name load --out-dir "$out" \
        --topic load --partitions 4 --producers 1 --consumers 0 \
        --message-bytes 200 --key-distribution uniform --keys 10000 \
        --rate "$1" --warmup-seconds 0 --duration-seconds "$2" \
        >"$out/load.txt" 2>&1 &
    load=$!
}
