//! A simulated network: [`BauxiteNode`]s (two by default, `N` with [`SimNet::build`]),
//! each optionally behind its own NAT box ([`NatBehaviour`]: mapping × filtering), joined
//! by links that can lose, duplicate, reorder, rate-limit and (above an MTU) drop datagrams
//! — the per-datagram physics is `bauxite_netem`'s [`Link`] model, the one the
//! `bauxite-linkemu` emulator drives between real processes —, with an on-path attacker that replays and tampers
//! (from the sender's address or its own), all driven by a virtual clock that jumps
//! straight to the next deadline. A node's address can change mid-run (NAT rebinding),
//! and datagrams reach a node only when sent to its current address; a node may start
//! without an endpoint for the other ([`SimNet::with_endpoints`]). A datagram goes to the
//! node whose address (or NAT box's outside address) it is sent to; a NAT box drops what
//! its filtering does not admit, and [`direct_path_expected`] is the oracle that says
//! which pairs of boxes a direct path must cross. A site can block UDP
//! ([`SimNet::udp_blocked`]: everything it sends or is sent on UDP is lost), and transmits
//! through the hub ([`Via::Hub`]) reach their peer over a lossless, slower channel (the
//! hub's data channel over TCP: [`HUB_DELAY`] each way), never blocked. With
//! [`SimNet::enable_turn`] a TURN server gives every node an allocation
//! ([`SimNet::relay_addr`], listed to the others as a `relay` candidate): a datagram sent
//! to a relayed address reaches its node through the server (one more link latency) as
//! arrived through TURN, and a [`Via::Turn`] transmit leaves the server from the sender's
//! relayed address, through the receiver's NAT box like any datagram.
//! [`SimNet::direct_blocked`] loses every UDP datagram that is not to or from the server.
//!
//! Invariant: a run is a pure function of its configuration and seed — no wall clock, no
//! threads, no sleeps — so a failing test replays exactly. The sender only polls a node
//! when the link is free (a NIC queue of one datagram), so queueing happens in the
//! node's scheduler, where the lanes can reorder it, exactly as the real IO shell paces.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use bauxite_netem::{Drop as LinkDrop, GilbertElliott, Impairments, Link, Profile, Verdict};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::identity::Identity;
use crate::node::{BauxiteNode, HUB_ENDPOINT, NodeConfig, Received, Via};
use crate::peers::{PeerInfo, PeerRegistry};
use crate::wire::{self, Message};
use crate::{Lane, VirtualIp};

mod clock;
mod nat;
mod paths;

use nat::NatBox;
pub use nat::{Filtering, Mapping, NatBehaviour, direct_path_expected, initiation_crosses};
pub use paths::{PathCounts, TwoPathNet};

/// Where NATed nodes' boxes first send (the hub, or a STUN server): the address whose
/// mapping the hub reports as a node's server-reflexive address.
const HUB: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 250), 3478));

/// The simulated TURN server's IP; node `i`'s allocation is at port
/// `TURN_PORT_BASE + i` ([`SimNet::relay_addr`]).
const TURN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 251);
const TURN_PORT_BASE: u16 = 50000;

/// One-way delay of the hub's data channel, node to hub to node (a TCP stream to a hub
/// further away than the peer).
pub const HUB_DELAY: Duration = Duration::from_millis(30);

/// How one node of a [`SimNet::build`] network is set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeSpec {
    /// Whether the node is configured with every other node's endpoint (else it must
    /// be dialled first, and learns it).
    pub knows_endpoints: bool,
    /// The NAT box in front of the node, if any.
    pub nat: Option<NatBehaviour>,
}

impl NodeSpec {
    /// A node on a public address that knows every other node's endpoint.
    pub fn public() -> Self {
        Self {
            knows_endpoints: true,
            nat: None,
        }
    }

