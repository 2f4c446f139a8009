#!/usr/bin/env python3
"""Reads one perf/compaction-toggle.sh run: produce-ack latency in its
compact blocks against its delete blocks.

    perf/compaction-toggle.py [--settle SECONDS] [--calm-ms MS] [--compare A/B] DIR [DIR ...]

DIR is a run's results directory (bench-results/toggle-*); several runs
are pooled pair by pair. A block's seconds are the latency run's measured
seconds lying wholly inside the block after its first SECONDS (default 3).
Per block: the pooled histogram's p50, p99 and p99.9, and the median over
its seconds of each second's own p99 (p99/s: what a stall of a second
leaves of the block's p99). Per metric, over the pairs' compact/delete
ratios (or, with --compare A/B, A/B: the blocks of a run made with
--floor have a third policy, "floor"): the median, a 95% bootstrap interval of the median (pairs
resampled 5,000 times), the count above 1 and a two-sided sign test; and
the ratio of all compact seconds pooled over all delete seconds pooled,
with its own bootstrap interval. Stalled seconds (their own p99 above
--calm-ms, default 20) are counted per policy, with a binomial test over
seconds and, per pair, a sign test and a sign-flip permutation test;
"calm pairs" (no stalled second in either block) get the metrics again.
"""
import glob
import json
import math
import os
import random
import statistics
import sys

METRICS = ["p50", "p99", "p99.9", "p99/s"]


def quantile(histogram, q):
    """The q-quantile (ns) of {bucket's highest ns: count}."""
    total = sum(histogram.values())
    if total == 0:
        return 0
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= q * total:
            return value
    return max(histogram)


def pooled(histograms):
    merged = {}
    for histogram in histograms:
        for value, count in histogram.items():
            merged[value] = merged.get(value, 0) + count
    return merged


def load(directory, settle_ms):
    """[(pair, policy, block)], block = {"merged": the pooled histogram of its seconds, "p99s":
    [each second's p99, ns], "passes", "steal", "broker_cores"}."""
    paths = sorted(glob.glob(f"{directory}/latency-*.json"))
    if not paths:
        sys.exit(f"{directory}: no latency-*.json (did the latency run finish?)")
    result = json.load(open(paths[-1]))
    origin = result["started_unix_ms"]
    seconds = []
    for second in result["timeline"]:
        buckets = second.get("ack_histogram")
        if buckets:
            start = origin + 1000 * second["second"]
            seconds.append((start, {value: count for value, count in buckets}))
    blocks = []
    tick_hz = os.sysconf("SC_CLK_TCK")
    for line in open(f"{directory}/blocks.txt"):
        pair, policy, start, end, passes, before, after = line.split()
        start, end = int(start) + settle_ms, int(end)
        inside = [h for at, h in seconds if at >= start and at + 1000 <= end]
        d = [b - a for a, b in zip(map(int, before.split(",")), map(int, after.split(",")))]
        wall = (int(end) - int(line.split()[2])) / 1000
        blocks.append((f"{directory}#{pair}", policy, {
            "merged": pooled(inside),
            "p99s": [quantile(h, 0.99) for h in inside],
            "passes": int(passes),
            "broker_cores": d[0] / tick_hz / wall if wall > 0 else 0,
            "steal": 100 * d[3] / d[4] if d[4] else 0,
        }))
    return blocks


def metrics(blocks):
    """The metrics of some blocks' seconds together."""
    histogram = pooled(b["merged"] for b in blocks)
    p99s = [p for b in blocks for p in b["p99s"]]
    return {
        "p50": quantile(histogram, 0.50),
        "p99": quantile(histogram, 0.99),
        "p99.9": quantile(histogram, 0.999),
        "p99/s": statistics.median(p99s) if p99s else 0,
    }


