//! A rate-model bulk controller: bulk is paced at the path's measured delivery rate, and
//! queueing delay is only a brake.
//!
//! Invariant: bulk never leaves faster than the pacing rate (a token clock driven by the
//! caller's `now`), never with more than the window cap in flight, and the pacing rate is
//! `gain × brake × bw` for the phase's gain, never below `min_rate`. Only bulk is ever
//! held back (the [`CongestionStrategy`] contract).
//!
//! Why a rate model: on LTE and Wi-Fi the path's own delay jitters by milliseconds and
//! drifts with the cell's load, so a delay target that clears the noise also lets real
//! queues through, and one that does not starves bulk. The delivery rate is a cleaner
//! signal of capacity: it is measured on the receiver's clock (the ack's receive stamps),
//! so neither the reverse path's jitter nor ack bunching reach it. The model, after BBR:
//!
//! - **bw**: the largest delivery rate sampled since the bottleneck last showed (a sample
//!   whose bytes arrived at less than `limited_ratio` of the rate they were sent at: the
//!   link, not the sender, set the pace); such a sample *replaces* bw, so a capacity drop
//!   is tracked at once instead of after BBR's ten-round max filter.
//! - **rounds** last a smoothed round trip, never fewer than four packets at the pacing
//!   rate; a sample spans `sample_rounds` of them.
//! - **phases**: `Startup` at `startup_gain × bw` until the bottleneck shows (or three
//!   rounds without 25 % growth); `Drain` at `drain_gain` less the queue the overshoot
//!   left, while the delay says it is there (three rounds at most); `Cruise` at
//!   `cruise_gain × bw` for `cruise_rounds`; `Probe` one round at `probe_gain × bw`. A
//!   round whose sample raised bw by 5 % is followed by a probe at once (the capacity
//!   went up, as LTE's does by the second).
//! - **window cap** `cwnd_gain × bw × (min_rtt + 2 × target)`: the round trip's minimum
//!   over the last [`BASE_ROUNDS`] rounds, plus what the jitter adds.
//! - **brake**: when the filtered queueing delay (a short minimum of round trips over the
//!   windowed minimum) exceeds a target that follows the measured jitter
//!   (`jitter_gain × jitter` within `min_target..=max_target`), the pacing rate is cut by
//!   the excess over a round trip (at most half) for one round, then no new brake for a
//!   round. bw is kept unless the excess is half a round trip, which no jitter makes.
//!
//! What it does not do (docs/congestion.md, section 5): the queue a rate *drop* leaves is
//! the sender's excess for the round trip it takes to see the drop; pacing does not
//! shorten that. Loss is not a signal (the node reports none: acknowledgements are
//! cumulative); a silence of one ack timeout empties the flight and halves bw once.

use std::time::{Duration, Instant};

use super::adaptive::delay::DelayFilter;
use super::adaptive::trace::Trace;
use super::{CongestionStrategy, Feedback};

pub(crate) mod sampler;

use sampler::{MinRtt, RateSample, RateSampler};

/// The smallest excess of a probe over bw: a rise in capacity must still show as 5 %
/// more delivered within the probe's sample.
const MIN_PROBE_EXTRA: f64 = 0.1;

/// Rounds the round trip's minimum looks back over.
pub const BASE_ROUNDS: usize = 10;

