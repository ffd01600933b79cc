#!/usr/bin/env bash
# Where do pings die under an unresponsive flood? Two namespaces joined by a veth, two
# `bauxite run` daemons, `iperf3 -u -b 0 -l 1200` from a to b through the tunnel and 600
# pings at 200 Hz beside it; prints the kernel's drop counters on each hop of the ping's
# round trip (before/after deltas) and the daemons' lane counters. With the kernel
# classifier loaded, `kernel_critical_packets` (counted at bauxite0's egress, before the
# TUN driver's ring) minus the daemon's `lane_critical_enqueued` is what the ring dropped.
#
#   sudo BAUXITE=target/release/bauxite benches/netns/flood-drops.sh [--seconds N] [--tbf] [--tcp]
#
# --tcp replaces the flood with one saturating cubic TCP flow (a responsive load). Each
# daemon's CPU time per packet it handled (tx + rx) is printed too (/proc/PID/stat).
# --tbf shapes a's veth to 20 Mbit/s (run.sh's tbf link). BXFLOOD_NODE_EXTRA adds lines to
# both nodes' [node] section: BXFLOOD_NODE_EXTRA='kernel_offload = false' runs without the
# kernel's lane paths (classifier, Critical TUN queue, Critical socket) for comparison.
# Before the flood the same 600 pings run on the idle tunnel, for the idle p99.
# BXFLOOD_SETTLE: seconds of flood before the pings start (default 1).
# Needs root, iproute2, iperf3, iputils-ping, nstat (iproute2). Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=6
TBF=0
LOAD=udp
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --tbf) TBF=1; shift ;;
    --tcp) LOAD=tcp; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
BAUXITE="${BAUXITE:-${CARGO_TARGET_DIR:-target}/release/bauxite}"
[ -x "$BAUXITE" ] || { echo "no bauxite binary at $BAUXITE (set BAUXITE)" >&2; exit 1; }
WORK="$(mktemp -d)"
P="${BXFLOOD_PREFIX:-bxflood}"; A=$P-a; B=$P-b; VA=${P}va; VB=${P}vb
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$A"; ip link set "$VB" netns "$B"
ip -n "$A" addr add 10.88.0.1/24 dev "$VA"; ip -n "$B" addr add 10.88.0.2/24 dev "$VB"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "$VA" up; ip -n "$B" link set "$VB" up

for side in a b; do "$BAUXITE" keygen --identity "$WORK/$side.key" --name "$side" | grep -v '^#' | sed 's/ *#.*$//' > "$WORK/$side.entry"; done
mk() { # me peer my-vip peer-vip peer-underlay
  { printf '[node]\nidentity = "%s"\nlisten = "0.0.0.0:51820"\nvirtual_ip = "%s/10"\ncontrol_socket = "%s"\n%b\n\n' \
      "$WORK/$1.key" "$3" "$WORK/$1.sock" "${BXFLOOD_NODE_EXTRA:-}"
    sed "s/100.64.0.X/$4/" "$WORK/$2.entry"; printf 'endpoint = "%s:51820"\n' "$5"; } > "$WORK/$1.toml"
}
mk a b 100.64.0.1 100.64.0.2 10.88.0.2; mk b a 100.64.0.2 100.64.0.1 10.88.0.1
ip netns exec "$A" ${BXFLOOD_WRAP:-} "$BAUXITE" run --config "$WORK/a.toml" 2> "$WORK/a.log" & PIDS+=($!)
ip netns exec "$B" ${BXFLOOD_WRAP:-} "$BAUXITE" run --config "$WORK/b.toml" 2> "$WORK/b.log" & PIDS+=($!)
up=0
for _ in $(seq 100); do ip netns exec "$A" ping -c1 -W 0.2 100.64.0.2 >/dev/null 2>&1 && { up=1; break; }; done
[ "$up" = 1 ] || { echo "tunnel did not come up" >&2; cat "$WORK/a.log" "$WORK/b.log" >&2; exit 1; }
ip netns exec "$B" iperf3 -s -D -I "$WORK/iperf3.pid"
for _ in $(seq 100); do [ -s "$WORK/iperf3.pid" ] && break; sleep 0.1; done
PIDS+=("$(cat "$WORK/iperf3.pid")")