def sign_test(above, n):
    """Two-sided p of `above` of n ratios above 1 with no effect."""
    if n == 0:
        return 1.0
    k = min(above, n - above)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def main(argv):
    settle = 3
    calm_ms = 20.0
    directories = []
    treated, base = "compact", "delete"
    args = iter(argv)
    for arg in args:
        if arg == "--settle":
            settle = int(next(args))
        elif arg == "--calm-ms":
            calm_ms = float(next(args))
        elif arg == "--compare":
            treated, _, base = next(args).partition("/")
        else:
            directories.append(arg)
    if not directories:
        sys.exit(__doc__)
    pairs = {}
    for directory in directories:
        for pair, policy, block in load(directory, settle * 1000):
            pairs.setdefault(pair, {})[policy] = block
    complete = [(k, {"delete": v[base], "compact": v[treated]}) for k, v in pairs.items()
                if base in v and treated in v and v[treated]["p99s"] and v[base]["p99s"]]
    if not complete:
        sys.exit(f"no pair has seconds of both {treated} and {base}")
    # From here on "delete" names the base blocks and "compact" the others.
    print(f"{treated}/{base}:")
    print(f"{'pair':<6}{'s':>3}" + "".join(f"{m:>16}" for m in METRICS)
          + f"  (ms {base} -> {treated})  passes  broker cores  steal %")
    ratios = {m: [] for m in METRICS}
    for index, (name, blocks) in enumerate(complete, 1):
        d, c = metrics([blocks["delete"]]), metrics([blocks["compact"]])
        cells = ""
        for m in METRICS:
            ratios[m].append(c[m] / d[m] if d[m] else float("nan"))
            cells += f"{d[m] / 1e6:>7.2f}->{c[m] / 1e6:<7.2f}"
        seconds = min(len(blocks["delete"]["p99s"]), len(blocks["compact"]["p99s"]))
        print(f"{index:<6}{seconds:>3}" + cells
              + f"  {blocks['delete']['passes']:>3}/{blocks['compact']['passes']:<3}"
              + f"  {blocks['delete']['broker_cores']:.2f}/{blocks['compact']['broker_cores']:.2f}"
              + f"  {blocks['delete']['steal']:.0f}/{blocks['compact']['steal']:.0f}")
    n = len(complete)
    passes = {p: statistics.median(b[p]["passes"] for _, b in complete) for p in ("delete", "compact")}
    print(f"\n{n} pairs; cleaner passes per block, median: {base} {passes['delete']}, {treated} {passes['compact']}")
    rng = random.Random(20261202)
    # Stalls: seconds whose own p99 is above --calm-ms. A shared host's
    # storage and CPU stalls fall on either policy; with no cleaner effect
    # a stalled second is a compact one as often as its share of seconds.
    def stalls(block):
        return sum(1 for v in block["p99s"] if v > calm_ms * 1e6)

    stalled = {p: sum(stalls(b[p]) for _, b in complete) for p in ("delete", "compact")}
    counted = {p: sum(len(b[p]["p99s"]) for _, b in complete) for p in ("delete", "compact")}
    share = counted["compact"] / (counted["compact"] + counted["delete"])
    total_stalled = stalled["compact"] + stalled["delete"]
    print(f"seconds with p99 > {calm_ms:g} ms: {base} {stalled['delete']} of {counted['delete']},"
          f" {treated} {stalled['compact']} of {counted['compact']}"
          f" (binomial p {binomial_test(stalled['compact'], total_stalled, share):.3f})")
    # Stalls come in storms longer than a second, so the seconds are not
    # independent and the binomial test above trusts them too much. The
    # pair is the unit the randomized order makes fair: per pair, compact's
    # stalled seconds minus delete's; a sign test over the pairs that
    # differ, and a sign-flip permutation test of the differences' sum.
    differences = [stalls(b["compact"]) - stalls(b["delete"]) for _, b in complete]
    more = sum(1 for x in differences if x > 0)
    fewer = sum(1 for x in differences if x < 0)
    print(f"pairs with more stalled seconds in {treated}: {more}, in {base}: {fewer}"
          f" (sign p {sign_test(more, more + fewer):.3f};"
          f" permutation p {flip_test(differences, rng):.3f})")
    calm = [i for i, (_, b) in enumerate(complete) if stalls(b["delete"]) == stalls(b["compact"]) == 0]
    print(f"calm pairs (no such second in either block): {len(calm)} of {n}\n")
    print(f"{'metric':<8}{'median of pair ratios (95%)':>32}{'above 1':>10}{'sign p':>9}"
          f"{'pooled ratio (95%)':>26}")
    for label, chosen in (("all pairs", list(range(n))), ("calm pairs", calm)):
        if len(chosen) >= 5:
            print(f"-- {label} ({len(chosen)})")
            summarize(complete, ratios, chosen, rng)


def flip_test(differences, rng, rounds=20000):
    """Two-sided p of the differences' sum if each difference's sign were a coin toss."""
    observed = abs(sum(differences))
    if observed == 0:
        return 1.0
    nonzero = [abs(x) for x in differences if x]
    extreme = sum(1 for _ in range(rounds)
                  if abs(sum(x if rng.random() < 0.5 else -x for x in nonzero)) >= observed)
    return (extreme + 1) / (rounds + 1)


def binomial_test(k, n, p):
    """Two-sided p of k successes of n at probability p (as extreme or more)."""
    if n == 0:
        return 1.0
    probabilities = [math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(n + 1)]
    observed = probabilities[k]
    return min(1.0, sum(q for q in probabilities if q <= observed * (1 + 1e-9)))


def summarize(complete, ratios, chosen, rng):
    n = len(chosen)
    boots = [[chosen[rng.randrange(n)] for _ in range(n)] for _ in range(5000)]

    def pooled_ratios(indices):
        d, c = (metrics([complete[i][1][policy] for i in indices]) for policy in ("delete", "compact"))
        return {m: c[m] / d[m] if d[m] else float("nan") for m in METRICS}

    whole_ratios = pooled_ratios(chosen)
    pooled_spread = [pooled_ratios(sample) for sample in boots[:1000]]  # pooling is slower
    for m in METRICS:
        every = ratios[m]
        values = [every[i] for i in chosen]
        median = statistics.median(values)
        resampled = sorted(statistics.median(every[i] for i in sample) for sample in boots)
        low, high = resampled[int(0.025 * len(resampled))], resampled[int(0.975 * len(resampled)) - 1]
        above = sum(1 for v in values if v > 1)

        whole = whole_ratios[m]
        spread = sorted(r[m] for r in pooled_spread)
        p_low, p_high = spread[int(0.025 * len(spread))], spread[int(0.975 * len(spread)) - 1]
        print(f"{m:<8}{median:>14.3f} ({low:.3f}-{high:.3f})     {above:>4}/{n:<4}{sign_test(above, n):>8.3f}"
              f"{whole:>12.3f} ({p_low:.3f}-{p_high:.3f})")


if __name__ == "__main__":
    main(sys.argv[1:])
