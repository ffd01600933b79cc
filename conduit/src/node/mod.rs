//! `BauxiteNode`: the sans-IO facade that ties identity, peers, policy, the scheduler,
//! paths and per-peer tunnels into one data plane.
//!
//! Invariant: the node never reads a clock, a socket or the OS RNG. Everything arrives
//! through `handle_*` calls with the current `now`, randomness comes from the seed given
//! to [`BauxiteNode::new`], and everything it wants done leaves through `poll_*` calls —
//! so the same inputs always give the same outputs.
//!
//! # Driving a node
//!
//! ```text
//! loop {
//!     node.handle_tun_packet(now, ip_packet)          // for every packet read from TUN
//!     node.handle_datagram(now, from, &mut datagram)  // for every UDP datagram;
//!                                                     //   Received::Deliver(r) => write datagram[r] to TUN
//!     node.handle_timeout(now)                        // when poll_timeout() is reached
//!     while let Some(t) = node.poll_transmit(now, &mut buf) { send buf[..t.len] to t.dst }
//!     while let Some(e) = node.poll_event() { log e }
//!     while let Some(len) = node.poll_local_packet(&mut buf) { write buf[..len] to TUN }
//!     sleep until node.poll_timeout() or the next input
//! }
//! ```
//!
//! `poll_transmit` returns `None` when nothing more may be sent now: call it again after
//! the next input or timeout. Control messages (handshakes, keepalives) go first, then
//! packets that waited for a session, then the scheduler's lanes in priority order.
//!
//! # Endpoints and roaming
//!
//! A peer's endpoint is configured ([`PeerInfo::endpoint`], hub topology) or learned, as
//! WireGuard does: from an initiation once its static key authenticated and its
//! timestamp is fresh, and from every authenticated data packet or response — never
//! from anything unauthenticated. So one side knowing the other is enough: the other
//! answers where the initiation came from, and follows it when its address changes
//! (NAT rebinding). A node with no endpoint for a peer starts no handshake; it holds
//! packets for that peer (the per-peer stage) and waits to be dialled. A peer with
//! several configured addresses ([`PeerInfo::candidates`]) is tried at each in turn: an
//! initiation unanswered after `rekey_timeout` is retried at the next one
//! ([`PeerPaths::rotate`](crate::path::PeerPaths::rotate)); rekeys and keepalive timeouts stay on the working address.
//! Submodules: `inbound` handles datagrams, `outbound`
//! packets from TUN and transmission, `timers` the per-peer deadlines, `mtu` path MTU
//! discovery and packets too large for a peer's path (ICMP answers, which
//! `poll_local_packet` hands out, fragmentation, MSS clamping).

mod hub;
mod ice;
mod ice_restart;
mod ice_signal;
mod ice_types;
mod inbound;
mod mtu;
mod outbound;
mod peer;
mod redundancy;
mod repair;
mod timers;
mod topology;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::cipher::CipherSuite;
use crate::identity::Identity;
use crate::metrics::PacingSource;
use crate::path::repair::BULK_HEADER_LEN;
use crate::path::{
    AdaptiveConfig, AdaptiveLedbat, AutoBulk, AutoConfig, AutoGroup, MakeStrategy,
    NullCongestionStrategy, PeerCongestion, PeerPaths, RateBulk, RateConfig, SendLog,
};
use crate::peers::{PeerInfo, PeerRegistry};
use crate::policy::PolicyEngine;
use crate::scheduler::DataPlaneScheduler;
use crate::session::{Timers, Tunnel};
use crate::snapshot::StateSnapshot;
use crate::wire::{DATA_OVERHEAD, INIT_LEN, RESP_LEN};
use crate::{Error, Metrics, PeerId};

pub use hub::{
    DEFAULT_HUB_RELAY_AFTER, DEFAULT_TURN_AFTER, HUB_ARRIVAL_HOLD, HUB_ENDPOINT,
    HUB_PROBE_INTERVAL, Via,
};
pub use ice::{ConnectStages, ICE_TURN_AFTER, IceAction, IceKind, IcePhase, IceReport, IceStatus};
pub use ice_restart::{ICE_MAX_RESTARTS, ICE_RESTART_BACKOFF};
pub use ice_signal::{IceSignal, MAX_SIGNAL, SignalRefused, SignedSignal};
pub use inbound::{DropReason, Received};
pub use mtu::{ICMP_BURST, ICMP_INTERVAL};
pub use outbound::{Transmit, TunVerdict};
pub use peer::Paths;
pub use redundancy::{MAX_PENDING_COPIES, REPEAT_GAP};

