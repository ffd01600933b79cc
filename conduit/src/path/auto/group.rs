//! The node-wide half of [`AutoBulk`](super::AutoBulk): one mode for every peer.
//!
//! Invariant: the mode changes for all members at one instant, decided from every
//! member's last report: to the rate model once at least one member has sent bulk within
//! `quiet_for` and every such member's path has been quiet for `quiet_for`; back to the
//! adaptive window as soon as one such member's path has been jittery for `noisy_for`.
//! Why one mode: peers behind one bottleneck that change hands at different times share
//! it unfairly (a LEDBAT window yields to a rate-paced flow, and rate models started from
//! unequal rates do not even out; docs/congestion.md, section 8).
//!
//! Cost: every acknowledgement reports, so a report must not look at every peer (a hub
//! with a thousand peers). Both tests reduce to a few aggregates kept on each report:
//!
//! - *some member is sending bulk* iff the newest `last_sent` of all is within
//!   `quiet_for` (being busy only gets likelier the later a member last sent);
//! - *a busy member is not quiet for long enough* iff the newest
//!   `min(last_sent, quiet_since)` (no `quiet_since`: its `last_sent`) is within
//!   `quiet_for`: a member blocks the rate model exactly while both its last send and
//!   the start of its quiet are that recent;
//! - *a busy member has been jittery for `noisy_for`* is checked over the members whose
//!   last report was jittery and busy only, a list that is empty while every busy path
//!   is quiet, and from which a member leaves once it has not sent bulk for twice
//!   `quiet_for`.
//!
//! The two newest-of values only grow as a member reports (a later send, a quiet that
//! starts later), so a report updates them in O(1); only a member that leaves, or one
//! whose value shrinks, makes them be recomputed over all members.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Mode;

/// What one member last reported about its path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Report {
    /// Since when the adaptive target has been below the quiet threshold.
    pub(super) quiet_since: Option<Instant>,
    /// Since when the adaptive target has been above the jittery threshold.
    pub(super) noisy_since: Option<Instant>,
    /// When it last sent bulk.
    pub(super) last_sent: Option<Instant>,
}

impl Report {
    /// Until when this member keeps the node off the rate model (while it is busy):
    /// the earlier of its last send and the start of its quiet. `None`: it never sent.
    fn unquiet(&self) -> Option<Instant> {
        let sent = self.last_sent?;
        Some(self.quiet_since.map_or(sent, |quiet| quiet.min(sent)))
    }
}

/// One member's slot: its report and where it sits in the jittery list.
#[derive(Clone, Copy, Debug)]
struct Slot {
    report: Report,
    noisy_at: Option<usize>,
}

#[derive(Debug)]
struct State {
    /// Indexed by member id; a left member's slot is free for the next to join.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Members whose last report was jittery and had sent bulk.
    noisy: Vec<usize>,
    /// The newest `last_sent` of all members.
    newest_sent: Option<Instant>,
    /// The newest [`Report::unquiet`] of all members.
    newest_unquiet: Option<Instant>,
    mode: Mode,
}

impl State {
    fn members(&self) -> impl Iterator<Item = &Report> {
        self.slots.iter().flatten().map(|slot| &slot.report)
    }

    fn recompute(&mut self) {
        self.newest_sent = self.members().filter_map(|r| r.last_sent).max();
        self.newest_unquiet = self.members().filter_map(Report::unquiet).max();
    }

    fn unlist_noisy(&mut self, id: usize) {
        let Some(at) = self.slots[id]
            .as_mut()
            .and_then(|slot| slot.noisy_at.take())
        else {
            return;
        };
        self.noisy.swap_remove(at);
        if let Some(&moved) = self.noisy.get(at)
            && let Some(slot) = self.slots[moved].as_mut()
        {
            slot.noisy_at = Some(at);
        }
    }

    /// Stores `report` as `id`'s and keeps the aggregates current.
    fn store(&mut self, id: usize, report: Report) {
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let old = std::mem::replace(&mut slot.report, report);
        let listed = slot.noisy_at.is_some();
        let noisy = report.noisy_since.is_some() && report.last_sent.is_some();
        if noisy && !listed {
            slot.noisy_at = Some(self.noisy.len());
            self.noisy.push(id);
        } else if !noisy && listed {
            self.unlist_noisy(id);
        }
        let shrank = |old: Option<Instant>, new: Option<Instant>, newest: Option<Instant>| {
            old.is_some() && old == newest && new < old
        };
        if shrank(old.last_sent, report.last_sent, self.newest_sent)
            || shrank(old.unquiet(), report.unquiet(), self.newest_unquiet)
        {
            self.recompute();
        } else {
            self.newest_sent = self.newest_sent.max(report.last_sent);
            self.newest_unquiet = self.newest_unquiet.max(report.unquiet());
        }
    }

