#!/bin/bash
# Measures the emulator itself: idle ping, then ping beside a 14 s iperf3 TCP flow, A->B,
# and the emulator's counters (lateness among them). Needs root, iproute2, iperf3.
#   cargo build --release -p bauxite-netem --bin bauxite-linkemu
#   sudo netem/measure.sh LABEL [bauxite-linkemu flags...]     e.g. netem/measure.sh lte --profile lte
set -euo pipefail
label=$1; shift
bin=${LINKEMU:-${CARGO_TARGET_DIR:-target}/release/bauxite-linkemu}
tmp=$(mktemp -d)
ns=(lmA$$ lmB$$ lmM$$)
cleanup() {
  for n in "${ns[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
for n in "${ns[@]}"; do
  ip netns add "$n"; ip -n "$n" link set lo up
  ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
mkfifo "$tmp/stdin"
ip netns exec "${ns[2]}" "$bin" --netns-a "${ns[0]}" --netns-b "${ns[1]}" \
  --addr-a 10.77.0.1/30 --addr-b 10.77.0.2/30 "$@" < "$tmp/stdin" > "$tmp/out" &
exec 7>"$tmp/stdin"
for _ in $(seq 100); do grep -q ready "$tmp/out" && break; sleep 0.1; done
echo "== $label: $*"
echo "idle ping:"; ip netns exec "${ns[0]}" ping -q -c 200 -i 0.01 10.77.0.2 7>&- | tail -2
ip netns exec "${ns[1]}" iperf3 -s -1 -B 10.77.0.2 >/dev/null 2>&1 7>&- &
sleep 0.3
ip netns exec "${ns[0]}" ping -q -c 1000 -i 0.01 10.77.0.2 > "$tmp/ping" 7>&- &
pinger=$!
ip netns exec "${ns[0]}" iperf3 -c 10.77.0.2 -t 14 -J > "$tmp/iperf" 7>&-
wait "$pinger" || true
echo "loaded ping:"; tail -2 "$tmp/ping"
python3 -c "import json,sys;j=json.load(open(sys.argv[1]));print('tcp goodput Mbit/s', round(j['end']['sum_received']['bits_per_second']/1e6,2))" "$tmp/iperf"
exec 7>&-
for _ in $(seq 50); do [ "$(wc -l < "$tmp/out")" -ge 2 ] && break; sleep 0.1; done
tail -1 "$tmp/out"
