#!/usr/bin/env bash
# Produce 500,000 x 1 KiB records (acks=1) to one partition, then read them
# back three times from the tail cache with librdkafka's rdkafka_performance.
# Usage: perf/fetch-from-cache.sh [TIDELOG_BINARY] [LABEL]
# Needs the librdkafka build of scripts/compat-librdkafka.sh (run it once).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/tidelog}"
LABEL="${2:-tidelog}"
SRC=target/librdkafka-compat/src
[ -d "$SRC" ] || { echo "run scripts/compat-librdkafka.sh once first (it builds librdkafka)"; exit 1; }
[ -x "$SRC/examples/rdkafka_performance" ] || make -C "$SRC/examples" rdkafka_performance >/dev/null
PERF="$SRC/examples/rdkafka_performance"
export LD_LIBRARY_PATH="$SRC/src"
source scripts/lib/broker.sh
TIDELOG_BIN="$(realpath "$BIN")"
trap stop_broker EXIT
start_broker --default-partitions 1 --tail-cache-bytes 1073741824
BOOT="127.0.0.1:$BROKER_PORT"
"$PERF" -P -t fetchbench -p 0 -b "$BOOT" -s 1024 -c 500000 -X linger.ms=5 -X acks=1 -X batch.size=1000000 2>&1 |
    grep "messages produced" | tail -1 | sed "s/^/$LABEL produce: /"
for run in 1 2 3; do
    "$PERF" -C -t fetchbench -p 0 -b "$BOOT" -o beginning -c 500000 \
        -X fetch.max.bytes=52428800 -X fetch.message.max.bytes=10485760 2>&1 |
        grep "messages (" | tail -1 | sed "s/^/$LABEL consume $run: /"
done
