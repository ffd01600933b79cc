//! Fixtures shared by the Bauxite benchmarks (`benches/*.rs`, `examples/*.rs`).
//!
//! Invariant: every fixture is deterministic — fixed keys, fixed seeds and a `now` the
//! caller passes in — so two runs measure the same work. Setup allocates freely; only what
//! a benchmark loop calls is meant to be allocation-free.
//!
//! Run the benchmarks with `cargo bench -p bauxite-benches`; `docs/benchmarks.md` lists the
//! exact commands and the figures they gave.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::identity::Identity;
use bauxite_conduit::ip::build;
use bauxite_conduit::node::{BauxiteNode, NodeConfig, Received};
use bauxite_conduit::peers::{PeerInfo, PeerRegistry};
use bauxite_conduit::scheduler::TELEMETRY_PORT;
use bauxite_conduit::session::{SecureChannel, TransportKeys};
use bauxite_conduit::{PeerId, VirtualIp};

/// Size of the IP packets the data-plane benchmarks push: the default TUN MTU.
pub const PACKET_LEN: usize = bauxite_conduit::node::DEFAULT_MTU;

/// Virtual IP of the sending node.
pub const SRC_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// Virtual IP of the receiving node.
pub const DST_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

/// Header bytes in front of the payload of a UDP-over-IPv4 packet.
const UDP_HEADERS: usize = 20 + 8;
/// Header bytes in front of the payload of a TCP-over-IPv4 packet.
const TCP_HEADERS: usize = 20 + 20;
/// Header bytes in front of the payload of an ICMP echo.
const ICMP_HEADERS: usize = 20 + 8;

/// A bulk-lane UDP packet (port 9000) of exactly `len` bytes (at least 28).
pub fn bulk_udp(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = vec![0xB5u8; len.saturating_sub(UDP_HEADERS)];
    build::ipv4_udp(SRC_IP, DST_IP, 9000, 9000, &payload, &mut out);
    out
}

/// A bulk-lane TCP packet (port 443) of exactly `len` bytes (at least 40).
pub fn bulk_tcp(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = vec![0x5Au8; len.saturating_sub(TCP_HEADERS)];
    build::ipv4_tcp(SRC_IP, DST_IP, 40000, 443, &payload, &mut out);
    out
}

/// A telemetry-lane UDP packet (to port 5006) of exactly `len` bytes.
pub fn telemetry_udp(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = vec![0x7Eu8; len.saturating_sub(UDP_HEADERS)];
    build::ipv4_udp(SRC_IP, DST_IP, 40001, TELEMETRY_PORT, &payload, &mut out);
    out
}

/// A critical-lane ICMP echo request of exactly `len` bytes (84 is what `ping` sends).
pub fn icmp_echo(len: usize, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = vec![0u8; len.saturating_sub(ICMP_HEADERS)];
    build::ipv4_icmp_echo(SRC_IP, DST_IP, 1, seq, &payload, &mut out);
    out
}

/// Two ends of one established session: `(initiator, responder)`, with fixed keys.
pub fn channel_pair(suite: CipherSuite, now: Instant) -> (SecureChannel, SecureChannel) {
    let (k1, k2) = ([0x11u8; 32], [0x22u8; 32]);
    let a = SecureChannel::new(suite, TransportKeys { send: k1, recv: k2 }, 1, 2, true, now);
    let b = SecureChannel::new(
        suite,
        TransportKeys { send: k2, recv: k1 },
        2,
        1,
        false,
        now,
    );
    (a, b)
}

/// A fixed identity; `n` picks which.
pub fn identity(n: u8) -> Identity {
    Identity::from_secrets([n; 32], [n.wrapping_add(0x80); 32])
}