    /// A node behind a NAT box that knows every other node's endpoint.
    pub fn behind(nat: NatBehaviour) -> Self {
        Self {
            knows_endpoints: true,
            nat: Some(nat),
        }
    }
}

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
    /// Largest IP packet the link carries (the simulated underlay is IPv4: a datagram
    /// plus 28 header bytes). Larger ones are dropped, as on a path that filters
    /// fragments or ICMP, with DF set. `None`: no limit. May change mid-run.
    pub mtu: Option<usize>,
}

impl LinkConfig {
    /// The shared link model's view of this configuration (one direction).
    fn impairments(&self) -> Impairments {
        Impairments {
            rate_bps: self.rate_bps,
            delay: self.latency,
            reorder: self.reorder,
            reorder_delay: self.reorder_delay,
            loss: GilbertElliott::bernoulli(self.loss),
            duplicate: self.duplicate,
            buffer_bytes: self.queue_limit,
            // The model limits the datagram; the underlay adds its IPv4 and UDP headers.
            mtu: self.mtu.map(|mtu| mtu.saturating_sub(UNDERLAY_HEADERS)),
            ..Impairments::default()
        }
    }
}

/// IPv4 and UDP header bytes the simulated underlay adds to a datagram.
const UNDERLAY_HEADERS: usize = 28;

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
            mtu: None,
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
    /// Datagrams a NAT box refused (no mapping, or not admitted by its filtering).
    pub nat_dropped: u64,
    /// Datagrams larger than the link's MTU, dropped (path MTU probes among them).
    pub mtu_dropped: u64,
    /// UDP datagrams lost to a site's UDP block.
    pub udp_blocked: u64,
    /// Datagrams relayed through the hub.
    pub hub_relayed: u64,
    /// Datagrams relayed by the TURN server (either way).
    pub turn_relayed: u64,
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
    /// The node it was meant for, for the ground-truth counts.
    to: Option<usize>,
    from: SocketAddr,
    /// The address it was sent to: a node that moved away no longer gets it.
    dst: SocketAddr,
    bytes: Vec<u8>,
    /// Relayed by the hub: handed to node `to` directly, from [`HUB_ENDPOINT`].
    hub: bool,
    /// Relayed by the TURN server to node `to`'s allocation: handed to it as arrived
    /// through TURN, from `from`.
    turn: bool,
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

/// `N` nodes (two by default), each with its uplink, one clock.
pub struct SimNet<const N: usize = 2> {
    /// Virtual time.
    pub now: Instant,
    /// The nodes.
    pub nodes: [BauxiteNode; N],
    /// Underlay address of each node (see [`rebind`](Self::rebind)); behind a NAT box,
    /// its inside address.
    pub addrs: [SocketAddr; N],
    /// Virtual IP of each node.
    pub vips: [VirtualIp; N],
    /// Packets delivered to each node's TUN.
    pub delivered: [Vec<Delivered>; N],
    /// Packets each node wrote back to its own TUN (ICMP too-big answers).
    pub local: [Vec<Delivered>; N],
    /// Link impairments, the same on every uplink.
    pub link: LinkConfig,
    /// A time-varying link (an LTE or Wi-Fi [`Profile`], its clock starting when the net
    /// was built) that replaces `link`'s impairments on every uplink, each direction with
    /// its own state and random draws, as `bauxite-linkemu` plays it between real nodes.
    pub profile: Option<Profile>,
    /// Attacker behaviour.
    pub attacker: Attacker,
    /// Where the attacker sends from, if not from the real sender's address.
    pub impostor: Option<Impostor>,
    /// Ground truth.
    pub stats: SimStats,
    /// Sites whose UDP is blocked (both ways); the hub relay still works for them.
    pub udp_blocked: [bool; N],
    /// Whether UDP between nodes is lost unless it goes to or comes from the TURN
    /// server (a firewall that lets only the TURN server through).
    pub direct_blocked: bool,
    /// Whether the TURN server runs ([`enable_turn`](Self::enable_turn)).
    turn: bool,
    flight: BinaryHeap<Reverse<InFlight>>,
    links: [Link; N],
    /// Extra hops in series after the sender's uplink, per (sender, receiver).
    hops: BTreeMap<(usize, usize), (Link, Impairments)>,
    nats: [Option<NatBox>; N],
    rng: ChaCha20Rng,
    seq: u64,
    data_seen: usize,
    buf: Vec<u8>,
    setup: Setup,
    clock: clock::Clock,
}

