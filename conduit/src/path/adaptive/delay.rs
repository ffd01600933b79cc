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
        self.selected(horizon).min()
    }

    /// The samples [`current`](Self::current) takes the minimum of.
    fn selected(&self, horizon: Duration) -> impl Iterator<Item = Duration> + '_ {
        let newest = self.newest_at();
        (1..=FILTER)
            .map(|back| (self.next + FILTER - back) % FILTER)
            .enumerate()
            .filter(move |&(n, i)| {
                self.recent_at[i].is_some_and(|at| {
                    n < MIN_FILTER
                        || newest
                            .is_some_and(|newest| newest.saturating_duration_since(at) <= horizon)
                })
            })
            .map(|(_, i)| self.recent[i])
    }

    /// Current delay minus base delay.
    pub(in crate::path) fn queuing(&self, horizon: Duration) -> Option<Duration> {
        Some(self.current(horizon)?.saturating_sub(self.base()?))
    }

    /// [`queuing`](Self::queuing) as a full filter would read it: the minimum of fewer
    /// samples lies higher in the noise, so a window that sends fewer packets per round
    /// trip read more queue than a wider one behind the same bottleneck, shrank, sent
    /// fewer still, and starved beside it. The expected gap between the minimum of `n`
    /// samples and of [`FILTER`], for noise uniform in ± A (A twice the measured mean
    /// distance from the trend): 2A (1/(n+1) - 1/(FILTER+1)), taken off.
    pub(in crate::path) fn queuing_unbiased(&self, horizon: Duration) -> Option<Duration> {
        let (n, current) = self
            .selected(horizon)
            .fold((0usize, Duration::MAX), |(n, min), d| (n + 1, min.min(d)));
        let raw = (n > 0).then_some(current)?.saturating_sub(self.base()?);
        let amplitude = 2.0 * self.jitter;
        let gap = 2.0 * amplitude * (1.0 / (n as f64 + 1.0) - 1.0 / (FILTER as f64 + 1.0));
        Some(raw.saturating_sub(Duration::from_secs_f64(gap.max(0.0))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    /// Uniform noise in ±1 ms from a fixed LCG, in seconds.
    fn noise(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
        1e-3 * (2.0 * unit - 1.0)
    }

    /// Mean queuing read by a filter fed samples `spacing` apart, plain and unbiased, over
    /// many readings of the same noise on a path with a standing queue.
    fn mean_readings(spacing: Duration, horizon: Duration) -> (f64, f64) {
        let mut f = DelayFilter::default();
        let mut state = 7;
        let mut now = origin();
        let (mut plain, mut unbiased, mut n) = (0.0, 0.0, 0.0);
        for i in 0..4000 {
            now += spacing;
            // A standing 2 ms queue once the base is measured, so no reading is
            // clamped at zero.
            let queue = if i >= 400 { 0.002 } else { 0.0 };
            let delay = Duration::from_secs_f64(0.020 + queue + noise(&mut state));
            f.on_sample(now, delay);
            if i >= 400 {
                plain += f.queuing(horizon).unwrap().as_secs_f64();
                unbiased += f.queuing_unbiased(horizon).unwrap().as_secs_f64();
                n += 1.0;
            }
        }
        (plain / n, unbiased / n)
    }

    /// Behind one bottleneck, a window sampling the path every 5 ms and one sampling it
    /// every 1 ms see the same noise; the plain minimum of the sparse one's 4 samples
    /// reads about 0.28 ms more queue than the dense one's 16 (2 A (1/5 - 1/17) for
    /// A = 1 ms), the unbiased reading about the same.
    #[test]
    fn the_unbiased_minimum_of_a_few_samples_reads_as_a_full_filter_does() {
        let horizon = Duration::from_millis(15);
        let (dense, dense_unbiased) = mean_readings(Duration::from_millis(1), horizon);
        let (sparse, sparse_unbiased) = mean_readings(Duration::from_millis(5), horizon);
        assert!(
            sparse - dense > 0.2e-3,
            "the plain minimum favours the dense: {sparse} vs {dense}"
        );
        assert!(
            (sparse_unbiased - dense_unbiased).abs() < 0.05e-3,
            "unbiased: {sparse_unbiased} vs {dense_unbiased}"
        );
        assert!(
            (dense_unbiased - dense).abs() < 0.02e-3,
            "a full filter is left alone"
        );
    }
}
