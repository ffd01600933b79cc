#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine with Rust.
# Idempotent: installs only what is missing, runs `apt-get update` at most once.
set -euo pipefail

# command -> Debian package that provides it
declare -A needs=(
  [ip]=iproute2
  [ping]=iputils-ping
  [tcpdump]=tcpdump   # the namespace tests capture a data packet to replay it
  [iperf3]=iperf3     # benches/netns: throughput through the tunnel
  [nft]=nftables       # edge/tests/netns/natlab.rs: the NAT routers
  [conntrack]=conntrack # natlab: flushing a router's NAT mappings (rebinding)
  [turnserver]=coturn  # edge/tests/netns/turn.rs: the TURN server of the NAT lab
  [wg]=wireguard-tools # benches/netns: configures boringtun, the reference VPN
  [fast-discovery-server]=fastdds-tools # citadel: the ROS 2 discovery server it supervises
  [g++]=g++            # edge/tests/netns/ros.rs: builds the Fast DDS test participants
  [chromium]=chromium  # dispatch/tests/hub/admin_ui.rs: the admin web UI in a real browser
  [chromedriver]=chromium-driver # ...driven through WebDriver
  [clang]=clang        # ebpf/build.rs: compiles the kernel lane classifier (-target bpf)
  [setpriv]=util-linux # ebpf/tests/netns.rs: the no-permission fallback runs as nobody
)

# header -> Debian package (libraries have no command to look for)
declare -A headers=(
  [/usr/include/fastdds/dds/domain/DomainParticipantFactory.hpp]=libfastrtps-dev
)

missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
for file in "${!headers[@]}"; do
  [ -e "$file" ] || missing+=("${headers[$file]}")
done

# Headers the BPF program includes (<bpf/bpf_helpers.h>, <linux/bpf.h>).
[ -e /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
[ -e /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
# dispatch/tests/hub/postgres.rs: a throwaway PostgreSQL cluster (initdb, pg_ctl).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)

if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
