#!/usr/bin/env python3
"""Produce-ack latency second by second, by how much of each second a
cleaner pass covered: a finer look at a perf/compaction-toggle.sh run than
its block ratios.

    perf/compaction-seconds.py bench-results/toggle-<time>

Each "log compacted" line of the broker log ends a pass and carries its
took_ms, so a pass spans [end - took_ms, end]. The measured seconds of
each block (after its settle second) are grouped: delete; compact with no
pass in the second; compact with passes covering under half of it; and at
least half. For each group: the medians of the seconds' p50 and p99.
"""

import datetime
import glob
import importlib.util
import json
import pathlib
import re
import statistics
import sys


def _toggle():
    """perf/compaction-toggle.py, for its quantile()."""
    path = pathlib.Path(__file__).with_name("compaction-toggle.py")
    spec = importlib.util.spec_from_file_location("compaction_toggle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quantile = _toggle().quantile


def passes(directory):
    """[(start_ms, end_ms, stepping_ms, finishing_ms)] from the broker log."""
    found = []
    for line in open(f"{directory}/broker.log"):
        if "log compacted" not in line:
            continue
        fields = dict(re.findall(r"(\w+)=([\d.]+)", line))
        if "took_ms" not in fields:
            sys.exit(f"{directory}: the broker logs no took_ms (a tidelog before 537b659)")
        end = datetime.datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
        end = end.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
        found.append((end - float(fields["took_ms"]), end,
                      float(fields["stepping_ms"]), float(fields["finishing_ms"])))
    return found


def main(directory):
    result = json.load(open(sorted(glob.glob(f"{directory}/latency-*.json"))[-1]))
    origin = result["started_unix_ms"]
    seconds = [(origin + 1000 * int(s["second"]), dict(s["ack_histogram"]))
               for s in result["timeline"] if s.get("ack_histogram")]
    cleaned = passes(directory)
    groups = {}
    for line in open(f"{directory}/blocks.txt"):
        _, policy, start, end = line.split()[:4]
        start, end = int(start) + 1000, int(end)
        for at, histogram in seconds:
            if at < start or at + 1000 > end:
                continue
            covered = sum(max(0, min(e, at + 1000) - max(s, at)) for s, e, _, _ in cleaned) / 1000
            group = ("delete" if policy == "delete" else "compact, no pass" if covered == 0
                     else "compact, pass <50%" if covered < 0.5 else "compact, pass >=50%")
            groups.setdefault(group, []).append(histogram)
    if cleaned:
        print(f"{len(cleaned)} passes, median took {statistics.median(e - s for s, e, _, _ in cleaned):.0f} ms,"
              f" stepping {statistics.median(p[2] for p in cleaned):.1f} ms,"
              f" finishing {statistics.median(p[3] for p in cleaned):.1f} ms")
    print(f"{'seconds':20} {'n':>4}  {'p50 ms':>7} {'p99 ms':>7}  (medians over the seconds)")
    for group in ["delete", "compact, no pass", "compact, pass <50%", "compact, pass >=50%"]:
        histograms = groups.get(group, [])
        if histograms:
            p50 = statistics.median(quantile(h, 0.50) for h in histograms) / 1e6
            p99 = statistics.median(quantile(h, 0.99) for h in histograms) / 1e6
            print(f"{group:20} {len(histograms):4}  {p50:7.2f} {p99:7.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
