//! An adaptive scavenger window for the bulk lane: LEDBAT (RFC 6817) whose delay target
//! follows the path's measured jitter and whose base delay follows the path's drift, so a
//! jittery radio link (LTE, Wi-Fi) gets most of its capacity with no hand tuning while the
//! queue bulk builds below the node stays near the noise the path makes anyway.
//!
//! Invariant: the window stays within `min_cwnd_packets..=max_cwnd_packets` segments; it
//! grows only while the filtered queuing delay is under the current target and shrinks,
//! by up to half a window per round trip, while it is above; the target never leaves
//! `min_target..=max_target`.
//!
//! What differs from [`Ledbat`](super::Ledbat), and why (docs/congestion.md has the
//! evidence from the simulator):
//! - **Current delay**: the minimum of the last [`FILTER`] samples, not 4. With ±5 ms of
//!   in-order jitter the minimum of 4 samples sits milliseconds above the path's floor,
//!   which a sub-millisecond target reads as a queue.
//! - **Target**: `jitter_gain` times the measured jitter (the mean of each sample's height
//!   above the running minimum), within `min_target..=max_target`. What the filter cannot
//!   see through is noise the control loop suffers idle too; a target below it starves bulk
//!   (two packets per round trip), a target far above it is a standing queue.
//! - **Base delay drift** (LEDBAT++'s slowdown, triggered by evidence instead of a clock):
//!   when the window is back near its floor and the delay still sits above the target for
//!   `rebase_after` smoothed round trips, the queue is not ours (two packets cannot hold
//!   it): the path got longer (LTE: a loaded cell), so the base is re-measured as the
//!   current filtered delay. The RFC's ten-minute minimum would starve bulk for ten minutes
//!   after every such step.
//! - **Growth and decrease are multiplicative** (LEDBAT++'s slowed start and
//!   multiplicative decrease): below the target the window grows by up to `ramp` of itself
//!   per round trip (scaled by how far below), above it shrinks by up to half per round
//!   trip. The RFC's one segment per round trip takes seconds to fill a 30 Mbit/s, 60 ms
//!   path, longer than an LTE cell keeps its rate.
//!
//! Loss is not a signal here (the node reports none: acknowledgements are cumulative);
//! a silence of one ack timeout collapses the window as in [`Ledbat`](super::Ledbat).

use std::time::{Duration, Instant};

use super::CongestionStrategy;

/// Delay samples the current-delay filter takes the minimum of.
pub const FILTER: usize = 16;
const BASE_HISTORY: usize = 10;
const BASE_BUCKET: Duration = Duration::from_secs(60);

/// Parameters of [`AdaptiveLedbat`]; [`Default`] needs no tuning per link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Smallest delay target: the queue bulk may always build (the node's
    /// `bulk_target`, 250 µs by default).
    pub min_target: Duration,
    /// Largest delay target, however jittery the path.
    pub max_target: Duration,
    /// Target per unit of measured jitter.
    pub jitter_gain: f64,
    /// Growth per round trip far below the target, as a fraction of the window.
    pub ramp: f64,
    /// Smoothed round trips near the window's floor, above the target, before the base
    /// delay is re-measured.
    pub rebase_after: u32,
    /// Segment size in bytes (the mesh MTU).
    pub mss: usize,
    /// Initial window, in segments.
    pub init_cwnd_packets: usize,
    /// Smallest window, in segments.
    pub min_cwnd_packets: usize,
    /// Largest window, in segments (see [`LedbatConfig::max_cwnd_packets`](super::LedbatConfig::max_cwnd_packets)).
    pub max_cwnd_packets: usize,
    /// Longest time without ACKs before in-flight bytes are presumed lost.
    pub cto: Duration,
    /// Shortest such time once round trips are measured.
    pub min_cto: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min_target: Duration::from_micros(250),
            max_target: Duration::from_millis(25),
            jitter_gain: 2.0,
            ramp: 0.5,
            rebase_after: 2,
            mss: 1350,
            init_cwnd_packets: 2,
            min_cwnd_packets: 2,
            max_cwnd_packets: 960,
            cto: Duration::from_secs(1),
            min_cto: Duration::from_millis(10),
        }
    }
}

/// The adaptive bulk-lane sender. See the module docs.
#[derive(Clone, Debug)]
pub struct AdaptiveLedbat {
    config: AdaptiveConfig,
    cwnd: f64,
    flight: usize,
    flight_after_send: usize,
    recent: [Duration; FILTER],
    /// When each of `recent` arrived.
    recent_at: [Option<Instant>; FILTER],
    recent_next: usize,
    base_delays: [Duration; BASE_HISTORY],
    base_tail: usize,
    last_rollover: Option<Instant>,
    /// Mean height of a sample above the running minimum, in seconds (EWMA, 1/16).
    jitter: f64,
    smoothed: Option<Duration>,
    last_progress: Option<Instant>,
    /// Since when the window has sat near its floor with the delay above target.
    pinned_since: Option<Instant>,
    /// Since when the queue has stayed well under the target.
    empty_since: Option<Instant>,
}

