//! The bulk controller chosen per path by what the path shows: the adaptive window
//! ([`AdaptiveLedbat`]) while the path's delay jitters, the rate model ([`RateBulk`])
//! while it is quiet.
//!
//! Invariant: exactly one of the two controllers decides when bulk may leave (the *active*
//! one); both see every send, acknowledgement, loss and timer, so the one that takes over
//! starts from the path's measured bw, round trip and jitter, never from scratch. A peer
//! starts on the adaptive window (safe on any path) and moves to the rate model only after
//! the adaptive controller's jitter-driven target has stayed below `quiet_below ×
//! min_target` for `quiet_for` of bulk (counted from the start of the spell of bulk, so the
//! rate model has measured the window's delivery rate by then); it moves back as soon as
//! the target has stayed above `noisy_above × min_target` for `noisy_for`. Between the two
//! thresholds nothing changes (hysteresis), and `quiet_for` bounds how often it can flap.
//! The choice is made for all members of an [`AutoGroup`] at once (a node puts all its
//! peers in one): the rate model only while every member sending bulk has a quiet path, the
//! window for all as soon as one jitters, so peers behind one bottleneck change hands
//! together.
//!
//! Why (docs/congestion.md, sections 5 and 8): on a fixed-rate link (a `tbf` uplink, a LAN,
//! a wired 50 Mbit/s path) pacing at the measured delivery rate keeps the queue below the
//! node near empty, where a window lets bursts wait there (issue 15's flood: the control
//! loop's p99 +0.0–0.3 ms against +1.1–1.7 ms); on LTE and Wi-Fi the rate model costs the
//! control loop the queue of every rate drop (+6 to +184 ms), where the adaptive window
//! keeps it within 2 ms. The adaptive controller already measures the jitter that tells the
//! two kinds of path apart. A rate *drop* on a quiet path is the rate model's own business:
//! a delivery-rate sample below the send rate replaces bw at once, and the brake cuts the
//! pacing rate while the queue is above its target; a queue that grows smoothly is not
//! jitter (the trend filter), so it does not flip the choice by itself.

use std::time::{Duration, Instant};

use super::{AdaptiveConfig, AdaptiveLedbat, CongestionStrategy, Feedback, RateBulk, RateConfig};

mod group;

pub use group::AutoGroup;
use group::Report;

/// Parameters of [`AutoBulk`]; [`Default`] needs no tuning per link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoConfig {
    /// The adaptive window's parameters (its `min_target` is the node's bulk target).
    pub adaptive: AdaptiveConfig,
    /// The rate model's parameters.
    pub rate: RateConfig,
    /// The path is quiet while the adaptive target is below this many `min_target`s
    /// (2: the adaptive controller's own test for a quiet path, where it is RFC LEDBAT).
    pub quiet_below: f64,
    /// The path is jittery once the adaptive target is above this many `min_target`s.
    pub noisy_above: f64,
    /// How long the path must stay quiet, with bulk flowing, before the rate model
    /// takes over (also how long without bulk ends a spell of it).
    pub quiet_for: Duration,
    /// How long the path must stay jittery before the adaptive window takes back over.
    pub noisy_for: Duration,
}

impl Default for AutoConfig {
    fn default() -> Self {
        Self {
            adaptive: AdaptiveConfig::default(),
            rate: RateConfig::default(),
            quiet_below: 4.0,
            noisy_above: 8.0,
            quiet_for: Duration::from_secs(1),
            noisy_for: Duration::from_millis(50),
        }
    }
}

impl AutoConfig {
    /// The default choice with `min_target` as both controllers' delay floor and `mss`
    /// as their segment size.
    pub fn with_floor(min_target: Duration, mss: usize) -> Self {
        let d = Self::default();
        Self {
            adaptive: AdaptiveConfig {
                min_target,
                mss,
                ..d.adaptive
            },
            rate: RateConfig {
                min_target,
                mss,
                ..d.rate
            },
            ..d
        }
    }
}

