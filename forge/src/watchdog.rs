//! The health watchdog of a freshly activated version, as a sans-IO state machine.
//!
//! Invariant: a candidate is either confirmed by a heartbeat within `health_timeout` of a
//! start, or rolled back; it never gets more than `max_starts` starts in total, counted
//! across reboots (the shell persists each start with
//! [`record_start`](crate::activate::record_start) *before* starting it), so a version
//! that crashes the machine cannot loop.
//!
//! # Driving rules
//!
//! Build it with [`Watchdog::new`] from the marker's `boot_attempts`, then repeatedly:
//! take [`Watchdog::poll_action`] until `None` and carry each action out
//! ([`WatchdogAction::Start`]: `record_start`, then start the version;
//! [`WatchdogAction::Commit`]: [`commit`](crate::activate::commit);
//! [`WatchdogAction::RollBack`]: [`rollback`](crate::activate::rollback)); feed
//! [`handle_heartbeat`](Watchdog::handle_heartbeat) when the version reports healthy,
//! [`handle_exit`](Watchdog::handle_exit) when it dies, and
//! [`handle_timeout`](Watchdog::handle_timeout) at [`poll_timeout`](Watchdog::poll_timeout).
//! The loop ends when [`Watchdog::is_done`] (after a commit or a rollback).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Watchdog limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Time a start has to report healthy.
    pub health_timeout: Duration,
    /// Starts allowed before giving up on the candidate.
    pub max_starts: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            health_timeout: Duration::from_secs(60),
            max_starts: 3,
        }
    }
}

/// Why the candidate is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackReason {
    /// No heartbeat within the health timeout.
    Unhealthy {
        /// How long it waited.
        waited: Duration,
    },
    /// It failed (exited, or the machine went down) this many starts in a row.
    FailedStarts {
        /// Starts made.
        starts: u32,
    },
}

impl RollbackReason {
    /// The update state to report once the rollback is done.
    pub fn state(self) -> crate::state::UpdateState {
        match self {
            Self::Unhealthy { .. } => crate::state::UpdateState::RolledBackUnhealthy,
            Self::FailedStarts { .. } => crate::state::UpdateState::RolledBackFailedStarts,
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogAction {
    /// Persist the start count, then start the candidate.
    Start {
        /// Which start this is (1-based, counted across reboots).
        attempt: u32,
    },
    /// The candidate is healthy: commit it.
    Commit,
    /// Restore the previous version.
    RollBack(RollbackReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running { attempt: u32, started: Instant },
    Done,
}

/// Watches one candidate version.
#[derive(Debug)]
pub struct Watchdog {
    cfg: WatchdogConfig,
    phase: Phase,
    actions: VecDeque<WatchdogAction>,
}

impl Watchdog {
    /// Starts watching a candidate already started `attempts_so_far` times (from the
    /// marker; starts that ended in a reboot count as failed).
    pub fn new(cfg: WatchdogConfig, attempts_so_far: u32, now: Instant) -> Self {
        let mut me = Self {
            cfg,
            phase: Phase::Done,
            actions: VecDeque::new(),
        };
        me.start(attempts_so_far, now);
        me
    }

    fn start(&mut self, made: u32, now: Instant) {
        if made >= self.cfg.max_starts.max(1) {
            self.finish(WatchdogAction::RollBack(RollbackReason::FailedStarts {
                starts: made,
            }));
            return;
        }
        let attempt = made + 1;
        self.phase = Phase::Running {
            attempt,
            started: now,
        };
        self.actions.push_back(WatchdogAction::Start { attempt });
    }

    fn finish(&mut self, action: WatchdogAction) {
        self.phase = Phase::Done;
        self.actions.push_back(action);
    }

    /// The candidate reported healthy.
    pub fn handle_heartbeat(&mut self, _now: Instant) {
        if let Phase::Running { .. } = self.phase {
            self.finish(WatchdogAction::Commit);
        }
    }

    /// The candidate exited before reporting healthy: start it again or give up.
    pub fn handle_exit(&mut self, now: Instant) {
        if let Phase::Running { attempt, .. } = self.phase {
            self.start(attempt, now);
        }
    }

    /// Rolls back when the current start's health deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Running { started, .. } = self.phase {
            let waited = now.saturating_duration_since(started);
            if waited >= self.cfg.health_timeout {
                self.finish(WatchdogAction::RollBack(RollbackReason::Unhealthy {
                    waited,
                }));
            }
        }
    }

    /// When the current start's health deadline expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { started, .. } => Some(started + self.cfg.health_timeout),
            Phase::Done => None,
        }
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<WatchdogAction> {
        self.actions.pop_front()
    }

    /// Whether the watchdog decided (commit or rollback) and all actions were taken.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done && self.actions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WatchdogConfig {
        WatchdogConfig {
            health_timeout: Duration::from_secs(10),
            max_starts: 3,
        }
    }

    #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn heartbeat_commits() {
        let t = t0();
        let mut w = Watchdog::new(cfg(), 0, t);
        assert_eq!(w.poll_action(), Some(WatchdogAction::Start { attempt: 1 }));
        assert_eq!(w.poll_timeout(), Some(t + Duration::from_secs(10)));
        w.handle_timeout(t + Duration::from_secs(9));
        assert_eq!(w.poll_action(), None);
        w.handle_heartbeat(t + Duration::from_secs(9));
        assert_eq!(w.poll_action(), Some(WatchdogAction::Commit));
        assert!(w.is_done());
        w.handle_timeout(t + Duration::from_secs(99));
        assert_eq!(w.poll_action(), None, "decided once");
    }

    #[test]
    fn silence_rolls_back() {
        let t = t0();
        let mut w = Watchdog::new(cfg(), 0, t);
        w.poll_action();
        w.handle_timeout(t + Duration::from_secs(10));
        assert_eq!(
            w.poll_action(),
            Some(WatchdogAction::RollBack(RollbackReason::Unhealthy {
                waited: Duration::from_secs(10)
            }))
        );
        w.handle_heartbeat(t + Duration::from_secs(11));
        assert_eq!(w.poll_action(), None, "too late");
    }

    #[test]
    fn repeated_exits_roll_back_after_max_starts() {
        let t = t0();
        let mut w = Watchdog::new(cfg(), 0, t);
        let mut starts = Vec::new();
        for i in 0..5 {
            while let Some(a) = w.poll_action() {
                starts.push(a);
            }
            w.handle_exit(t + Duration::from_secs(i));
        }
        assert_eq!(
            starts,
            [
                WatchdogAction::Start { attempt: 1 },
                WatchdogAction::Start { attempt: 2 },
                WatchdogAction::Start { attempt: 3 },
                WatchdogAction::RollBack(RollbackReason::FailedStarts { starts: 3 }),
            ]
        );
    }

    #[test]
    fn starts_count_across_reboots() {
        let t = t0();
        let mut w = Watchdog::new(cfg(), 2, t);
        assert_eq!(w.poll_action(), Some(WatchdogAction::Start { attempt: 3 }));
        let mut w = Watchdog::new(cfg(), 3, t);
        assert_eq!(
            w.poll_action(),
            Some(WatchdogAction::RollBack(RollbackReason::FailedStarts {
                starts: 3
            }))
        );
        assert!(w.is_done());
    }
}
