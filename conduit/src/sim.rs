//! A simulated network: two [`BauxiteNode`]s joined by a link that can lose, duplicate,
//! reorder and rate-limit datagrams, with an on-path attacker that replays and tampers
//! (from the sender's address or its own), all driven by a virtual clock that jumps
//! straight to the next deadline. A node's address can change mid-run (NAT rebinding),
//! and datagrams reach a node only when sent to its current address; a node may start
//! without an endpoint for the other ([`SimNet::with_endpoints`]).
//!
//! Invariant: a run is a pure function of its configuration and seed — no wall clock, no
//! threads, no sleeps — so a failing test replays exactly. The sender only polls a node
//! when the link is free (a NIC queue of one datagram), so queueing happens in the
//! node's scheduler, where the lanes can reorder it, exactly as the real IO shell paces.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::identity::Identity;
use crate::node::{BauxiteNode, NodeConfig, Received};
use crate::peers::{PeerInfo, PeerRegistry};
use crate::wire::{self, Message};
use crate::{Lane, VirtualIp};

/// Impairments of the link, applied independently to each direction.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Link rate in bits per second (`None`: infinitely fast).
    pub rate_bps: Option<u64>,
    /// Bytes the link buffers in front of its rate limit, like a `tbf` qdisc on a slow
    /// uplink; datagrams that do not fit are dropped. `None`: no buffer below the node —
    /// the node sends only when the link is free, so its lanes hold every queue.
    pub queue_limit: Option<usize>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(3),
            rate_bps: None,
            queue_limit: None,
        }
    }
}

/// What the on-path attacker does to data packets it sees.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attacker {
    /// Re-inject a copy of every n-th data packet later (0: never).
    pub replay_every: usize,
    /// Inject a copy of every n-th data packet with one byte flipped (0: never).
    pub tamper_every: usize,
}

/// An attacker elsewhere on the network: the [`Attacker`]'s copies come from its own
/// address instead of the real sender's, and it can replay handshake initiations too —
/// trying to make a node believe its peer moved there.
#[derive(Clone, Copy, Debug)]
pub struct Impostor {
    /// The address the injected copies come from.
    pub from: SocketAddr,
    /// Re-inject a copy of every handshake initiation, from `from`, later.
    pub replay_handshakes: bool,
}

/// Counts kept by the simulation itself (ground truth for assertions).
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Data datagrams sent, as (receiver node, receiver index, counter).
    pub data_sent: BTreeSet<(usize, u32, u64)>,
    /// Data datagrams the link lost.
    pub data_lost: BTreeSet<(usize, u32, u64)>,
    /// Data datagrams a node accepted (delivered or keepalive).
    pub data_accepted: BTreeSet<(usize, u32, u64)>,
    /// Copies injected by the attacker as replays.
    pub replays_injected: u64,
    /// Copies injected by the attacker with a flipped byte.
    pub tampers_injected: u64,
    /// Datagrams the link delivered twice.
    pub duplicates_injected: u64,
    /// Datagrams dropped because the link's buffer was full.
    pub queue_drops: u64,
    /// Datagrams sent to an address no node has (any more), lost.
    pub misaddressed: u64,
    /// Handshake initiations the attacker re-injected.
    pub handshake_replays_injected: u64,
}

/// A packet delivered to a node's TUN device, with the virtual time it arrived.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// Arrival time.
    pub at: Instant,
    /// The IP packet.
    pub packet: Vec<u8>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    /// The address it was sent to: a node that moved away no longer gets it.
    dst: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Two nodes, one link, one clock.
pub struct SimNet {
    /// Virtual time.
    pub now: Instant,
    /// The two nodes.
    pub nodes: [BauxiteNode; 2],
    /// Underlay address of each node (see [`rebind`](Self::rebind)).
    pub addrs: [SocketAddr; 2],
    /// Virtual IP of each node.
    pub vips: [VirtualIp; 2],
    /// Packets delivered to each node's TUN.
    pub delivered: [Vec<Delivered>; 2],
    /// Link impairments.
    pub link: LinkConfig,
    /// Attacker behaviour.
    pub attacker: Attacker,
    /// Where the attacker sends from, if not from the real sender's address.
    pub impostor: Option<Impostor>,
    /// Ground truth.
    pub stats: SimStats,
    flight: BinaryHeap<Reverse<InFlight>>,
    link_free: [Instant; 2],
    rng: ChaCha20Rng,
    seq: u64,
    data_seen: usize,
    buf: Vec<u8>,
    setup: Setup,
    stalled: u32,
}

