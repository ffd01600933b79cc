#!/usr/bin/env bash
# Issue 14's fairness acceptance between real daemons: one sender, three receivers, one of
# them behind a 2 Mbit/s lossy hop; the other two should get their fair share of the
# sender's bulk (within 20 %). The simulator's test (`conduit/tests/bulk_links.rs`,
# `a_slow_lossy_peer_does_not_hold_back_bulk_to_the_others`) with real `bauxite run`
# processes and real links:
#
#   H --[bauxite-linkemu: 20 Mbit/s, 10 ms, 150 kB buffer]-- S --veth-- R1
#                                                              S --veth-- R2
#                                                              S --[bauxite-linkemu: 2 Mbit/s,
#                                                                  LOSS, 50 kB buffer]-- R3
#
# H is the hub (three peers), S a router, R1-R3 robots (one peer each: H). Bulk: one
# iperf3 UDP stream from H to each robot's virtual address at RATE each, more than the
# uplink can give it (a fast peer's fair share is about 9 Mbit/s), so every peer's bulk
# queue stays full and the split is the tunnel's; each receiver's goodput from the
# server's per-second reports after the first SKIP seconds. Prints a markdown row per
# run (also appended to target/netns-fair.md).
#
#   sudo benches/netns/fair.sh [--loss 0.02] [--seconds 25] [--skip 5] [--rate 12M] [--runs 1]
#                              [--jitter MS] [--uplink PROFILE]
#
# --jitter MS puts R1 and R2 behind link emulators too (no rate limit, MS of delay with
# ± MS of in-order jitter) instead of plain veths: two robots on one busy radio behind the
# hub's uplink, where each window's own samples are noisy.
#
# --uplink PROFILE makes the hub's uplink a `bauxite-linkemu` profile (e.g. wifi, 40-80
# Mbit/s: give --rate 40M) instead of 20 Mbit/s and 10 ms: two robots on one access point,
# where both fast peers' windows read one jittery bottleneck.
#
# BAUXITE=PATH runs that bauxite binary, LINKEMU=PATH that emulator; BXBENCH_NO_BUILD=1
# skips the build; BXBENCH_LOGS=DIR keeps each run's daemon logs, iperf3 reports and
# emulator counters;
# BXBENCH_NODE_EXTRA adds lines to every node's [node] section (e.g.
# "bulk_repair = false"). Needs root, iproute2, iperf3. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

LOSS=0.02
SECONDS_RUN=25
SKIP=5
RATE=12M
RUNS=1
JITTER=""
UPLINK=""
while (($#)); do
  case "$1" in
    --loss) LOSS="$2"; shift 2 ;;
    --seconds) SECONDS_RUN="$2"; shift 2 ;;
    --skip) SKIP="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --jitter) JITTER="$2"; shift 2 ;;
    --uplink) UPLINK="$2"; shift 2 ;;
    *) echo "usage: $0 [--loss P] [--seconds S] [--skip S] [--rate R] [--runs N] [--jitter MS] [--uplink PROFILE]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
