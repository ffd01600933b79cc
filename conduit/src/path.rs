//! Path selection: which underlay address carries a peer's packets.
//!
//! Invariant: a validated direct path always wins over a relay, a relay over nothing, and a
//! packet with no path is dropped *and counted* (`tx_dropped`), never silently lost. The
//! hub relay ([`Path::Hub`]: the hub's data channel over the node's TCP/TLS connection) is
//! the owner's decision ([`PeerPaths::set_hub`]): taken when no UDP path answers, left as
//! soon as one does. TURN sits between them: the owner moves a peer onto it
//! ([`PeerPaths::set_on_turn`]) when no direct pair answers and the peer has a relayed
//! address ([`Path::Relay`]) or reached us through ours ([`Path::Turn`]). A
//! direct endpoint says where it came from ([`EndpointOrigin`]): configured (static
//! config, hub topology) or learned from an authenticated packet (roaming).
//!
//! A peer may have several configured addresses to try — its advertised endpoint, the
//! address the hub saw it at, its local interface addresses — best first
//! ([`PeerPaths::set_candidates`]). The direct endpoint is one of them (or the learned
//! one); when a handshake goes unanswered the owner calls [`PeerPaths::rotate`] to try
//! the next, so a peer whose first addresses are unreachable is still found, and an
//! authenticated answer from any address settles it (it is learned).
//!
//! Pacing the bulk lane against the network below lives in [`congestion`]: a
//! [`CongestionStrategy`] that can hold bulk back but never critical or telemetry. How
//! large a datagram each path carries is discovered by [`pmtu`], with the probe frames of
//! [`frame`].

pub mod adaptive;
pub mod arrival;
pub mod auto;
pub mod bond;
pub mod congestion;
pub mod feedback;
pub mod frame;
pub mod ledbat;
pub mod per_peer;
pub mod pmtu;
pub mod rate;
pub mod repair;

use std::net::SocketAddr;

pub use adaptive::{AdaptiveConfig, AdaptiveLedbat};
pub use arrival::{ArrivalConfig, ArrivalDetector, RateDropFrame};
pub use auto::{AutoBulk, AutoConfig, AutoGroup};
pub use bond::{BOND_ALIVE, BOND_PROBE_INTERVAL, BondPaths, Bonding};
pub use congestion::{BulkWindowStrategy, CongestionStrategy, Feedback, NullCongestionStrategy};
pub use feedback::{AckFrame, AckSample, AckStamps, AckState, PacketSample, SendLog};
pub use ledbat::{Ledbat, LedbatConfig};
pub use per_peer::{MakeStrategy, PeerCongestion};
pub use pmtu::{Pmtu, PmtuPhase};
pub use rate::{RateBulk, RateConfig};
pub use repair::{BulkReorder, NackFrame, RepairHello, RepairSender};

use crate::Metrics;

/// Where a direct endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointOrigin {
    /// Given to the node: static config, hub topology, ICE.
    Configured,
    /// The source address of an authenticated handshake or data packet from the peer
    /// (it dialled us, or its address changed: roaming, NAT rebinding).
    Learned,
}

impl EndpointOrigin {
    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            EndpointOrigin::Configured => "configured",
            EndpointOrigin::Learned => "learned",
        }
    }
}

/// A peer's direct endpoint and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The underlay address.
    pub addr: SocketAddr,
    /// Where it came from.
    pub origin: EndpointOrigin,
}

/// The candidate paths to one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathState {
    /// A direct endpoint (configured, ICE-validated, or learned from the peer).
    pub direct: Option<Endpoint>,
    /// The peer's relayed address on its TURN server (its `relay` candidate): sent to
    /// from the mesh socket like any UDP address, the server forwards to the peer.
    pub relay: Option<SocketAddr>,
    /// Where the peer's authenticated packets came from through this node's own TURN
    /// allocation: answered through it ([`Path::Turn`]).
    pub turn: Option<SocketAddr>,
    /// Whether packets go through TURN (no direct pair answered).
    pub on_turn: bool,
    /// Whether packets go through the hub's data channel (no UDP path answered).
    pub hub: bool,
}

/// Where to send a packet for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Straight to the peer's endpoint.
    Direct(SocketAddr),
    /// To the peer's relayed address on its TURN server, from the mesh socket.
    Relay(SocketAddr),
    /// Through this node's own TURN allocation, to this address of the peer (as the
    /// TURN server sees it).
    Turn(SocketAddr),
    /// Through the hub's data channel (over the node's TCP/TLS connection to the hub).
    Hub,
    /// No usable path: drop the packet.
    Drop,
}

impl Path {
    /// The path type for status output: `direct`, `turn` (either way through a TURN
    /// server), `hub` or `drop`.
    pub fn kind(self) -> &'static str {
        match self {
            Path::Direct(_) => "direct",
            Path::Relay(_) | Path::Turn(_) => "turn",
            Path::Hub => "hub",
            Path::Drop => "drop",
        }
    }

    /// The underlay address packets go to, if any.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Path::Direct(a) | Path::Relay(a) | Path::Turn(a) => Some(a),
            Path::Hub | Path::Drop => None,
        }
    }
}