use peer::{PeerState, Peers, tunnel_mut};

/// How long data sent to a peer may go without any authenticated packet back (every data
/// packet is acknowledged) before the path counts as quiet ([`Event::PathQuiet`]).
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// The MTU of `bauxite0`: the largest IP packet the node carries.
pub const DEFAULT_MTU: usize = 1350;

/// Tunable behaviour of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// AEAD for handshakes and data; every node of a mesh must use the same one.
    pub suite: CipherSuite,
    /// Session timers.
    pub timers: Timers,
    /// Largest IP packet accepted from TUN (the device MTU).
    pub mtu: usize,
    /// Queueing delay the bulk lane may add below the lanes (LEDBAT's target), or `None`
    /// to send bulk unpaced. See [`DEFAULT_BULK_TARGET`].
    pub bulk_target: Option<Duration>,
    /// Which controller paces each peer's bulk (with `bulk_target` as its delay floor).
    /// See [`BulkController`].
    pub bulk_controller: BulkController,
    /// Relay a peer's packets through the hub's data channel when nothing sent to it on
    /// UDP was answered for this long (or it has no UDP path), or `None` when the node has
    /// no hub relay. See [`DEFAULT_HUB_RELAY_AFTER`].
    pub hub_relay_after: Option<Duration>,
    /// Move a peer that has a TURN path onto it when nothing sent to it directly was
    /// answered for this long, or `None` never to choose TURN by timeout (a peer that
    /// reaches us through TURN is still answered there). See [`DEFAULT_TURN_AFTER`].
    pub turn_after: Option<Duration>,
    /// Whether a peer's second direct path is kept alive and carries copies
    /// ([`Bonding`](crate::path::Bonding); default off).
    pub bonding: crate::path::Bonding,
    /// Whether the node reports a fall of its peers' arrival rate at once
    /// ([`RateDropFrame`](crate::path::RateDropFrame)) and acts on such reports (only the
    /// rate model does). Off by default: docs/congestion.md, section 6.
    pub rate_drop_feedback: bool,
    /// Whether the node repairs the loss of bulk packets inside the tunnel: numbers its
    /// bulk for peers that read the numbers, retransmits what their NACKs name, and
    /// delivers the bulk it receives in order ([`crate::path::repair`]). On by default:
    /// docs/congestion.md, section 15.
    pub bulk_repair: bool,
}

/// Default queueing delay for the bulk lane. The control loop's packets overtake bulk in
/// the lanes, but below them (socket buffers, a slow link's queue, a CPU-bound receiver)
/// they wait behind whatever bulk is in flight; each peer's bulk controller
/// ([`AutoBulk`] by default) keeps that wait near this target. On links whose
/// delay jitters by more (LTE, Wi-Fi) the controller raises its target with the measured
/// jitter, so this is a floor, not a setting to retune per link (docs/congestion.md).
pub const DEFAULT_BULK_TARGET: Duration = Duration::from_micros(250);

/// The bulk lane's congestion controller (docs/congestion.md compares them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BulkController {
    /// [`AutoBulk`], the default: the rate model while every peer sending bulk has had
    /// a quiet path for a second of bulk (a wired, LAN or shaped link), the adaptive
    /// window for all of them as soon as one path jitters (LTE, Wi-Fi); the node's peers
    /// change together (docs/congestion.md, section 8).
    #[default]
    Auto,
    /// [`RateBulk`]: paced at the measured delivery rate, queueing delay only a brake.
    Rate,
    /// [`AdaptiveLedbat`]: a window kept under a delay target that follows the jitter.
    Adaptive,
}

impl BulkController {
    /// Parses `auto`, `rate` or `adaptive`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "rate" => Some(Self::Rate),
            "adaptive" => Some(Self::Adaptive),
            _ => None,
        }
    }

    /// `auto`, `rate` or `adaptive`, as [`from_name`](Self::from_name) reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Rate => "rate",
            Self::Adaptive => "adaptive",
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            suite: CipherSuite::default(),
            timers: Timers::default(),
            mtu: DEFAULT_MTU,
            bulk_target: Some(DEFAULT_BULK_TARGET),
            bulk_controller: BulkController::default(),
            hub_relay_after: None,
            turn_after: Some(DEFAULT_TURN_AFTER),
            bonding: crate::path::Bonding::Off,
            rate_drop_feedback: false,
            bulk_repair: true,
        }
    }
}

