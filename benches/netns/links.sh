#!/usr/bin/env bash
# Issue 14's promise between real daemons on emulated robot links: a 1 kHz control loop
# (ICMP echoes on the Critical lane, sent by `bauxite-icmploop` on a fixed schedule:
# iputils' ping slows to about 170 Hz on a 6 ms path) beside a saturating bulk transfer
# (one iperf3 TCP flow, CUBIC unless --tcp says otherwise), against the same loop on the
# idle link, through `bauxite-linkemu` (docs/link-emulator.md) on its LTE-like and
# Wi-Fi-like profiles, for each buffer depth in front of the emulator's rate limit.
# Paths: the bare emulated link
# (underlay addresses), Bauxite (`bauxite run` in each side's namespace) and boringtun
# (as in run.sh: `boringtun-cli` from PATH or `cargo install`ed into the target dir;
# skipped when that fails).
#
#   sudo benches/netns/links.sh [--profiles lte,wifi] [--depths 32000,150000,500000]
#                               [--pings N] [--warmup S] [--only bare,bauxite,boringtun]
#                               [--tcp cubic|bbr|reno] [--udp RATE]
#
# --udp RATE makes the bulk transfer one iperf3 UDP stream at RATE (e.g. 60M, more than
# the link's best second) instead of TCP: the tunnel's bulk controller alone, without
# TCP's own reaction to loss and delay above it (its goodput is what arrived).
#
# Per run: the idle loop; then the flow starts, and once it has run --warmup seconds the
# loaded loop runs beside it; the flow outlasts the loop by 4 s, and only replies that
# arrived while it still ran count (the row says how many). Each loop is one whole period
# of the profile's schedule at 1 kHz (LTE 6000 echoes, Wi-Fi 10000; --pings overrides),
# and the warm-up one period too (--warmup overrides), so idle and loaded see every step
# of the schedule once, wherever in it they start: with shorter loops the two could cover
# different steps, and their p99s would compare the schedule, not the load.
#
# Bulk, two ways, each against the capacity the emulator's schedule gave over the same
# time (its snapshots: the profile's rate integrated, nothing in outages; the means are
# LTE 17.5 Mbit/s, Wi-Fi 49.5): iperf3's goodput over the whole flow, start-up included;
# and the link use while the loaded loop ran, the IP bytes the emulator wrote A->B less
# what the idle loop's period wrote per second (the echoes, keepalives, acks): bulk's
# share of the link in steady state, the tunnel's headers and TCP's retransmissions
# included. Prints a markdown table (also written to target/netns-links.md). Needs root,
# iproute2, iperf3. Cleans up its namespaces on exit, also on failure.
# BXBENCH_LOGS=DIR keeps each Bauxite run's daemon logs and iperf3's output there (A sends
# the bulk; the bare link's iperf3 output goes to DIR/bare); with
# RUST_LOG=info,bauxite_conduit::path::adaptive=debug they trace the bulk window.
# EMU_ARGS="--loss 0" passes more flags to the emulator (they override the preset's).
set -euo pipefail
cd "$(dirname "$0")/../.."

PROFILES="lte,wifi"
DEPTHS="32000,150000,500000"
PINGS=""
WARMUP=""
ONLY="bare,bauxite,boringtun"
# The flow's congestion control, named: the kernel's default is a sysctl
# (net.ipv4.tcp_congestion_control), and on this project's test machine it is bbr.
# Until session 28 the flow took it while the table said "cubic".
TCP="cubic"
UDP=""
while (($#)); do
  case "$1" in
    --profiles) PROFILES="$2"; shift 2 ;;
    --depths) DEPTHS="$2"; shift 2 ;;
    --pings) PINGS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --tcp) TCP="$2"; shift 2 ;;
    --udp) UDP="$2"; shift 2 ;;
    *) echo "usage: $0 [--profiles lte,wifi] [--depths B,B,...] [--pings N] [--warmup S] [--only bare,bauxite,boringtun] [--tcp cubic|bbr|reno] [--udp RATE]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# BXBENCH_NO_BUILD=1 uses the release binaries already in the target dir; BAUXITE=PATH