((SKIP < SECONDS_RUN)) || { echo "--skip must be shorter than --seconds" >&2; exit 2; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[ -n "${BXBENCH_NO_BUILD:-}" ] || cargo build --release -p bauxite -p bauxite-netem --bins -q
BAUXITE="${BAUXITE:-$TARGET_DIR/release/bauxite}"
LINKEMU="${LINKEMU:-$TARGET_DIR/release/bauxite-linkemu}"
WORK="$(mktemp -d)"
# shellcheck source=benches/netns/cpu.sh
. "$(dirname "$0")/cpu.sh"
P="${BXBENCH_PREFIX:-bxf$$}"
H=$P-h; S=$P-s; R1=$P-r1; R2=$P-r2; R3=$P-r3; M=$P-m
NSS=("$H" "$S" "$R1" "$R2" "$R3" "$M")
# Each node's namespace, by its name in the configs (h, r1-r3).
declare -A NS=([h]=$H [r1]=$R1 [r2]=$R2 [r3]=$R3)
OUT="$TARGET_DIR/netns-fair.md"
PIDS=()

teardown() {
  exec 5>&- 6>&- 7>&- 8>&-
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in "${NSS[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  PIDS=()
}
trap 'teardown; rm -rf "$WORK"' EXIT

# emulator FD NAME NS_A NS_B ADDR_A ADDR_B ARGS...: a link emulator between two namespaces
# (its stdin on descriptor FD: closing it stops the emulator).
emulator() {
  local fd=$1 name=$2 a=$3 b=$4 addr_a=$5 addr_b=$6; shift 6
  rm -f "$WORK/$name.in" "$WORK/$name.out"; mkfifo "$WORK/$name.in"
  ip netns exec "$M" chrt -f 20 "$LINKEMU" --netns-a "$a" --netns-b "$b" \
    --dev-a "${name}a" --dev-b "${name}b" --addr-a "$addr_a" --addr-b "$addr_b" "$@" \
    < "$WORK/$name.in" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PIDS+=($!)
  eval "exec $fd>\"\$WORK/\$name.in\""
  for _ in $(seq 100); do grep -q ready "$WORK/$name.out" && return 0; sleep 0.1; done
  echo "emulator $name did not start" >&2; cat "$WORK/$name.err" >&2; exit 1
}

# veth NAME NS_A NS_B ADDR_A ADDR_B: a plain link, NAMEa in NS_A and NAMEb in NS_B.
veth() {
  ip link add "${1}a" netns "$2" type veth peer name "${1}b" netns "$3"
  ip -n "$2" addr add "$4" dev "${1}a"; ip -n "$2" link set "${1}a" up
  ip -n "$3" addr add "$5" dev "${1}b"; ip -n "$3" link set "${1}b" up
}

# topology: the namespaces, links and routes above.
topology() {
  teardown
  for n in "${NSS[@]}"; do
    ip netns add "$n"; ip -n "$n" link set lo up
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip netns exec "$S" sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$UPLINK" ]; then
    emulator 7 up "$H" "$S" 10.78.0.1/30 10.78.0.2/30 \
      --profile "$UPLINK" --buffer-bytes 150000 --seed 7
  else
    emulator 7 up "$H" "$S" 10.78.0.1/30 10.78.0.2/30 \
      --rate-kbit 20000 --delay-ms 10 --buffer-bytes 150000 --seed 7
  fi
  if [ -n "$JITTER" ]; then
    emulator 5 r1 "$S" "$R1" 10.78.1.1/30 10.78.1.2/30 --delay-ms "$JITTER" --jitter-ms "$JITTER" --seed 5
    emulator 6 r2 "$S" "$R2" 10.78.2.1/30 10.78.2.2/30 --delay-ms "$JITTER" --jitter-ms "$JITTER" --seed 6
  else
    veth r1 "$S" "$R1" 10.78.1.1/30 10.78.1.2/30
    veth r2 "$S" "$R2" 10.78.2.1/30 10.78.2.2/30
  fi
  emulator 8 slow "$S" "$R3" 10.78.3.1/30 10.78.3.2/30 \
    --rate-kbit 2000 --loss "$LOSS" --buffer-bytes 50000 --seed 8
  ip -n "$H" route add default dev upa
  if [ -n "$JITTER" ]; then
    ip -n "$R1" route add default dev r1b
    ip -n "$R2" route add default dev r2b
  else
    ip -n "$R1" route add default via 10.78.1.1
    ip -n "$R2" route add default via 10.78.2.1
  fi
  ip -n "$R3" route add default dev slowb
}

# keys: an identity and peer entry per node.
keys() {
  for n in h r1 r2 r3; do
    "$BAUXITE" keygen --identity "$WORK/$n.key" --name "$n" | grep -v '^#' | sed 's/ *#.*$//' > "$WORK/$n.entry"
  done
}

# config NAME VIP PEERS...: NAME's config; each peer as NAME:VIP:ENDPOINT.
config() {
  local me=$1 vip=$2; shift 2
  {
    printf '[node]\nidentity = "%s"\nlisten = "0.0.0.0:51820"\nvirtual_ip = "%s/10"\ncontrol_socket = "%s"\n%b\n\n' \
      "$WORK/$me.key" "$vip" "$WORK/$me.sock" "${BXBENCH_NODE_EXTRA:-}"
    for peer in "$@"; do
      IFS=: read -r name pvip endpoint <<< "$peer"
      sed "s/100.64.0.X/$pvip/" "$WORK/$name.entry"
      printf 'endpoint = "%s:51820"\n\n' "$endpoint"
    done
  } > "$WORK/$me.toml"
}

# daemons: the hub and the three robots, up once the hub pings each robot.
daemons() {
  config h 100.64.0.1 r1:100.64.0.11:10.78.1.2 r2:100.64.0.12:10.78.2.2 r3:100.64.0.13:10.78.3.2
  for i in 1 2 3; do config "r$i" "100.64.0.1$i" h:100.64.0.1:10.78.0.1; done
  for n in h r1 r2 r3; do
    ip netns exec "${NS[$n]}" "$BAUXITE" run --config "$WORK/$n.toml" 2> "$WORK/$n.log" 5>&- 6>&- 7>&- 8>&- &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    local up=""
    for _ in $(seq 100); do
      ip netns exec "$H" ping -c1 -W 0.5 "100.64.0.1$i" >/dev/null 2>&1 && { up=1; break; }
    done
    [ -n "$up" ] || { echo "robot $i did not come up" >&2; cat "$WORK"/*.log >&2; exit 1; }
  done
}

# run: the three streams at once; prints "R1 R2 R3" goodputs in Mbit/s.
run() {
  local i
  for i in 1 2 3; do
    ip netns exec "${NS[r$i]}" iperf3 -s -1 -B "100.64.0.1$i" -p 5301 -J > "$WORK/server$i.json" 2>&1 5>&- 6>&- 7>&- 8>&- &
  done
  for i in 1 2 3; do
    for _ in $(seq 50); do ip netns exec "${NS[r$i]}" ss -lun | grep -q ":5301" && break; sleep 0.1; done
  done
  local flows=()
  for i in 1 2 3; do
    ip netns exec "$H" iperf3 -c "100.64.0.1$i" -p 5301 -u -b "$RATE" -l 1200 -t "$SECONDS_RUN" \
      -i 1 --json > "$WORK/flow$i.json" 2>&1 5>&- 6>&- 7>&- 8>&- &
    flows+=($!)
  done
  for f in "${flows[@]}"; do wait "$f" || true; done
  wait || true
  python3 - "$SKIP" "$WORK"/server{1,2,3}.json <<'PY'
import json, sys
skip = float(sys.argv[1])
out = []
for path in sys.argv[2:]:
    # The server's per-second reports: what arrived, after the first SKIP seconds.
    try:
        ivs = [i["sum"] for i in json.load(open(path))["intervals"]]
    except (ValueError, KeyError):
        out.append("nan")
        continue
    ivs = [i for i in ivs if i["start"] >= skip - 0.01]
    secs = sum(i["seconds"] for i in ivs)
    out.append("%.2f" % (sum(i["bytes"] * 8 for i in ivs) / secs / 1e6) if secs else "nan")
print(" ".join(out))
PY
}

[ -f "$OUT" ] || {
  echo "| commit | slow hop's loss | run | fast peer 1 | fast peer 2 | slow peer | worst fast / the two fast peers' mean | node extra | CPU steal |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
for r in $(seq "$RUNS"); do
  topology; keys; daemons
  cpu=$(cpu_ticks)
  read -r a b slow <<< "$(run)"
  fair=$(python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.3f' % (min(a,b)/((a+b)/2)))" "$a" "$b")
  echo "| $(git rev-parse --short HEAD) | $LOSS${JITTER:+ (fast hops ±$JITTER ms)}${UPLINK:+ (uplink $UPLINK)} | $r | $a Mbit/s | $b Mbit/s | $slow Mbit/s | $fair | ${BXBENCH_NODE_EXTRA:-} | $(steal_since "$cpu") |" | tee -a "$OUT"
  teardown
  if [ -n "${BXBENCH_LOGS:-}" ]; then
    mkdir -p "$BXBENCH_LOGS/run$r"
    cp "$WORK"/*.log "$WORK"/*.json "$WORK"/*.out "$WORK"/*.toml "$BXBENCH_LOGS/run$r/"
  fi
done
