#!/usr/bin/env bash
# Produce latency with and without the log cleaner at work, measured in one
# unbroken latency run. One tidelog; one keyed background load (200 B
# updates over 10,000 keys into 4 partitions with 1 MiB segments, produce
# only) the whole time; one fixed-rate latency workload
# (perf/workloads/latency-100b-50k.toml at --latency-rate) the whole time,
# recording every second's acknowledgement-latency histogram
# (`tidelog bench --timeline-histograms`).
#
# Meanwhile the load's topic is switched live between two policies, in
# blocks of --block seconds, in --pairs pairs:
#
#   delete:  cleanup.policy=delete: the cleaner is idle;
#   compact: cleanup.policy=compact with min.cleanable.dirty.ratio=0.01 and
#            log.cleaner.backoff.ms=500: the cleaner rewrites segments the
#            whole block (the dirty data of the delete block before it
#            first).
#
#   floor:   (with --floor) cleanup.policy=delete, and perf/cleaner-io.py
#            making the I/O of the cleaner's passes in such a block from
#            outside the broker: the device's floor, what produce pays for
#            the cleaner's I/O alone, whoever issues it. Each pair is then a
#            triple, and the summary gives compact/delete, floor/delete and
#            compact/floor.
#
# Each pair's order is drawn at random, so a drift of a shared host falls
# on both policies alike and, with no cleaner effect, a pair's
# compact/delete ratio is as likely above 1 as below. A block's first
# --settle seconds are left out (a cleaner pass ending, a policy change
# reaching the cleaner); its other seconds' histograms are pooled into the
# block's percentiles. perf/compaction-toggle.py then gives, per metric,
# the median of the pairs' ratios with a 95% bootstrap interval and a sign
# test, and the pooled ratio of all compact seconds over all delete ones.
#
#   perf/compaction-toggle.sh [--pairs N] [--block SECONDS] [--settle SECONDS]
#                             [--load-rate MSG_PER_S] [--latency-rate MSG_PER_S]
#                             [--cleaner-io-max BYTES_PER_S] [--broker-cores K]
#                             [--broker-first-cpu F]
#                             [--load-config KEY=VALUE]... [--floor] [--seed N]
#
# --load-config adds a topic config to the load topic at its creation (for
# example flush.ms=3600000 with flush.messages=1000000000, to take the load
# partitions' fdatasyncs out of the shard's flush rounds).
#
# --broker-cores K gives the broker CPUs 0..K-1 (K shards, the whole process
# confined there with taskset) and the load generators the rest, as on a
# dedicated broker node; without it they share every CPU and the broker
# runs 2 shards. --broker-first-cpu F gives it CPUs F..F+K-1 instead: on
# the development VM every disk interrupt lands on CPU 1, and a dedicated
# broker node takes its disk's interrupts on its own CPUs, not on its
# clients'. Results: bench-results/toggle-<time>/ (blocks.json, the
# latency run's JSON, the broker's log, summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
source perf/lib/compaction.sh
pairs=20
block=15
settle=3
load_rate=2500
latency_rate=5000
cleaner_io_max=unlimited
floor=""
broker_cores=""
load_config=()
seed=$RANDOM
while [[ $# -gt 0 ]]; do
    case "$1" in
        --pairs) pairs=$2; shift 2 ;;
        --block) block=$2; shift 2 ;;
        --settle) settle=$2; shift 2 ;;
        --load-rate) load_rate=$2; shift 2 ;;
        --latency-rate) latency_rate=$2; shift 2 ;;
        --cleaner-io-max) cleaner_io_max=$2; shift 2 ;;
        --broker-cores) broker_cores=$2; shift 2 ;;
        --broker-first-cpu) export BROKER_FIRST_CPU=$2; shift 2 ;;
        --load-config) load_config+=(--config "$2"); shift 2 ;;
        --floor) floor=1; shift ;;
        --seed) seed=$2; shift 2 ;;
        *) echo "unknown argument: $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done
if [ "$settle" -ge "$block" ]; then
    echo "--settle ($settle) must be shorter than --block ($block)" >&2
    exit 2
fi
start_compaction_broker "$broker_cores" "$cleaner_io_max" toggle "${load_config[@]}"

