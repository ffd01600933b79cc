#!/usr/bin/env bash
# The OTA demonstration (docs/demos/ota_resilient) on a shaped link: the hub in one network
# namespace, the robot in another, joined by a veth pair with a tbf qdisc on both ends
# (20 Mbit/s by default, as benches/netns/run.sh shapes it). Same orchestrator, same three
# phases, same tables; the control loop's round trips then include the link's queue.
#
#   sudo benches/netns/ota.sh [--trials N] [--size 128MiB] [--rate 20mbit] [--keep]
#
# The default size finishes a phase in about a minute at 20 Mbit/s. Needs root and
# iproute2. Builds in release mode. Removes its namespaces, processes and work directory
# on exit, also on failure or Ctrl-C. Tables go to target/ota_resilient/netns-<time>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

trials=1 size=128MiB rate=20mbit keep=0
while (($#)); do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--trials N] [--size 128MiB] [--rate 20mbit] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
bash scripts/setup.sh

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -q -p bauxite -p bauxite-dispatch --bins
cargo build --release --locked -q -p bauxite-benches --example ota_demo
bin="$target/release"

P="${BXBENCH_PREFIX:-bxota}"
A=$P-hub; B=$P-robot; VA=${P}vh; VB=${P}vr
work="$(mktemp -d "${TMPDIR:-/tmp}/bauxite-ota-netns.XXXXXX")"
out="$target/ota_resilient/netns-$(date -u +%Y%m%dT%H%M%SZ)"
orchestrator=""
cleanup() {
  status=$?
  trap - EXIT INT TERM
  if [ -n "$orchestrator" ]; then kill -TERM "$orchestrator" 2>/dev/null || true; fi
  if [ -f "$work/pids" ]; then
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$work/pids"
  fi
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns del "$A" 2>/dev/null || true
ip netns del "$B" 2>/dev/null || true
ip netns add "$A"; ip netns add "$B"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$A"; ip link set "$VB" netns "$B"
ip -n "$A" addr add 10.89.0.1/24 dev "$VA"; ip -n "$B" addr add 10.89.0.2/24 dev "$VB"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "$VA" up; ip -n "$B" link set "$VB" up
ip netns exec "$A" tc qdisc add dev "$VA" root tbf rate "$rate" burst 32kbit latency 400ms
ip netns exec "$B" tc qdisc add dev "$VB" root tbf rate "$rate" burst 32kbit latency 400ms
echo "link: veth $A <-> $B, tbf $rate burst 32kbit latency 400ms on both ends"

"$bin/examples/ota_demo" --bauxite "$bin/bauxite" --dispatch "$bin/bauxite-dispatch" \
  --work "$work" --out "$out" --trials "$trials" --size "$size" --timeout 900 \
  --hub-listen 10.89.0.1:0 --robot-listen 0.0.0.0:0 --hub-wrap "ip netns exec $A" --robot-wrap "ip netns exec $B" &
orchestrator=$!
wait "$orchestrator"
ip netns exec "$A" tc -s qdisc show dev "$VA"