impl PathState {
    /// The best available path: the hub when the owner chose it; TURN when the owner
    /// chose it (through our allocation when the peer reached us there, else to its
    /// relayed address); else direct, then TURN, then drop.
    pub fn best(&self) -> Path {
        if self.hub {
            return Path::Hub;
        }
        let turn = self.turn.map(Path::Turn).or(self.relay.map(Path::Relay));
        if self.on_turn
            && let Some(path) = turn
        {
            return path;
        }
        match (self.direct, turn) {
            (Some(direct), _) => Path::Direct(direct.addr),
            (None, Some(path)) => path,
            (None, None) => Path::Drop,
        }
    }

    /// Whether a TURN path exists (the peer's relayed address, or one that reached us
    /// through our allocation).
    pub fn has_turn(&self) -> bool {
        self.relay.is_some() || self.turn.is_some()
    }
}

/// The addresses to try for one peer: configured ones, best first, and the last one
/// learned from the peer itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Candidates {
    configured: Vec<SocketAddr>,
    learned: Option<SocketAddr>,
}

impl Candidates {
    /// The rotation order: the learned address first (it answered once), then the
    /// configured ones.
    fn cycle(&self) -> Vec<SocketAddr> {
        let learned = self.learned.filter(|l| !self.configured.contains(l));
        learned
            .into_iter()
            .chain(self.configured.iter().copied())
            .collect()
    }
}

/// Everything known about the paths to one peer: its direct endpoint and relay, and the
/// addresses to try. Part of the node's per-peer record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPaths {
    state: PathState,
    candidates: Candidates,
}

impl PeerPaths {
    /// No path yet: selects [`Path::Drop`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets or clears the configured direct path (clear it when ICE declares it dead).
    pub fn set_direct(&mut self, addr: Option<SocketAddr>) {
        self.state.direct = addr.map(|addr| Endpoint {
            addr,
            origin: EndpointOrigin::Configured,
        });
    }