    /// The mode the members' reports call for at `now`.
    fn decide(&mut self, now: Instant, quiet_for: Duration, noisy_for: Duration) -> Mode {
        let within = |at: Instant, hold: Duration| now.saturating_duration_since(at) < hold;
        match self.mode {
            Mode::Adaptive => {
                let busy = self.newest_sent.is_some_and(|at| within(at, quiet_for));
                let blocked = self.newest_unquiet.is_some_and(|at| within(at, quiet_for));
                if busy && !blocked {
                    Mode::Rate
                } else {
                    Mode::Adaptive
                }
            }
            Mode::Rate => {
                let mut i = 0;
                while let Some(&id) = self.noisy.get(i) {
                    // A member is unlisted before its slot is freed.
                    let Some(r) = self.slots[id].map(|slot| slot.report) else {
                        i += 1;
                        continue;
                    };
                    let sent = r.last_sent.unwrap_or(now);
                    if !within(sent, quiet_for * 2) {
                        // It stopped sending bulk: it is listed again when it reports
                        // jitter while sending. (Twice `quiet_for`, so a report stamped
                        // a little earlier than this one still finds it.)
                        self.unlist_noisy(id);
                        continue;
                    }
                    let held = r.noisy_since.is_some_and(|at| !within(at, noisy_for));
                    if within(sent, quiet_for) && held {
                        return Mode::Adaptive;
                    }
                    i += 1;
                }
                Mode::Rate
            }
        }
    }
}

/// What the group publishes without its lock: every bulk packet sent asks for the mode
/// (acks report and take the lock), and status and the metrics endpoint read both from
/// other threads, which must never wait for the data plane.
#[derive(Debug, Default)]
struct Published {
    /// `state.mode == Mode::Rate`.
    rate: AtomicBool,
    /// How many times the mode changed.
    switches: AtomicU64,
    /// How many members have bulk in flight.
    sending: AtomicUsize,
}

/// The peers of one node whose [`AutoBulk`](super::AutoBulk) controllers change mode
/// together. Cloning it shares the group.
#[derive(Clone, Debug)]
pub struct AutoGroup {
    state: Arc<Mutex<State>>,
    published: Arc<Published>,
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
                slots: Vec::new(),
                free: Vec::new(),
                noisy: Vec::new(),
                newest_sent: None,
                newest_unquiet: None,
                mode: Mode::Adaptive,
            })),
            published: Arc::new(Published::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in one step; a panic elsewhere cannot leave
        // it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group's mode now (lock-free).
    pub fn mode(&self) -> Mode {
        if self.published.rate.load(Ordering::Relaxed) {
            Mode::Rate
        } else {
            Mode::Adaptive
        }
    }

    /// How many times the group's mode changed (lock-free).
    pub fn switches(&self) -> u64 {
        self.published.switches.load(Ordering::Relaxed)
    }

    /// How many members have bulk in flight now (lock-free).
    pub fn sending(&self) -> usize {
        self.published.sending.load(Ordering::Relaxed)
    }

    /// A member's bulk flight became non-empty (`true`) or empty (`false`).
    pub(super) fn set_sending(&self, sending: bool) {
        if sending {
            self.published.sending.fetch_add(1, Ordering::Relaxed);
        } else {
            self.published.sending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn join(&self) -> usize {
        let mut guard = self.lock();
        let s = &mut *guard;
        let slot = Some(Slot {
            report: Report::default(),
            noisy_at: None,
        });
        // Room for every member in the jittery list: a report never allocates.
        let members = s.slots.len() + 1;
        s.noisy.reserve(members.saturating_sub(s.noisy.len()));
        match s.free.pop() {
            Some(id) => {
                s.slots[id] = slot;
                id
            }
            None => {
                s.slots.push(slot);
                s.slots.len() - 1
            }
        }
    }

    pub(super) fn leave(&self, id: usize) {
        let mut s = self.lock();
        if s.slots.get(id).is_some_and(Option::is_some) {
            s.unlist_noisy(id);
            s.slots[id] = None;
            s.free.push(id);
            s.recompute();
        }
    }

    /// Records `id`'s report and re-decides the group's mode at `now`; returns it.
    pub(super) fn report(
        &self,
        id: usize,
        report: Report,
        now: Instant,
        quiet_for: Duration,
        noisy_for: Duration,
    ) -> Mode {
        let mut s = self.lock();
        s.store(id, report);
        let next = s.decide(now, quiet_for, noisy_for);
        if next != s.mode {
            s.mode = next;
            // Only ever written under the lock, so a load and a store make an increment.
            let switches = self.published.switches.load(Ordering::Relaxed) + 1;
            self.published.switches.store(switches, Ordering::Relaxed);
            self.published
                .rate
                .store(next == Mode::Rate, Ordering::Relaxed);
            // At most once per `quiet_for`: what an operator needs to read a latency
            // figure (which controller paced the bulk under it); status and the metrics
            // endpoint show the same (`AutoGroup::mode`, `AutoGroup::switches`).
            tracing::info!(mode = ?next, switches, "bulk pacing changes hands");
        }
        s.mode
    }
}

#[cfg(test)]
mod tests;