/// Which controller decides when bulk leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The adaptive window: the path jitters (or has not shown it is quiet yet).
    Adaptive,
    /// The rate model: the path has been quiet for `quiet_for`.
    Rate,
}

impl Mode {
    /// `adaptive` or `rate`: the name of the `node.bulk_controller` that paces the same way.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Adaptive => "adaptive",
            Mode::Rate => "rate",
        }
    }
}

/// The per-path choice between the adaptive window and the rate model. See the module
/// docs. Controllers that share an [`AutoGroup`] (a node's peers) change mode together.
#[derive(Debug)]
pub struct AutoBulk {
    config: AutoConfig,
    adaptive: AdaptiveLedbat,
    rate: RateBulk,
    /// The mode this controller acts on: the group's, as of this controller's last event.
    mode: Mode,
    group: AutoGroup,
    id: usize,
    report: Report,
    /// When the current spell of bulk began (the first bulk packet after `quiet_for`
    /// without any): the quiet that hands a path to the rate model is counted from here.
    spell: Option<Instant>,
    switches: u64,
    /// Whether the group counts this member among those with bulk in flight.
    counted_sending: bool,
}

impl Default for AutoBulk {
    fn default() -> Self {
        Self::new(AutoConfig::default())
    }
}

impl Drop for AutoBulk {
    fn drop(&mut self) {
        if self.counted_sending {
            self.group.set_sending(false);
        }
        self.group.leave(self.id);
    }
}

impl AutoBulk {
    /// A controller on the adaptive window, with no history, in a group of its own.
    pub fn new(config: AutoConfig) -> Self {
        Self::in_group(config, &AutoGroup::new())
    }

    /// A controller that changes mode with the rest of `group` (see [`AutoGroup`]).
    pub fn in_group(config: AutoConfig, group: &AutoGroup) -> Self {
        let id = group.join();
        let mut c = Self {
            config,
            adaptive: AdaptiveLedbat::new(config.adaptive),
            rate: RateBulk::new(config.rate),
            mode: Mode::Adaptive,
            group: group.clone(),
            id,
            report: Report::default(),
            spell: None,
            switches: 0,
            counted_sending: false,
        };
        c.mark_shadow();
        c.adopt(group.mode());
        c
    }

    /// Which controller decides now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How many times this controller's mode changed.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The adaptive window (active or not).
    pub fn adaptive(&self) -> &AdaptiveLedbat {
        &self.adaptive
    }

    /// The rate model (active or not).
    pub fn rate(&self) -> &RateBulk {
        &self.rate
    }

    fn active(&self) -> &dyn CongestionStrategy {
        match self.mode {
            Mode::Adaptive => &self.adaptive,
            Mode::Rate => &self.rate,
        }
    }

    /// Acts on the group's mode from now on.
    fn adopt(&mut self, mode: Mode) {
        if mode == self.mode {
            return;
        }
        if mode == Mode::Rate {
            self.rate.take_over();
        }
        self.mode = mode;
        self.switches += 1;
        self.mark_shadow();
    }

    /// Tells each half whether it paces, for its trace lines.
    fn mark_shadow(&mut self) {
        self.adaptive.set_shadow(self.mode != Mode::Adaptive);
        self.rate.set_shadow(self.mode != Mode::Rate);
    }

    /// Keeps the group's count of members with bulk in flight current (after every event
    /// that moves the flight).
    fn count_flight(&mut self) {
        let sending = self.active().bytes_in_flight() > 0;
        if sending != self.counted_sending {
            self.counted_sending = sending;
            self.group.set_sending(sending);
        }
    }

    /// Tells the adaptive window, before it reads an ack, whether another member sends
    /// beside it (`set_shared`).
    fn tell_shared(&mut self) {
        let others = self
            .group
            .sending()
            .saturating_sub(usize::from(self.counted_sending));
        self.adaptive.set_shared(others > 0);
    }