/// What it takes to (re)build a node.
struct Setup {
    secrets: Vec<([u8; 32], [u8; 32])>,
    /// What the hub lists of each node, without an endpoint.
    infos: Vec<PeerInfo>,
    /// Whether node `i` is configured with the others' endpoints.
    knows: Vec<bool>,
    /// Each node's address as the hub saw it at the start (behind a NAT box, the
    /// server-reflexive one).
    seen: Vec<SocketAddr>,
    config: NodeConfig,
    start: Instant,
}

impl Setup {
    /// Node `i`, knowing the others as configured, started at `now`.
    fn node(&self, i: usize, config: &NodeConfig, seed: [u8; 32], now: Instant) -> BauxiteNode {
        const UNIX_AT_START: u64 = 1_800_000_000_000_000_000;
        let (signing, static_secret) = self.secrets[i];
        let mut registry = PeerRegistry::new();
        for (j, info) in self.infos.iter().enumerate().filter(|(j, _)| *j != i) {
            let view = PeerInfo {
                endpoint: self.knows[i].then_some(self.seen[j]),
                ..info.clone()
            };
            // Distinct generated peers never conflict.
            let _ = registry.insert(view);
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos() as u64;
        BauxiteNode::new(
            Identity::from_secrets(signing, static_secret),
            registry,
            config.clone(),
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
        let spec = |knows_endpoints| NodeSpec {
            knows_endpoints,
            nat: None,
        };
        Self::build(config, link, seed, start, [spec(knows[0]), spec(knows[1])])
    }

    /// Which lane node `i` would put `packet` in (for reports).
    pub fn lane_of(packet: &[u8]) -> Lane {
        crate::scheduler::classify(packet)
    }
}

impl<const N: usize> SimNet<N> {
    /// `N` nodes (at most 200) that all know each other's keys, node `i` at
    /// 100.64.0.`i+1`; a public node's address is 192.0.2.`i+1`:51820, a NATed one's is
    /// 10.0.`i+1`.2:51820 behind a box at 203.0.113.`i+1` whose first mapping went to the
    /// hub (so the hub saw, and lists, the server-reflexive address).
    pub fn build(
        config: NodeConfig,
        link: LinkConfig,
        seed: u64,
        start: Instant,
        specs: [NodeSpec; N],
    ) -> Self {
        assert!(N <= 200, "addresses are numbered by one octet");
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut secret = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            b
        };
        let secrets: Vec<_> = (0..N).map(|_| (secret(), secret())).collect();
        let seeds: [[u8; 32]; N] = std::array::from_fn(|_| secret());
        let host = |i: usize| u8::try_from(i + 1).unwrap_or(u8::MAX);
        let mut nats: [Option<NatBox>; N] = std::array::from_fn(|i| {
            specs[i].nat.map(|behaviour| {
                let public = IpAddr::V4(Ipv4Addr::new(203, 0, 113, host(i)));
                NatBox::new(behaviour, public, 40000)
            })
        });
        let addrs: [SocketAddr; N] = std::array::from_fn(|i| match specs[i].nat {
            Some(_) => SocketAddr::from((Ipv4Addr::new(10, 0, host(i), 2), 51820)),
            None => sock(host(i), 51820),
        });
        let seen = (0..N)
            .map(|i| match nats[i].as_mut() {
                Some(nat) => nat.outbound(addrs[i], HUB),
                None => addrs[i],
            })
            .collect();
        let vips: [VirtualIp; N] =
            std::array::from_fn(|i| VirtualIp::from(Ipv4Addr::new(100, 64, 0, host(i))));
        let infos = (0..N)
            .map(|i| {
                let public = Identity::from_secrets(secrets[i].0, secrets[i].1).public();
                PeerInfo::new(
                    format!("node-{i}"),
                    vips[i],
                    public.static_public,
                    public.signing_public,
                    None,
                )
            })
            .collect();
        let setup = Setup {
            secrets,
            infos,
            knows: specs.iter().map(|s| s.knows_endpoints).collect(),
            seen,
            config: config.clone(),
            start,
        };
        let nodes = std::array::from_fn(|i| setup.node(i, &setup.config, seeds[i], start));
        Self {
            now: start,
            nodes,
            addrs,
            vips,
            delivered: std::array::from_fn(|_| Vec::new()),
            local: std::array::from_fn(|_| Vec::new()),
            link,
            profile: None,
            attacker: Attacker::default(),
            impostor: None,
            stats: SimStats::default(),
            udp_blocked: [false; N],
            direct_blocked: false,
            turn: false,
            flight: BinaryHeap::new(),
            links: std::array::from_fn(|_| Link::new(start)),
            hops: BTreeMap::new(),
            nats,
            rng,
            seq: 0,
            data_seen: 0,
            buf: vec![0u8; config.datagram_capacity()],
            setup,
            clock: clock::Clock::default(),
        }
    }

    /// Node `i`'s relayed address on the TURN server.
    pub fn relay_addr(i: usize) -> SocketAddr {
        let port = TURN_PORT_BASE.saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
        SocketAddr::from((TURN_IP, port))
    }

    /// Starts the TURN server: every node gets an allocation, and every node's peers
    /// list it with its relayed address as a `relay` candidate (as the hub would).
    pub fn enable_turn(&mut self) {
        self.turn = true;
        for i in 0..N {
            for j in (0..N).filter(|&j| j != i) {
                let id = self.nodes[j].peer_id();
                let Some(mut info) = self.nodes[i].registry().by_id(id).cloned() else {
                    continue;
                };
                let relay = Self::relay_addr(j);
                info.candidates.push(relay);
                info.candidate_kinds
                    .push((relay, crate::peers::CandidateKind::Relay));
                // The same keys and address: no conflict.
                let _ = self.nodes[i].upsert_peer(info);
            }
        }
    }

    /// The node whose allocation is at `dst`, when the TURN server runs.
    fn allocation(&self, dst: SocketAddr) -> Option<usize> {
        if !self.turn || dst.ip() != IpAddr::V4(TURN_IP) {
            return None;
        }
        let i = usize::from(dst.port().checked_sub(TURN_PORT_BASE)?);
        (i < N).then_some(i)
    }

    /// Simulates a crash and restart of node `i`: same identity and peers, every
    /// session, queue and counter lost.
    pub fn restart(&mut self, i: usize) {
        let config = self.setup.config.clone();
        self.restart_with(i, config);
    }

    /// Like [`restart`](Self::restart), with another configuration: an upgrade, a
    /// downgrade, an older node's behaviour (e.g. `bulk_repair` off).
    pub fn restart_with(&mut self, i: usize, config: NodeConfig) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        self.nodes[i] = self.setup.node(i, &config, seed, self.now);
    }

