#!/usr/bin/env bash
# Produce latency while the log cleaner works. One tidelog, one keyed
# background load (200 B updates over 10,000 keys into 4 partitions with
# 1 MiB segments, produce only) running the whole time, and the fixed-rate
# latency workload (perf/workloads/latency-100b-50k.toml) run in
# alternating phases:
#
#   A: the load's topic has cleanup.policy=delete: the cleaner is idle;
#   B: the same topic switched live to cleanup.policy=compact with
#      min.cleanable.dirty.ratio=0.01 and log.cleaner.backoff.ms=500: the
#      cleaner rewrites segments the whole phase.
#
# A and B alternate for --rounds rounds, so slow drifts of a shared machine
# fall on both; the summary gives each phase's figures, the medians, and
# the ratios of each B to the A just before it (median, lowest, highest).
#
#   perf/compaction-latency.sh [--rounds N] [--duration SECONDS] [--load-rate MSG_PER_S]
#                              [--latency-rate MSG_PER_S] [--cleaner-io-max BYTES_PER_S]
#                              [--broker-cores K] [--control]
#
# --control keeps cleanup.policy=delete in B too (an A/A run): its ratios
# show how far two phases of this machine differ with no cleaner at all,
# the band a B/A ratio must be read against.
#
# --broker-cores K gives the broker CPUs 0..K-1 (K shards, the whole
# process confined there with taskset) and the load generators the rest,
# as on a dedicated broker node; without it broker and clients share every
# CPU and the broker runs 2 shards.
#
# --cleaner-io-max starts the broker with that
# --log-cleaner-io-max-bytes-per-second (Kafka's
# log.cleaner.io.max.bytes.per.second; default unlimited).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
source perf/lib/compaction.sh
rounds=3
duration=20
load_rate=20000
latency_rate=50000
cleaner_io_max=unlimited
control=false
broker_cores=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --load-rate) load_rate=$2; shift 2 ;;
        --latency-rate) latency_rate=$2; shift 2 ;;
        --cleaner-io-max) cleaner_io_max=$2; shift 2 ;;
        --broker-cores) broker_cores=$2; shift 2 ;;
        --control) control=true; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
start_compaction_broker "$broker_cores" "$cleaner_io_max" compaction

# Every phase: a policy switch, 3 s of settling, the workload's warm-up and
# its measured seconds.
total=$((rounds * 2 * (duration + 10) + 20))
start_load "$load_rate" "$total"
sleep 8

# "broker,busy,iowait,steal,total": clock ticks of the broker's threads
# (shards, io_uring workers, blocking pool: user + system), and of the
# machine's CPUs busy (user, nice, system, irq, softirq), waiting for I/O,
# stolen by the host, and all together.
cpu_ticks() {
    local broker
    broker=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")
    awk -v broker="$broker" '/^cpu / {
        busy = $2 + $3 + $4 + $7 + $8; total = 0
        for (i = 2; i <= 11; i++) total += $i
        print broker "," busy "," $6 "," $9 "," total }' /proc/stat
}

phases=()
for round in $(seq 1 "$rounds"); do
    for phase in A B; do
        if [ "$phase" = A ] || $control; then policy=delete; else policy=compact; fi
        topic alter --topic load --add-config cleanup.policy=$policy
        sleep 3
        before=$(grep -c "log compacted" "$BROKER_LOG" || true)
        cpu_before=$(cpu_ticks)
        echo "== round $round, phase $phase (cleanup.policy=$policy)"
        "${clients[@]}" "$TIDELOG_BIN" bench --bootstrap "$boot" --quiet --name "latency-$phase$round" \
            --out-dir "$out" --workload perf/workloads/latency-100b-50k.toml \
            --duration-seconds "$duration" --rate "$latency_rate" | tee "$out/latency-$phase$round.txt" | grep -E "^(produce ack|end to end|verification)"
        after=$(grep -c "log compacted" "$BROKER_LOG" || true)
        phases+=("$phase$round:$((after - before)):$cpu_before:$(cpu_ticks)")
    done