impl Default for AdaptiveLedbat {
    fn default() -> Self {
        Self::new(AdaptiveConfig::default())
    }
}

impl AdaptiveLedbat {
    /// A sender with an initial window of `init_cwnd_packets` segments and no history.
    pub fn new(config: AdaptiveConfig) -> Self {
        let init = config.init_cwnd_packets.max(config.min_cwnd_packets) * config.mss;
        Self {
            config,
            cwnd: init as f64,
            flight: 0,
            flight_after_send: 0,
            recent: [Duration::MAX; FILTER],
            recent_at: [None; FILTER],
            recent_next: 0,
            base_delays: [Duration::MAX; BASE_HISTORY],
            base_tail: 0,
            last_rollover: None,
            jitter: 0.0,
            smoothed: None,
            last_progress: None,
            pinned_since: None,
            empty_since: None,
        }
    }

    /// The congestion window in bytes.
    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    /// The smallest delay of the base history (the uncongested path delay as last
    /// measured).
    pub fn base_delay(&self) -> Option<Duration> {
        min_of(&self.base_delays)
    }

    /// Filtered current delay minus base delay.
    pub fn queuing_delay(&self) -> Option<Duration> {
        Some(min_of(&self.recent)?.saturating_sub(self.base_delay()?))
    }

    /// The measured jitter: how far a sample sits above the running minimum, on average.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter)
    }

    /// The delay target now: the jitter times `jitter_gain`, within the configured bounds.
    pub fn target(&self) -> Duration {
        let lo = self.config.min_target;
        let hi = self.config.max_target.max(lo);
        Duration::from_secs_f64(self.jitter * self.config.jitter_gain).clamp(lo, hi)
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

    fn min_cwnd(&self) -> f64 {
        (self.config.min_cwnd_packets * self.config.mss) as f64
    }

    fn update_base(&mut self, now: Instant, delay: Duration) {
        let rolled = self
            .last_rollover
            .is_none_or(|at| now.saturating_duration_since(at) >= BASE_BUCKET);
        if rolled {
            self.last_rollover = Some(now);
            if self.base_delays[self.base_tail] != Duration::MAX {
                self.base_tail = (self.base_tail + 1) % BASE_HISTORY;
            }
            self.base_delays[self.base_tail] = delay;
        } else {
            let tail = &mut self.base_delays[self.base_tail];
            *tail = (*tail).min(delay);
        }
    }

    /// The mean absolute distance of the recent samples from their least-squares line
    /// over time, in seconds (WebRTC's trendline filter, used for its noise): a queue we
    /// build grows smoothly and stays on the line, jitter does not.
    fn trend_residual(&self, now: Instant) -> Option<f64> {
        let mut points = [(0.0f64, 0.0f64); FILTER];
        let mut n = 0;
        for (delay, at) in self.recent.iter().zip(&self.recent_at) {
            if let Some(at) = at {
                points[n] = (
                    -now.saturating_duration_since(*at).as_secs_f64(),
                    delay.as_secs_f64(),
                );
                n += 1;
            }
        }
        if n < FILTER {
            return None;
        }
        let points = &points[..n];
        let count = n as f64;
        let mean_t = points.iter().map(|p| p.0).sum::<f64>() / count;
        let mean_d = points.iter().map(|p| p.1).sum::<f64>() / count;
        let (mut cov, mut var) = (0.0, 0.0);
        for (t, d) in points {
            cov += (t - mean_t) * (d - mean_d);
            var += (t - mean_t) * (t - mean_t);
        }
        let slope = if var > 0.0 { cov / var } else { 0.0 };
        let residual = points
            .iter()
            .map(|(t, d)| (d - mean_d - slope * (t - mean_t)).abs())
            .sum::<f64>()
            / count;
        Some(residual)
    }

    /// The path got longer: forget the old minimum, start again from `delay`.
    fn rebase(&mut self, delay: Duration) {
        self.base_delays = [Duration::MAX; BASE_HISTORY];
        self.base_tail = 0;
        self.base_delays[0] = delay;
        self.pinned_since = None;
    }

    /// Tracks how long the window has been near its floor with the delay above target;
    /// re-measures the base once that lasted `rebase_after` round trips.
    fn check_drift(&mut self, now: Instant, queuing: Duration, target: Duration) {
        let near_floor = self.cwnd <= 2.0 * self.min_cwnd();
        if !(near_floor && queuing > target) {
            self.pinned_since = None;
            return;
        }
        let since = *self.pinned_since.get_or_insert(now);
        let srtt = self.smoothed.unwrap_or(self.config.cto);
        if now.saturating_duration_since(since) >= srtt * self.config.rebase_after
            && let Some(current) = min_of(&self.recent)
        {
            self.rebase(current);
        }
    }
}