# runs that bauxite binary instead (an A/B of two builds), LINKEMU=PATH that emulator.
[ -n "${BXBENCH_NO_BUILD:-}" ] || cargo build --release -p bauxite -p bauxite-netem --bins -q
BAUXITE="${BAUXITE:-$TARGET_DIR/release/bauxite}"
LINKEMU="${LINKEMU:-$TARGET_DIR/release/bauxite-linkemu}"
ICMPLOOP="$TARGET_DIR/release/bauxite-icmploop"
BORINGTUN="$(command -v boringtun-cli || true)"
if [[ -z "$BORINGTUN" && ",$ONLY," == *",boringtun,"* ]]; then
  cargo install boringtun-cli --version 0.7.1 --locked -q --root "$TARGET_DIR/boringtun-cli" \
    && BORINGTUN="$TARGET_DIR/boringtun-cli/bin/boringtun-cli" || echo "cannot build boringtun-cli" >&2
fi
# The emulator stands in for the link's hardware, which the daemons' CPU use cannot delay;
# the daemons raise themselves to SCHED_FIFO 10 (`node.realtime_priority`), so on two
# busy cores an emulator at normal priority wrote packets late whenever they ran, and the
# lateness was jitter the profile does not have. It runs at SCHED_FIFO 20 unless
# BXBENCH_EMU_PRIO=0. BXBENCH_EMU_CPUS=LIST pins it (`taskset -c LIST`; on two cores it
# made the emulator later, docs/link-emulator.md).
EMU_PRIO="${BXBENCH_EMU_PRIO:-20}"
EMU_WRAP=""
[ "$EMU_PRIO" = 0 ] || EMU_WRAP="chrt -f $EMU_PRIO"
[ -z "${BXBENCH_EMU_CPUS:-}" ] || EMU_WRAP="taskset -c $BXBENCH_EMU_CPUS $EMU_WRAP"
WORK="$(mktemp -d)"
P="${BXBENCH_PREFIX:-bxl$$}"
A=$P-a; B=$P-b; M=$P-m
OUT="$TARGET_DIR/netns-links.md"
PIDS=()