/// Parameters of [`RateBulk`]; [`Default`] needs no tuning per link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateConfig {
    /// Segment size in bytes (the mesh MTU).
    pub mss: usize,
    /// Pacing gain before the bottleneck first showed.
    pub startup_gain: f64,
    /// Pacing gain between probes: under 1 keeps the queue below the node empty.
    pub cruise_gain: f64,
    /// Pacing gain of a probe round.
    pub probe_gain: f64,
    /// The most queue a probe round may add, in brake targets: on a quiet, short path a
    /// quarter round at `probe_gain` is more than the control loop's budget (1 ms of a
    /// 4 ms round trip), on a jittery one the target is larger than the probe's queue.
    pub probe_queue_targets: f64,
    /// Pacing gain of the round after the bottleneck showed.
    pub drain_gain: f64,
    /// Rounds cruised between probes.
    pub cruise_rounds: u32,
    /// A sample delivered at less than this fraction of its send rate is the bottleneck's.
    pub limited_ratio: f64,
    /// The same at the end of a cruise, whose sample holds no probe.
    pub cruise_limited_ratio: f64,
    /// Span of a delivery-rate sample, in smoothed round trips (longer: less jitter in
    /// the estimate, slower to see a drop).
    pub sample_rounds: f64,
    /// Window cap in bandwidth-delay products.
    pub cwnd_gain: f64,
    /// Smallest window, in segments.
    pub min_cwnd_packets: usize,
    /// Largest window, in segments (below the send log's 1024 slots).
    pub max_cwnd_packets: usize,
    /// Rate before the first sample, bytes per second.
    pub init_rate: f64,
    /// Smallest bw, bytes per second.
    pub min_rate: f64,
    /// Smallest queueing delay the brake tolerates.
    pub min_target: Duration,
    /// Largest, however jittery the path.
    pub max_target: Duration,
    /// Brake target per unit of measured jitter.
    pub jitter_gain: f64,
    /// Longest time without ACKs before in-flight bytes are presumed lost.
    pub cto: Duration,
    /// Shortest such time once round trips are measured.
    pub min_cto: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            mss: 1350,
            startup_gain: 2.0,
            cruise_gain: 0.95,
            probe_gain: 1.25,
            probe_queue_targets: 2.0,
            drain_gain: 0.75,
            cruise_rounds: 2,
            limited_ratio: 0.85,
            cruise_limited_ratio: 0.97,
            sample_rounds: 1.5,
            cwnd_gain: 2.0,
            min_cwnd_packets: 4,
            max_cwnd_packets: 960,
            init_rate: 125_000.0,
            min_rate: 25_000.0,
            min_target: Duration::from_micros(250),
            max_target: Duration::from_millis(25),
            jitter_gain: 2.5,
            cto: Duration::from_secs(1),
            min_cto: Duration::from_millis(10),
        }
    }
}

/// Where the controller is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    /// Doubling until the bottleneck shows.
    Startup,
    /// One round at `drain_gain` (after the bottleneck showed).
    Drain,
    /// At `cruise_gain`, this many more rounds.
    Cruise(u32),
    /// One round at `probe_gain`.
    Probe,
}

/// The rate-model bulk-lane sender. See the module docs.
#[derive(Clone, Debug)]
pub struct RateBulk {
    config: RateConfig,
    phase: Phase,
    bw: f64,
    flight: usize,
    sampler: RateSampler,
    min_rtt: MinRtt<BASE_ROUNDS>,
    /// Bulk round trips, for the brake's current delay and the jitter.
    delays: DelayFilter,
    smoothed: Option<Duration>,
    round_end: Option<Instant>,
    /// bw when the last probe began (did it raise bw?).
    bw_at_probe: f64,
    /// A brake in force: until when, and the factor on the pacing rate.
    braking: Option<(Instant, f64)>,
    /// No new brake before this.
    brake_hold: Option<Instant>,
    last_progress: Option<Instant>,
    /// Startup rounds without 25 % growth.
    plateau: u32,
    /// Rounds drained since the bottleneck last showed.
    drain_rounds: u32,
    /// Whether this drain follows a probe (one round, symmetric to the probe).
    probe_drain: bool,
    /// Whether this probe follows one that raised bw (probes at full `probe_gain`).
    probe_growing: bool,
    /// The pacing gain of this drain: `drain_gain` less the queue the overshoot left.
    drain_gain: f64,
    timed_out: bool,
    next_send: Option<Instant>,
    pace_wake: Option<Instant>,
    /// No rate-drop report is acted on before this (one cut per round trip).
    drop_hold: Option<Instant>,
    /// Counters for the debug-level trace (`adaptive/trace.rs`).
    trace: Trace,
}

impl Default for RateBulk {
    fn default() -> Self {
        Self::new(RateConfig::default())
    }
}

impl RateBulk {
    /// A sender in `Startup` at `init_rate`, with no history.
    pub fn new(config: RateConfig) -> Self {
        Self {
            config,
            phase: Phase::Startup,
            bw: config.init_rate.max(config.min_rate),
            flight: 0,
            sampler: RateSampler::default(),
            min_rtt: MinRtt::default(),
            delays: DelayFilter::default(),
            smoothed: None,
            round_end: None,
            bw_at_probe: 0.0,
            braking: None,
            brake_hold: None,
            last_progress: None,
            plateau: 0,
            drain_rounds: 0,
            probe_drain: false,
            probe_growing: false,
            drain_gain: config.drain_gain,
            timed_out: false,
            next_send: None,
            pace_wake: None,
            drop_hold: None,
            trace: Trace::default(),
        }
    }

