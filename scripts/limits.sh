#!/usr/bin/env bash
# The physical limits of this machine, for reading benchmark figures
# against: fio O_DIRECT sequential write and read bandwidth (1 MiB blocks)
# on the disk holding the data directory, the same writes made durable
# (one writer, an fdatasync after every 8 MiB, about what one busy
# group-commit round of a shard writes: the scale of acks=all throughput,
# which on a virtual disk whose host caches writes can be far below the
# plain figure; fio drains its queue before each sync, so several shards,
# one writing while another syncs, can go past it), the
# latency of a 4 KiB O_DIRECT write + fdatasync (what one group commit
# costs at least), and iperf3 loopback TCP bandwidth.
#
#   scripts/limits.sh [DATA_DIR] [--json FILE]
#
# DATA_DIR defaults to ./tidelog-data (created if missing; fio's files go
# in DATA_DIR/.limits and are removed afterwards). fio and iperf3 are
# installed with apt-get when missing. LIMITS_SECONDS (default 8) is each
# fio run's length.
set -euo pipefail

data_dir=./tidelog-data
json_out=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --json) json_out=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) data_dir=$1; shift ;;
    esac
done
seconds=${LIMITS_SECONDS:-8}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "limits: installing ${missing[*]}" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}
need fio iperf3 jq

mkdir -p "$data_dir"
work=$(cd "$data_dir" && pwd)/.limits
mkdir -p "$work"
iperf_pid=
cleanup() {
    rm -rf "$work"
    if [[ -n $iperf_pid ]]; then kill "$iperf_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

device=$(df --output=source "$work" | tail -1)
engine=io_uring
fio --enghelp=io_uring >/dev/null 2>&1 || engine=libaio

fio_json() {
    fio --directory="$work" --output-format=json --group_reporting "$@" 2>/dev/null
}

echo "limits: data dir $work on $device; fio engine $engine; ${seconds}s per fio run" >&2
write_json=$(fio_json --name=seqwrite --rw=write --bs=1M --size=2G --direct=1 \
    --ioengine="$engine" --iodepth=16 --runtime="$seconds" --time_based --filename=seq)
write_mb=$(jq '.jobs[0].write.bw_bytes / 1e6' <<<"$write_json")
durable_json=$(fio_json --name=durablewrite --rw=write --bs=1M --size=2G --direct=1 \
    --ioengine="$engine" --iodepth=16 --fdatasync=8 --runtime="$seconds" --time_based --filename=seq)
durable_mb=$(jq '.jobs[0].write.bw_bytes / 1e6' <<<"$durable_json")
read_json=$(fio_json --name=seqread --rw=read --bs=1M --size=2G --direct=1 \
    --ioengine="$engine" --iodepth=16 --runtime="$seconds" --time_based --filename=seq)
read_mb=$(jq '.jobs[0].read.bw_bytes / 1e6' <<<"$read_json")
sync_json=$(fio_json --name=fdatasync --rw=write --bs=4k --size=64M --direct=1 \
    --ioengine=sync --fdatasync=1 --runtime="$seconds" --time_based --filename=sync)
# One write and its fdatasync: fio reports the write's completion latency
# and the sync's latency apart; their percentiles are summed (an upper
# bound of the pair's).
pct() { jq "(.jobs[0].write.clat_ns.percentile[\"$1\"] + .jobs[0].sync.lat_ns.percentile[\"$1\"]) / 1e6" <<<"$sync_json"; }
sync_p50=$(pct 50.000000)
sync_p99=$(pct 99.000000)
sync_p999=$(pct 99.900000)
sync_iops=$(jq '.jobs[0].write.iops' <<<"$sync_json")

port=$(( 40000 + RANDOM % 10000 ))
iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
iperf_pid=$!
sleep 0.5
iperf_json=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -J)
loopback_gbit=$(jq '.end.sum_received.bits_per_second / 1e9' <<<"$iperf_json")
wait "$iperf_pid" 2>/dev/null || true
iperf_pid=

printf 'machine            %s, %s CPUs, Linux %s\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(nproc)" "$(uname -r)"
printf 'disk               %s (data dir %s)\n' "$device" "$data_dir"
printf 'seq write O_DIRECT %8.0f MB/s   (fio, 1 MiB blocks, iodepth 16, %s)\n' "$write_mb" "$engine"
printf 'seq write durable  %8.0f MB/s   (the same, one writer, fdatasync after every 8 MiB)\n' "$durable_mb"
printf 'seq read  O_DIRECT %8.0f MB/s\n' "$read_mb"
printf '4 KiB write+fdatasync  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  (%.0f/s, one at a time)\n' "$sync_p50" "$sync_p99" "$sync_p999" "$sync_iops"
printf 'loopback TCP       %8.1f Gbit/s (iperf3, one stream)\n' "$loopback_gbit"

if [[ -n $json_out ]]; then
    jq -n --arg device "$device" --argjson write "$write_mb" --argjson durable "$durable_mb" \
        --argjson read "$read_mb" \
        --argjson p50 "$sync_p50" --argjson p99 "$sync_p99" --argjson p999 "$sync_p999" \
        --argjson loopback "$loopback_gbit" \
        '{device: $device, seq_write_mb_per_s: $write,
          seq_write_durable_mb_per_s: $durable, seq_read_mb_per_s: $read,
          fdatasync_4k_ms: {p50: $p50, p99: $p99, p99_9: $p999},
          loopback_gbit_per_s: $loopback}' >"$json_out"
fi
