//! One stream of round-trip samples, filtered: the base (smallest over the RFC's ten
//! one-minute buckets, unless re-measured), the current delay (a short minimum), and the
//! noise around the trend.
//!
//! Invariant: `queuing` is never negative and is `None` until a sample arrived; a
//! re-measure replaces the whole base history, so a longer path is never compared against
//! the shorter one it replaced.

use std::time::{Duration, Instant};

use super::{FILTER, MIN_FILTER};

const BASE_HISTORY: usize = 10;
const BASE_BUCKET: Duration = Duration::from_secs(60);

/// RFC 6817's base history: the smallest sample of each of the last [`BASE_HISTORY`]
/// one-minute buckets (shared by the minimum filter and the envelope).
#[derive(Clone, Debug)]
pub(in crate::path) struct BaseHistory {
    // Empty slots hold Duration::MAX, the RFC's +infinity: they never win a MIN.
    buckets: [Duration; BASE_HISTORY],
    tail: usize,
    last_rollover: Option<Instant>,
}

impl Default for BaseHistory {
    fn default() -> Self {
        Self {
            buckets: [Duration::MAX; BASE_HISTORY],
            tail: 0,
            last_rollover: None,
        }
    }
}

impl BaseHistory {
    /// Takes one sample measured at `now`.
    pub(in crate::path) fn on_sample(&mut self, now: Instant, delay: Duration) {
        let rolled = self
            .last_rollover
            .is_none_or(|at| now.saturating_duration_since(at) >= BASE_BUCKET);
        if rolled {
            // A new minute: the oldest bucket is forgotten (RFC 6817's BASE_HISTORY).
            self.last_rollover = Some(now);
            if self.buckets[self.tail] != Duration::MAX {
                self.tail = (self.tail + 1) % BASE_HISTORY;
            }
            self.buckets[self.tail] = delay;
        } else {
            let tail = &mut self.buckets[self.tail];
            *tail = (*tail).min(delay);
        }
    }

    /// The smallest sample of the history.
    pub(in crate::path) fn min(&self) -> Option<Duration> {
        min_of(&self.buckets)
    }

    /// Forgets the history; `base` is its only entry (a re-measured path).
    pub(in crate::path) fn reset_to(&mut self, base: Duration) {
        self.buckets = [Duration::MAX; BASE_HISTORY];
        self.tail = 0;
        self.buckets[0] = base;
    }
}

/// The filtered history of one stream of round-trip samples.
#[derive(Clone, Debug)]
pub(in crate::path) struct DelayFilter {
    recent: [Duration; FILTER],
    /// When each of `recent` arrived.
    recent_at: [Option<Instant>; FILTER],
    next: usize,
    base: BaseHistory,
    /// Mean distance of a sample from the recent trend line, in seconds (EWMA, 1/16).
    jitter: f64,
}

impl Default for DelayFilter {
    fn default() -> Self {
        Self {
            recent: [Duration::MAX; FILTER],
            recent_at: [None; FILTER],
            next: 0,
            base: BaseHistory::default(),
            jitter: 0.0,
        }
    }
}

impl DelayFilter {
    /// Takes one round-trip sample measured at `now`.
    pub(in crate::path) fn on_sample(&mut self, now: Instant, delay: Duration) {
        self.base.on_sample(now, delay);
        self.recent[self.next] = delay;
        self.recent_at[self.next] = Some(now);
        self.next = (self.next + 1) % FILTER;
        if let Some(residual) = self.trend_residual(now) {
            self.jitter += (residual - self.jitter) / 16.0;
        }
    }

    /// When the newest sample arrived.
    pub(in crate::path) fn newest_at(&self) -> Option<Instant> {
        self.recent_at[(self.next + FILTER - 1) % FILTER]
    }

    /// The smallest delay of the base history.
    pub(in crate::path) fn base(&self) -> Option<Duration> {
        self.base.min()
    }

    /// The minimum of the newest [`MIN_FILTER`] samples and of any other of the last
    /// [`FILTER`] no older than `horizon` before the newest. A filter counted in samples
    /// alone lags by many round trips on a slow, short path (and lets the window overshoot);
    /// one counted in time alone is a single noisy sample on a sparse stream.
    pub(in crate::path) fn current(&self, horizon: Duration) -> Option<Duration> {
        let newest = self.newest_at()?;
        (1..=FILTER)
            .map(|back| (self.next + FILTER - back) % FILTER)
            .enumerate()
            .filter(|&(n, i)| {
                n < MIN_FILTER
                    || self.recent_at[i]
                        .is_some_and(|at| newest.saturating_duration_since(at) <= horizon)
            })
            .map(|(_, i)| self.recent[i])
            .min()
            .filter(|&d| d != Duration::MAX)
    }

    /// Current delay minus base delay.
    pub(in crate::path) fn queuing(&self, horizon: Duration) -> Option<Duration> {
        Some(self.current(horizon)?.saturating_sub(self.base()?))
    }

    /// The noise around the trend, in seconds.
    pub(in crate::path) fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The path got longer: forgets the old minimum and starts again from the current
    /// delay.
    pub(in crate::path) fn rebase(&mut self, horizon: Duration) {
        if let Some(current) = self.current(horizon) {
            self.base.reset_to(current);
        }
    }

    /// The mean absolute distance of the last [`FILTER`] samples from their least-squares
    /// line over time, in seconds (the noise WebRTC's trendline filter sees through): a
    /// queue we build grows or drains smoothly and stays near the line, jitter does not.
    fn trend_residual(&self, now: Instant) -> Option<f64> {
        let mut points = [(0.0f64, 0.0f64); FILTER];
        for (point, (delay, at)) in points
            .iter_mut()
            .zip(self.recent.iter().zip(&self.recent_at))
        {
            let at = (*at)?;
            *point = (
                -now.saturating_duration_since(at).as_secs_f64(),
                delay.as_secs_f64(),
            );
        }
        let count = FILTER as f64;
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
}

fn min_of(delays: &[Duration]) -> Option<Duration> {
    delays.iter().copied().min().filter(|&d| d != Duration::MAX)
}
