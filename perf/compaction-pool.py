#!/usr/bin/env python3
"""Pools the paired produce-ack ratios (each B phase against the A just
before it) of several perf/compaction-latency.sh runs and compares each set
with the A/A control set.

    perf/compaction-pool.py control=DIR[,DIR...] NAME=DIR[,DIR...] ...

DIR is a run's results directory (bench-results/compaction-*). For each
metric (the phase's p99; the median over its seconds of each second's own
p99, where the results have it; the phase's p50) it prints, per set, the
number of rounds and the median and quartiles of the B/A ratios, and per
set against `control` the ratio of their medians with a 95% bootstrap
interval (rounds resampled 5,000 times) and a two-sided Mann-Whitney U
test (normal approximation).
"""
import glob
import json
import math
import random
import re
import statistics
import sys


def rounds(directory):
    """{(phase, round): {metric: value}} of produce-ack latency, in µs:
    the phase's p50 and p99, and (from results that have it) the median
    over its measured seconds of each second's own p99."""
    found = {}
    for path in glob.glob(f"{directory}/latency-*-*.json"):
        match = re.search(r"latency-([AB])(\d+)-", path)
        if not match:
            continue
        result = json.load(open(path))
        ack = result["produce_ack_latency"]
        metrics = {"p50": ack["p50_us"], "p99": ack["p99_us"]}
        by_second = [s["ack_p99_ms"] * 1000 for s in result["timeline"] if s.get("ack_p99_ms")]
        if by_second:
            metrics["p99 by second"] = statistics.median(by_second)
        found[(match.group(1), int(match.group(2)))] = metrics
    return found


def ratios(directories):
    """Each B phase's metrics over those of the A just before it."""
    out = []
    for directory in directories:
        phases = rounds(directory)
        for (phase, number), metrics in sorted(phases.items()):
            before = phases.get(("A", number))
            if phase == "B" and before:
                out.append({k: v / before[k] for k, v in metrics.items() if before.get(k)})
    return out


def mann_whitney(x, y):
    values = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1][0] == values[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    n1, n2 = len(x), len(y)
    u = sum(r for r, (_, s) in zip(ranks, values) if s == 0) - n1 * (n1 + 1) / 2
    z = (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return z, math.erfc(abs(z) / math.sqrt(2))


def main():
    sets = {}
    for argument in sys.argv[1:]:
        name, _, directories = argument.partition("=")
        sets[name] = ratios(directories.split(","))
    rng = random.Random(1)
    for metric in ("p99", "p99 by second", "p50"):
        print(f"-- {metric}: B/A")
        control = [r[metric] for r in sets.get("control", []) if metric in r]
        for name, pairs in sets.items():
            x = [r[metric] for r in pairs if metric in r]
            if len(x) < 2:
                continue
            q = statistics.quantiles(x, n=4)
            line = (f"{name:<12} rounds {len(x):>3}  median {statistics.median(x):.3f}"
                    f" (quartiles {q[0]:.3f}-{q[2]:.3f})")
            if name != "control" and len(control) >= 2:
                boots = sorted(
                    statistics.median(rng.choices(x, k=len(x)))
                    / statistics.median(rng.choices(control, k=len(control)))
                    for _ in range(5000)
                )
                z, p = mann_whitney(x, control)
                line += (f"  vs control {statistics.median(x) / statistics.median(control):.3f}"
                         f" (95% bootstrap {boots[125]:.3f}-{boots[4874]:.3f}),"
                         f" Mann-Whitney p {p:.3f}")
            print(line)


main()
