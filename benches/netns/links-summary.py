#!/usr/bin/env python3
"""Several runs of `links.sh`, summarised per build: the A/B tables of docs/benchmarks.md.

Each argument is LABEL=FILE: a file `links.sh` printed (its markdown table), under the
label of the build that ran it; give a label as many files as it has runs. Per label,
profile and path it prints the cells counted, those where the loop's p99 beside bulk
rose more than 2 ms over idle, and the means (and median) of bulk's link use and
goodput; then per buffer depth the median and worst rise of the p99 and the means.
A cell whose emulator wrote --late-max packets or more over 1 ms late is left out and
named: the machine, not the build, delayed the link in that run.

    benches/netns/links-summary.py [--late-max 150] before=/tmp/a1.txt now=/tmp/b1.txt ...
"""
import argparse
import collections
import re
import statistics


def cells(path):
    """(profile, buffer in kB, path, p99 rise in ms, link use %, goodput %, late) rows."""
    for line in open(path, errors="replace"):
        c = [x.strip() for x in line.split("|")]
        if len(c) < 9 or not re.match(r"\d+ B$", c[2]):
            continue
        idle = re.search(r"p99 ([\d.]+)", c[4])
        loaded = re.search(r"p99 ([\d.]+)", c[5])
        good = re.search(r"= (\d+) %", c[6])
        link = re.search(r"= (\d+) %", c[7])
        late = re.search(r">1 ms (\d+)", c[8])
        if not (idle and loaded and good and link):
            continue
        yield (c[1], int(c[2].split()[0]) // 1000, c[3],
               float(loaded.group(1)) - float(idle.group(1)),
               int(link.group(1)), int(good.group(1)),
               int(late.group(1)) if late else 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--late-max", type=int, default=150)
    parser.add_argument("runs", nargs="+", metavar="LABEL=FILE")
    args = parser.parse_args()
    groups = collections.defaultdict(list)
    for run in args.runs:
        label, _, path = run.partition("=")
        for profile, kb, where, rise, link, good, late in cells(path):
            if late >= args.late_max:
                print(f"left out: {path} {profile} {kb} kB {where} ({late} packets late)")
                continue
            groups[(label, profile, where)].append((kb, rise, link, good))
    for (label, profile, where), rows in groups.items():
        over = [f"{r[1]:+.1f} ms at {r[0]} kB" for r in rows if r[1] > 2]
        links = [r[2] for r in rows]
        print(f"{label} {profile} {where}: {len(rows)} cells, {len(over)} over +2 ms"
              f"{' (' + ', '.join(over) + ')' if over else ''}; link use mean "
              f"{statistics.mean(links):.1f} % (median {statistics.median(links):g}), "
              f"goodput mean {statistics.mean(r[3] for r in rows):.1f} %")
        for kb in sorted({r[0] for r in rows}):
            at = [r for r in rows if r[0] == kb]
            rises = [r[1] for r in at]
            print(f"    {kb} kB: {len(at)} cells, p99 rise median {statistics.median(rises):+.1f}"
                  f" (worst {max(rises):+.1f}) ms, link use {min(r[2] for r in at)}-"
                  f"{max(r[2] for r in at)} % mean {statistics.mean(r[2] for r in at):.1f}, "
                  f"goodput mean {statistics.mean(r[3] for r in at):.1f} %")


if __name__ == "__main__":
    main()