    /// The bottleneck bandwidth estimate, bytes per second.
    pub fn bw(&self) -> f64 {
        self.bw
    }

    /// The phase of the cycle.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes over a path another controller was pacing (it saw every ack, so bw and the
    /// round trip are measured): a startup would double a rate the path already carries,
    /// so it cruises at that rate and probes up from there.
    pub(crate) fn take_over(&mut self) {
        if self.phase == Phase::Startup {
            self.phase = Phase::Cruise(self.config.cruise_rounds);
        }
        self.braking = None;
        self.brake_hold = None;
    }

    /// The round trip's minimum over the last [`BASE_ROUNDS`] rounds.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.get()
    }

    /// The smoothed round trip, once measured.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.smoothed
    }

    /// Bytes per second bulk leaves at now.
    pub fn pacing_rate(&self) -> f64 {
        let c = &self.config;
        let gain = match self.phase {
            Phase::Startup => c.startup_gain,
            Phase::Drain => self.drain_gain,
            Phase::Cruise(_) => c.cruise_gain,
            Phase::Probe => self.probe_gain(),
        };
        let brake = self.braking.map_or(1.0, |(_, factor)| factor);
        (gain * brake * self.bw).max(c.min_rate)
    }

    /// The probe's pacing gain: `probe_gain`, less where its round would queue more than
    /// `probe_queue_targets` brake targets.
    fn probe_gain(&self) -> f64 {
        let c = &self.config;
        if self.probe_growing {
            // The capacity went up: find the rest in a few rounds, not a few seconds.
            return c.probe_gain;
        }
        let budget = c.probe_queue_targets * self.target().as_secs_f64();
        let extra = (budget / self.srtt().as_secs_f64().max(1e-4))
            .clamp(MIN_PROBE_EXTRA, (c.probe_gain - 1.0).max(MIN_PROBE_EXTRA));
        1.0 + extra
    }

    /// The window cap in bytes: `cwnd_gain` bandwidth-delay products, over the round
    /// trip's windowed minimum plus twice the brake's target. The target is what the
    /// jitter adds (a cap on the minimum alone starves the pacer on a jittery path); the
    /// smoothed round trip would let the cap grow with the very queue it should bound.
    pub fn cwnd(&self) -> usize {
        let c = &self.config;
        let floor = c.min_cwnd_packets * c.mss;
        let Some(min_rtt) = self.min_rtt.get() else {
            return floor.max(10 * c.mss);
        };
        let rtt = min_rtt + self.target() * 2;
        let bdp = self.bw * rtt.as_secs_f64() * c.cwnd_gain;
        (bdp as usize + 2 * c.mss).clamp(floor, c.max_cwnd_packets * c.mss)
    }

    /// The brake's target: the measured jitter times `jitter_gain`, within bounds.
    pub fn target(&self) -> Duration {
        let c = &self.config;
        let jitter = Duration::from_secs_f64(self.delays.jitter() * c.jitter_gain);
        jitter.clamp(c.min_target, c.max_target.max(c.min_target))
    }

    /// The filtered queueing delay: a short minimum of bulk round trips over the
    /// windowed minimum.
    pub fn queuing_delay(&self) -> Option<Duration> {
        let horizon = self.smoothed.unwrap_or_default() / 2;
        Some(
            self.delays
                .current(horizon)?
                .saturating_sub(self.min_rtt.get()?),
        )
    }

    /// The current ack timeout: three smoothed round trips plus 2 ms, within
    /// `min_cto..=cto`.
    pub fn cto(&self) -> Duration {
        match self.smoothed {
            None => self.config.cto,
            Some(srtt) => (srtt * 3 + Duration::from_millis(2))
                .clamp(self.config.min_cto.min(self.config.cto), self.config.cto),
        }
    }

    fn srtt(&self) -> Duration {
        self.smoothed.unwrap_or(Duration::from_millis(100))
    }

    /// How long a round lasts: a smoothed round trip, but never fewer than four packets
    /// at the pacing rate (on a slow, short path a round of one packet measures nothing
    /// and a probe of one packet changes nothing).
    fn round(&self) -> Duration {
        let packets = Duration::from_secs_f64(4.0 * self.config.mss as f64 / self.pacing_rate());
        self.srtt().max(packets)
    }

    /// The span of a delivery-rate sample: `sample_rounds` rounds.
    fn span(&self) -> Duration {
        self.round().mul_f64(self.config.sample_rounds)
    }

    /// Ends a round: takes its delivery-rate sample and moves the phase on.
    fn end_round(&mut self, now: Instant) {
        let srtt = self.srtt();
        self.round_end = Some(now + self.round());
        self.min_rtt.next_round();
        let sample = self.sampler.sample(self.span());
        let limited = sample.is_some_and(|s| self.limited(s));
        let before = self.bw;
        if let Some(s) = sample.filter(|_| limited) {
            // What the sample sent beyond what got through is queued below: drain it
            // within the next round on top of `drain_gain`'s margin.
            let span = self.span().as_secs_f64();
            let queued = (s.sent - s.delivered) * span;
            let round = s.delivered * srtt.as_secs_f64();
            self.drain_gain = (self.config.drain_gain - queued / round.max(1.0)).max(0.25);
        }
        if let Some(s) = sample {
            self.bw = if limited {
                s.delivered
            } else {
                self.bw.max(s.delivered)
            }
            .max(self.config.min_rate);
        }
        let grew = self.bw > before * 1.05;
        let c = self.config;
        if self.phase != Phase::Drain {
            self.drain_rounds = 0;
            self.probe_drain = false;
        }
        self.phase = match self.phase {
            Phase::Startup if limited => Phase::Drain,
            Phase::Startup => {
                // Three rounds without 25 % more delivered: the pipe is full (BBR).
                if self.bw > self.bw_at_probe * 1.25 {
                    self.bw_at_probe = self.bw;
                    self.plateau = 0;
                } else {
                    self.plateau += 1;
                }
                if self.plateau >= 3 {
                    Phase::Drain
                } else {
                    Phase::Startup
                }
            }
            _ if limited => {
                // The bottleneck showed: drain its queue for as long as it is there.
                self.probe_drain = false;
                self.probe_growing = false;
                Phase::Drain
            }
            // A probe's bytes got through (its sample arrives a round or two after it):
            // the capacity went up, probe again at once.
            _ if grew => {
                self.probe_growing = true;
                Phase::Probe
            }
            Phase::Cruise(n) if n > 0 => Phase::Cruise(n - 1),
            Phase::Cruise(_) => Phase::Probe,
            // The overshoot's queue is drained before cruising: at `drain_gain` while the
            // delay says it is still there, for at most three rounds (after that it is a
            // longer path, not a queue: the windowed minimum catches up).
            Phase::Drain
                if !self.probe_drain
                    && self.drain_rounds < 3
                    && self.queuing_delay().is_some_and(|q| q > self.target()) =>
            {
                self.drain_rounds += 1;
                Phase::Drain
            }
            // A probe that found no more capacity left a quarter round of queue: it is
            // drained before cruising (BBR's 0.75 round after its 1.25), or cruising at
            // 0.95 takes five rounds to remove it, the next probe comes first, and the
            // queue ratchets up into the windowed minimum (seen on a clean 50 Mbit/s,
            // 4 ms path: 7 ms of standing queue, docs/congestion.md section 6).
            Phase::Probe => {
                self.drain_gain = 2.0 - self.probe_gain();
                self.probe_growing = false;
                self.probe_drain = true;
                Phase::Drain
            }
            Phase::Drain => {
                self.drain_gain = c.drain_gain;
                Phase::Cruise(c.cruise_rounds)
            }
        };
    }

    fn limited(&self, s: RateSample) -> bool {
        // Late in a cruise the sample spans cruise rounds only: sent at `cruise_gain`
        // below bw, anything short of what was sent means bw is too high and a queue is
        // growing (a probe too small to show the bottleneck, a rate drop below the
        // cruise margin). Left alone, that queue grows into the windowed minimum, where
        // the brake no longer sees it.
        let ratio = match self.phase {
            Phase::Cruise(0) => self.config.cruise_limited_ratio,
            _ => self.config.limited_ratio,
        };
        s.delivered < ratio * s.sent
    }

    /// Slows bulk for one round when the queue exceeds the target, then holds off for
    /// another: until its effect reaches the acks, the queue it saw is what they show.
    /// bw is left alone: on a jittery path the delay says less about the capacity than
    /// the delivery rate does.
    fn brake(&mut self, now: Instant) {
        if self.brake_hold.is_some_and(|until| now < until) {
            return;
        }
        let (Some(q), target) = (self.queuing_delay(), self.target()) else {
            return;
        };
        // In startup the jitter is not measured yet: only a queue of a quarter of the
        // path's round trip ends it early (a plateau of bw ends it otherwise).
        let floor = match self.phase {
            Phase::Startup => self.min_rtt.get().unwrap_or_default() / 4,
            _ => Duration::ZERO,
        };
        if q <= target.max(floor) {
            return;
        }
        let srtt = self.srtt();
        // The excess queue drains within about a round trip, at most half the rate.
        let excess = (q - target).as_secs_f64() / srtt.as_secs_f64().max(1e-4);
        let cut = excess.min(0.5);
        // Half a round trip of queue over the target is no jitter: the rate fell, and
        // the delivery rate shows by how much before a whole sample flags it.
        if excess >= 0.5
            && let Some(s) = self.sampler.sample(srtt / 2)
        {
            self.bw = self.bw.min(s.delivered).max(self.config.min_rate);
        }
        if self.phase == Phase::Startup {
            self.phase = Phase::Drain;
            self.round_end = Some(now + srtt);
        }
        self.braking = Some((now + srtt, 1.0 - cut));
        self.brake_hold = Some(now + srtt * 2);
    }

    /// The receiver's report of a rate drop (docs/congestion.md, section 6): bw falls to
    /// what got through, bulk pauses while the queue the old rate built above the new
    /// rate's BDP drains (at most a round trip), then drains at `drain_gain`. One cut per
    /// round trip: later reports describe packets sent before this one.
    fn rate_drop(&mut self, now: Instant, delivered: f64) {
        if self.drop_hold.is_some_and(|until| now < until) {
            return;
        }
        let delivered = delivered.max(self.config.min_rate);
        if delivered >= self.config.limited_ratio * self.pacing_rate() {
            // We are already sending about that slowly: the rate fell because we did.
            return;
        }
        let srtt = self.srtt();
        self.bw = self.bw.min(delivered);
        let bdp = delivered * self.min_rtt.get().unwrap_or_default().as_secs_f64();
        let queued = (self.flight as f64 - bdp).max(0.0);
        let pause = Duration::from_secs_f64(queued / delivered).min(srtt);
        let next = self.next_send.map_or(now, |at| at.max(now)) + pause;
        self.next_send = Some(next);
        self.pace_wake = Some(next);
        self.phase = Phase::Drain;
        self.drain_gain = self.config.drain_gain;
        self.drain_rounds = 0;
        self.round_end = Some(now + pause + srtt);
        self.braking = None;
        self.brake_hold = Some(now + srtt);
        self.drop_hold = Some(now + srtt);
    }

    fn on_sample(&mut self, now: Instant, feedback: Feedback) {
        self.last_progress = Some(now);
        self.timed_out = false;
        let rtt = feedback.round_trip;
        self.smoothed = Some(self.smoothed.map_or(rtt, |s| (s * 7 + rtt) / 8));
        if feedback.bulk {
            self.min_rtt.on_sample(rtt);
            self.delays.on_sample(now, rtt);
        }
        let span = self.span();
        self.sampler
            .on_ack(now, feedback.bytes, rtt, feedback.one_way, span);
        self.flight = self.flight.saturating_sub(feedback.bytes);
        if self.braking.is_some_and(|(until, _)| now >= until) {
            self.braking = None;
        }
        if self.round_end.is_none_or(|end| now >= end) {
            self.end_round(now);
        }
        self.brake(now);
        self.trace_line(now, feedback.bytes);
    }

    /// Whether this controller only follows another's pacing (`auto`'s inactive
    /// half), for its trace lines.
    pub(in crate::path) fn set_shadow(&mut self, shadow: bool) {
        self.trace.set_shadow(shadow);
    }

    /// Writes the model's state at debug level every tenth of a second
    /// (`RUST_LOG=info,bauxite_conduit::path::rate=debug`; `adaptive/trace.rs`).
    fn trace_line(&mut self, now: Instant, bytes: usize) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let Some(p) = self.trace.due(now, bytes) else {
            return;
        };
        let us = |d: Option<Duration>| d.map_or(-1, |d| d.as_micros() as i64);
        let mbit = |rate: f64| rate * 8.0 / 1e6;
        tracing::debug!(
            peer = self.trace.peer(),
            pacing = self.trace.pacing(),
            phase = ?self.phase,
            bw_mbit = mbit(self.bw),
            pacing_mbit = mbit(self.pacing_rate()),
            braking = self.braking.map_or(1.0, |(_, factor)| factor),
            cwnd = self.cwnd(),
            flight = self.flight,
            min_rtt_us = us(self.min_rtt()),
            srtt_us = us(self.smoothed),
            target_us = us(Some(self.target())),
            queuing_us = us(self.queuing_delay()),
            acks = p.acks,
            acked_mbit = p.acked_mbit,
            sends = p.sends,
            sent_mbit = p.sent_mbit,
            late_mean_us = p.late_mean_us,
            late_max_us = p.late_max_us,
            "rate model"
        );
    }
}

