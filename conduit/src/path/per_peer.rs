//! One bulk congestion controller per peer.
//!
//! Invariant: every peer's bulk bytes are paced by that peer's own controller, created on
//! the peer's first bulk packet and dropped with the peer, so a slow or lossy path's window
//! (its delay samples, its ack timeouts) never holds back bulk to any other peer. The
//! scheduler's per-peer round robin
//! ([`DataPlaneScheduler::dequeue_paced`](crate::scheduler::DataPlaneScheduler::dequeue_paced))
//! asks [`PeerCongestion::can_send_bulk`] for the peer whose turn it is.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use super::CongestionStrategy;
use crate::PeerId;

/// Builds a fresh controller for a peer.
pub type MakeStrategy = Box<dyn Fn() -> Box<dyn CongestionStrategy + Send> + Send>;

/// The node's bulk controllers, one per peer, all built by one [`MakeStrategy`].
pub struct PeerCongestion {
    make: MakeStrategy,
    peers: BTreeMap<PeerId, Box<dyn CongestionStrategy + Send>>,
}

impl fmt::Debug for PeerCongestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCongestion")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl PeerCongestion {
    /// Controllers built by `make`, none yet.
    pub fn new(make: MakeStrategy) -> Self {
        Self {
            make,
            peers: BTreeMap::new(),
        }
    }

    /// `peer`'s controller, built on first use.
    pub fn peer(&mut self, peer: PeerId) -> &mut (dyn CongestionStrategy + Send) {
        self.peers
            .entry(peer)
            .or_insert_with(|| {
                let mut made = (self.make)();
                made.name_for_trace(&peer.to_string());
                made
            })
            .as_mut()
    }

    /// Whether a bulk packet of `bytes` may leave for `peer` now. A peer with no
    /// controller yet has nothing in flight, and an empty flight admits a packet.
    pub fn can_send_bulk(&self, peer: PeerId, now: Instant, bytes: usize) -> bool {
        self.peers
            .get(&peer)
            .is_none_or(|c| c.can_send_bulk(now, bytes))
    }

    /// Bulk bytes in flight to `peer`.
    pub fn bytes_in_flight(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |c| c.bytes_in_flight())
    }

    /// Forgets `peer`'s controller (the peer was removed).
    pub fn remove(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
    }

    /// The earliest timer of any peer's controller.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(|c| c.poll_timeout()).min()
    }

    /// Runs every peer's due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for controller in self.peers.values_mut() {
            if controller.poll_timeout().is_some_and(|at| at <= now) {
                controller.handle_timeout(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::path::BulkWindowStrategy;

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn each_peer_has_its_own_window() {
        let now = origin();
        let mut all = PeerCongestion::new(Box::new(|| {
            Box::new(BulkWindowStrategy::new(3000, Duration::from_secs(1)))
        }));
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        assert!(all.can_send_bulk(a, now, 1400), "no controller yet");
        all.peer(a).on_sent(now, 1400);
        all.peer(a).on_sent(now, 1400);
        assert!(!all.can_send_bulk(a, now, 1400), "a's window is full");
        assert!(all.can_send_bulk(b, now, 1400), "b is not held back by a");
        assert_eq!(all.bytes_in_flight(a), 2800);
        let deadline = all.poll_timeout().unwrap();
        all.handle_timeout(deadline);
        assert_eq!(all.bytes_in_flight(a), 0, "a's stall timer ran");
        all.remove(a);
        assert_eq!(all.poll_timeout(), None);
    }
}