done
kill "$load" 2>/dev/null || true
wait "$load" 2>/dev/null || true
cp "$BROKER_LOG" "$out/broker.log"

python3 - "$out" "${phases[@]}" <<'PY'
import glob, json, os, statistics, sys
out, phases = sys.argv[1], sys.argv[2:]
rows = {"A": [], "B": []}
usage = {"A": [], "B": []}
tick = os.sysconf("SC_CLK_TCK")
print(f"{'phase':<7}{'cleaner passes':>15}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'e2e p99':>9}{'p99/s':>9}"
      f"  (produce ack, ms; p99/s: median of the seconds' p99)  broker cores, machine busy / iowait / steal %")
recorded = []
for entry in phases:
    name, passes, start, end = entry.split(":")
    result = json.load(open(sorted(glob.glob(f"{out}/latency-{name}-*.json"))[-1]))
    ack, e2e = result["produce_ack_latency"], result["end_to_end_latency"]
    # The median over the phase's seconds of each second's own p99: what a
    # host stall of a second or two leaves of the phase's p99.
    by_second = [t["ack_p99_ms"] * 1000 for t in result["timeline"] if t.get("ack_p99_ms")]
    row = [ack["p50_us"], ack["p99_us"], ack["p99_9_us"], ack["max_us"], e2e["p99_us"],
           statistics.median(by_second) if by_second else 0]
    rows[name[0]].append(row)
    # Over the whole bench run of the phase (warm-up and drain too).
    d = [b - a for a, b in zip(map(int, start.split(",")), map(int, end.split(",")))]
    seconds = d[4] / tick / (os.cpu_count() or 1)
    use = [d[0] / tick / seconds] + [100 * x / d[4] for x in d[1:4]]
    usage[name[0]].append(use)
    recorded.append({"phase": name, "cleaner_passes": int(passes), "broker_cores": use[0],
                     "busy_percent": use[1], "iowait_percent": use[2], "steal_percent": use[3]})
    print(f"{name:<7}{passes:>15}" + "".join(f"{v / 1000:>9.2f}" for v in row)
          + f"  {use[0]:>10.2f}, {use[1]:.0f} / {use[2]:.0f} / {use[3]:.0f}")
json.dump(recorded, open(f"{out}/phases.json", "w"), indent=1)
for phase in "AB":
    if usage[phase]:
        m = [statistics.median(c) for c in zip(*usage[phase])]
        print(f"{phase} median: broker {m[0]:.2f} cores, machine busy {m[1]:.0f}%, iowait {m[2]:.0f}%, steal {m[3]:.0f}%")
for phase in "AB":
    medians = [statistics.median(column) for column in zip(*rows[phase])]
    print(f"{phase + ' med':<7}{'':>15}" + "".join(f"{v / 1000:>9.2f}" for v in medians))
a = [statistics.median(c) for c in zip(*rows["A"])]
b = [statistics.median(c) for c in zip(*rows["B"])]
print(f"{'B/A':<7}{'':>15}" + "".join(f"{y / x if x else 0:>9.2f}" for x, y in zip(a, b)))
# Each B against the A just before it: a shared host drifts over minutes,
# so neighbours compare better than the medians of whole runs.
pairs = [[y / x if x else 0 for x, y in zip(ra, rb)] for ra, rb in zip(rows["A"], rows["B"])]
if pairs:
    columns = list(zip(*pairs))
    print(f"{'Bi/Ai':<7}{'median':>15}" + "".join(f"{statistics.median(c):>9.2f}" for c in columns))
    print(f"{'':<7}{'lowest':>15}" + "".join(f"{min(c):>9.2f}" for c in columns))
    print(f"{'':<7}{'highest':>15}" + "".join(f"{max(c):>9.2f}" for c in columns))
PY
echo "results: $out"