    /// What the hub would list for node `i`: its keys, name and virtual IP, at its
    /// current address.
    pub fn view_of(&self, i: usize) -> PeerInfo {
        let endpoint = match self.nats[i] {
            Some(_) => self.setup.seen[i],
            None => self.addrs[i],
        };
        PeerInfo {
            endpoint: Some(endpoint),
            ..self.setup.infos[i].clone()
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
        self.setup.infos[i].static_public = public.static_public;
        self.restart(i);
        self.view_of(i)
    }

    /// How long node `i`'s uplink needs to send what its buffer holds now (the queue
    /// below the node, in time).
    pub fn uplink_backlog(&self, i: usize) -> Duration {
        self.links[i].free_at().saturating_duration_since(self.now)
    }

    /// How long a datagram offered now to the hop from node `from` to node `to` waits
    /// before it starts on the wire (`None`: no such hop).
    pub fn hop_backlog(&self, from: usize, to: usize) -> Option<Duration> {
        let (link, _) = self.hops.get(&(from, to))?;
        Some(link.free_at().saturating_duration_since(self.now))
    }

    /// Puts a hop with impairments `imp` (a slower, lossier link: a robot on a bad radio)
    /// after node `from`'s uplink on the way to node `to` only; the uplink still carries
    /// it first.
    pub fn set_hop(&mut self, from: usize, to: usize, imp: Impairments) {
        self.hops.insert((from, to), (Link::new(self.now), imp));
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
            .filter_map(|Reverse(f)| match (f.to, wire::parse(&f.bytes)) {
                (Some(to), Ok(Message::Data(h))) => Some((to, h.receiver_index, h.counter)),
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
        for i in 0..N {
            self.transmit(i);
            while let Some(len) = self.nodes[i].poll_local_packet(&mut self.buf) {
                self.local[i].push(Delivered {
                    at: self.now,
                    packet: self.buf[..len].to_vec(),
                });
            }
            while let Some(len) = self.nodes[i].poll_released(&mut self.buf) {
                self.delivered[i].push(Delivered {
                    at: self.now,
                    packet: self.buf[..len].to_vec(),
                });
            }
        }
        let next_flight = self.flight.peek().map(|Reverse(f)| f.at);
        let next_link = (0..N)
            .filter(|&i| {
                self.links[i].free_at() > self.now && !self.nodes[i].scheduler().is_empty()
            })
            .map(|i| self.links[i].free_at())
            .min();
        let events = [next_flight, clock::next_timer(&self.nodes), next_link];
        if !self.clock.advance(&mut self.now, events, deadline) {
            return false;
        }
        while self
            .flight
            .peek()
            .is_some_and(|Reverse(f)| f.at <= self.now)
        {
            if let Some(Reverse(f)) = self.flight.pop() {
                self.deliver(f);
            }
        }
        clock::fire_timers(&mut self.nodes, self.now);
        true
    }

    /// The node a datagram to `dst` reaches now: the one at that address, or behind the
    /// NAT box at that IP (whose mappings decide the rest on delivery).
    fn route(&self, dst: SocketAddr) -> Option<usize> {
        if self.turn && dst.ip() == IpAddr::V4(TURN_IP) {
            return self.allocation(dst);
        }
        (0..N).find(|&j| match &self.nats[j] {
            Some(nat) => nat.public == dst.ip(),
            None => self.addrs[j] == dst,
        })
    }

    fn transmit(&mut self, i: usize) {
        let imp = match &self.profile {
            Some(profile) => profile.at(self.now.saturating_duration_since(self.setup.start)),
            None => self.link.impairments(),
        };
        let buffered = imp.buffer_bytes.is_some();
        while buffered || self.links[i].free_at() <= self.now {
            let Some(t) = self.nodes[i].poll_transmit(self.now, &mut self.buf) else {
                return;
            };
            let bytes = self.buf[..t.len].to_vec();
            if let Via::Hub(peer) = t.via {
                self.relay(i, peer, t.len, bytes);
                continue;
            }
            if t.via == Via::Turn && !self.turn {
                // No allocation to send through.
                continue;
            }
            let to_server = t.via == Via::Turn || self.allocation(t.dst).is_some();
            // Two nodes: what is not for one is meant for the other, even where it is not.
            let to = self.route(t.dst).or((N == 2).then(|| 1 - i));
            let (data_key, is_init) = match wire::parse(&bytes) {
                Ok(Message::Data(h)) => (to.map(|to| (to, h.receiver_index, h.counter)), false),
                Ok(Message::Init(_)) => (None, true),
                _ => (None, false),
            };
            if let Some(key) = data_key {
                self.stats.data_sent.insert(key);
            }
            let blocked = self.udp_blocked[i]
                || to.is_some_and(|to| self.udp_blocked[to])
                || (self.direct_blocked && !to_server);
            if blocked {
                self.stats.udp_blocked += 1;
                if let Some(key) = data_key {
                    self.stats.data_lost.insert(key);
                }
                continue;
            }
            // The link's physics is the model the real-process emulator drives too.
            let verdict = self.links[i].offer(self.now, t.len, &imp, &mut self.rng);
            let verdict = match (verdict, to.and_then(|to| self.hops.get_mut(&(i, to)))) {
                (Verdict::Deliver(first), Some((hop, hop_imp))) => {
                    // The hop takes the datagram when the uplink has sent it, and adds
                    // its own queue and delay to the uplink's.
                    match hop.offer(first.departs, t.len, hop_imp, &mut self.rng) {
                        Verdict::Deliver(second) => Verdict::Deliver(bauxite_netem::Delivery {
                            at: second.at + (first.at - first.departs),
                            duplicate_at: None,
                            ..first
                        }),
                        dropped => dropped,
                    }
                }
                (verdict, _) => verdict,
            };
            let delivery = match verdict {
                Verdict::Deliver(delivery) => delivery,
                Verdict::Drop(why) => {
                    match why {
                        LinkDrop::Buffer => self.stats.queue_drops += 1,
                        LinkDrop::Mtu => self.stats.mtu_dropped += 1,
                        LinkDrop::Loss | LinkDrop::Blackout => {}
                    }
                    if let Some(key) = data_key {
                        self.stats.data_lost.insert(key);
                    }
                    continue;
                }
            };
            let departs = delivery.departs;
            if t.via == Via::Turn {
                // Out of the allocation's own socket to the server, then from the relayed
                // address to the peer: one more hop.
                self.stats.turn_relayed += 1;
                let at = delivery.at + self.link.latency;
                self.schedule_from(at, to, Self::relay_addr(i), t.dst, bytes);
                continue;
            }
            // The node's own NAT box, if any, rewrites the source on the way out.
            let src = match self.nats[i].as_mut() {
                Some(nat) => nat.outbound(self.addrs[i], t.dst),
                None => self.addrs[i],
            };
            // The attacker sits after the lossy segment: it copies what really got through.
            if let (Some(to), Some(_)) = (to, data_key) {
                let dst = if self.nats[to].is_some() {
                    t.dst
                } else {
                    self.addrs[to]
                };
                self.attack(to, src, dst, &bytes, departs);
            }
            if let Some(impostor) = self.impostor.filter(|m| is_init && m.replay_handshakes) {
                self.stats.handshake_replays_injected += 1;
                let at = departs + self.link.latency * 2;
                self.schedule_from(at, to, impostor.from, t.dst, bytes.clone());
            }
            if let Some(dup) = delivery.duplicate_at {
                self.stats.duplicates_injected += 1;
                self.schedule_from(dup, to, src, t.dst, bytes.clone());
            }
            self.schedule_from(delivery.at, to, src, t.dst, bytes);
        }
    }

    /// Sends `bytes` from node `i` through the hub to the node whose ID is `peer`: over
    /// node `i`'s uplink (its rate only), then lossless, in order, after [`HUB_DELAY`].
    fn relay(&mut self, i: usize, peer: crate::PeerId, len: usize, bytes: Vec<u8>) {
        let to = (0..N).find(|&j| self.nodes[j].peer_id() == peer);
        let uplink = Impairments {
            rate_bps: self.link.rate_bps,
            ..Impairments::default()
        };
        let departs = match self.links[i].offer(self.now, len, &uplink, &mut self.rng) {
            Verdict::Deliver(d) => d.departs,
            // A rate-only uplink with no buffer limit drops nothing.
            Verdict::Drop(_) => self.now,
        };
        let key = match (to, wire::parse(&bytes)) {
            (Some(to), Ok(Message::Data(h))) => Some((to, h.receiver_index, h.counter)),
            _ => None,
        };
        if let Some(key) = key {
            self.stats.data_sent.insert(key);
        }
        let Some(to) = to else {
            // The hub drops frames for a node it does not know.
            if let Some(key) = key {
                self.stats.data_lost.insert(key);
            }
            return;
        };
        self.stats.hub_relayed += 1;
        let at = departs + HUB_DELAY;
        self.seq += 1;
        self.flight.push(Reverse(InFlight {
            at,
            seq: self.seq,
            to: Some(to),
            from: HUB_ENDPOINT,
            dst: HUB_ENDPOINT,
            bytes,
            hub: true,
            turn: false,
        }));
    }

    /// Copies of a data packet from `src` to node `to` at `dst`, as the attacker likes.
    fn attack(
        &mut self,
        to: usize,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
        departs: Instant,
    ) {
        self.data_seen += 1;
        let n = self.data_seen;
        let a = self.attacker;
        let from = self.impostor.map_or(src, |m| m.from);
        let to = Some(to);
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
        to: Option<usize>,
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
            hub: false,
            turn: false,
        }));
    }

