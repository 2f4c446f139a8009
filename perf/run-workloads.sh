#!/usr/bin/env bash
# Runs workloads against a tidelog it starts (release build, fresh data
# directory under target/, shards on free loopback ports), then stops it.
#
#   perf/run-workloads.sh [--driver native|rdkafka] [--cores N] [WORKLOAD.toml ...] [-- bench flags]
#
# Default: every workload in perf/workloads/ that runs without consumer
# groups. Results (JSON, SVG, the printed tables) go to
# bench-results/run-<time>/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
driver=native
cores=$(nproc)
workloads=()
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --driver) driver=$2; shift 2 ;;
        --cores) cores=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) workloads+=("$1"); shift ;;
    esac
done
if [[ ${#workloads[@]} -eq 0 ]]; then
    for file in "$root"/perf/workloads/*.toml; do
        grep -q '^requires_consumer_groups = true' "$file" || workloads+=("$file")
    done
fi
out=$root/bench-results/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
(cd "$root" && cargo build --release --quiet)
data=$(mktemp -d "$root/target/run-workloads.XXXXXX")
port=$(( 20000 + RANDOM % 10000 ))
"$root/target/release/tidelog" serve --data-dir "$data" --listen "127.0.0.1:$port" \
    --cores "$cores" >"$out/tidelog.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q '^tidelog ready' "$out/tidelog.log" && break; sleep 0.1; done
for workload in "${workloads[@]}"; do
    name=$(basename "$workload" .toml)
    echo "== $name ($driver) ==" | tee -a "$out/tables.txt"
    "$root/target/release/tidelog" bench --bootstrap "127.0.0.1:$port" --workload "$workload" \
        --driver "$driver" --out-dir "$out" --quiet "${extra[@]}" | tee -a "$out/tables.txt" || true
done
echo "results in $out"
