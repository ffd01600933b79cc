//! Path selection: which underlay address carries a peer's packets.
//!
//! Invariant: a validated direct path always wins over a relay, a relay over nothing, and a
//! packet with no path is dropped *and counted* (`tx_dropped`), never silently lost. A
//! direct endpoint says where it came from ([`EndpointOrigin`]): configured (static
//! config, hub topology) or learned from an authenticated packet (roaming).
//!
//! A peer may have several configured addresses to try — its advertised endpoint, the
//! address the hub saw it at, its local interface addresses — best first
//! ([`PathTable::set_candidates`]). The direct endpoint is one of them (or the learned
//! one); when a handshake goes unanswered the owner calls [`PathTable::rotate`] to try
//! the next, so a peer whose first addresses are unreachable is still found, and an
//! authenticated answer from any address settles it (it is learned).
//!
//! Pacing the bulk lane against the network below lives in [`congestion`]: a
//! [`CongestionStrategy`] that can hold bulk back but never critical or telemetry.

pub mod congestion;
pub mod feedback;
pub mod ledbat;

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use congestion::{BulkWindowStrategy, CongestionStrategy, NullCongestionStrategy};
pub use feedback::{AckFrame, AckSample, AckState, SendLog};
pub use ledbat::{Ledbat, LedbatConfig};

use crate::{Metrics, PeerId};

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
    /// The relay (TURN server or hub channel) that forwards to the peer.
    pub relay: Option<SocketAddr>,
}

/// Where to send a packet for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Straight to the peer's endpoint.
    Direct(SocketAddr),
    /// Through a relay.
    Relay(SocketAddr),
    /// No usable path: drop the packet.
    Drop,
}

impl PathState {
    /// The best available path: direct, then relay, then drop.
    pub fn best(&self) -> Path {
        match (self.direct, self.relay) {
            (Some(direct), _) => Path::Direct(direct.addr),
            (None, Some(addr)) => Path::Relay(addr),
            (None, None) => Path::Drop,
        }
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

/// Known paths, per peer, in ascending peer order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathTable {
    paths: BTreeMap<PeerId, PathState>,
    candidates: BTreeMap<PeerId, Candidates>,
}

impl PathTable {
    /// An empty table: every peer selects [`Path::Drop`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets or clears the configured direct path to `peer` (clear it when ICE declares
    /// it dead).
    pub fn set_direct(&mut self, peer: PeerId, addr: Option<SocketAddr>) {
        self.paths.entry(peer).or_default().direct = addr.map(|addr| Endpoint {
            addr,
            origin: EndpointOrigin::Configured,
        });
        self.prune(peer);
    }

    /// Sets the configured addresses of `peer`, best first (duplicates dropped); the
    /// direct endpoint is not changed here (see [`set_direct`](Self::set_direct)).
    pub fn set_candidates(&mut self, peer: PeerId, addrs: &[SocketAddr]) {
        let mut configured: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if !configured.contains(addr) {
                configured.push(*addr);
            }
        }
        let entry = self.candidates.entry(peer).or_default();
        entry.configured = configured;
        if entry == &Candidates::default() {
            self.candidates.remove(&peer);
        }
    }

    /// The configured addresses of `peer`, best first.
    pub fn candidates(&self, peer: PeerId) -> &[SocketAddr] {
        self.candidates
            .get(&peer)
            .map_or(&[], |c| c.configured.as_slice())
    }

    /// A handshake to `peer` went unanswered: makes the next address of its rotation (the
    /// learned one, then the configured ones in order, wrapping) the direct endpoint, and
    /// returns it; `None` when there is no other address to try.
    pub fn rotate(&mut self, peer: PeerId) -> Option<SocketAddr> {
        let candidates = self.candidates.get(&peer)?;
        let cycle = candidates.cycle();
        if cycle.len() < 2 {
            return None;
        }
        let current = self.direct(peer).map(|d| d.addr);
        let next = match current.and_then(|c| cycle.iter().position(|a| *a == c)) {
            Some(i) => cycle[(i + 1) % cycle.len()],
            None => cycle[0],
        };
        let origin = if candidates.configured.contains(&next) {
            EndpointOrigin::Configured
        } else {
            EndpointOrigin::Learned
        };
        self.paths.entry(peer).or_default().direct = Some(Endpoint { addr: next, origin });
        Some(next)
    }

    /// Records `addr` as where `peer` is, learned from one of its authenticated packets;
    /// true when that changed the direct path. The caller must have authenticated the
    /// packet: an address from anything else would let a forger redirect the peer's
    /// traffic.
    pub fn learn(&mut self, peer: PeerId, addr: SocketAddr) -> bool {
        self.candidates.entry(peer).or_default().learned = Some(addr);
        let direct = &mut self.paths.entry(peer).or_default().direct;
        if direct.is_some_and(|d| d.addr == addr) {
            return false;
        }
        *direct = Some(Endpoint {
            addr,
            origin: EndpointOrigin::Learned,
        });
        true
    }

    /// The direct endpoint of `peer`, with its origin.
    pub fn direct(&self, peer: PeerId) -> Option<Endpoint> {
        self.get(peer).direct
    }

    /// Sets or clears the relay path to `peer`.
    pub fn set_relay(&mut self, peer: PeerId, addr: Option<SocketAddr>) {
        self.paths.entry(peer).or_default().relay = addr;
        self.prune(peer);
    }