/// What it takes to (re)build a node.
struct Setup {
    secrets: [([u8; 32], [u8; 32]); 2],
    /// What node `i` is configured to know of the other node.
    views: [PeerInfo; 2],
    config: NodeConfig,
    start: Instant,
}

impl Setup {
    /// Node `i`, knowing the other node as configured, started at `now`.
    fn node(&self, i: usize, seed: [u8; 32], now: Instant) -> BauxiteNode {
        const UNIX_AT_START: u64 = 1_800_000_000_000_000_000;
        let (signing, static_secret) = self.secrets[i];
        let mut registry = PeerRegistry::new();
        // Two distinct generated peers never conflict.
        let _ = registry.insert(self.views[i].clone());
        let elapsed = now.saturating_duration_since(self.start).as_nanos() as u64;
        BauxiteNode::new(
            Identity::from_secrets(signing, static_secret),
            registry,
            self.config.clone(),
            seed,
            now,
            UNIX_AT_START + elapsed + i as u64,
        )
    }
}

impl SimNet {
    /// Two nodes that know each other, at 100.64.0.1 and 100.64.0.2.
    pub fn new(config: NodeConfig, link: LinkConfig, seed: u64, start: Instant) -> Self {
        Self::with_endpoints(config, link, seed, start, [true, true])
    }

