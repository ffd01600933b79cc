//! The node-wide half of [`AutoBulk`](super::AutoBulk): one mode for every peer.
//!
//! Invariant: the mode changes for all members at one instant, decided from every
//! member's last report: to the rate model once at least one member has sent bulk within
//! `quiet_for` and every such member's path has been quiet for `quiet_for`; back to the
//! adaptive window as soon as one such member's path has been jittery for `noisy_for`.
//! Why one mode: peers behind one bottleneck that change hands at different times share
//! it unfairly (a LEDBAT window yields to a rate-paced flow, and rate models started from
//! unequal rates do not even out; docs/congestion.md, section 6).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Mode;

/// What one member last reported about its path.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Report {
    /// Since when the adaptive target has been below the quiet threshold.
    pub(super) quiet_since: Option<Instant>,
    /// Since when the adaptive target has been above the jittery threshold.
    pub(super) noisy_since: Option<Instant>,
    /// When it last sent bulk.
    pub(super) last_sent: Option<Instant>,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    members: BTreeMap<u64, Report>,
    mode: Mode,
    switches: u64,
}

/// The peers of one node whose [`AutoBulk`](super::AutoBulk) controllers change mode
/// together. Cloning it shares the group.
#[derive(Clone, Debug)]
pub struct AutoGroup {
    state: Arc<Mutex<State>>,
    /// `state.mode == Mode::Rate`, readable without the lock: every bulk packet sent
    /// asks for the mode (acks report and take the lock).
    rate: Arc<AtomicBool>,
}

impl Default for AutoGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl AutoGroup {
    /// An empty group, on the adaptive window.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                next_id: 0,
                members: BTreeMap::new(),
                mode: Mode::Adaptive,
                switches: 0,
            })),
            rate: Arc::new(AtomicBool::new(false)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in one step; a panic elsewhere cannot leave
        // it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group's mode now.
    pub fn mode(&self) -> Mode {
        if self.rate.load(Ordering::Relaxed) {
            Mode::Rate
        } else {
            Mode::Adaptive
        }
    }

    /// How many times the group's mode changed.
    pub fn switches(&self) -> u64 {
        self.lock().switches
    }

    pub(super) fn join(&self) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.members.insert(id, Report::default());
        id
    }

    pub(super) fn leave(&self, id: u64) {
        self.lock().members.remove(&id);
    }

    /// Records `id`'s report and re-decides the group's mode at `now`; returns it.
    pub(super) fn report(
        &self,
        id: u64,
        report: Report,
        now: Instant,
        quiet_for: Duration,
        noisy_for: Duration,
    ) -> Mode {
        let mut s = self.lock();
        if let Some(slot) = s.members.get_mut(&id) {
            *slot = report;
        }
        let held = |since: Option<Instant>, hold: Duration| {
            since.is_some_and(|since| now.saturating_duration_since(since) >= hold)
        };
        let mut busy = s
            .members
            .values()
            .filter(|r| {
                r.last_sent
                    .is_some_and(|at| now.saturating_duration_since(at) < quiet_for)
            })
            .peekable();
        let next = match s.mode {
            Mode::Adaptive => {
                let any = busy.peek().is_some();
                if any && busy.all(|r| held(r.quiet_since, quiet_for)) {
                    Mode::Rate
                } else {
                    Mode::Adaptive
                }
            }
            Mode::Rate => {
                if busy.any(|r| held(r.noisy_since, noisy_for)) {
                    Mode::Adaptive
                } else {
                    Mode::Rate
                }
            }
        };
        if next != s.mode {
            s.mode = next;
            s.switches += 1;
            self.rate.store(next == Mode::Rate, Ordering::Relaxed);
        }
        s.mode
    }
}