    /// Sets the configured addresses, best first (duplicates dropped); the direct
    /// endpoint is not changed here (see [`set_direct`](Self::set_direct)).
    pub fn set_candidates(&mut self, addrs: &[SocketAddr]) {
        let mut configured: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if !configured.contains(addr) {
                configured.push(*addr);
            }
        }
        self.candidates.configured = configured;
    }

    /// The configured addresses, best first.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates.configured
    }

    /// A handshake went unanswered: makes the next address of the rotation (the learned
    /// one, then the configured ones in order, wrapping) the direct endpoint, and returns
    /// it; `None` when there is no other address to try.
    pub fn rotate(&mut self) -> Option<SocketAddr> {
        let cycle = self.candidates.cycle();
        if cycle.len() < 2 {
            return None;
        }
        let current = self.direct().map(|d| d.addr);
        let next = match current.and_then(|c| cycle.iter().position(|a| *a == c)) {
            Some(i) => cycle[(i + 1) % cycle.len()],
            None => cycle[0],
        };
        let origin = if self.candidates.configured.contains(&next) {
            EndpointOrigin::Configured
        } else {
            EndpointOrigin::Learned
        };
        self.state.direct = Some(Endpoint { addr: next, origin });
        Some(next)
    }

    /// Records `addr` as where the peer is, learned from one of its authenticated
    /// packets; true when that changed the direct path. The caller must have
    /// authenticated the packet: an address from anything else would let a forger
    /// redirect the peer's traffic.
    pub fn learn(&mut self, addr: SocketAddr) -> bool {
        self.candidates.learned = Some(addr);
        let direct = &mut self.state.direct;
        if direct.is_some_and(|d| d.addr == addr) {
            return false;
        }
        *direct = Some(Endpoint {
            addr,
            origin: EndpointOrigin::Learned,
        });
        true
    }

    /// The direct endpoint, with its origin.
    pub fn direct(&self) -> Option<Endpoint> {
        self.state.direct
    }

    /// Sets or clears the relay path.
    pub fn set_relay(&mut self, addr: Option<SocketAddr>) {
        self.state.relay = addr;
    }

    /// Records where the peer's authenticated packets came from through this node's own
    /// TURN allocation (`None`: forget it).
    pub fn set_turn(&mut self, from: Option<SocketAddr>) {
        self.state.turn = from;
    }

    /// Puts the peer on TURN (`true`) or back on its direct path (`false`).
    pub fn set_on_turn(&mut self, on: bool) {
        self.state.on_turn = on;
    }

    /// Whether the peer is on TURN.
    pub fn on_turn(&self) -> bool {
        self.state.on_turn
    }

    /// Puts the peer on the hub relay (`true`) or back on its UDP paths (`false`).
    pub fn set_hub(&mut self, on: bool) {
        self.state.hub = on;
    }

    /// Whether the peer is on the hub relay.
    pub fn on_hub(&self) -> bool {
        self.state.hub
    }

    /// The candidate paths (all `None` if none is known).
    pub fn get(&self) -> PathState {
        self.state
    }

    /// The path for the next packet.
    pub fn select(&self) -> Path {
        self.state.best()
    }

    /// Like [`select`](Self::select), but a peer with no UDP path at all goes through the
    /// hub when `hub_fallback` (the node has a hub relay) rather than nowhere.
    pub fn select_or_hub(&self, hub_fallback: bool) -> Path {
        match self.select() {
            Path::Drop if hub_fallback => Path::Hub,
            path => path,
        }
    }

    /// Like [`select`](Self::select), and counts a [`Path::Drop`] in `metrics.tx_dropped`.
    pub fn select_counted(&self, metrics: &Metrics) -> Path {
        let path = self.select();
        if path == Path::Drop {
            Metrics::inc(&metrics.tx_dropped);
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_beats_relay_beats_drop() {
        let (direct, relay) = (
            "192.0.2.7:41641".parse().unwrap(),
            "198.51.100.1:3478".parse().unwrap(),
        );
        let metrics = Metrics::default();
        let mut table = PeerPaths::new();
        assert_eq!(table.select_counted(&metrics), Path::Drop);
        table.set_relay(Some(relay));
        assert_eq!(table.select(), Path::Relay(relay));
        table.set_direct(Some(direct));
        assert_eq!(table.select_counted(&metrics), Path::Direct(direct));
        table.set_direct(None);
        assert_eq!(
            table.select(),
            Path::Relay(relay),
            "falls back when ICE fails"
        );
        assert_eq!(Metrics::get(&metrics.tx_dropped), 1);
        table.set_hub(true);
        assert_eq!(table.select(), Path::Hub, "the owner chose the hub relay");
        table.set_hub(false);
        assert_eq!(table.select(), Path::Relay(relay));
        table.set_on_turn(true);
        assert_eq!(
            table.select(),
            Path::Relay(relay),
            "chosen TURN beats direct"
        );
        let through: SocketAddr = "203.0.113.5:40001".parse().unwrap();
        table.set_turn(Some(through));
        assert_eq!(
            table.select(),
            Path::Turn(through),
            "a peer that reached us through our allocation is answered through it"
        );
        assert_eq!(table.select().kind(), "turn");
        table.set_on_turn(false);
        table.set_direct(Some(direct));
        assert_eq!(
            table.select(),
            Path::Direct(direct),
            "direct again once left"
        );
        assert_eq!(table.select().kind(), "direct");
        let empty = PeerPaths::new();
        assert_eq!(empty.select_or_hub(false), Path::Drop);
        assert_eq!(empty.select_or_hub(true), Path::Hub, "no UDP path: the hub");
    }

    #[test]
    fn learned_endpoints_say_so_and_replace_configured_ones() {
        let (configured, roamed): (SocketAddr, SocketAddr) = (
            "192.0.2.7:41641".parse().unwrap(),
            "203.0.113.9:5000".parse().unwrap(),
        );
        let mut table = PeerPaths::new();
        assert!(table.learn(roamed), "learned where nothing was known");
        assert_eq!(table.direct().unwrap().origin, EndpointOrigin::Learned);
        table.set_direct(Some(configured));
        assert_eq!(
            table.direct(),
            Some(Endpoint {
                addr: configured,
                origin: EndpointOrigin::Configured
            })
        );
        assert!(!table.learn(configured), "same address: no change");
        assert_eq!(table.direct().unwrap().origin, EndpointOrigin::Configured);
        assert!(table.learn(roamed));
        assert_eq!(table.select(), Path::Direct(roamed));
        assert_eq!(EndpointOrigin::Learned.name(), "learned");
    }

    #[test]
    fn rotation_tries_each_candidate_in_order_and_keeps_the_learned_one() {
        let [a, b, c, nat]: [SocketAddr; 4] = [
            "192.0.2.1:51820".parse().unwrap(),
            "192.0.2.2:51820".parse().unwrap(),
            "10.0.0.3:51820".parse().unwrap(),
            "203.0.113.9:40000".parse().unwrap(),
        ];
        let mut table = PeerPaths::new();
        assert_eq!(table.rotate(), None, "nothing to rotate through");
        table.set_candidates(&[a, b, a, c]);
        assert_eq!(table.candidates(), &[a, b, c], "duplicates dropped");
        table.set_direct(Some(a));
        assert_eq!(table.rotate(), Some(b));
        assert_eq!(table.rotate(), Some(c));
        assert_eq!(table.rotate(), Some(a), "wraps around");
        assert_eq!(table.direct().unwrap().origin, EndpointOrigin::Configured);
        // An address learned from the peer joins the rotation, first.
        assert!(table.learn(nat));
        assert_eq!(table.rotate(), Some(a));
        assert_eq!(table.rotate(), Some(b));
        assert_eq!(table.rotate(), Some(c));
        assert_eq!(table.rotate(), Some(nat));
        assert_eq!(table.direct().unwrap().origin, EndpointOrigin::Learned);
        // One address only: nothing else to try.
        let mut single = PeerPaths::new();
        single.set_candidates(&[a]);
        single.set_direct(Some(a));
        assert_eq!(single.rotate(), None);
    }
}