impl CongestionStrategy for AdaptiveLedbat {
    fn on_sent(&mut self, now: Instant, bytes: usize) {
        if self.flight == 0 {
            self.last_progress = Some(now);
        }
        self.flight = self.flight.saturating_add(bytes);
        self.flight_after_send = self.flight;
    }

    fn on_ack(&mut self, now: Instant, bytes: usize, one_way_delay: Duration) {
        self.last_progress = Some(now);
        self.smoothed = Some(match self.smoothed {
            None => one_way_delay,
            Some(srtt) => (srtt * 7 + one_way_delay) / 8,
        });
        self.update_base(now, one_way_delay);
        self.recent[self.recent_next] = one_way_delay;
        self.recent_at[self.recent_next] = Some(now);
        self.recent_next = (self.recent_next + 1) % FILTER;
        if let Some(residual) = self.trend_residual(now) {
            self.jitter += (residual - self.jitter) / 16.0;
        }
        #[cfg(debug_assertions)]
        if std::env::var("BX_TRACE").is_ok() {
            static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            let t0 = *T0.get_or_init(|| now);
            eprintln!(
                "trace {:.3} cwnd {:.0} flight {} base {:?} q {:?} target {:?} jitter {:?} srtt {:?}",
                now.saturating_duration_since(t0).as_secs_f64(),
                self.cwnd / self.config.mss as f64,
                self.flight / self.config.mss,
                self.base_delay(),
                self.queuing_delay(),
                self.target(),
                self.jitter(),
                self.smoothed
            );
        }

        self.update_window(now, bytes);
    }

    fn on_settled(&mut self, now: Instant, bytes: usize) {
        if self.smoothed.is_none() {
            self.forget(bytes);
            return;
        }
        self.last_progress = Some(now);
        self.update_window(now, bytes);
    }

    fn on_loss(&mut self, now: Instant, bytes: usize) {
        let _ = now;
        self.flight = self.flight.saturating_sub(bytes);
        self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd());
    }

    fn forget(&mut self, bytes: usize) {
        self.flight = self.flight.saturating_sub(bytes);
    }

    fn can_send_bulk(&self, _now: Instant, bytes: usize) -> bool {
        self.flight == 0 || (self.flight.saturating_add(bytes)) as f64 <= self.cwnd
    }

    fn bytes_in_flight(&self) -> usize {
        self.flight
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.flight == 0 {
            return None;
        }
        self.last_progress.map(|at| at + self.cto())
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| deadline <= now) {
            self.flight = 0;
            self.cwnd = self.min_cwnd();
            self.last_progress = Some(now);
        }
    }
}

impl AdaptiveLedbat {
    /// The window update for `bytes` settled, against the current delay estimate.
    fn update_window(&mut self, now: Instant, bytes: usize) {
        let queuing = self.queuing_delay().unwrap_or_default();
        let target = self.target();
        self.check_drift(now, queuing, target);
        let queuing = self.queuing_delay().unwrap_or_default().as_secs_f64();
        let t = target.as_secs_f64().max(f64::MIN_POSITIVE);
        let srtt = self
            .smoothed
            .unwrap_or(self.config.cto)
            .as_secs_f64()
            .max(1e-4);
        let acked = bytes as f64;
        if queuing <= t {
            let below = (t - queuing) / t;
            let mss = self.config.mss as f64;
            // Fill the queue up to the target within a round trip, and probe for more
            // capacity multiplicatively once the queue has stayed empty for a round trip
            // (the link got faster, or we backed off too far).
            let empty = queuing < t / 4.0;
            let since = *self.empty_since.get_or_insert(now);
            let empty_rounds = now.saturating_duration_since(since).as_secs_f64() / srtt;
            if !empty {
                self.empty_since = None;
            }
            // Convex: the longer the queue stays empty, the faster the probe, so a window
            // that has just backed off does not overshoot again straight away.
            let ramp = if empty {
                (self.config.ramp * (empty_rounds - 1.0) / 4.0).clamp(0.0, self.config.ramp)
            } else {
                0.0
            };
            self.cwnd += acked * (below * mss / self.cwnd + (t - queuing) / srtt + ramp);
        } else {
            self.empty_since = None;
            // Remove the excess queue within about a round trip, at most half the window.
            self.cwnd -= acked * ((queuing - t) / srtt).min(0.5);
        }
        let max_allowed = (self.flight.max(self.flight_after_send) + self.config.mss) as f64;
        let max_cwnd = (self.config.max_cwnd_packets * self.config.mss) as f64;
        self.cwnd = self
            .cwnd
            .min(max_allowed)
            .min(max_cwnd)
            .max(self.min_cwnd());
        self.flight = self.flight.saturating_sub(bytes);
    }
}

fn min_of(delays: &[Duration]) -> Option<Duration> {
    delays.iter().copied().min().filter(|&d| d != Duration::MAX)
}

#[cfg(test)]
mod tests;