cleanup() {
  exec 7>&-
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in "$A" "$B" "$M"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# emulator PROFILE DEPTH: fresh namespaces with the emulator between them; the cell's
# CPU reading starts here.
emulator() {
  cleanup_run
  CELL_CPU=$(cpu_ticks)
  for n in "$A" "$B" "$M"; do
    ip netns add "$n"; ip -n "$n" link set lo up
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  rm -f "$WORK/emu.in" "$WORK/emu.out"; mkfifo "$WORK/emu.in"
  ip netns exec "$M" $EMU_WRAP "$LINKEMU" --netns-a "$A" --netns-b "$B" --addr-a 10.77.0.1/30 \
    --addr-b 10.77.0.2/30 --profile "$1" --buffer-bytes "$2" --seed 7 ${EMU_ARGS:-} \
    < "$WORK/emu.in" > "$WORK/emu.out" 2> "$WORK/emu.err" &
  EMU=$!; PIDS+=("$EMU")
  exec 7>"$WORK/emu.in"
  for _ in $(seq 100); do grep -q ready "$WORK/emu.out" && return 0; sleep 0.1; done
  echo "emulator did not start" >&2; cat "$WORK/emu.err" >&2; exit 1
}
cleanup_run() {
  exec 7>&-
  for n in "$A" "$B" "$M"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  PIDS=()
}

# loop DST FILE COUNT: COUNT echoes at 1 kHz, each reply with its arrival time, as
# `ping -D` prints them.
loop() {
  ip netns exec "$A" "$ICMPLOOP" -c "$3" -i 1000 -W 1000 -s 56 "$1" > "$2" 2>&1 || true
}

# shellcheck source=benches/netns/ping-stats.sh
. "$(dirname "$0")/ping-stats.sh"

# emu_snapshot: the emulator's counters so far (a line on its stdin asks for them).
emu_snapshot() {
  local n; n=$(wc -l < "$WORK/emu.out")
  echo >&7
  for _ in $(seq 100); do [ "$(wc -l < "$WORK/emu.out")" -gt "$n" ] && break; sleep 0.05; done
  sed -n "$((n + 1))p" "$WORK/emu.out"
}

# shares I0 I1 F0 F1 L0 L1 GOODPUT_MBIT: "goodput cell | link use cell" from the
# emulator's snapshots around the idle loop (I), the flow (F) and the loaded loop (L).
# Goodput: iperf3's over the whole flow, start-up included, against the capacity the
# schedule gave over the flow. Link use: the IP bytes the emulator wrote A->B while the
# loaded loop ran, less what the idle loop's period wrote per second (the echoes, the
# tunnel's keepalives and acks), against the capacity over the loop: bulk's share of the
# link in steady state, headers and retransmissions included.
shares() {
  python3 -c 'import json,sys
i0, i1, f0, f1, l0, l1 = (json.loads(a) for a in sys.argv[1:7])
good = float(sys.argv[7])
secs = lambda a, b: (b["at_us"] - a["at_us"]) / 1e6
cap = lambda a, b: (b["capacity_bits"] - a["capacity_bits"]) / 1e6
bits = lambda a, b: 8 * (b["a_to_b"]["written_bytes"] - a["a_to_b"]["written_bytes"]) / 1e6
flow_cap = cap(f0, f1) / secs(f0, f1)
loop_secs = secs(l0, l1)
bulk = (bits(l0, l1) - bits(i0, i1) / secs(i0, i1) * loop_secs) / loop_secs
loop_cap = cap(l0, l1) / loop_secs
print("%.1f Mbit/s = %.0f %% of %.1f over %.0f s | %.1f Mbit/s = %.0f %% of %.1f" % (
    good, 100 * good / flow_cap, flow_cap, secs(f0, f1), bulk, 100 * bulk / loop_cap, loop_cap))' "$@" 2>/dev/null || echo "? | ?"
}

# measure DST PINGS WARMUP: one table cell group: idle loop; loaded loop; bulk; link use.
# The loaded loop starts once the flow has run WARMUP seconds; the flow outlasts it.
measure() {
  local dst=$1 pings=$2 warmup=$3 idle loaded bulk i0 i1 f0 f1 l0 l1
  local seconds=$(( warmup + (pings + 999) / 1000 + 4 ))
  i0=$(emu_snapshot)
  loop "$dst" "$WORK/idle.txt" "$pings"
  i1=$(emu_snapshot)
  idle="$(ping_stats "$WORK/idle.txt" "$pings" 1)"
  ip netns exec "$B" iperf3 -s -1 -B "$dst" > /dev/null 2>&1 &
  local server=$!
  for _ in $(seq 50); do ip netns exec "$B" ss -ltn | grep -q ":5201" && break; sleep 0.1; done
  f0=$(emu_snapshot)
  rm -f "$WORK/flow.end"
  local kind=(-C "$TCP"); [ -z "$UDP" ] || kind=(-u -b "$UDP" -l 1200)
  (ip netns exec "$A" iperf3 -c "$dst" "${kind[@]}" -t "$seconds" -i 1 --forceflush > "$WORK/bulk.txt" 2>&1
   date +%s.%N > "$WORK/flow.end") &
  local flow=$!
  # iperf3 prints a line per second of the flow: wait for WARMUP of them.
  for _ in $(seq $(( (warmup + 10) * 10 ))); do
    [ "$(grep -c " sec " "$WORK/bulk.txt" 2>/dev/null)" -ge "$warmup" ] && break; sleep 0.1
  done
  l0=$(emu_snapshot)
  loop "$dst" "$WORK/loaded.txt" "$pings"
  l1=$(emu_snapshot)
  wait "$flow" || true
  f1=$(emu_snapshot)
  # Only the replies that arrived while the flow still ran count (the row says how many).
  local ended; ended=$(cat "$WORK/flow.end")
  wait "$server" || true
  loaded=$(ping_stats "$WORK/loaded.txt" "$pings" 1 "$ended")
  # The receiver's line: "... 12.3 Mbits/sec [jitter, lost/total for UDP] receiver".
  bulk=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i ~ /bits\/sec$/) { v = $(i-1); u = $i } } END {
      print (u == "Kbits/sec") ? v / 1000 : (u == "Gbits/sec") ? v * 1000 : v }' "$WORK/bulk.txt")
  printf '%s | %s | %s' "$idle" "$loaded" "$(shares "$i0" "$i1" "$f0" "$f1" "$l0" "$l1" "${bulk:-0}")"
}

# shellcheck source=benches/netns/pair.sh
. "$(dirname "$0")/pair.sh"
# shellcheck source=benches/netns/cpu.sh
. "$(dirname "$0")/cpu.sh"