    /// Forgets every path and candidate address of `peer`.
    pub fn remove(&mut self, peer: PeerId) -> Option<PathState> {
        self.candidates.remove(&peer);
        self.paths.remove(&peer)
    }

    /// The candidate paths to `peer` (all `None` if unknown).
    pub fn get(&self, peer: PeerId) -> PathState {
        self.paths.get(&peer).copied().unwrap_or_default()
    }

    /// The path for the next packet to `peer`.
    pub fn select(&self, peer: PeerId) -> Path {
        self.get(peer).best()
    }

    /// Like [`select`](Self::select), and counts a [`Path::Drop`] in `metrics.tx_dropped`.
    pub fn select_counted(&self, peer: PeerId, metrics: &Metrics) -> Path {
        let path = self.select(peer);
        if path == Path::Drop {
            Metrics::inc(&metrics.tx_dropped);
        }
        path
    }

    /// Peers with at least one path, with their paths, in ascending peer order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, PathState)> + '_ {
        self.paths.iter().map(|(&peer, &state)| (peer, state))
    }

    /// Keeps the table free of entries with no path, so `iter` lists only reachable peers.
    fn prune(&mut self, peer: PeerId) {
        if self.paths.get(&peer) == Some(&PathState::default()) {
            self.paths.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 16])
    }

    #[test]
    fn direct_beats_relay_beats_drop() {
        let (direct, relay) = (
            "192.0.2.7:41641".parse().unwrap(),
            "198.51.100.1:3478".parse().unwrap(),
        );
        let metrics = Metrics::default();
        let mut table = PathTable::new();
        assert_eq!(table.select_counted(peer(1), &metrics), Path::Drop);
        table.set_relay(peer(1), Some(relay));
        assert_eq!(table.select(peer(1)), Path::Relay(relay));
        table.set_direct(peer(1), Some(direct));
        assert_eq!(
            table.select_counted(peer(1), &metrics),
            Path::Direct(direct)
        );
        table.set_direct(peer(1), None);
        assert_eq!(
            table.select(peer(1)),
            Path::Relay(relay),
            "falls back when ICE fails"
        );
        assert_eq!(Metrics::get(&metrics.tx_dropped), 1);
    }

    #[test]
    fn learned_endpoints_say_so_and_replace_configured_ones() {
        let (configured, roamed): (SocketAddr, SocketAddr) = (
            "192.0.2.7:41641".parse().unwrap(),
            "203.0.113.9:5000".parse().unwrap(),
        );
        let mut table = PathTable::new();
        assert!(
            table.learn(peer(1), roamed),
            "learned where nothing was known"
        );
        assert_eq!(
            table.direct(peer(1)).unwrap().origin,
            EndpointOrigin::Learned
        );
        table.set_direct(peer(1), Some(configured));
        assert_eq!(
            table.direct(peer(1)),
            Some(Endpoint {
                addr: configured,
                origin: EndpointOrigin::Configured
            })
        );
        assert!(!table.learn(peer(1), configured), "same address: no change");
        assert_eq!(
            table.direct(peer(1)).unwrap().origin,
            EndpointOrigin::Configured
        );
        assert!(table.learn(peer(1), roamed));
        assert_eq!(table.select(peer(1)), Path::Direct(roamed));
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
        let mut table = PathTable::new();
        assert_eq!(table.rotate(peer(1)), None, "nothing to rotate through");
        table.set_candidates(peer(1), &[a, b, a, c]);
        assert_eq!(table.candidates(peer(1)), &[a, b, c], "duplicates dropped");
        table.set_direct(peer(1), Some(a));
        assert_eq!(table.rotate(peer(1)), Some(b));
        assert_eq!(table.rotate(peer(1)), Some(c));
        assert_eq!(table.rotate(peer(1)), Some(a), "wraps around");
        assert_eq!(
            table.direct(peer(1)).unwrap().origin,
            EndpointOrigin::Configured
        );
        // An address learned from the peer joins the rotation, first.
        assert!(table.learn(peer(1), nat));
        assert_eq!(table.rotate(peer(1)), Some(a));
        assert_eq!(table.rotate(peer(1)), Some(b));
        assert_eq!(table.rotate(peer(1)), Some(c));
        assert_eq!(table.rotate(peer(1)), Some(nat));
        assert_eq!(
            table.direct(peer(1)).unwrap().origin,
            EndpointOrigin::Learned
        );
        // One address only: nothing else to try.
        table.set_candidates(peer(2), &[a]);
        table.set_direct(peer(2), Some(a));
        assert_eq!(table.rotate(peer(2)), None);
        table.remove(peer(1));
        assert!(table.candidates(peer(1)).is_empty());
    }

    #[test]
    fn table_lists_only_reachable_peers_in_order() {
        let addr: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut table = PathTable::new();
        table.set_direct(peer(2), Some(addr));
        table.set_relay(peer(1), Some(addr));
        table.set_relay(peer(3), Some(addr));
        table.set_relay(peer(3), None);
        let peers: Vec<PeerId> = table.iter().map(|(p, _)| p).collect();
        assert_eq!(peers, vec![peer(1), peer(2)]);
        assert_eq!(
            table.remove(peer(2)).and_then(|s| s.direct).map(|d| d.addr),
            Some(addr)
        );
        assert_eq!(table.get(peer(2)), PathState::default());
    }
}
