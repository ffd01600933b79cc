# Two tunnel daemons, one in each of the namespaces $A and $B, for the netns benches
# (sourced by run.sh and links.sh). Needs $WORK, $BAUXITE (and $BORINGTUN for boringtun)
# and the arrays PIDS (everything the caller's trap kills) and VPN_PIDS (the daemons
# of the current pair, which stop_vpn ends). The daemons never hold descriptor 7: links.sh
# keeps the link emulator's stdin there and ends the emulator by closing it.

# start_bauxite UNDERLAY_A UNDERLAY_B: Bauxite on 100.64.0.1 (in $A) and 100.64.0.2 (in
# $B), each dialling the other's underlay address; returns once a ping crosses.
# $BXBENCH_WRAP prefixes the daemons (e.g. `chrt -f 10`), $BXBENCH_NODE_EXTRA adds lines
# to their [node] section.
start_bauxite() {
  local ua=$1 ub=$2
  for side in a b; do "$BAUXITE" keygen --identity "$WORK/$side.key" --name "$side" | grep -v '^#' | sed 's/ *#.*$//' > "$WORK/$side.entry"; done
  mk() { # me peer my-vip peer-vip peer-underlay
    { printf '[node]\nidentity = "%s"\nlisten = "0.0.0.0:51820"\nvirtual_ip = "%s/10"\ncontrol_socket = "%s"\n%b\n\n' \
        "$WORK/$1.key" "$3" "$WORK/$1.sock" "${BXBENCH_NODE_EXTRA:-}"
      sed "s/100.64.0.X/$4/" "$WORK/$2.entry"; printf 'endpoint = "%s:51820"\n' "$5"; } > "$WORK/$1.toml"
  }
  mk a b 100.64.0.1 100.64.0.2 "$ub"; mk b a 100.64.0.2 100.64.0.1 "$ua"
  VPN_PIDS=()
  ip netns exec "$A" ${BXBENCH_WRAP:-} "$BAUXITE" run --config "$WORK/a.toml" 2> "$WORK/a.log" 7>&- & PIDS+=($!); VPN_PIDS+=($!)
  ip netns exec "$B" ${BXBENCH_WRAP:-} "$BAUXITE" run --config "$WORK/b.toml" 2> "$WORK/b.log" 7>&- & PIDS+=($!); VPN_PIDS+=($!)
  for _ in $(seq 100); do ip netns exec "$A" ping -c1 -W 0.5 100.64.0.2 >/dev/null 2>&1 && return 0; done
  echo "bauxite tunnel did not come up" >&2; cat "$WORK/a.log" "$WORK/b.log" >&2; exit 1
}

# start_boringtun UNDERLAY_A UNDERLAY_B THREADS: boringtun on 10.99.0.1 / 10.99.0.2 (wgbt0),
# the same shape; $BT_WRAP prefixes the daemons.
start_boringtun() {
  local ua=$1 ub=$2 threads=$3
  for side in a b; do wg genkey > "$WORK/$side.wgkey"; wg pubkey < "$WORK/$side.wgkey" > "$WORK/$side.wgpub"; done
  VPN_PIDS=()
  for side in a b; do
    local ns=$A peer=b ip=10.99.0.1 end=$ub; [ $side = b ] && { ns=$B; peer=a; ip=10.99.0.2; end=$ua; }
    WG_SUDO=1 ip netns exec "$ns" ${BT_WRAP:-} "$BORINGTUN" -f --disable-drop-privileges -t "$threads" wgbt0 > "$WORK/bt-$side.log" 2>&1 7>&- & PIDS+=($!); VPN_PIDS+=($!)
    for _ in $(seq 50); do ip -n "$ns" link show wgbt0 >/dev/null 2>&1 && break; sleep 0.1; done
    ip netns exec "$ns" wg set wgbt0 listen-port 51821 private-key "$WORK/$side.wgkey" \
      peer "$(cat "$WORK/$peer.wgpub")" allowed-ips 10.99.0.0/24 endpoint "$end:51821"
    ip -n "$ns" addr add "$ip/24" dev wgbt0; ip -n "$ns" link set wgbt0 mtu 1420 up
  done
}

# Stops the current pair's daemons.
stop_vpn() { for p in "${VPN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; VPN_PIDS=(); }
