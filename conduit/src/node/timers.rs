//! Timers: the node's next deadline and what happens when it passes.
//!
//! Invariant: `poll_timeout` never returns an instant that `handle_timeout` would leave
//! unchanged, so a driver that sleeps until it cannot spin.

use std::time::Instant;

use super::{BauxiteNode, Control, Event, QUIET_AFTER, tunnel_mut};
use crate::Metrics;
use crate::session::TimerAction;

impl BauxiteNode {
    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = &self.config.timers;
        self.peers
            .values()
            .filter_map(|s| s.tunnel.as_ref()?.poll_timeout(timers))
            .chain(self.congestion.poll_timeout())
            .chain(self.hub_timeout())
            .chain(self.ice_restart_timeout())
            .chain(self.peers.values().filter_map(|s| s.pmtu.poll_timeout()))
            .chain(self.peers.values().filter_map(|s| s.bond.next_probe()))
            .chain(self.copies.deadline())
            .chain(self.repair_timeout())
            .chain(
                self.peers
                    .values()
                    .filter_map(|s| s.measured.quiet_at(QUIET_AFTER)),
            )
            .min()
    }

    /// Runs every timer due at `now`: retries, rekeys, keepalives, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.congestion.handle_timeout(now);
        self.pmtu_timeouts(now);
        self.hub_timeouts(now);
        self.ice_restart_timeouts(now);
        self.bond_timeouts(now);
        self.repair_timeouts(now);
        for (&peer, state) in &mut self.peers {
            if state
                .measured
                .quiet_at(QUIET_AFTER)
                .is_some_and(|at| at <= now)
            {
                state.measured.quiet_reported = true;
                self.events.push_back(Event::PathQuiet { peer });
            }
        }
        let timers = self.config.timers;
        let due: Vec<_> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                s.tunnel
                    .as_ref()
                    .and_then(|t| t.poll_timeout(&timers))
                    .is_some_and(|at| at <= now)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let Some(tunnel) = tunnel_mut(&mut self.peers, peer) else {
                continue;
            };
            let was_pending = tunnel.handshake_pending();
            let action = tunnel.handle_timeout(now, &timers);
            // An initiation went unanswered (not a rekey, not a keepalive timeout):
            // the peer may not be at this address; try its next candidate.
            let retry = was_pending && tunnel.handshake_pending();
            self.forget_retired(peer);
            match action {
                TimerAction::None => {}
                TimerAction::Handshake => {
                    if retry
                        && let Some(addr) = self.peers.get_mut(&peer).and_then(|s| s.path.rotate())
                    {
                        tracing::debug!(%peer, endpoint = %addr, "handshake unanswered; trying the next address");
                    }
                    self.start_handshake(now, peer);
                }
                TimerAction::Keepalive => self.control.push_back(Control::Keepalive { peer }),
                TimerAction::GaveUp(dropped) => {
                    Metrics::add(&self.metrics.tx_dropped, dropped as u64);
                    self.events
                        .push_back(Event::HandshakeGaveUp { peer, dropped });
                    tracing::warn!(%peer, dropped, "handshake retries exhausted");
                }
            }
        }
    }
}
