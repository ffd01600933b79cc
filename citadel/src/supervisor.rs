//! The sans-IO supervisor: when to start a child, when to restart it, when to give up and
//! how to stop it. It reads no clock and starts no process; [`supervise`] drives it.
//!
//! Invariants:
//! - a restart waits a backoff drawn uniformly from `[d/2, d]`, where `d` doubles with
//!   each consecutive crash from [`SupervisorConfig::backoff_base`] up to
//!   [`SupervisorConfig::backoff_cap`]; a run that lasted [`SupervisorConfig::stable_after`]
//!   resets the doubling;
//! - [`SupervisorConfig::max_crashes`] crashes within [`SupervisorConfig::crash_window`]
//!   end in [`Phase::Failed`], which is final: nothing is started again;
//! - after [`Supervisor::stop`] nothing is started again, the child gets `SIGTERM` and,
//!   if it is still there after [`SupervisorConfig::stop_grace`], `SIGKILL`.
//!
//! Driving it: call [`Supervisor::start`], then loop: take every [`Supervisor::poll_action`]
//! and carry it out (report the outcome of a spawn with [`Supervisor::handle_spawned`] or
//! [`Supervisor::handle_spawn_failed`]); wait for the child's exit
//! ([`Supervisor::handle_exit`]), [`Supervisor::poll_timeout`]
//! ([`Supervisor::handle_timeout`]) or a stop request; end when
//! [`Supervisor::is_finished`].

mod drive;
#[cfg(test)]
mod tests;

pub use drive::supervise;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::spawn::{Exit, Signal};

/// Restart and stop tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Backoff after the first crash (before jitter).
    pub backoff_base: Duration,
    /// Largest backoff (before jitter).
    pub backoff_cap: Duration,
    /// Crashes within `crash_window` that make the supervisor give up.
    pub max_crashes: u32,
    /// The window `max_crashes` is counted in.
    pub crash_window: Duration,
    /// A run at least this long resets the backoff to `backoff_base`.
    pub stable_after: Duration,
    /// Time between `SIGTERM` and `SIGKILL` on stop.
    pub stop_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            max_crashes: 5,
            crash_window: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Where the supervised child stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Idle,
    /// A spawn was requested and not yet reported.
    Starting,
    /// The child runs.
    Running {
        /// Its process ID.
        pid: u32,
        /// When it started.
        since: Instant,
    },
    /// Waiting before a restart.
    Backoff {
        /// When the restart happens.
        until: Instant,
    },
    /// Too many crashes: given up for good.
    Failed,
    /// A stop was requested; the child has been asked to end.
    Stopping {
        /// Its process ID.
        pid: u32,
        /// When it gets `SIGKILL`.
        kill_at: Instant,
        /// Whether `SIGKILL` was sent.
        killed: bool,
    },
    /// Stopped on request.
    Stopped,
}

impl Phase {
    /// A short name for status lines and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Starting => "starting",
            Phase::Running { .. } => "running",
            Phase::Backoff { .. } => "restarting",
            Phase::Failed => "failed",
            Phase::Stopping { .. } => "stopping",
            Phase::Stopped => "stopped",
        }
    }

    /// The `ros_discovery_status` gauge: 1 running, 0 stopped, 2 starting or restarting,
    /// 3 failed (given up).
    pub fn code(&self) -> u8 {
        match self {
            Phase::Running { .. } => 1,
            Phase::Idle | Phase::Stopping { .. } | Phase::Stopped => 0,
            Phase::Starting | Phase::Backoff { .. } => 2,
            Phase::Failed => 3,
        }
    }
}

/// What the driver must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the child, then report with `handle_spawned` or `handle_spawn_failed`.
    Spawn,
    /// Send this signal to the running child.
    Signal(Signal),
}

/// A snapshot for status lines and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorStatus {
    /// The phase.
    pub phase: Phase,
    /// Restarts after a crash so far.
    pub restarts: u32,
    /// How the last run ended, if one did.
    pub last_exit: Option<String>,
    /// Why the supervisor gave up, once it has.
    pub failure: Option<String>,
}

/// The supervision state machine; see the module docs.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    rng: SplitMix64,
    phase: Phase,
    actions: VecDeque<Action>,
    crashes: VecDeque<Instant>,
    consecutive: u32,
    restarts: u32,
    last_exit: Option<String>,
    failure: Option<String>,
}