    /// Catches up with a change another member of the group made.
    fn follow(&mut self) {
        let mode = self.group.mode();
        self.adopt(mode);
    }

    /// Re-evaluates the choice after an acknowledgement moved the jitter estimate.
    fn choose(&mut self, now: Instant) {
        let c = &self.config;
        let target = self.adaptive.target().as_secs_f64();
        let floor = c.adaptive.min_target.as_secs_f64();
        let since = |flag: bool, since: Option<Instant>| flag.then(|| since.unwrap_or(now));
        // Quiet counts only while bulk flows: a path quiet under a control loop alone says
        // nothing of the window's bursts, and the shadowed rate model has measured no
        // delivery rate yet. Counted from an idle path's quiet, the hand-over comes as bulk
        // starts (the demo's uplink: 21 ms in, two rounds into the model's startup, at its
        // 1 Mbit/s floor; docs/congestion.md, section 8).
        let quiet = since(target < c.quiet_below * floor, self.report.quiet_since);
        self.report.quiet_since = quiet.map(|at| self.spell.map_or(at, |spell| at.max(spell)));
        self.report.noisy_since = since(target > c.noisy_above * floor, self.report.noisy_since);
        let mode = self
            .group
            .report(self.id, self.report, now, c.quiet_for, c.noisy_for);
        self.adopt(mode);
    }
}

impl CongestionStrategy for AutoBulk {
    fn name_for_trace(&mut self, peer: &str) {
        self.adaptive.name_for_trace(peer);
        self.rate.name_for_trace(peer);
    }

    fn on_sent(&mut self, now: Instant, bytes: usize) {
        self.follow();
        let gap = self.config.quiet_for;
        if self
            .report
            .last_sent
            .is_none_or(|at| now.saturating_duration_since(at) >= gap)
        {
            self.spell = Some(now);
        }
        self.report.last_sent = Some(now);
        self.adaptive.on_sent(now, bytes);
        self.rate.on_sent(now, bytes);
        self.count_flight();
    }

    fn on_ack(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        self.tell_shared();
        self.adaptive.on_ack(now, bytes, round_trip);
        self.rate.on_ack(now, bytes, round_trip);
        self.count_flight();
        self.choose(now);
    }

    fn on_settled(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        self.tell_shared();
        self.adaptive.on_settled(now, bytes, round_trip);
        self.rate.on_settled(now, bytes, round_trip);
        self.count_flight();
        self.choose(now);
    }

    fn on_feedback(&mut self, now: Instant, feedback: Feedback) {
        self.tell_shared();
        self.adaptive.on_feedback(now, feedback);
        self.rate.on_feedback(now, feedback);
        self.count_flight();
        self.choose(now);
    }

    fn on_rate_drop(&mut self, now: Instant, delivered: f64) {
        // Only the rate model acts on a receiver's rate-drop report; it keeps its state
        // current whichever controller is active, as for every other event.
        self.rate.on_rate_drop(now, delivered);
    }

    fn on_loss(&mut self, now: Instant, bytes: usize) {
        self.follow();
        self.adaptive.on_loss(now, bytes);
        self.rate.on_loss(now, bytes);
        self.count_flight();
    }

    fn forget(&mut self, bytes: usize) {
        self.adaptive.forget(bytes);
        self.rate.forget(bytes);
        self.count_flight();
    }

    fn can_send_bulk(&self, now: Instant, bytes: usize) -> bool {
        self.active().can_send_bulk(now, bytes)
    }

    fn bytes_in_flight(&self) -> usize {
        self.active().bytes_in_flight()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // Only the active controller's timers wake the driver (the inactive rate model's
        // pacer would otherwise wake it once per packet for nothing); the inactive one
        // catches up on its ack timeout whenever a timer runs.
        self.active().poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.follow();
        self.adaptive.handle_timeout(now);
        self.rate.handle_timeout(now);
        self.count_flight();
    }
}

#[cfg(test)]
mod tests;
