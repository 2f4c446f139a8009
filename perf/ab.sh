#!/usr/bin/env bash
# Before/after figures for a change on the produce or fetch path, from one
# run: two tidelog binaries take turns (A B A B ...), each round a fresh
# broker on a fresh data directory, the same workload driven by the same
# load generator (AFTER's `tidelog bench`).
#
#   perf/ab.sh BEFORE_BINARY AFTER_BINARY [WORKLOAD.toml] [ROUNDS] [-- bench flags]
#
# Build BEFORE from the parent commit (e.g. `git worktree add /tmp/before
# HEAD~1 && cargo build --release --manifest-path /tmp/before/Cargo.toml`).
# Environment: CORES (broker shards, default every CPU), RESULTS (output
# folder, default bench-results/ab-<time>), SERVE_FLAGS (more `tidelog
# serve` flags for both brokers, e.g. "--segment-bytes 1048576"). Prints one line per run and
# the medians per binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 2 ]] || { echo "usage: perf/ab.sh BEFORE_BINARY AFTER_BINARY [WORKLOAD.toml] [ROUNDS] [-- bench flags]" >&2; exit 2; }
before=$(realpath "$1")
after=$(realpath "$2")
shift 2
workload=$root/perf/workloads/max-throughput-1k.toml
rounds=3
if [[ $# -gt 0 && $1 != -- ]]; then workload=$1; shift; fi
if [[ $# -gt 0 && $1 != -- ]]; then rounds=$1; shift; fi
[[ ${1:-} == -- ]] && shift
extra=("$@")
cores=${CORES:-$(nproc)}
read -r -a serve_flags <<<"${SERVE_FLAGS:-}"
out=${RESULTS:-$root/bench-results/ab-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" "$root/target"
broker=
data=
stop_broker() {
    if [[ -n $broker ]]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    broker=
    [[ -n $data ]] && rm -rf "$data"
    data=
}
trap stop_broker EXIT

run() { # LABEL BINARY ROUND
    local label=$1 binary=$2 round=$3 port
    data=$(mktemp -d "$root/target/ab.XXXXXX")
    port=$(( 20000 + RANDOM % 10000 ))
    "$binary" serve --data-dir "$data" --listen "127.0.0.1:$port" --cores "$cores" \
        "${serve_flags[@]}" >"$out/$label-$round.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do grep -q '^tidelog ready' "$out/$label-$round.log" && break; sleep 0.1; done
    grep -q '^tidelog ready' "$out/$label-$round.log" || { cat "$out/$label-$round.log" >&2; exit 1; }
    "$after" bench --bootstrap "127.0.0.1:$port" --workload "$workload" --quiet \
        --name "$label-$round" --out-dir "$out" "${extra[@]}" >"$out/$label-$round.txt"
    # The broker's CPU time over its whole life (user + system, in clock
    # ticks), for CPU seconds per GB produced: less noisy than throughput
    # where the load generator shares the cores.
    awk '{print $14 + $15}' "/proc/$broker/stat" >"$out/$label-$round.ticks"
    stop_broker
    python3 - "$out" "$label-$round" "$(getconf CLK_TCK)" <<'EOF'
import glob, json, sys
out, name, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
[path] = glob.glob(f"{out}/{name}-*.json")
r = json.load(open(path))
p, a = r["produce"], r["produce_ack_latency"]
cpu = int(open(f"{out}/{name}.ticks").read()) / hz
gb = r["acked"] * r["workload"]["message_bytes"] / 1e9
r["broker_cpu_seconds_per_gb"] = cpu / gb
json.dump(r, open(path, "w"))
print(f"{name}: produce {p['megabytes_per_second']:.1f} MB/s, ack p50 {a['p50_us']/1000:.2f} "
      f"p99 {a['p99_us']/1000:.2f} ms, broker {cpu / gb:.2f} CPU s/GB acked, "
      f"verified {r['verification']['verified']}, load {r['machine']['load_average']}")
EOF
}

echo "before: $before"
echo "after:  $after"
echo "workload: $workload, $rounds rounds, $cores shards${SERVE_FLAGS:+, serve $SERVE_FLAGS}"
for round in $(seq "$rounds"); do
    run before "$before" "$round"
    run after "$after" "$round"
done
python3 - "$out" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
for label in ("before", "after"):
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{label}-*.json"))]
    mb = statistics.median(r["produce"]["megabytes_per_second"] for r in runs)
    p99 = statistics.median(r["produce_ack_latency"]["p99_us"] for r in runs) / 1000
    cpu = statistics.median(r["broker_cpu_seconds_per_gb"] for r in runs)
    print(f"median {label}: produce {mb:.1f} MB/s, ack p99 {p99:.2f} ms, "
          f"broker {cpu:.2f} CPU s/GB acked ({len(runs)} runs)")
EOF
echo "results in $out"