impl NodeConfig {
    /// Size of the buffer `poll_transmit` needs: the largest plaintext plus the
    /// data-packet overhead.
    pub fn datagram_capacity(&self) -> usize {
        (self.max_plaintext() + DATA_OVERHEAD).max(INIT_LEN)
    }

    /// The largest plaintext the node seals: the MTU, plus a sequenced bulk packet's
    /// header when it repairs bulk (path MTU discovery searches up to this size).
    pub fn max_plaintext(&self) -> usize {
        self.mtu + if self.bulk_repair { BULK_HEADER_LEN } else { 0 }
    }
}

/// Something worth telling the operator about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A handshake completed; the session can carry data.
    HandshakeCompleted {
        /// The peer.
        peer: PeerId,
        /// Whether we sent the initiation.
        initiator: bool,
    },
    /// Handshake retries were exhausted; waiting packets were dropped.
    HandshakeGaveUp {
        /// The peer.
        peer: PeerId,
        /// Packets dropped with it.
        dropped: usize,
    },
    /// Data went to `peer` and nothing authenticated came back for [`QUIET_AFTER`]: the
    /// path may be broken — our NAT may have rebound, so the shell asks STUN again at
    /// once. Reported once until the peer is heard from again.
    PathQuiet {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's packets now go through TURN (`active`), or back on the direct path.
    TurnRelay {
        /// The peer.
        peer: PeerId,
        /// Whether TURN carries the peer's packets now.
        active: bool,
    },
    /// A peer's packets now go through the hub relay (`active`), or back on UDP.
    HubRelay {
        /// The peer.
        peer: PeerId,
        /// Whether the hub relay carries the peer's packets now.
        active: bool,
    },
    /// The topology added a peer ([`BauxiteNode::replace_peers`]).
    PeerAdded {
        /// The peer.
        peer: PeerId,
        /// Its name (from the hub, not trusted).
        name: String,
    },
    /// The topology no longer lists a peer: it and its sessions are gone.
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Its name (from the hub, not trusted).
        name: String,
    },
    /// The topology gave a peer a new static key: the session under the old key is gone
    /// and a handshake under the new one starts.
    PeerKeyChanged {
        /// The peer.
        peer: PeerId,
    },
    /// The topology listed a peer whose virtual IP or key belongs to another peer (or
    /// whose ID does not match its key); the peer table keeps its previous record.
    PeerRefused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: crate::peers::PeerConflict,
    },
}

/// Maps wall-clock time onto the monotonic `now` the node is driven with.
#[derive(Clone, Copy, Debug)]
struct Clock {
    origin: Instant,
    origin_unix_nanos: u64,
}

