#!/usr/bin/env python3
"""Where a bulk flow's goodput goes, from iperf3's one-second reports.

`links.sh` with BXBENCH_LOGS=DIR keeps each Bauxite run's iperf3 output as
DIR/PROFILE-DEPTH-iperf3.txt (the bare link's in DIR/bare). Given such files (or
directories holding them, not their subdirectories), this prints
per profile, against the profile's mean capacity: the flow's mean (iperf3's sender, per
second), its median second after the first two, the points lost in slumps (seconds under
--slump times that median, after the first two: on `wifi` the seconds around each
outage), and the points lost in the first two seconds (start-up). docs/congestion.md
section 13 quotes it for `wifi`. On `lte` the seconds swing with the schedule (a second
at nothing in every period), so its median says little there.

    benches/netns/flow-seconds.py [--slump 0.8] [--capacity wifi=49.5 ...] DIR_OR_FILE ...
"""
import argparse
import os
import re
import statistics

# The schedules' mean capacity, Mbit/s (links.sh: the profile's rate integrated).
CAPACITY = {"lte": 17.5, "lte-literal": 17.5, "wifi": 49.5}
UNIT = {"K": 1e-3, "M": 1.0, "G": 1e3, "": 1e-6}
LINE = re.compile(r"\]\s+\d+\.\d+-\s*\d+\.\d+\s+sec\s+[\d.]+ \w*Bytes\s+([\d.]+) (\w?)bits/sec")


def seconds(path):
    """iperf3's per-second rates in Mbit/s (its closing sender/receiver lines left out)."""
    rates = []
    for line in open(path, errors="replace"):
        if "sender" in line or "receiver" in line:
            continue
        m = LINE.search(line)
        if m:
            rates.append(float(m.group(1)) * UNIT[m.group(2)])
    return rates


def files(args):
    for arg in args:
        if os.path.isdir(arg):
            # Not recursive: links.sh keeps the bare link's runs in DIR/bare.
            for name in sorted(os.listdir(arg)):
                if name.endswith("-iperf3.txt"):
                    yield os.path.join(arg, name)
        else:
            yield arg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slump", type=float, default=0.8)
    parser.add_argument("--capacity", action="append", default=[], metavar="PROFILE=MBIT")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    capacity = dict(CAPACITY)
    for item in args.capacity:
        name, value = item.split("=")
        capacity[name] = float(value)
    runs = {}
    for path in files(args.paths):
        profile = os.path.basename(path).rsplit("-", 2)[0]
        rates = seconds(path)
        if profile not in capacity or len(rates) < 6:
            continue
        runs.setdefault(profile, []).append(rates)
    for profile, all_rates in sorted(runs.items()):
        cap = capacity[profile]
        means, medians, slumps, starts = [], [], [], []
        for rates in all_rates:
            steady = rates[2:]
            median = statistics.median(steady)
            n = len(rates)
            means.append(statistics.mean(rates) / cap)
            medians.append(median / cap)
            slumps.append(sum(median - r for r in steady if r < args.slump * median) / n / cap)
            starts.append(sum(median - r for r in rates[:2]) / n / cap)
        pct = lambda xs: 100 * statistics.mean(xs)
        print(
            f"{profile}: {len(all_rates)} flows against {cap} Mbit/s: mean {pct(means):.1f} %, "
            f"median second {pct(medians):.1f} %, slumps cost {pct(slumps):.1f} points, "
            f"start-up {pct(starts):.1f} points"
        )


if __name__ == "__main__":
    main()
