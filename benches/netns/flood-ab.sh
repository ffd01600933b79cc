#!/usr/bin/env bash
# The kernel offload on and off, side by side in one run (issue 15's benchmark): for each
# of {UDP flood, one saturating cubic TCP flow} x {unshaped veth, 20 Mbit/s tbf} x
# {node.kernel_offload = true, false}, flood-drops.sh's pings (600 at 200 Hz, idle first,
# then beside the load), daemon CPU per packet, and the drop counters. Prints a Markdown
# table; the full outputs go to $OUT_DIR (default: a temp dir it names).
#
#   sudo BAUXITE=target/release/bauxite benches/netns/flood-ab.sh [--seconds N] [--wrap 'chrt -f 10']
#        [--node 'realtime_priority = 0']   (a line for both daemons' [node] section)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=6
WRAP=""
NODE=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --wrap) WRAP=$2; shift 2 ;;
    --node) NODE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
echo "commit $(git rev-parse --short HEAD), kernel $(uname -r), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), daemons ${WRAP:-started without chrt}${NODE:+, $NODE}; outputs in $OUT_DIR"
echo
echo "| load | link | offload | pings lost | ping p99 idle → loaded (ms) | CPU per packet a / b (µs) | a bauxite0 tx_dropped | b UdpRcvbufErrors |"
echo "|---|---|---|---|---|---|---|---|"
for load in udp tcp; do
  for link in unshaped tbf; do
    for offload in true false; do
      args=(--seconds "$SECS")
      [ "$load" = tcp ] && args+=(--tcp)
      [ "$link" = tbf ] && args+=(--tbf)
      out="$OUT_DIR/$load-$link-$offload.txt"
      BXFLOOD_WRAP="$WRAP" BXFLOOD_NODE_EXTRA="kernel_offload = $offload${NODE:+\\n$NODE}" BXFLOOD_PREFIX="bxab" \
        bash benches/netns/flood-drops.sh "${args[@]}" > "$out" 2>&1 || true
      lost=$(awk -F', ' '/^flood:/ {split($2, r, " "); split($1, t, " "); print t[2] - r[1] " / " t[2]}' "$out")
      idle=$(grep -oE '^idle: .*p99 [0-9.]+' "$out" | grep -oE '[0-9.]+$')
      loaded=$(grep -oE '^flood: .*p99 [0-9.]+' "$out" | grep -oE '[0-9.]+$')
      cpu=$(awk '/^cpu a:/ {a=$3} /^cpu b:/ {b=$3} END {print a " / " b}' "$out")
      txd=$(awk '$1 == "a.bauxite0.tx_dropped" {print $2}' "$out")
      rcv=$(awk '$1 == "b.UdpRcvbufErrors" {print $2}' "$out")
      printf '| %s | %s | %s | %s | %s → %s | %s | %s | %s |\n' "$load" "$link" "$offload" \
        "${lost:-?}" "${idle:-?}" "${loaded:-?}" "${cpu:-?}" "${txd:-0}" "${rcv:-0}"
    done
  done
done
