#!/usr/bin/env bash
# One workload against tidelog and against a second Kafka-compatible
# broker on this machine, then the ratios and the machine's limits, all
# from one run. Not run by CI.
#
#   scripts/compare.sh [WORKLOAD.toml] [-- extra `tidelog bench` flags]
#
# The second broker is Tansu (a Kafka-compatible broker in Rust), built
# once with `cargo install tansu --features dynostore` (15-50 minutes on 2
# shared cores, at nice 19; its target folder is kept, so a rebuild is
# incremental) into $TIDELOG_SCRATCH/tansu-FEATURES (default
# ~/.cache/tidelog-bench/) and started on loopback with a local storage
# engine. Tansu's storage engines are all behind features — a default
# build refuses to start ("FeatureNotEnabled") — so TANSU_FEATURES
# defaults to dynostore, whose memory://tansu/ engine needs no service
# (nothing is durable: mind that when reading the ratios).
# TANSU_FEATURES=libsql builds SQLite in instead (one local file in WAL
# mode, fsynced at checkpoints rather than per acknowledgement; the engine
# URL is then sqlite://tansu.db), and TANSU_STORAGE overrides the URL.
#
# Against Kafka or Redpanda instead, start it yourself on this machine and
# name it; the script then benchmarks that broker in Tansu's place:
#   OTHER_BOOTSTRAP=127.0.0.1:9092 OTHER_NAME=redpanda \
#   OTHER_FLUSH_POLICY="redpanda default: fsync per batch (raft)" scripts/compare.sh
# (Kafka: OTHER_FLUSH_POLICY is read from the broker's log.flush.* configs
# when left unset.)
#
# Environment: DRIVER (native|rdkafka, default native), CORES (tidelog
# shards, default every CPU), RESULTS (output folder, default
# bench-results/compare-<time>), LIMITS_SECONDS (fio run length).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
workload=${1:-$root/perf/workloads/max-throughput-1k.toml}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
extra=("$@")
driver=${DRIVER:-native}
cores=${CORES:-$(nproc)}
scratch=${TIDELOG_SCRATCH:-$HOME/.cache/tidelog-bench}
results=${RESULTS:-$root/bench-results/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$results" "$scratch"
run_dir=$(mktemp -d "$root/target/compare.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$run_dir"
}
trap cleanup EXIT

say() { echo "compare: $*" >&2; }

free_port() {
    # A run of $1 free ports below the ephemeral range.
    local count=$1 base port busy
    for _ in $(seq 200); do
        base=$(( 20000 + RANDOM % 10000 ))
        busy=0
        for (( port = base; port < base + count; port++ )); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then busy=1; break; fi
        done
        if [[ $busy -eq 0 ]]; then echo "$base"; return; fi
    done
    say "no free ports"; exit 1
}

wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    say "nothing listens on port $1"; return 1
}

stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

say "building tidelog"
(cd "$root" && cargo build --release --quiet)
tidelog=$root/target/release/tidelog

bench() {
    local label=$1 bootstrap=$2; shift 2
    say "benchmarking $label at $bootstrap ($driver driver)"
    # A failed verification (exit 2) still leaves a result to compare.
    "$tidelog" bench --bootstrap "$bootstrap" --workload "$workload" --driver "$driver" \
        --out-dir "$results/$label" "$@" "${extra[@]}" | tee "$results/$label.txt" >&2 ||
        say "$label: the run failed or did not verify (its table says which)"
    local json
    json=$(ls -t "$results/$label"/*.json | head -1)
    cp "$json" "$results/$label.json"
}

say "measuring the machine's limits"
"$root/scripts/limits.sh" "$run_dir/limits" --json "$results/limits.json" | tee "$results/limits.txt"

port=$(free_port "$cores")
"$tidelog" serve --data-dir "$run_dir/tidelog" --listen "127.0.0.1:$port" --cores "$cores" \
    >"$results/tidelog.log" 2>&1 &
tidelog_pid=$!
pids+=("$tidelog_pid")
for (( i = 0; i < cores; i++ )); do wait_port $(( port + i )); done
bench tidelog "127.0.0.1:$port"
stop "$tidelog_pid"

if [[ -n ${OTHER_BOOTSTRAP:-} ]]; then
    other=${OTHER_NAME:-other}
    policy=()
    [[ -n ${OTHER_FLUSH_POLICY:-} ]] && policy=(--flush-policy "$OTHER_FLUSH_POLICY")
    bench "$other" "$OTHER_BOOTSTRAP" "${policy[@]}"
else
    other=tansu
    features=${TANSU_FEATURES:-dynostore}
    tansu_root=$scratch/tansu-${features//[, ]/-}
    tansu=$tansu_root/bin/tansu
    if [[ ! -x $tansu ]]; then
        say "installing Tansu ($features) into $tansu_root (once; 15-50 minutes on 2 cores)"
        CARGO_TARGET_DIR=$scratch/tansu-target nice -n 19 \
            cargo install tansu --locked --features "$features" --root "$tansu_root"
    fi
    storage=${TANSU_STORAGE:-}
    if [[ -z $storage ]]; then
        if [[ $features == *libsql* ]]; then
            # Tansu reads a sqlite:// path relative to its working
            # directory (it is started in $run_dir).
            storage="sqlite://tansu.db"
        else
            storage="memory://tansu/"
        fi
    fi
    tansu_port=$(free_port 1)
    (cd "$run_dir" && exec "$tansu" broker \
        --listener-url "tcp://127.0.0.1:$tansu_port" \
        --advertised-listener-url "tcp://127.0.0.1:$tansu_port" \
        --storage-engine "$storage") \
        >"$results/tansu.log" 2>&1 &
    tansu_pid=$!
    pids+=("$tansu_pid")
    if ! wait_port "$tansu_port"; then
        say "Tansu did not start; the end of its log ($results/tansu.log):"
        tail -5 "$results/tansu.log" >&2
        exit 1
    fi
    # Measured for RESULTS.md (strace): Tansu's SQLite runs in WAL mode
    # and fsyncs at checkpoints, not before each acknowledgement.
    durability="on disk, fsync as the engine decides"
    [[ $storage == sqlite://* ]] && durability="SQLite WAL on disk, fsync at checkpoints, not per acknowledgement"
    [[ $storage == memory://* ]] && durability="in memory, nothing durable"
    bench tansu "127.0.0.1:$tansu_port" --flush-policy "tansu, storage $storage ($durability)"
    stop "$tansu_pid"
fi

echo
echo "== A: tidelog, B: $other =="
"$tidelog" bench compare "$results/tidelog.json" "$results/$other.json"
echo
echo "== the machine =="
cat "$results/limits.txt"
jq -r --slurpfile limits "$results/limits.json" \
    '"tidelog acknowledged \(.produce.megabytes_per_second | floor) MB/s = \((.produce.megabytes_per_second / $limits[0].seq_write_mb_per_s * 100) | floor)% of the disk'"'"'s O_DIRECT sequential write bandwidth, \((.produce.megabytes_per_second / $limits[0].seq_write_durable_mb_per_s * 100) | floor)% of fio'"'"'s durable sequential writes (one writer, fdatasync every 8 MiB)"' \
    "$results/tidelog.json"
echo "results in $results"
