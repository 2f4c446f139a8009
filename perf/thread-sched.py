#!/usr/bin/env python3
"""Where a broker's threads spend their time, block by block of a
perf/compaction-toggle.sh run: CPU and run-queue wait (runnable, not
running) of the shard threads, io_uring's io-wq workers and the rest.

    perf/thread-sched.py sample OUT      # beside the toggle run
    perf/thread-sched.py blocks OUT DIR  # DIR: bench-results/toggle-<time>

`sample` waits for a `tidelog serve` process, then writes every thread's
/proc schedstat (CPU ns, run-queue wait ns) and involuntary context
switches to OUT twice a second until the process exits. Run it on a CPU
the broker does not use (`taskset -c 1`). `blocks` gives, per policy, the
median over the blocks (their first second left out) of each thread
class's CPU and run-queue wait in % of wall time, and the shard threads'
involuntary context switches a second.

Thread classes go by name: glommio's blocking pool threads carry their
shard thread's name, so "shard" includes them.
"""

import bisect
import collections
import glob
import os
import statistics
import sys
import time


def find_broker():
    while True:
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                argv = open(path, "rb").read().split(b"\0")
            except OSError:
                continue
            if len(argv) > 1 and b"tidelog" in os.path.basename(argv[0]) and b"serve" in argv:
                return path.split("/")[2]
        time.sleep(0.3)


def sample(out_path):
    pid = find_broker()
    with open(out_path, "w") as out:
        while os.path.exists(f"/proc/{pid}"):
            now_ms = int(time.time() * 1000)
            for task in glob.glob(f"/proc/{pid}/task/*"):
                try:
                    cpu_ns, wait_ns, _ = open(f"{task}/schedstat").read().split()
                    name = open(f"{task}/comm").read().strip().replace(" ", "_")
                    involuntary = next(line.split()[1] for line in open(f"{task}/status")
                                       if line.startswith("nonvoluntary_ctxt_switches"))
                except (OSError, StopIteration, ValueError):
                    continue
                out.write(f"{now_ms} {os.path.basename(task)} {name} {cpu_ns} {wait_ns} {involuntary}\n")
            out.flush()
            time.sleep(0.5)


def thread_class(name):
    if name.startswith("shard"):
        return "shard"
    if name.startswith("iou-wrk"):
        return "io-wq"
    return "other"


def blocks(samples_path, directory, settle_ms=1000):
    series = collections.defaultdict(list)
    for line in open(samples_path):
        at, tid, name, cpu, wait, involuntary = line.split()
        series[tid].append((int(at), name, int(cpu), int(wait), int(involuntary)))

    times = {tid: [p[0] for p in points] for tid, points in series.items()}

    def value_at(tid, at):
        i = bisect.bisect_right(times[tid], at) - 1
        return series[tid][i] if i >= 0 else None

    table = collections.defaultdict(lambda: collections.defaultdict(list))
    for line in open(f"{directory}/blocks.txt"):
        fields = line.split()
        policy, start, end = fields[1], int(fields[2]) + settle_ms, int(fields[3])
        sums = collections.Counter()
        covered = False
        for tid, points in series.items():
            last = value_at(tid, end)
            if last is None:
                continue
            first = value_at(tid, start)
            if first is None:
                first = (start, None, 0, 0, 0)  # born in the block
            else:
                covered = True
            wall_s = max(last[0] - first[0], 1) / 1000
            kind = thread_class(points[-1][1])
            sums[f"{kind} CPU %"] += (last[2] - first[2]) / 1e7 / wall_s
            sums[f"{kind} run-queue wait %"] += (last[3] - first[3]) / 1e7 / wall_s
            if kind == "shard":
                sums["shard involuntary switches/s"] += (last[4] - first[4]) / wall_s
        if covered:
            for key, value in sums.items():
                table[key][policy].append(value)
    print(f"{'':34s} {'delete':>9s} {'compact':>9s}   (median over blocks; blocks d/c)")
    for key in sorted(table):
        delete, compact = table[key]["delete"], table[key]["compact"]
        if delete and compact:
            print(f"{key:34s} {statistics.median(delete):9.2f} {statistics.median(compact):9.2f}"
                  f"   ({len(delete)}/{len(compact)})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "blocks":
        blocks(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