    /// Two nodes that know each other's keys and addresses; node `i` is configured with
    /// the other's endpoint only if `knows[i]` (otherwise it must learn it).
    pub fn with_endpoints(
        config: NodeConfig,
        link: LinkConfig,
        seed: u64,
        start: Instant,
        knows: [bool; 2],
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut secret = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            b
        };
        let secrets = [(secret(), secret()), (secret(), secret())];
        let seeds = [secret(), secret()];
        let addrs = [sock(1, 51820), sock(2, 51820)];
        let vips = [
            VirtualIp::from(Ipv4Addr::new(100, 64, 0, 1)),
            VirtualIp::from(Ipv4Addr::new(100, 64, 0, 2)),
        ];
        // What node `viewer` knows of the other node.
        let view = |viewer: usize| {
            let i = 1 - viewer;
            let public = Identity::from_secrets(secrets[i].0, secrets[i].1).public();
            PeerInfo::new(
                format!("node-{i}"),
                vips[i],
                public.static_public,
                public.signing_public,
                knows[viewer].then_some(addrs[i]),
            )
        };
        let setup = Setup {
            secrets,
            views: [view(0), view(1)],
            config: config.clone(),
            start,
        };
        let nodes = [
            setup.node(0, seeds[0], start),
            setup.node(1, seeds[1], start),
        ];
        Self {
            now: start,
            nodes,
            addrs,
            vips,
            delivered: [Vec::new(), Vec::new()],
            link,
            attacker: Attacker::default(),
            impostor: None,
            stats: SimStats::default(),
            flight: BinaryHeap::new(),
            link_free: [start, start],
            rng,
            seq: 0,
            data_seen: 0,
            buf: vec![0u8; config.datagram_capacity()],
            setup,
            stalled: 0,
        }
    }

    /// Simulates a crash and restart of node `i`: same identity and peers, every
    /// session, queue and counter lost.
    pub fn restart(&mut self, i: usize) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        self.nodes[i] = self.setup.node(i, seed, self.now);
    }

    /// What the hub would list for node `i`: its keys, name and virtual IP, at its
    /// current address.
    pub fn view_of(&self, i: usize) -> PeerInfo {
        PeerInfo {
            endpoint: Some(self.addrs[i]),
            ..self.setup.views[1 - i].clone()
        }
    }

    /// Node `i` restarts with a new static (X25519) key and the same signing key, so the
    /// same peer ID: a re-provisioned robot. The other node is not told; returns what the
    /// hub would list for node `i` now (hand it to the other's `replace_peers`).
    pub fn rotate_static_key(&mut self, i: usize) -> PeerInfo {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        self.setup.secrets[i].1 = key;
        let (signing, static_secret) = self.setup.secrets[i];
        let public = Identity::from_secrets(signing, static_secret).public();
        self.setup.views[1 - i].static_public = public.static_public;
        self.restart(i);
        self.view_of(i)
    }

    /// Node `i` moves to `addr` (NAT rebinding, roaming): what it sends leaves from there,
    /// and what is sent to its old address, or still on the way there, is lost.
    pub fn rebind(&mut self, i: usize, addr: SocketAddr) {
        self.addrs[i] = addr;
    }

    /// Data datagrams on the wire now, as (receiver node, receiver index, counter).
    pub fn in_flight_data(&self) -> BTreeSet<(usize, u32, u64)> {
        self.flight
            .iter()
            .filter_map(|Reverse(f)| match wire::parse(&f.bytes) {
                Ok(Message::Data(h)) => Some((f.to, h.receiver_index, h.counter)),
                _ => None,
            })
            .collect()
    }

    /// Hands an IP packet to node `i`'s TUN side.
    pub fn send_from(&mut self, i: usize, packet: &[u8]) -> crate::node::TunVerdict {
        self.nodes[i].handle_tun_packet(self.now, packet)
    }

    /// Runs until nothing is in flight and no timer is due before `deadline`, or until
    /// `deadline`. Returns the number of steps taken.
    pub fn run_until(&mut self, deadline: Instant) -> usize {
        let mut steps = 0;
        while self.step(deadline) {
            steps += 1;
        }
        steps
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) -> usize {
        self.run_until(self.now + duration)
    }

    /// One step: transmit what the links accept, then jump to the next event before
    /// `deadline` and process it. Returns false when there is none.
    pub fn step(&mut self, deadline: Instant) -> bool {
        for i in 0..2 {
            self.transmit(i);
        }
        let next_flight = self.flight.peek().map(|Reverse(f)| f.at);
        let next_timer = self
            .nodes
            .iter()
            .filter_map(BauxiteNode::poll_timeout)
            .min();
        let next_link = (0..2)
            .filter(|&i| self.link_free[i] > self.now && !self.nodes[i].scheduler().is_empty())
            .map(|i| self.link_free[i])
            .min();
        let Some(next) = [next_flight, next_timer, next_link]
            .into_iter()
            .flatten()
            .min()
        else {
            return false;
        };
        if next > deadline {
            self.now = self.now.max(deadline);
            return false;
        }
        // A timer that stays due without changing anything would spin forever here.
        if next <= self.now {
            self.stalled += 1;
            assert!(
                self.stalled < 100_000,
                "timer spin: a deadline is due but handling it changes nothing"
            );
        } else {
            self.stalled = 0;
        }
        self.now = self.now.max(next);
        while self
            .flight
            .peek()
            .is_some_and(|Reverse(f)| f.at <= self.now)
        {
            if let Some(Reverse(f)) = self.flight.pop() {
                self.deliver(f);
            }
        }
        for node in &mut self.nodes {
            if node.poll_timeout().is_some_and(|t| t <= self.now) {
                node.handle_timeout(self.now);
            }
        }
        true
    }

    fn transmit(&mut self, i: usize) {
        let to = 1 - i;
        let buffered = self.link.queue_limit.is_some();
        while buffered || self.link_free[i] <= self.now {
            let Some(t) = self.nodes[i].poll_transmit(self.now, &mut self.buf) else {
                return;
            };
            let bytes = self.buf[..t.len].to_vec();
            let serialization = self.serialization(t.len);
            if let Some(limit) = self.link.queue_limit {
                // The bytes still waiting in the link's buffer, from when it drains.
                let backlog = self.link_free[i].saturating_duration_since(self.now);
                let queued = self.link.rate_bps.map_or(0, |bps| {
                    (backlog.as_nanos() * u128::from(bps) / 8_000_000_000) as usize
                });
                if queued + t.len > limit {
                    self.stats.queue_drops += 1;
                    if let Ok(Message::Data(h)) = wire::parse(&bytes) {
                        let key = (to, h.receiver_index, h.counter);
                        self.stats.data_sent.insert(key);
                        self.stats.data_lost.insert(key);
                    }
                    continue;
                }
            }
            self.link_free[i] = self.link_free[i].max(self.now) + serialization;
            let departs = self.link_free[i];
            let (data_key, is_init) = match wire::parse(&bytes) {
                Ok(Message::Data(h)) => (Some((to, h.receiver_index, h.counter)), false),
                Ok(Message::Init(_)) => (None, true),
                _ => (None, false),
            };
            if let Some(key) = data_key {
                self.stats.data_sent.insert(key);
            }
            if self.chance(self.link.loss) {
                if let Some(key) = data_key {
                    self.stats.data_lost.insert(key);
                }
                continue;
            }
            // The attacker sits after the lossy segment: it copies what really got through.
            if data_key.is_some() {
                self.attack(to, &bytes, departs);
            }
            if let Some(impostor) = self.impostor.filter(|m| is_init && m.replay_handshakes) {
                self.stats.handshake_replays_injected += 1;
                let at = departs + self.link.latency * 2;
                self.schedule_from(at, to, impostor.from, t.dst, bytes.clone());
            }
            let mut at = departs + self.link.latency;
            if self.chance(self.link.reorder) {
                at += self.link.reorder_delay;
            }
            if self.chance(self.link.duplicate) {
                self.stats.duplicates_injected += 1;
                let dup = at + Duration::from_micros(1);
                self.schedule_from(dup, to, self.addrs[i], t.dst, bytes.clone());
            }
            self.schedule_from(at, to, self.addrs[i], t.dst, bytes);
        }
    }

    fn serialization(&self, len: usize) -> Duration {
        self.link.rate_bps.map_or(Duration::ZERO, |bps| {
            Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / bps.max(1))
        })
    }

    fn attack(&mut self, to: usize, bytes: &[u8], departs: Instant) {
        self.data_seen += 1;
        let n = self.data_seen;
        let a = self.attacker;
        let from = self.impostor.map_or(self.addrs[1 - to], |m| m.from);
        let dst = self.addrs[to];
        if a.replay_every > 0 && n.is_multiple_of(a.replay_every) {
            self.stats.replays_injected += 1;
            let at = departs + self.link.latency * 2;
            self.schedule_from(at, to, from, dst, bytes.to_vec());
        }
        if a.tamper_every > 0 && n.is_multiple_of(a.tamper_every) {
            self.stats.tampers_injected += 1;
            let mut copy = bytes.to_vec();
            let pos = (self.rng.next_u64() as usize) % copy.len();
            // Byte 0 is the type: flip a header or payload byte instead.
            let pos = pos.max(1);
            copy[pos] ^= 1 << (self.rng.next_u32() % 8);
            let at = departs + self.link.latency / 2;
            self.schedule_from(at, to, from, dst, copy);
        }
    }

    fn schedule_from(
        &mut self,
        at: Instant,
        to: usize,
        from: SocketAddr,
        dst: SocketAddr,
        bytes: Vec<u8>,
    ) {
        self.seq += 1;
        self.flight.push(Reverse(InFlight {
            at,
            seq: self.seq,
            to,
            from,
            dst,
            bytes,
        }));
    }

    fn deliver(&mut self, mut f: InFlight) {
        let key = match wire::parse(&f.bytes) {
            Ok(Message::Data(h)) => Some((f.to, h.receiver_index, h.counter)),
            _ => None,
        };
        if f.dst != self.addrs[f.to] {
            // Sent to where the node was, or never was: nobody receives it.
            self.stats.misaddressed += 1;
            if let Some(key) = key {
                self.stats.data_lost.insert(key);
            }
            return;
        }
        match self.nodes[f.to].handle_datagram(self.now, f.from, &mut f.bytes) {
            Received::Deliver(range) => {
                if let Some(key) = key {
                    self.stats.data_accepted.insert(key);
                }
                self.delivered[f.to].push(Delivered {
                    at: self.now,
                    packet: f.bytes[range].to_vec(),
                });
            }
            Received::Consumed => {
                if let Some(key) = key {
                    self.stats.data_accepted.insert(key);
                }
            }
            Received::Stun | Received::Dropped(_) => {}
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Which lane node `i` would put `packet` in (for reports).
    pub fn lane_of(packet: &[u8]) -> Lane {
        crate::scheduler::classify(packet)
    }
}

/// A documentation-range (TEST-NET-1) address: the simulation never touches a socket.
fn sock(host: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, host), port))
}