warmup=3
arms=2
if [ -n "$floor" ]; then
    arms=3
    # The stand-in for the cleaner's I/O writes on the broker's file system
    # and runs on its CPUs, at SCHED_IDLE, as the cleaner only takes the
    # CPU when produce work does not need it.
    stand_in=(chrt --idle 0 python3 perf/cleaner-io.py)
    if [ -n "${BROKER_CPUS:-}" ]; then stand_in=(taskset -c "$BROKER_CPUS" "${stand_in[@]}"); fi
    floor_dir="$BROKER_DATA/cleaner-io"
    "${stand_in[@]}" prepare "$floor_dir" $((pairs * 8))
fi
measured=$((pairs * arms * block + pairs + 10))
start_load "$load_rate" "$((measured + warmup + 20))"
sleep 8 # a few segments closed before the first block
"${clients[@]}" "$TIDELOG_BIN" bench --bootstrap "$boot" --quiet --name latency --out-dir "$out" \
    --workload perf/workloads/latency-100b-50k.toml --timeline-histograms \
    --warmup-seconds "$warmup" --duration-seconds "$measured" --rate "$latency_rate" \
    >"$out/latency.txt" 2>&1 &
latency=$!
sleep "$((warmup + 2))"

# "broker,busy,iowait,steal,total": clock ticks of the broker's threads
# (user + system), and of the machine's CPUs busy (user, nice, system, irq,
# softirq), waiting for I/O, stolen by the host, and all together.
cpu_ticks() {
    local broker
    broker=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")
    awk -v broker="$broker" '/^cpu / {
        busy = $2 + $3 + $4 + $7 + $8; total = 0
        for (i = 2; i <= 11; i++) total += $i
        print broker "," busy "," $6 "," $9 "," total }' /proc/stat
}
passes() { grep -c "log compacted" "$BROKER_LOG" || true; }

RANDOM=$seed
echo "seed $seed: $pairs pairs of ${block}s blocks, the first ${settle}s of each left out"
blocks="$out/blocks.txt"
: >"$blocks"
for pair in $(seq 1 "$pairs"); do
    if [ -n "$floor" ]; then
        orders=("delete compact floor" "delete floor compact" "compact delete floor"
            "compact floor delete" "floor delete compact" "floor compact delete")
        order=${orders[$((RANDOM % 6))]}
    elif [ $((RANDOM % 2)) -eq 0 ]; then order="delete compact"; else order="compact delete"; fi
    for policy in $order; do
        topic alter --topic load --add-config cleanup.policy=${policy/floor/delete}
        start_ms=$(date +%s%3N)
        start_passes=$(passes)
        start_ticks=$(cpu_ticks)
        stand_in_pid=""
        if [ "$policy" = floor ]; then
            "${stand_in[@]}" run "$floor_dir" "$block" &
            stand_in_pid=$!
        fi
        sleep "$block"
        if [ -n "$stand_in_pid" ]; then wait "$stand_in_pid"; fi
        # pair policy start_ms end_ms cleaner_passes ticks_at_start ticks_at_end
        echo "$pair $policy $start_ms $(date +%s%3N) $(($(passes) - start_passes)) $start_ticks $(cpu_ticks)" >>"$blocks"
    done
    printf '.'
done
echo
topic alter --topic load --add-config cleanup.policy=delete
wait "$latency" || { echo "the latency run failed:"; tail -n 20 "$out/latency.txt"; exit 1; }
kill "$load" 2>/dev/null || true
wait "$load" 2>/dev/null || true
cp "$BROKER_LOG" "$out/broker.log"
{
    echo "command: $0 --pairs $pairs --block $block --settle $settle --load-rate $load_rate" \
        "--latency-rate $latency_rate --cleaner-io-max $cleaner_io_max" \
        "${broker_cores:+--broker-cores $broker_cores }${BROKER_FIRST_CPU:+--broker-first-cpu $BROKER_FIRST_CPU }${load_config[*]:+${load_config[*]//--config/--load-config} }${floor:+--floor }--seed $seed"
    echo "tidelog: $TIDELOG_BIN; tree $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' with uncommitted changes to src')"
    python3 perf/compaction-toggle.py --settle "$settle" "$out"
    if [ -n "$floor" ]; then
        for compare in floor/delete compact/floor; do
            echo
            python3 perf/compaction-toggle.py --settle "$settle" --compare "$compare" "$out"
        done
    fi
} | tee "$out/summary.txt"
echo "results: $out"