/// Two nodes that know each other and share an established session, plus their underlay
/// addresses (`addrs[i]` is node `i`'s). No link: the caller carries datagrams by hand.
pub struct NodePair {
    /// Node 0 (100.64.0.1) and node 1 (100.64.0.2).
    pub nodes: [BauxiteNode; 2],
    /// Underlay address of each node.
    pub addrs: [SocketAddr; 2],
    /// A buffer of `datagram_capacity` bytes for `poll_transmit`.
    pub buf: Vec<u8>,
}

/// Why [`NodePair::connect`] could not establish the session.
#[derive(Debug)]
pub struct NotConnected(pub &'static str);

impl NodePair {
    /// Builds both nodes with `config` and completes a handshake between them at `now`.
    pub fn connect(config: NodeConfig, now: Instant) -> Result<Self, NotConnected> {
        let ids = [identity(1), identity(2)];
        let addrs = [
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 51820)),
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 51820)),
        ];
        let vips = [VirtualIp::from(SRC_IP), VirtualIp::from(DST_IP)];
        let info = |i: usize| {
            let public = ids[i].public();
            PeerInfo::new(
                format!("node-{i}"),
                vips[i],
                public.static_public,
                public.signing_public,
                Some(addrs[i]),
            )
        };
        let registry = |other: usize| {
            let mut r = PeerRegistry::new();
            r.insert(info(other))
                .map_err(|_| NotConnected("peer registry refused the peer"))?;
            Ok::<_, NotConnected>(r)
        };
        let (r0, r1) = (registry(1)?, registry(0)?);
        let [id0, id1] = ids;
        let unix = 1_800_000_000_000_000_000;
        let nodes = [
            BauxiteNode::new(id0, r0, config.clone(), [7; 32], now, unix),
            BauxiteNode::new(id1, r1, config.clone(), [8; 32], now, unix),
        ];
        let mut pair = Self {
            nodes,
            addrs,
            buf: vec![0u8; config.datagram_capacity()],
        };
        // The first packet stages, starts the handshake, and goes out once it completes.
        pair.nodes[0].handle_tun_packet(now, &icmp_echo(84, 0));
        // Initiation, response, then the staged packet (which confirms the session), and
        // path MTU discovery's probes and answers until both sides are done (two sizes
        // each on this lossless path): a leftover probe would interleave with the
        // measured packets.
        for _ in 0..16 {
            pair.shuttle(now);
        }
        let (p0, p1) = (pair.nodes[0].peer_id(), pair.nodes[1].peer_id());
        let discovered = pair.nodes.iter().all(|n| {
            n.peer_status(now)
                .iter()
                .all(|p| p.pmtu_phase == bauxite_conduit::path::PmtuPhase::Complete)
        });
        if !discovered {
            return Err(NotConnected("path MTU discovery did not finish"));
        }
        if pair.nodes[0].is_connected(p1, now) && pair.nodes[1].is_connected(p0, now) {
            Ok(pair)
        } else {
            Err(NotConnected("handshake did not complete"))
        }
    }

    /// Carries every datagram either node wants to send to the other; returns how many
    /// decrypted packets were delivered.
    pub fn shuttle(&mut self, now: Instant) -> usize {
        let mut delivered = 0;
        for from in 0..2 {
            let to = 1 - from;
            while let Some(t) = self.nodes[from].poll_transmit(now, &mut self.buf) {
                let from_addr = self.addrs[from];
                let datagram = &mut self.buf[..t.len];
                if let Received::Deliver(_) =
                    self.nodes[to].handle_datagram(now, from_addr, datagram)
                {
                    delivered += 1;
                }
            }
            while self.nodes[to].poll_released(&mut self.buf).is_some() {
                delivered += 1;
            }
        }
        delivered
    }

    /// Node 1's mesh ID.
    pub fn receiver(&self) -> PeerId {
        self.nodes[1].peer_id()
    }
}

/// The criterion configuration of every benchmark: short runs (1 s warm-up, 3 s
/// measured), since the figures in docs/benchmarks.md come from a noisy 2-core machine.
pub fn short_runs() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}
