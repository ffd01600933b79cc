#!/usr/bin/env bash
# Real-network benchmark: two network namespaces joined by a veth pair; TCP throughput
# (iperf3, cubic) and control-loop latency (1000 pings) idle, under saturating load,
# and on a 20 Mbit/s tbf link — over the bare veth, through Bauxite, and through
# boringtun (userspace WireGuard; `boringtun-cli` 0.7.1 is built with `cargo install` into
# the target dir when it is not on PATH, `wg` comes from wireguard-tools via setup.sh).
#
#   sudo benches/netns/run.sh [--seconds N] [--only bare,bauxite,boringtun] [--soak SECONDS]
#
# Bauxite is measured twice: under SCHED_FIFO 10 as edge/systemd/bauxite.service runs it
# (BXBENCH_WRAP overrides the wrapper), and with default scheduling.
# BXBENCH_NODE_EXTRA='key = value' adds lines to both nodes' [node] section (e.g.
# 'bulk_target_delay_us = 0' to compare without bulk pacing).
# --soak SECONDS: afterwards, one cubic flow saturates the Bauxite tunnel for SECONDS while
# both nodes' resident memory (VmRSS) is sampled every 10 s (issue 3: RSS stays flat).
#
# Prints a markdown table (also written to target/netns-bench.md). Needs root,
# iproute2, iperf3, iputils-ping (scripts/setup.sh installs them). Builds bauxite in
# release mode. Cleans up its namespaces on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=10
ONLY="bare,bauxite,boringtun"
SOAK=0
while (($#)); do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --soak) SOAK="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--only bare,bauxite,boringtun] [--soak SECONDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
bash scripts/setup.sh

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# BXBENCH_NO_BUILD=1 skips the build; BAUXITE=PATH runs that binary (an A/B of two builds).
[ -n "${BXBENCH_NO_BUILD:-}" ] || cargo build --release -p bauxite --locked -q
BAUXITE="${BAUXITE:-$TARGET_DIR/release/bauxite}"
BORINGTUN="$(command -v boringtun-cli || true)"
if [[ -z "$BORINGTUN" && ",$ONLY," == *",boringtun,"* ]]; then
  cargo install boringtun-cli --version 0.7.1 --locked -q --root "$TARGET_DIR/boringtun-cli" \
    && BORINGTUN="$TARGET_DIR/boringtun-cli/bin/boringtun-cli" || echo "cannot build boringtun-cli" >&2
fi
WORK="$(mktemp -d)"
P="${BXBENCH_PREFIX:-bxbench}" # namespace/veth prefix, so two checkouts can bench side by side
A=$P-a; B=$P-b; VA=${P}va; VB=${P}vb
OUT="$TARGET_DIR/netns-bench.md"
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup_ns_only() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
cleanup_ns_only

ip netns add "$A"; ip netns add "$B"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$A"; ip link set "$VB" netns "$B"
ip -n "$A" addr add 10.88.0.1/24 dev "$VA"; ip -n "$B" addr add 10.88.0.2/24 dev "$VB"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "$VA" up; ip -n "$B" link set "$VB" up
ip netns exec "$B" iperf3 -s -D -I "$WORK/iperf3.pid"
wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }
wait_file "$WORK/iperf3.pid"
PIDS+=("$(cat "$WORK/iperf3.pid")")

# cpu_ticks PID...: user+system clock ticks of the given processes.
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# throughput DST STREAMS: Gbit/s received, and CPU seconds per GB of the VPN processes.
throughput() {
  local dst=$1 streams=$2 before after gbits bytes
  before=$(cpu_ticks "${VPN_PIDS[@]}")
  ip netns exec "$A" iperf3 -c "$dst" -C cubic -P "$streams" -t "$SECONDS_PER_RUN" -f g > "$WORK/iperf.txt"
  after=$(cpu_ticks "${VPN_PIDS[@]}")
  gbits=$(awk '/receiver/ {v=$(NF-2)} END {print v}' "$WORK/iperf.txt")
  bytes=$(awk -v g="$gbits" -v s="$SECONDS_PER_RUN" 'BEGIN {print g * s / 8}')
  if ((${#VPN_PIDS[@]})); then
    awk -v g="$gbits" -v b="$bytes" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "%.2f Gb/s (%.1f CPU-s/GB)", g, (t / hz) / b}'
  else
    awk -v g="$gbits" 'BEGIN {printf "%.2f Gb/s", g}'
  fi
}

# pings DST: 1000 pings at 200 Hz into $WORK/ping.txt, each reply with its arrival time
# (-D: [unix seconds]).
pings() {
  ip netns exec "$A" ping -D -n -c 1000 -i 0.005 -W 1 -s 56 "$1" > "$WORK/ping.txt" 2>&1 || true
}

# shellcheck source=benches/netns/ping-stats.sh
. "$(dirname "$0")/ping-stats.sh"

# latency DST: p50 / p99 / max of 1000 pings at 200 Hz, and loss.
latency() {
  pings "$1"
  ping_stats "$WORK/ping.txt" 1000 3
}

# loaded_latency DST: latency while one cubic flow saturates the same path. Under load
# ping paces itself by the replies it awaits, so 1000 pings take up to ~10 s: the flow
# runs 20 s, twice that, ends by itself (iperf3 reports its goodput, the server is free
# for the next run), and only the replies that arrived before it ended count.
loaded_latency() {
  ip netns exec "$A" iperf3 -c "$1" -C cubic -t 20 > "$WORK/bulk.txt" 2>&1 &
  local bulk=$!
  sleep 2 # let the flow reach steady state before probing
  pings "$1"
  wait "$bulk" || true
  ping_stats "$WORK/ping.txt" 1000 3 "$(date +%s.%N)"
}

# shaped DST: 20 Mbit/s tbf on a's veth; latency idle and under load, and bulk goodput.
shaped() {
  ip netns exec "$A" tc qdisc add dev "$VA" root tbf rate 20mbit burst 32kbit latency 400ms
  local idle lat gbits
  idle=$(latency "$1" | grep -oE 'p99 [0-9.]+')
  lat=$(loaded_latency "$1")
  gbits=$(awk '/receiver/ {v=$(NF-2); u=$(NF-1)} END {print v " " u}' "$WORK/bulk.txt")
  ip netns exec "$A" tc qdisc del dev "$VA" root
  echo "idle ${idle:-?} ms; loaded $lat; bulk ${gbits:-?}"
}

# soak DST SECONDS: one cubic flow for SECONDS; VmRSS of the VPN processes every 10 s.
soak() {
  local dst=$1 secs=$2 t=0
  ip netns exec "$A" iperf3 -c "$dst" -C cubic -t "$secs" -f g > "$WORK/soak.txt" 2>&1 &
  local bulk=$!
  echo "| t (s) | $(for p in "${VPN_PIDS[@]}"; do printf 'node %s VmRSS (kB) | ' "$p"; done)"
  echo "|---|$(for _ in "${VPN_PIDS[@]}"; do printf -- '---|'; done)"
  while kill -0 "$bulk" 2>/dev/null && ((t <= secs)); do
    printf '| %s | %s\n' "$t" "$(for p in "${VPN_PIDS[@]}"; do printf '%s | ' "$(awk '/VmRSS/ {print $2}' "/proc/$p/status")"; done)"
    sleep 10; t=$((t + 10))
  done
  wait "$bulk" || true
  echo
  echo "Soak goodput: $(awk '/receiver/ {print $(NF-2), $(NF-1)}' "$WORK/soak.txt")"
}

row() { # label dst
  local label=$1 dst=$2
  printf '| %s | %s | %s | %s | %s | %s |\n' "$label" \
    "$(throughput "$dst" 1)" "$(throughput "$dst" 4)" \
    "$(latency "$dst")" "$(loaded_latency "$dst")" "$(shaped "$dst")"
}

# keep_logs NAME: with BXBENCH_LOGS=DIR, the last Bauxite pair's daemon logs go to
# DIR/NAME-a.log and DIR/NAME-b.log (A sends the bulk; with
# RUST_LOG=info,bauxite_conduit::path::rate=debug,bauxite_conduit::path::adaptive=debug
# they trace the bulk controllers every 100 ms).
keep_logs() {
  [ -n "${BXBENCH_LOGS:-}" ] || return 0
  mkdir -p "$BXBENCH_LOGS"
  cp "$WORK/a.log" "$BXBENCH_LOGS/$1-a.log"; cp "$WORK/b.log" "$BXBENCH_LOGS/$1-b.log"
}

# shellcheck source=benches/netns/pair.sh
. "$(dirname "$0")/pair.sh"

{
  echo "Commit $(git rev-parse --short HEAD), $(nproc) cores, kernel $(uname -r), ${SECONDS_PER_RUN} s per iperf3 run, cubic."
  echo
  echo "| path | TCP 1 stream | TCP 4 streams | ping idle | ping under load | 20 Mbit/s tbf: ping idle p99; under load; bulk goodput |"
  echo "|---|---|---|---|---|---|"
} | tee "$OUT"
VPN_PIDS=()
if [[ ",$ONLY," == *",bare,"* ]]; then row "bare veth" 10.88.0.2 | tee -a "$OUT"; fi
if [[ ",$ONLY," == *",bauxite,"* ]]; then
  # As edge/systemd/bauxite.service runs it (SCHED_FIFO 10), then with default scheduling.
  BXBENCH_WRAP="${BXBENCH_WRAP-chrt -f 10}" start_bauxite 10.88.0.1 10.88.0.2
  row "bauxite (SCHED_FIFO 10, as the unit runs it)" 100.64.0.2 | tee -a "$OUT"; stop_vpn; keep_logs fifo
  BXBENCH_WRAP="" start_bauxite 10.88.0.1 10.88.0.2; row "bauxite (default scheduling)" 100.64.0.2 | tee -a "$OUT"; stop_vpn; keep_logs default
fi
if [[ ",$ONLY," == *",boringtun,"* ]]; then
  if [ -n "$BORINGTUN" ] && command -v wg >/dev/null; then
    for t in 4 1; do start_boringtun 10.88.0.1 10.88.0.2 "$t"; row "boringtun -t $t" 10.99.0.2 | tee -a "$OUT"; stop_vpn; done
    # The same real-time priority Bauxite gets, for a like-for-like latency comparison.
    BT_WRAP="chrt -f 10" start_boringtun 10.88.0.1 10.88.0.2 1; row "boringtun -t 1 (SCHED_FIFO 10)" 10.99.0.2 | tee -a "$OUT"; stop_vpn
  else
    echo "| boringtun | not available: \`cargo install boringtun-cli --locked\` failed or \`wg\` missing | | | | |" | tee -a "$OUT"
  fi
fi
if ((SOAK > 0)); then
  { echo; echo "Soak: ${SOAK} s of one cubic flow through Bauxite, resident memory of both nodes:"; echo; } | tee -a "$OUT"
  BXBENCH_WRAP="${BXBENCH_WRAP-chrt -f 10}" start_bauxite 10.88.0.1 10.88.0.2; soak 100.64.0.2 "$SOAK" | tee -a "$OUT"; stop_vpn
fi