    fn deliver(&mut self, f: InFlight) {
        let key = match (f.to, wire::parse(&f.bytes)) {
            (Some(to), Ok(Message::Data(h))) => Some((to, h.receiver_index, h.counter)),
            _ => None,
        };
        let lost = |net: &mut Self| {
            if let Some(key) = key {
                net.stats.data_lost.insert(key);
            }
        };
        if let (true, Some(to)) = (f.hub, f.to) {
            return self.accept(to, f.from, key, f.bytes);
        }
        if f.turn {
            if let Some(to) = f.to.filter(|&to| !self.udp_blocked[to]) {
                return self.accept_turn(to, f.from, key, f.bytes);
            }
            return lost(self);
        }
        if let Some(to) = self.allocation(f.dst) {
            // At the TURN server: on to the allocation's node, one more hop.
            self.stats.turn_relayed += 1;
            self.seq += 1;
            self.flight.push(Reverse(InFlight {
                at: self.now + self.link.latency,
                seq: self.seq,
                to: Some(to),
                from: f.from,
                dst: f.dst,
                bytes: f.bytes,
                hub: false,
                turn: true,
            }));
            return;
        }
        let Some(to) = self.route(f.dst) else {
            // Sent to where no node is (any more): nobody receives it.
            self.stats.misaddressed += 1;
            return lost(self);
        };
        if self.udp_blocked[to] {
            self.stats.udp_blocked += 1;
            return lost(self);
        }
        let inside = match &self.nats[to] {
            Some(nat) => match nat.inbound(f.dst.port(), f.from) {
                Some(inside) => inside,
                None => {
                    // Unsolicited: no mapping there, or the filter does not admit the sender.
                    self.stats.nat_dropped += 1;
                    return lost(self);
                }
            },
            None => f.dst,
        };
        if inside != self.addrs[to] {
            // Mapped to where the node was before it moved.
            self.stats.misaddressed += 1;
            return lost(self);
        }
        self.accept(to, f.from, key, f.bytes);
    }

