#!/usr/bin/env python3
"""The sending daemon's adaptive-window trace, summarised per log file.

Reads the `adaptive window` lines that `RUST_LOG=info,bauxite_conduit::path::adaptive=debug`
writes every 100 ms (conduit/src/path/adaptive/trace.rs; text or `--log-format json`)
from the logs `links.sh` keeps
with BXBENCH_LOGS=DIR (`*-a.log`: A sends the bulk), and prints, over the lines where
bulk flowed (sent at least --min-mbit): their count, how many were on the envelope, the
means of the sent and pacing rates, window, flight, round trip, target, the envelope's
queue and the pacer's lateness, and how many lines had the window above twice the
flight plus a segment ("banked": a window the flight does not use).

    benches/netns/adaptive-trace.py [--min-mbit 5] /tmp/bx-logs/*-a.log
"""
import argparse
import re
import statistics

MSS = 1350


def lines(path):
    for line in open(path, errors="replace"):
        if "adaptive window" in line:
            yield {k: float(v) if v not in ("true", "false") else v == "true"
                   for k, v in re.findall(r'"?(\w+)"?[=:](-?[\d.]+|true|false)', line)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-mbit", type=float, default=5.0)
    parser.add_argument("logs", nargs="+")
    args = parser.parse_args()
    for path in args.logs:
        rows = [r for r in lines(path) if r.get("sent_mbit", 0) >= args.min_mbit]
        if not rows:
            print(f"{path}: no lines with bulk")
            continue
        mean = lambda k: statistics.mean(r[k] for r in rows)
        banked = sum(r["cwnd"] > 2 * r["flight"] + MSS for r in rows)
        envelope = sum(r["on_envelope"] for r in rows)
        print(f"{path}: {len(rows)} lines, {envelope} on the envelope, {banked} banked; "
              f"sent {mean('sent_mbit'):.1f} Mbit/s, pacing {mean('pacing_mbit'):.1f}, "
              f"window {mean('cwnd') / 1e3:.0f} kB, flight {mean('flight') / 1e3:.0f} kB, "
              f"srtt {mean('srtt_us') / 1e3:.2f} ms, target {mean('target_us') / 1e3:.2f} ms, "
              f"envelope {mean('envelope_us') / 1e3:.2f} ms, late {mean('late_mean_us'):.0f} us")


if __name__ == "__main__":
    main()