impl CongestionStrategy for RateBulk {
    fn name_for_trace(&mut self, peer: &str) {
        self.trace.name(peer);
    }

    fn on_sent(&mut self, now: Instant, bytes: usize) {
        if self.flight == 0 {
            self.last_progress = Some(now);
        }
        self.flight = self.flight.saturating_add(bytes);
        // A late wake-up may catch up on at most a millisecond of tokens, no more: a
        // burst is a queue below the node.
        // A packet sent ahead of its slot (an empty pipe always admits one) books its
        // gap from now: booked from the future slot, each such packet pushed the clock
        // further ahead, and on a path whose round trip is shorter than a packet's gap
        // (a 20 Mbit/s tbf link, 0.7 ms) the pacer never released again: one packet per
        // round trip, 16 of 20 Mbit/s (docs/congestion.md section 6).
        self.trace.on_sent(now, bytes, self.next_send);
        let floor = now.checked_sub(Duration::from_millis(1)).unwrap_or(now);
        let from = self.next_send.map_or(now, |at| at.clamp(floor, now));
        let next = from + Duration::from_secs_f64(bytes as f64 / self.pacing_rate());
        self.next_send = Some(next);
        self.pace_wake = Some(next);
    }

    fn on_ack(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        self.on_sample(
            now,
            Feedback {
                bytes,
                round_trip,
                one_way: None,
                bulk: true,
            },
        );
    }

