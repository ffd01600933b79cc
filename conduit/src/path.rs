//! Path selection: which underlay address carries a peer's packets.
//!
//! Invariant: a validated direct path always wins over a relay, a relay over nothing, and a
//! packet with no path is dropped *and counted* (`tx_dropped`), never silently lost.
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

/// The candidate paths to one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathState {
    /// A direct endpoint (ICE-validated or statically configured).
    pub direct: Option<SocketAddr>,
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
            (Some(addr), _) => Path::Direct(addr),
            (None, Some(addr)) => Path::Relay(addr),
            (None, None) => Path::Drop,
        }
    }
}

/// Known paths, per peer, in ascending peer order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathTable {
    paths: BTreeMap<PeerId, PathState>,
}

impl PathTable {
    /// An empty table: every peer selects [`Path::Drop`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets or clears the direct path to `peer` (clear it when ICE declares it dead).
    pub fn set_direct(&mut self, peer: PeerId, addr: Option<SocketAddr>) {
        self.paths.entry(peer).or_default().direct = addr;
        self.prune(peer);
    }

    /// Sets or clears the relay path to `peer`.
    pub fn set_relay(&mut self, peer: PeerId, addr: Option<SocketAddr>) {
        self.paths.entry(peer).or_default().relay = addr;
        self.prune(peer);
    }

    /// Forgets every path to `peer`.
    pub fn remove(&mut self, peer: PeerId) -> Option<PathState> {
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
    fn table_lists_only_reachable_peers_in_order() {
        let addr: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut table = PathTable::new();
        table.set_direct(peer(2), Some(addr));
        table.set_relay(peer(1), Some(addr));
        table.set_relay(peer(3), Some(addr));
        table.set_relay(peer(3), None);
        let peers: Vec<PeerId> = table.iter().map(|(p, _)| p).collect();
        assert_eq!(peers, vec![peer(1), peer(2)]);
        assert_eq!(table.remove(peer(2)).map(|s| s.direct), Some(Some(addr)));
        assert_eq!(table.get(peer(2)), PathState::default());
    }
}