impl Supervisor {
    /// A supervisor that has started nothing; `seed` drives the jitter.
    pub fn new(config: SupervisorConfig, seed: u64) -> Self {
        Self {
            config,
            rng: SplitMix64(seed),
            phase: Phase::Idle,
            actions: VecDeque::new(),
            crashes: VecDeque::new(),
            consecutive: 0,
            restarts: 0,
            last_exit: None,
            failure: None,
        }
    }

    /// Requests the first start (once; later calls do nothing).
    pub fn start(&mut self) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Starting;
            self.actions.push_back(Action::Spawn);
        }
    }

    /// The next thing to do, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Supervisor::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Backoff { until } => Some(until),
            Phase::Stopping {
                kill_at,
                killed: false,
                ..
            } => Some(kill_at),
            _ => None,
        }
    }

    /// The spawn requested by [`Action::Spawn`] succeeded.
    pub fn handle_spawned(&mut self, now: Instant, pid: u32) {
        if self.phase == Phase::Starting {
            self.phase = Phase::Running { pid, since: now };
        }
    }

    /// The spawn failed (missing program, no resources): counted as a crash.
    pub fn handle_spawn_failed(&mut self, now: Instant, reason: String) {
        if self.phase == Phase::Starting {
            self.crashed(now, reason, Duration::ZERO);
        }
    }

    /// The child ended with `exit`.
    pub fn handle_exit(&mut self, now: Instant, exit: Exit) {
        match self.phase {
            Phase::Running { since, .. } => {
                self.crashed(now, exit.to_string(), now.saturating_duration_since(since));
            }
            Phase::Stopping { .. } => {
                self.last_exit = Some(exit.to_string());
                self.phase = Phase::Stopped;
            }
            _ => {}
        }
    }

    /// Time has reached [`Supervisor::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Backoff { until } if now >= until => {
                self.phase = Phase::Starting;
                self.restarts += 1;
                self.actions.push_back(Action::Spawn);
            }
            Phase::Stopping {
                pid,
                kill_at,
                killed: false,
            } if now >= kill_at => {
                self.phase = Phase::Stopping {
                    pid,
                    kill_at,
                    killed: true,
                };
                self.actions.push_back(Action::Signal(Signal::Kill));
            }
            _ => {}
        }
    }

    /// Stops for good: a running child is asked to end, nothing is started again.
    pub fn stop(&mut self, now: Instant) {
        self.actions.clear();
        match self.phase {
            Phase::Running { pid, .. } => {
                self.phase = Phase::Stopping {
                    pid,
                    kill_at: now + self.config.stop_grace,
                    killed: false,
                };
                self.actions.push_back(Action::Signal(Signal::Terminate));
            }
            Phase::Idle | Phase::Starting | Phase::Backoff { .. } => self.phase = Phase::Stopped,
            Phase::Stopping { .. } | Phase::Stopped | Phase::Failed => {}
        }
    }

    /// True once stopped or failed: the driver's loop ends.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::Failed)
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// A snapshot for status and metrics.
    pub fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            phase: self.phase.clone(),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            failure: self.failure.clone(),
        }
    }

    fn crashed(&mut self, now: Instant, reason: String, ran: Duration) {
        self.last_exit = Some(reason.clone());
        if ran >= self.config.stable_after {
            self.consecutive = 0;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let window = self.config.crash_window;
        while self
            .crashes
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            self.crashes.pop_front();
        }
        self.crashes.push_back(now);
        if self.crashes.len() >= self.config.max_crashes as usize {
            self.failure = Some(format!(
                "{} crashes within {:?} (last: {reason}); fix the cause and restart the node",
                self.crashes.len(),
                window
            ));
            self.phase = Phase::Failed;
            return;
        }
        let delay = self.backoff(self.consecutive);
        self.phase = Phase::Backoff { until: now + delay };
    }

    /// The jittered delay before restart number `n` (1-based) of a crash streak.
    fn backoff(&mut self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.config.backoff_cap);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if span == 0 {
            0
        } else {
            self.rng.next() % (span + 1)
        };
        half + Duration::from_nanos(extra)
    }
}

/// SplitMix64: enough randomness to de-synchronise restarts, from a seed.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