impl Clock {
    fn unix_nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        self.origin_unix_nanos
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// Control messages waiting for `poll_transmit`.
#[derive(Clone, Copy, Debug)]
enum Control {
    Init {
        peer: PeerId,
        msg: [u8; INIT_LEN],
    },
    Resp {
        peer: PeerId,
        msg: [u8; RESP_LEN],
    },
    Keepalive {
        peer: PeerId,
    },
    Ack {
        peer: PeerId,
    },
    /// A keepalive to a direct candidate of a peer on the hub relay.
    DirectProbe {
        peer: PeerId,
    },
    /// A keepalive on the TURN path of a peer on the hub relay: TURN beats the hub.
    TurnProbe {
        peer: PeerId,
    },
    /// A keepalive to one of a peer's direct addresses, keeping it alive as a second
    /// path (bonding).
    BondProbe {
        peer: PeerId,
        addr: std::net::SocketAddr,
    },
    /// The peer's path MTU discovery wants a probe.
    Probe {
        peer: PeerId,
    },
    ProbeAck {
        peer: PeerId,
        id: u32,
    },
    /// Our detector saw the peer's packets arrive slower: tell it at once.
    RateDrop {
        peer: PeerId,
        frame: crate::path::RateDropFrame,
    },
    /// Bulk packets from the peer are missing: ask for their repair at once.
    Nack {
        peer: PeerId,
        frame: crate::path::repair::NackFrame,
    },
    /// Tell the peer we read sequenced bulk on its session `index` to us.
    RepairHello {
        peer: PeerId,
        index: u32,
    },
}

/// A mesh node's data plane. See the module documentation for how to drive it.
pub struct BauxiteNode {
    identity: Identity,
    config: NodeConfig,
    registry: PeerRegistry,
    policy: PolicyEngine,
    scheduler: DataPlaneScheduler,
    /// One bulk controller per peer.
    congestion: PeerCongestion,
    metrics: Arc<Metrics>,
    /// One record per registered peer: paths, session, acknowledgements.
    peers: Peers,
    /// Our session indices (live sessions and pending initiations) to their peer.
    indices: HashMap<u32, PeerId>,
    /// Peers whose staged packets can be sent now.
    ready: VecDeque<PeerId>,
    control: VecDeque<Control>,
    events: VecDeque<Event>,
    pool: Vec<Vec<u8>>,
    /// Fragments of an IPv4 packet too large for its peer's path, sent before the lanes.
    fragments: VecDeque<(PeerId, crate::Lane, Vec<u8>)>,
    /// Redundant copies of sealed packets waiting to go out (bonding, redundancy rules).
    copies: redundancy::Copies,
    /// Packets for the local host (ICMP too-big answers), for `poll_local_packet`.
    local: VecDeque<Vec<u8>>,
    /// Bulk packets released in order from a peer's reorder buffer, for `poll_released`.
    released: VecDeque<Vec<u8>>,
    /// Peers with bulk repairs waiting to be sent.
    repair_ready: VecDeque<PeerId>,
    /// Bulk packets kept for repair and held behind holes, over all peers (bounded by
    /// [`crate::path::repair::NODE_KEEP_MAX`] and [`crate::path::repair::NODE_HOLD_MAX`]).
    repair_totals: repair::Totals,
    icmp_limit: mtu::IcmpLimit,
    /// The padding of path MTU probes, allocated once.
    probe_pad: Vec<u8>,
    rng: ChaCha20Rng,
    clock: Clock,
    /// Whether the datagram being handled came through this node's TURN allocation
    /// ([`BauxiteNode::handle_turn_datagram`]).
    arrival_turn: bool,
    /// The kernel's receive stamp of the datagram being handled, when the shell has one
    /// ([`BauxiteNode::handle_stamped_datagram`]); the time acks report it received.
    arrived_at: Option<Instant>,
    last_timestamp: u64,
    /// Whether ICE sessions run ([`BauxiteNode::enable_ice`]).
    ice_enabled: bool,
    /// What the shell must do for ICE ([`BauxiteNode::poll_ice`]).
    ice_actions: VecDeque<ice::IceAction>,
}

impl std::fmt::Debug for BauxiteNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BauxiteNode")
            .field("peer_id", &self.identity.peer_id())
            .field("peers", &self.registry.len())
            .field(
                "tunnels",
                &self.peers.values().filter(|s| s.tunnel.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

impl BauxiteNode {
    /// Builds a node. `seed` feeds every random choice (ephemeral keys, session indices);
    /// pass fresh OS randomness in production and a fixed value in tests. `unix_nanos` is
    /// the wall-clock time at `now`, used for handshake timestamps.
    pub fn new(
        identity: Identity,
        registry: PeerRegistry,
        config: NodeConfig,
        seed: [u8; 32],
        now: Instant,
        unix_nanos: u64,
    ) -> Self {
        let mut peers = Peers::new();
        for peer in registry.iter() {
            let dial = peer.dial_order();
            let mut path = PeerPaths::new();
            path.set_candidates(&dial);
            path.set_direct(dial.first().copied());
            path.set_relay(peer.relay_candidate());
            peers.insert(
                peer.id,
                PeerState {
                    path,
                    ..PeerState::default()
                },
            );
        }
        let mtu = config.mtu;
        let metrics = Metrics::default();
        let make: MakeStrategy = match (config.bulk_target, config.bulk_controller) {
            (Some(target), BulkController::Rate) => {
                let rate = RateConfig {
                    min_target: target,
                    mss: config.mtu,
                    ..RateConfig::default()
                };
                Box::new(move || Box::new(RateBulk::new(rate)))
            }
            (Some(target), BulkController::Auto) => {
                let auto = AutoConfig::with_floor(target, config.mtu);
                // One group per node: all its peers change controller at one instant.
                let group = AutoGroup::new();
                metrics.bulk_pacing.set(PacingSource::Auto(group.clone()));
                Box::new(move || Box::new(AutoBulk::in_group(auto, &group)))
            }
            (Some(target), BulkController::Adaptive) => {
                let adaptive = AdaptiveConfig {
                    min_target: target,
                    mss: config.mtu,
                    ..AdaptiveConfig::default()
                };
                Box::new(move || Box::new(AdaptiveLedbat::new(adaptive)))
            }
            (None, _) => Box::new(|| Box::new(NullCongestionStrategy)),
        };
        match (config.bulk_target, config.bulk_controller) {
            (None, _) => metrics.bulk_pacing.set(PacingSource::Off),
            (Some(_), BulkController::Auto) => {}
            (Some(_), fixed) => metrics.bulk_pacing.set(PacingSource::Fixed(fixed)),
        }
        let congestion = PeerCongestion::new(make);
        Self {
            identity,
            config,
            registry,
            policy: PolicyEngine::new(),
            scheduler: DataPlaneScheduler::new(),
            congestion,
            metrics: Arc::new(metrics),
            peers,
            indices: HashMap::new(),
            ready: VecDeque::new(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            pool: Vec::new(),
            fragments: VecDeque::new(),
            copies: redundancy::Copies::default(),
            local: VecDeque::new(),
            released: VecDeque::new(),
            repair_ready: VecDeque::new(),
            repair_totals: repair::Totals::default(),
            icmp_limit: mtu::IcmpLimit::default(),
            probe_pad: Vec::with_capacity(mtu),
            rng: ChaCha20Rng::from_seed(seed),
            clock: Clock {
                origin: now,
                origin_unix_nanos: unix_nanos,
            },
            last_timestamp: 0,
            arrival_turn: false,
            arrived_at: None,
            ice_enabled: false,
            ice_actions: VecDeque::new(),
        }
    }

    /// Replaces the bulk-lane congestion strategy: `make` builds each peer's controller
    /// (existing controllers are dropped; each peer gets a fresh one on its next bulk
    /// packet).
    pub fn set_congestion(&mut self, make: MakeStrategy) {
        // The node no longer knows what paces bulk: status and metrics say nothing of it.
        self.metrics.bulk_pacing.set(PacingSource::Unknown);
        self.congestion = PeerCongestion::new(make);
    }

    /// This node's mesh ID.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Whether this node wins simultaneous initiations with the peer whose X25519 static
    /// key is `remote_static`: the lower static key leads. Both ends compare the same two
    /// keys — the ones the handshake authenticates — so they always agree, even when
    /// their views of each other's peer ID differ (a peer listed under a substituted key:
    /// two "leaders" would each resend and never answer).
    fn leads(&self, remote_static: &[u8; 32]) -> bool {
        self.static_public() < *remote_static
    }

    /// The node's X25519 static public key (the one its peers list it under).
    pub fn static_public(&self) -> [u8; 32] {
        self.identity.public().static_public
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Shared counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The peer table.
    pub fn registry(&self) -> &PeerRegistry {
        &self.registry
    }

    /// The policy engine (load or clear policies through it).
    pub fn policy_mut(&mut self) -> &mut PolicyEngine {
        &mut self.policy
    }

    /// The paths of a registered peer (ICE and relays update them); `None` for a peer
    /// not in the registry.
    pub fn path_mut(&mut self, peer: PeerId) -> Option<&mut PeerPaths> {
        self.peers.get_mut(&peer).map(|s| &mut s.path)
    }

    /// Every peer's paths, read-only: each peer's endpoint and where it came from.
    pub fn paths(&self) -> Paths<'_> {
        Paths {
            peers: &self.peers,
            hub: self.hub_enabled(),
        }
    }

    /// The outbound scheduler, read-only.
    pub fn scheduler(&self) -> &DataPlaneScheduler {
        &self.scheduler
    }

    /// Sets the operator's port-to-lane rules (`[[lanes]]` in the edge config).
    pub fn set_lane_rules(&mut self, rules: crate::scheduler::LaneRules) {
        self.scheduler.set_lane_rules(rules);
    }

    /// Adds or updates a peer. Sessions with a peer whose static key changed are dropped.
    /// A configured endpoint (the first of [`PeerInfo::dial_order`]) replaces the current
    /// one only when it is new or changed, so a topology refresh repeating an old address
    /// does not undo roaming; the other addresses become the candidates a retried
    /// handshake rotates through.
    pub fn upsert_peer(&mut self, peer: PeerInfo) -> Result<(), Error> {
        let id = peer.id;
        let dial = peer.dial_order();
        let endpoint = dial.first().copied();
        let static_public = peer.static_public;
        let kinds = peer.candidate_kinds.clone();
        let relay = peer.relay_candidate();
        let before = self
            .registry
            .by_id(id)
            .map(|p| p.dial_order().first().copied());
        self.registry.upsert(peer)?;
        let state = self.peers.entry(id).or_default();
        state.path.set_candidates(&dial);
        state.path.set_relay(relay);
        state.kinds = kinds;
        if state
            .tunnel
            .as_ref()
            .is_some_and(|t| t.remote_static != static_public)
        {
            self.drop_tunnel(id);
        }
        if endpoint.is_some()
            && before != Some(endpoint)
            && let Some(state) = self.peers.get_mut(&id)
        {
            let moved = state.path.direct().map(|d| d.addr) != endpoint;
            state.path.set_direct(endpoint);
            if moved {
                // A new path: what discovery learned of the old one does not hold.
                state.pmtu = crate::path::Pmtu::default();
                self.metrics.path_mtu.set(id, None);
            }
            if let Some(tunnel) = state.tunnel.as_mut() {
                tunnel.endpoint_known();
            }
        }
        Ok(())
    }

    /// Records where `peer` is, from the source of one of its authenticated packets; a
    /// tunnel waiting for the peer may handshake again. True when the endpoint changed.
    fn learn_endpoint(&mut self, now: Instant, peer: PeerId, from: std::net::SocketAddr) -> bool {
        let udp = self.heard_on(now, peer, from);
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        state.measured.heard();
        state.pmtu.on_heard();
        if let Some(tunnel) = state.tunnel.as_mut() {
            tunnel.endpoint_known();
        }
        if udp && state.path.get().relay != Some(from) {
            state.bond.heard(from, now);
            if self.config.bonding != crate::path::Bonding::Off {
                state.bond.arm(now);
            }
        }
        // With bonding, a packet on the second path does not move the primary while the
        // primary is still heard from; once it is not (a cut uplink), the next one does.
        let keep = self.config.bonding != crate::path::Bonding::Off
            && state
                .path
                .direct()
                .is_some_and(|d| d.addr != from && state.bond.alive(d.addr, now));
        // The hub's pseudo-endpoint is no address to send to.
        let changed = udp && !keep && state.path.learn(from);
        if changed {
            tracing::info!(%peer, endpoint = %from, "peer endpoint learned");
            self.reset_pmtu(peer);
        }
        changed
    }

    /// Removes a peer and tears down its sessions (revocation).
    pub fn remove_peer(&mut self, id: PeerId) -> Option<PeerInfo> {
        if let Some(state) = self.peers.remove(&id) {
            self.repair_totals.forget(&state.repair);
            if state.ice.is_some() {
                self.metrics.connect_stages.set(id, None);
                self.ice_actions.push_back(IceAction::Close { peer: id });
            }
            self.metrics.path_mtu.set(id, None);
            self.release(id, state.tunnel, state.feedback);
        }
        self.congestion.remove(id);
        let mut spare = Vec::new();
        self.scheduler.remove_peer(id, |buf| spare.push(buf));
        for buf in spare {
            Metrics::inc(&self.metrics.tx_dropped);
            self.recycle(buf);
        }
        self.registry.remove(id)
    }

    /// Tears down the session with `id`, keeping the peer and its paths.
    fn drop_tunnel(&mut self, id: PeerId) {
        if let Some(state) = self.peers.get_mut(&id) {
            let (tunnel, feedback) = (state.tunnel.take(), std::mem::take(&mut state.feedback));
            state.measured = peer::Measured::default();
            state.pmtu = crate::path::Pmtu::default();
            state.bond.clear();
            self.metrics.path_mtu.set(id, None);
            self.release(id, tunnel, feedback);
        }
    }

    /// Forgets a torn-down session's indices, drops its staged packets (counted) and
    /// settles its bulk in flight.
    fn release(&mut self, id: PeerId, tunnel: Option<Tunnel>, mut feedback: peer::Feedback) {
        // Bulk in flight to a peer that is gone will never be acknowledged.
        let outstanding = feedback.sent.as_mut().map_or(0, SendLog::settle_all);
        self.congestion.peer(id).forget(outstanding);
        if let Some(mut tunnel) = tunnel {
            for index in tunnel.live_indices().collect::<Vec<_>>() {
                self.indices.remove(&index);
            }
            for index in tunnel.drain_retired() {
                self.indices.remove(&index);
            }
            while let Some((_, buf)) = tunnel.take_staged() {
                Metrics::inc(&self.metrics.tx_dropped);
                self.recycle(buf);
            }
        }
    }

    /// Whether a session with `peer` can carry data now.
    pub fn is_connected(&self, peer: PeerId, now: Instant) -> bool {
        self.peers
            .get(&peer)
            .and_then(|s| s.tunnel.as_ref())
            .is_some_and(|t| t.is_established(now, &self.config.timers))
    }

    /// Per-peer session status, in peer order, for `bauxite status`.
    pub fn peer_status(&self, now: Instant) -> Vec<PeerStatus> {
        self.registry
            .iter()
            .map(|p| {
                let state = self.peers.get(&p.id);
                let tunnel = state.and_then(|s| s.tunnel.as_ref());
                let direct = state.and_then(|s| s.path.direct());
                let established =
                    tunnel.is_some_and(|t| t.is_established(now, &self.config.timers));
                let measured = state.map(|s| &s.measured);
                PeerStatus {
                    id: p.id,
                    name: p.name.clone(),
                    virtual_ip: p.virtual_ip,
                    path: peer::select(&self.peers, p.id, self.hub_enabled()),
                    secondary: state.and_then(|s| {
                        let primary = s.path.select().addr();
                        s.bond.secondary(primary, now)
                    }),
                    endpoint_origin: direct.map(|d| d.origin),
                    relay: state.and_then(|s| s.path.get().relay),
                    endpoint_kind: direct.and_then(|d| {
                        let kinds = &state?.kinds;
                        kinds.iter().find(|(a, _)| *a == d.addr).map(|(_, k)| *k)
                    }),
                    established,
                    handshake_age: tunnel
                        .and_then(Tunnel::established_at)
                        .map(|at| now.saturating_duration_since(at)),
                    connected_for: measured
                        .and_then(|m| m.connected_since)
                        .filter(|_| established)
                        .map(|at| now.saturating_duration_since(at)),
                    connect_time: measured.and_then(|m| m.connect_time),
                    rtt: measured.and_then(|m| m.rtt),
                    path_mtu: state.and_then(|s| s.pmtu.plpmtu()),
                    pmtu_phase: state.map_or(crate::path::PmtuPhase::Idle, |s| s.pmtu.phase()),
                    ice: state.and_then(|s| {
                        let up = s.measured.connected_since.filter(|_| established);
                        s.ice.as_ref().map(|i| i.status(up))
                    }),
                }
            })
            .collect()
    }

    /// Starts a handshake with `peer` now if no session exists or one is due; without an
    /// endpoint for it, waits for the peer to dial instead.
    pub fn connect(&mut self, now: Instant, peer: PeerId) -> Result<(), Error> {
        let info = self.registry.by_id(peer).ok_or(Error::UnknownPeer(peer))?;
        let remote_static = info.static_public;
        let leader = self.leads(&remote_static);
        let tunnel = self
            .peers
            .get_mut(&peer)
            .ok_or(Error::UnknownPeer(peer))?
            .tunnel
            .get_or_insert_with(|| Tunnel::new(peer, remote_static, leader));
        if tunnel.wants_handshake(now, &self.config.timers) {
            self.start_handshake(now, peer);
        }
        Ok(())
    }

    /// Like [`connect`](Self::connect), for a peer whose first address just changed (a
    /// topology update): an initiation in flight went to the old address, where the peer
    /// may not be, so a new one replaces it now instead of after its retry timeout
    /// (which would also move on to the next candidate). Its retry schedule and give-up
    /// deadline continue from the first attempt.
    pub fn redial(&mut self, now: Instant, peer: PeerId) -> Result<(), Error> {
        let in_flight = self
            .peers
            .get(&peer)
            .and_then(|s| s.tunnel.as_ref())
            .is_some_and(|t| t.handshake_pending() && !t.is_established(now, &self.config.timers));
        if !in_flight {
            return self.connect(now, peer);
        }
        self.start_handshake(now, peer);
        self.forget_retired(peer);
        Ok(())
    }

    /// A snapshot of the peer table for a warm start; holds no session keys.
    pub fn snapshot(&self, unix_seconds: u64) -> StateSnapshot {
        StateSnapshot::capture(self.peer_id(), &self.registry, unix_seconds)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn random_bytes(&mut self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    fn allocate_index(&mut self, peer: PeerId) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if index != 0 && !self.indices.contains_key(&index) {
                self.indices.insert(index, peer);
                return index;
            }
        }
    }

    fn next_timestamp(&mut self, now: Instant) -> u64 {
        let wall = self.clock.unix_nanos(now);
        self.last_timestamp = wall.max(self.last_timestamp.saturating_add(1));
        self.last_timestamp
    }

    /// Queues a new initiation to `peer` (whose tunnel must exist), or, with nowhere to
    /// send it, makes the tunnel wait for the peer to dial.
    fn start_handshake(&mut self, now: Instant, peer: PeerId) {
        if peer::select(&self.peers, peer, self.hub_enabled()) == crate::path::Path::Drop {
            if let Some(tunnel) = tunnel_mut(&mut self.peers, peer) {
                if !tunnel.is_waiting_for_peer() {
                    tracing::debug!(%peer, "no endpoint; waiting for the peer to dial");
                }
                tunnel.wait_for_peer();
            }
            self.forget_retired(peer);
            return;
        }
        let ephemeral = self.random_bytes();
        let index = self.allocate_index(peer);
        let timestamp = self.next_timestamp(now);
        let Some(tunnel) = tunnel_mut(&mut self.peers, peer) else {
            self.indices.remove(&index);
            return;
        };
        let mut msg = [0u8; INIT_LEN];
        let started = tunnel.start_handshake(
            &self.identity,
            self.config.suite,
            ephemeral,
            index,
            timestamp,
            now,
            &mut msg,
        );
        match started {
            Ok(()) => {
                Metrics::inc(&self.metrics.handshakes_initiated);
                self.control.push_back(Control::Init { peer, msg });
            }
            Err(error) => {
                // Only a small-order static key in the peer table gets here.
                tracing::warn!(%peer, %error, "cannot start handshake; dropping tunnel");
                self.indices.remove(&index);
                self.drop_tunnel(peer);
            }
        }
        self.forget_retired(peer);
    }

    fn forget_retired(&mut self, peer: PeerId) {
        if let Some(tunnel) = tunnel_mut(&mut self.peers, peer) {
            for index in tunnel.drain_retired() {
                self.indices.remove(&index);
            }
        }
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.config.mtu))
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        recycle_into(&mut self.pool, buf);
    }
}

/// Keeps `buf` in `pool` for reuse: enough buffers to refill every lane once; beyond
/// that, lets them go.
fn recycle_into(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if pool.len() < 8192 {
        buf.clear();
        pool.push(buf);
    }
}

/// One line of `bauxite status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Peer ID.
    pub id: PeerId,
    /// Peer name.
    pub name: String,
    /// Its virtual IP.
    pub virtual_ip: crate::VirtualIp,
    /// The path packets would take now.
    pub path: crate::path::Path,
    /// The peer's second live direct address (bonding): copies go there.
    pub secondary: Option<std::net::SocketAddr>,
    /// The peer's relayed address on its TURN server (its `relay` candidate), if any.
    pub relay: Option<std::net::SocketAddr>,
    /// Where the direct endpoint came from, if there is one.
    pub endpoint_origin: Option<crate::path::EndpointOrigin>,
    /// What the hub says the direct endpoint is (host, server-reflexive, observed), when
    /// it is one of the addresses the hub labelled.
    pub endpoint_kind: Option<crate::peers::CandidateKind>,
    /// Whether a session can carry data.
    pub established: bool,
    /// Time since the current session's handshake (rekeys restart it).
    pub handshake_age: Option<Duration>,
    /// Time since the session became usable (rekeys do not restart it).
    pub connected_for: Option<Duration>,
    /// From our first initiation to its response, for the last handshake this node
    /// started (retries at other addresses included); `None` when the peer dialled.
    pub connect_time: Option<Duration>,
    /// Smoothed round trip over the session (handshakes and acknowledged packets).
    pub rtt: Option<Duration>,
    /// The path MTU discovery confirmed (whole IP packets on the underlay); `None` until
    /// a session started discovery.
    pub path_mtu: Option<u16>,
    /// Where path MTU discovery stands.
    pub pmtu_phase: crate::path::PmtuPhase,
    /// The peer's ICE session (selected pair, per-stage connect timings), when ICE is on.
    pub ice: Option<IceStatus>,
}