# snapshot NAME: the counters of every hop, one "key value" per line.
snapshot() {
  local ns side
  for side in a b; do
    ns=$A; [ $side = b ] && ns=$B
    ip netns exec "$ns" nstat -asz 2>/dev/null | awk -v s=$side '$1 ~ /^(UdpRcvbufErrors|UdpInErrors|UdpSndbufErrors|IcmpInEchoReps|IcmpOutEchos|IcmpInEchos|IcmpOutEchoReps)$/ {print s"."$1, $2}'
    for dev in bauxite0 $( [ $side = a ] && echo "$VA" || echo "$VB"); do
      ip -n "$ns" -s link show "$dev" | awk -v k="$side.$dev" '/RX:/ {getline; print k".rx_dropped", $4} /TX:/ {getline; print k".tx_dropped", $4}'
      tc -n "$ns" -s qdisc show dev "$dev" | awk -v k="$side.$dev" '/dropped/ {gsub(",", ""); for (i=1;i<=NF;i++) if ($i=="dropped") d+=$(i+1)} END {print k".qdisc_dropped", d+0}'
    done
    "$BAUXITE" status --json --config "$WORK/$side.toml" 2>/dev/null | python3 -c '
import json,sys
s=json.load(sys.stdin); side=sys.argv[1]
for lane,v in s["lanes"].items():
    print(f"{side}.lane_{lane}_dropped", v["dropped"])
    print(f"{side}.lane_{lane}_enqueued", v["enqueued"])
for lane,v in s.get("offload",{}).get("kernel_lanes",{}).items():
    print(f"{side}.kernel_{lane}_packets", v["packets"])
for k,v in s["counters"].items():
    if "drop" in k or "error" in k or "full" in k or "critical" in k or k in ("tx_packets", "rx_packets"): print(f"{side}.{k}", v)
print(f"{side}.classifier", s.get("offload",{}).get("classifier","none"))
' "$side"
    # utime + stime of the daemon, in clock ticks.
    awk -v s=$side '{print s".cpu_ticks", $14 + $15}' "/proc/${PIDS[$([ $side = a ] && echo 0 || echo 1)]}/stat"
    # Time spent runnable but waiting for a CPU (ns), and how many times it ran.
    awk -v s=$side '{print s".runqueue_wait_ns", $2; print s".timeslices", $3}' "/proc/${PIDS[$([ $side = a ] && echo 0 || echo 1)]}/schedstat"
  done | sort
}
[ "$TBF" = 1 ] && ip netns exec "$A" tc qdisc add dev "$VA" root tbf rate 20mbit burst 32kbit latency 400ms
# p99 of the ping lines' time= values in FILE.
p99() { grep -oE 'time=[0-9.]+' "$1" | cut -d= -f2 | sort -g | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", v[i]}'; }
ip netns exec "$A" ping -n -c 600 -i 0.005 -W 1 -s 56 100.64.0.2 > "$WORK/idle.txt" 2>&1 || true
snapshot > "$WORK/before"
if [ "$LOAD" = tcp ]; then
  ip netns exec "$A" iperf3 -c 100.64.0.2 -C cubic -t $((SECS + 2)) > "$WORK/iperf.txt" 2>&1 &
else
  ip netns exec "$A" iperf3 -c 100.64.0.2 -u -b 0 -l 1200 -t $((SECS + 2)) > "$WORK/iperf.txt" 2>&1 &
fi
FLOOD=$!
# let the flood reach its steady state before the pings start (BXFLOOD_SETTLE seconds,
# default 1; node.bulk_controller = "auto" needs a second of it to choose)
sleep "${BXFLOOD_SETTLE:-1}"
ip netns exec "$A" ping -n -c 600 -i 0.005 -W 1 -s 56 100.64.0.2 > "$WORK/ping.txt" 2>&1 || true
wait "$FLOOD" || true
snapshot > "$WORK/after"
echo "commit $(git rev-parse --short HEAD), kernel $(uname -r), $(nproc) cores, binary $BAUXITE, tbf $TBF, extra '${BXFLOOD_NODE_EXTRA:-}'"
echo "idle: $(grep -E 'packet loss' "$WORK/idle.txt"), p99 $(p99 "$WORK/idle.txt") ms"
echo "flood: $(grep -E 'packet loss' "$WORK/ping.txt"), p99 $(p99 "$WORK/ping.txt") ms"
grep -E 'rtt' "$WORK/ping.txt"
if [ "$LOAD" = tcp ]; then
  awk '/receiver/ {print "tcp goodput:", $(NF-2), $(NF-1)}' "$WORK/iperf.txt"
else
  awk '/receiver/ {print "flood received:", $(NF-6), $(NF-5), "jitter", $(NF-4), $(NF-3), "lost", $(NF-2), $(NF-1)}' "$WORK/iperf.txt"
fi
HZ=$(getconf CLK_TCK)
join "$WORK/before" "$WORK/after" | awk -v hz="$HZ" '$2 ~ /^[0-9]+$/ {d[$1] = $3 - $2}
  END {split("a b", sides, " ");
       for (i = 1; i <= 2; i++) { x = sides[i]; n = d[x".tx_packets"] + d[x".rx_packets"];
         if (n > 0) printf "cpu %s: %.2f us per packet (%d packets, %.2f s)\n", x, d[x".cpu_ticks"] / hz * 1e6 / n, n, d[x".cpu_ticks"] / hz } }'
join "$WORK/before" "$WORK/after" | awk '$2 ~ /^[0-9]+$/ {d[$1] = $3 - $2}
  END {split("a b", sides, " ");
       for (i = 1; i <= 2; i++) { x = sides[i]; if (d[x".timeslices"] > 0)
         printf "scheduling %s: waited for a CPU %.3f ms per wake-up on average (%d wake-ups)\n", x, d[x".runqueue_wait_ns"] / d[x".timeslices"] / 1e6, d[x".timeslices"] } }'
echo "counter deltas (non-zero):"
join "$WORK/before" "$WORK/after" | awk '$2 ~ /^[0-9]+$/ && $3 - $2 != 0 {printf "  %-40s %.0f\n", $1, $3 - $2} $2 !~ /^[0-9]+$/ {print "  "$1, $3}'