    fn on_feedback(&mut self, now: Instant, feedback: Feedback) {
        self.on_sample(now, feedback);
    }

    fn on_rate_drop(&mut self, now: Instant, delivered: f64) {
        self.rate_drop(now, delivered);
    }

    fn on_loss(&mut self, _now: Instant, bytes: usize) {
        self.flight = self.flight.saturating_sub(bytes);
    }

    fn forget(&mut self, bytes: usize) {
        self.flight = self.flight.saturating_sub(bytes);
    }

    fn can_send_bulk(&self, now: Instant, bytes: usize) -> bool {
        // An empty pipe always admits one packet, so an oversized packet cannot wedge bulk.
        self.flight == 0
            || (self.flight.saturating_add(bytes) <= self.cwnd()
                && self.next_send.is_none_or(|at| at <= now))
    }

    fn bytes_in_flight(&self) -> usize {
        self.flight
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let cto = (self.flight > 0)
            .then(|| self.last_progress.map(|at| at + self.cto()))
            .flatten();
        [cto, self.pace_wake].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.pace_wake.is_some_and(|at| at <= now) {
            self.pace_wake = None;
        }
        let cto = self.last_progress.map(|at| at + self.cto());
        if self.flight > 0 && cto.is_some_and(|deadline| deadline <= now) {
            self.flight = 0;
            self.last_progress = Some(now);
            if !self.timed_out {
                self.bw = (self.bw / 2.0).max(self.config.min_rate);
                self.timed_out = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