    /// Hands a datagram that reached node `to` through its TURN allocation to it.
    fn accept_turn(
        &mut self,
        to: usize,
        from: SocketAddr,
        key: Option<(usize, u32, u64)>,
        mut bytes: Vec<u8>,
    ) {
        let received = self.nodes[to].handle_turn_datagram(self.now, from, &mut bytes);
        self.received(to, key, received, bytes);
    }

    /// Hands a datagram that reached node `to` to it.
    fn accept(
        &mut self,
        to: usize,
        from: SocketAddr,
        key: Option<(usize, u32, u64)>,
        mut bytes: Vec<u8>,
    ) {
        let received = self.nodes[to].handle_datagram(self.now, from, &mut bytes);
        self.received(to, key, received, bytes);
    }

    /// Books what node `to` made of a datagram.
    fn received(
        &mut self,
        to: usize,
        key: Option<(usize, u32, u64)>,
        received: Received,
        bytes: Vec<u8>,
    ) {
        match received {
            Received::Deliver(range) => {
                if let Some(key) = key {
                    self.stats.data_accepted.insert(key);
                }
                self.delivered[to].push(Delivered {
                    at: self.now,
                    packet: bytes[range].to_vec(),
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
}

/// A documentation-range (TEST-NET-1) address: the simulation never touches a socket.
fn sock(host: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, host), port))
}
