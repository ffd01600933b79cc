//! The virtual clock both simulated networks step: jump to the earliest event, never past
//! the deadline, and refuse to spin on a timer that is due but changes nothing.

use std::time::Instant;

use crate::node::BauxiteNode;

/// Steps taken in a row without the clock moving before a run is declared stuck.
const SPIN_LIMIT: u32 = 100_000;

/// The clock of a simulated network.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// Steps in a row that found an event already due (the clock did not move).
    stalled: u32,
}

impl Clock {
    /// Moves `now` to the earliest of `events` and returns true, or returns false when
    /// there is none before `deadline` (then `now` is at least `deadline`, if one came).
    ///
    /// Panics when an event stays due for [`SPIN_LIMIT`] steps in a row: a timer that
    /// handling does not move would otherwise hang the run for ever.
    pub(super) fn advance(
        &mut self,
        now: &mut Instant,
        events: impl IntoIterator<Item = Option<Instant>>,
        deadline: Instant,
    ) -> bool {
        let Some(next) = events.into_iter().flatten().min() else {
            return false;
        };
        if next > deadline {
            *now = (*now).max(deadline);
            return false;
        }
        if next <= *now {
            self.stalled += 1;
            assert!(
                self.stalled < SPIN_LIMIT,
                "timer spin: a deadline is due but handling it changes nothing"
            );
        } else {
            self.stalled = 0;
        }
        *now = (*now).max(next);
        true
    }
}

/// The earliest timer of `nodes`.
pub(super) fn next_timer(nodes: &[BauxiteNode]) -> Option<Instant> {
    nodes.iter().filter_map(BauxiteNode::poll_timeout).min()
}

/// Fires the timers of `nodes` that are due at `now`.
pub(super) fn fire_timers(nodes: &mut [BauxiteNode], now: Instant) {
    for node in nodes {
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
    }
}
