#!/usr/bin/env python3
"""Pools the paired produce-ack ratios (each B phase against the A just
before it) of several perf/compaction-latency.sh runs and compares each set
with the A/A control set.

    perf/compaction-pool.py control=DIR[,DIR...] NAME=DIR[,DIR...] ...

DIR is a run's results directory (bench-results/compaction-*). Prints, per
set, the number of rounds and the median and quartiles of the p99 and p50
ratios; per set against `control`, the ratio of their p99 medians with a
95% bootstrap interval (rounds resampled 5,000 times) and a two-sided
Mann-Whitney U test (normal approximation).
"""
import glob
import json
import math
import random
import re
import statistics
import sys


def rounds(directory):
    """{(phase, round): (p50, p99)} of produce-ack latency, in µs."""
    found = {}
    for path in glob.glob(f"{directory}/latency-*-*.json"):
        match = re.search(r"latency-([AB])(\d+)-", path)
        if not match:
            continue
        ack = json.load(open(path))["produce_ack_latency"]
        found[(match.group(1), int(match.group(2)))] = (ack["p50_us"], ack["p99_us"])
    return found


def ratios(directories):
    out = []
    for directory in directories:
        phases = rounds(directory)
        for (phase, number), (p50, p99) in sorted(phases.items()):
            before = phases.get(("A", number))
            if phase == "B" and before and before[0] and before[1]:
                out.append((p50 / before[0], p99 / before[1]))
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
    for name, pairs in sets.items():
        if len(pairs) < 2:
            print(f"{name}: fewer than two rounds")
            continue
        p99 = [p for _, p in pairs]
        q = statistics.quantiles(p99, n=4)
        p50 = statistics.median(p for p, _ in pairs)
        print(f"{name:<10} rounds {len(pairs):>3}  p99 ratio median {statistics.median(p99):.3f}"
              f" (quartiles {q[0]:.3f}-{q[2]:.3f})  p50 ratio median {p50:.3f}")
    control = [p for _, p in sets.get("control", [])]
    if len(control) < 2:
        return
    rng = random.Random(1)
    for name, pairs in sets.items():
        x = [p for _, p in pairs]
        if name == "control" or len(x) < 2:
            continue
        boots = sorted(
            statistics.median(rng.choices(x, k=len(x)))
            / statistics.median(rng.choices(control, k=len(control)))
            for _ in range(5000)
        )
        z, p = mann_whitney(x, control)
        print(f"{name} vs control: p99 medians {statistics.median(x) / statistics.median(control):.3f}"
              f" (95% bootstrap {boots[125]:.3f}-{boots[4874]:.3f}), Mann-Whitney z {z:.2f} p {p:.3f}")


main()
