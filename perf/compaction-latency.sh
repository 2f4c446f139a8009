#!/usr/bin/env bash
# Produce latency while the log cleaner works: the fixed-rate latency
# workload (perf/workloads/latency-100b-50k.toml) runs twice against one
# tidelog, each time beside a keyed background load into a second topic:
#
#   A: the background topic has cleanup.policy=delete (no compaction);
#   B: the background topic has cleanup.policy=compact, 1 MiB segments and
#      min.cleanable.dirty.ratio=0.01, so the cleaner rewrites segments
#      the whole time (log.cleaner.backoff.ms=500).
#
# Same broker, same load, same machine, one after the other: the difference
# is the cleaner. Prints both tables, the p99 ratio, and how many cleaner
# passes ran during B.
#
#   perf/compaction-latency.sh [--duration SECONDS] [--load-rate MSG_PER_S]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
duration=30
load_rate=20000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --load-rate) load_rate=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
trap stop_broker EXIT
start_broker --log-cleaner-backoff-ms 500
boot="127.0.0.1:$BROKER_PORT"
out=bench-results/compaction-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"

"$TIDELOG_BIN" topic --bootstrap-server "$boot" create --topic load-delete --partitions 4 \
    --config cleanup.policy=delete --config segment.bytes=1048576 >/dev/null
"$TIDELOG_BIN" topic --bootstrap-server "$boot" create --topic load-compact --partitions 4 \
    --config cleanup.policy=compact --config segment.bytes=1048576 \
    --config min.cleanable.dirty.ratio=0.01 >/dev/null

run() {
    local name=$1 load_topic=$2
    # The background load: 200 B keyed updates over 10,000 keys, produce only.
    "$TIDELOG_BIN" bench --bootstrap "$boot" --quiet --name "load-$name" --out-dir "$out" \
        --topic "$load_topic" --partitions 4 --producers 1 --consumers 0 \
        --message-bytes 200 --key-distribution uniform --keys 10000 \
        --rate "$load_rate" --warmup-seconds 0 \
        --duration-seconds $((duration + 15)) >"$out/load-$name.txt" 2>&1 &
    local load=$!
    # Let the load fill a few segments first.
    sleep 8
    "$TIDELOG_BIN" bench --bootstrap "$boot" --quiet --name "latency-$name" --out-dir "$out" \
        --workload perf/workloads/latency-100b-50k.toml --duration-seconds "$duration" \
        | tee "$out/latency-$name.txt"
    wait "$load"
}

echo "== A: background load into a cleanup.policy=delete topic"
before_a=$(grep -c "log compacted" "$BROKER_LOG" || true)
run delete load-delete
after_a=$(grep -c "log compacted" "$BROKER_LOG" || true)
echo "== B: the same load into a cleanup.policy=compact topic (the cleaner runs)"
run compact load-compact
after_b=$(grep -c "log compacted" "$BROKER_LOG" || true)

python3 - "$out" $((after_a - before_a)) $((after_b - after_a)) <<'PY'
import glob, json, sys
out, passes_a, passes_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def result(name):
    return json.load(open(sorted(glob.glob(f"{out}/latency-{name}-*.json"))[-1]))
a, b = result("delete"), result("compact")
print(f"cleaner passes: A {passes_a}, B {passes_b}")
print(f"{'produce ack latency':<22}{'A (no compaction)':>20}{'B (compacting)':>18}{'B/A':>8}")
for key, label in [("p50_us", "p50"), ("p99_us", "p99"), ("p99_9_us", "p99.9"), ("max_us", "max")]:
    x, y = a["produce_ack_latency"][key], b["produce_ack_latency"][key]
    print(f"{label:<22}{x / 1000:>17.2f} ms{y / 1000:>15.2f} ms{y / x if x else 0:>8.2f}")
for key, label in [("p99_us", "end-to-end p99")]:
    x, y = a["end_to_end_latency"][key], b["end_to_end_latency"][key]
    print(f"{label:<22}{x / 1000:>17.2f} ms{y / 1000:>15.2f} ms{y / x if x else 0:>8.2f}")
PY
echo "results: $out"