# The emulator's own view: how late it wrote packets (its timing noise). Call it after
# `exec 7>&-` in the main shell (a command substitution's subshell closing its copy of
# the emulator's stdin would not end it); the daemons never hold that descriptor.
emu_counters() {
  # The final report is the last line once it is not a snapshot.
  for _ in $(seq 50); do
    tail -1 "$WORK/emu.out" | grep -v snapshot | grep -q lateness && break; sleep 0.1
  done
  tail -1 "$WORK/emu.out" | python3 -c 'import json,sys
j=json.loads(sys.stdin.read()); l=j.get("lateness",{})
w=j.get("writes",{}).get("over_1ms","?"); k=j.get("wakeups",{}).get("over_1ms","?")
print("late mean %s us, >1 ms %s (writes >1 ms %s, wake-ups >1 ms %s)" % (l.get("mean_us","?"), l.get("over_1ms","?"), w, k))' 2>/dev/null || echo "?"
}

# The emulator column: its counters, and the CPU the hypervisor took during the cell.
emu_column() {
  echo "$(emu_counters); CPU steal $(steal_since "$CELL_CPU")"
}

{
  echo "Commit $(git rev-parse --short HEAD), $(nproc) cores, kernel $(uname -r); ${PINGS:-one period of} echoes at 1 kHz idle and beside one iperf3 $([ -n "$UDP" ] && echo "UDP stream at $UDP" || echo "TCP flow ($TCP)"), bauxite-linkemu --seed 7 ($([ -n "$EMU_WRAP" ] && echo "under $EMU_WRAP" || echo "at normal priority"))."
  echo
  echo "| profile | buffer | path | loop idle (RTT) | loop beside bulk (RTT) | bulk: goodput over the whole flow, of the capacity (Mbit/s) | bulk: link use A→B beside the loop, of the capacity (Mbit/s) | emulator |"
  echo "|---|---|---|---|---|---|---|---|"
} | tee "$OUT"
IFS=, read -ra profiles <<< "$PROFILES"
IFS=, read -ra depths <<< "$DEPTHS"
for profile in "${profiles[@]}"; do
  # One period of the schedule at 1 kHz (netem/src/profile.rs: LTE 6 s, Wi-Fi 10 s).
  pings=6000; [ "$profile" = wifi ] && pings=10000
  pings=${PINGS:-$pings}
  for depth in "${depths[@]}"; do
    if [[ ",$ONLY," == *",bare,"* ]]; then
      emulator "$profile" "$depth"
      row=$(measure 10.77.0.2 "$pings" "${WARMUP:-$((pings / 1000))}"); exec 7>&-
      echo "| $profile | $depth B | bare link | $row | $(emu_column) |" | tee -a "$OUT"
      if [ -n "${BXBENCH_LOGS:-}" ]; then
        mkdir -p "$BXBENCH_LOGS/bare"
        cp "$WORK/bulk.txt" "$BXBENCH_LOGS/bare/$profile-$depth-iperf3.txt"
      fi
    fi
    if [[ ",$ONLY," == *",bauxite,"* ]]; then
      emulator "$profile" "$depth"; start_bauxite 10.77.0.1 10.77.0.2
      row=$(measure 100.64.0.2 "$pings" "${WARMUP:-$((pings / 1000))}"); exec 7>&-
      echo "| $profile | $depth B | bauxite | $row | $(emu_column) |" | tee -a "$OUT"
      if [ -n "${BXBENCH_LOGS:-}" ]; then
        mkdir -p "$BXBENCH_LOGS"
        cp "$WORK/a.log" "$BXBENCH_LOGS/$profile-$depth-a.log"
        cp "$WORK/b.log" "$BXBENCH_LOGS/$profile-$depth-b.log"
        cp "$WORK/bulk.txt" "$BXBENCH_LOGS/$profile-$depth-iperf3.txt"
      fi
    fi
    if [[ ",$ONLY," == *",boringtun,"* ]]; then
      if [ -n "$BORINGTUN" ] && command -v wg >/dev/null; then
        emulator "$profile" "$depth"; start_boringtun 10.77.0.1 10.77.0.2 1
        row=$(measure 10.99.0.2 "$pings" "${WARMUP:-$((pings / 1000))}"); exec 7>&-
        echo "| $profile | $depth B | boringtun -t 1 | $row | $(emu_column) |" | tee -a "$OUT"
      else
        echo "| $profile | $depth B | boringtun | not available | | | | |" | tee -a "$OUT"
      fi
    fi
  done
done
