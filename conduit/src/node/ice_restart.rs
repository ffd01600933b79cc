//! ICE restarts: a selected pair that stops answering is not kept as if it still worked.
//! The node opens a new session (new ufrag and password, a new INVITE) so the agents check
//! every pair again — after NAT rebinding or an uplink cut the pair that works is another
//! one — while the relay ladder carries the traffic.
//!
//! Invariants: a restart replaces only the session that lost its pair (one the peer has
//! already replaced is left alone); restarts of one peer are bounded
//! ([`ICE_MAX_RESTARTS`] in a row, each at least [`ICE_RESTART_BACKOFF`] × 2ⁿ after the
//! one before), and the count starts again only when a pair works again. The controlling
//! side restarts by inviting anew; the controlled side cannot invite, so it sends a BYE,
//! which makes the controlling side invite anew ([`handle_ice_signal`]).
//!
//! What counts as losing the pair: the agent reports the pair disconnected, or failed
//! after a pair had worked (or after a restart), or the relay ladder moved a peer off a
//! pair the agents proved because sends on it went unanswered.
//!
//! [`handle_ice_signal`]: super::BauxiteNode::handle_ice_signal

use std::time::{Duration, Instant};

use super::BauxiteNode;
use super::ice_signal::IceSignal;
use crate::PeerId;

/// How many restarts in a row the node tries with a peer before it leaves the peer to
/// the relay ladder (until the topology re-adds it or a pair works again).
pub const ICE_MAX_RESTARTS: u32 = 5;

/// The least time between the first restart and the second; it doubles after each one
/// (1, 2, 4, 8 s), so a peer whose uplink stays cut costs a few signals a minute at most.
pub const ICE_RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// One peer's restart bookkeeping (in the peer's record; it outlives the sessions).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IceRestarts {
    /// Restarts since a pair last worked.
    count: u32,
    /// When the next restart may run (the backoff).
    not_before: Option<Instant>,
    /// A restart waiting for its time: when, and the session it replaces.
    due: Option<(Instant, u64)>,
}

impl IceRestarts {
    /// A pair works: the next loss restarts at once again.
    pub(super) fn pair_works(&mut self) {
        *self = Self::default();
    }

    /// Whether this peer restarted since a pair last worked.
    pub(super) fn restarted(&self) -> bool {
        self.count > 0
    }

    /// Counts a restart made at `now` and sets the backoff before the next one.
    fn count_one(&mut self, now: Instant) {
        let backoff = ICE_RESTART_BACKOFF.saturating_mul(1 << self.count.min(16));
        self.count += 1;
        self.not_before = Some(now + backoff);
        self.due = None;
    }

    /// When the pending restart is due, if one is.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.due.map(|(at, _)| at)
    }
}

impl BauxiteNode {
    /// The session with `peer` lost its pair (or a restarted session failed): schedule a
    /// restart, unless the restarts ran out. `why` goes to the log.
    pub(super) fn ice_pair_lost(&mut self, now: Instant, peer: PeerId, why: &'static str) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(session) = state.ice.as_mut() else {
            return;
        };
        let id = session.session();
        // The pair is proven no more: the ladder must not treat it as working.
        session.pair_lost();
        let r = &mut state.ice_restarts;
        if r.due.is_some_and(|(_, s)| s == id) {
            return;
        }
        if r.count >= ICE_MAX_RESTARTS {
            tracing::warn!(%peer, why, restarts = r.count, "ICE restarts exhausted; relays carry the peer");
            return;
        }
        let at = r.not_before.map_or(now, |t| t.max(now));
        r.due = Some((at, id));
        tracing::info!(%peer, why, restart = r.count + 1, "ICE pair lost; restarting ICE");
    }

    /// The peer asked for a new session (its BYE) after ours lost its pair (or while
    /// restarting): the new session is a restart, and counts as one here too, so both
    /// sides back off alike whichever noticed first.
    pub(super) fn ice_restart_by_peer(&mut self, now: Instant, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let lost = state.ice.as_ref().is_some_and(|s| s.lost_pair());
        let r = &mut state.ice_restarts;
        if r.due.is_some() || r.restarted() || lost {
            r.count_one(now);
        }
    }

    /// The earliest pending restart of any peer.
    pub(super) fn ice_restart_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|s| s.ice_restarts.deadline())
            .min()
    }

    /// Runs the restarts due at `now`.
    pub(super) fn ice_restart_timeouts(&mut self, now: Instant) {
        let due: Vec<(PeerId, u64)> = self
            .peers
            .iter()
            .filter_map(|(&peer, s)| {
                s.ice_restarts
                    .due
                    .filter(|(at, _)| *at <= now)
                    .map(|(_, session)| (peer, session))
            })
            .collect();
        for (peer, session) in due {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            let r = &mut state.ice_restarts;
            r.due = None;
            // The peer restarted first (its INVITE or BYE replaced the session): done.
            if state.ice.as_ref().map(|s| s.session()) != Some(session) {
                continue;
            }
            r.count_one(now);
            if self.ice_controls(peer) {
                self.ice_close(peer);
                if let Err(error) = self.ice_begin(now, peer) {
                    tracing::debug!(%peer, %error, "no ICE restart");
                }
            } else {
                self.send_signal(peer, session, IceSignal::Bye);
            }
        }
    }
}
