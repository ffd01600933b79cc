//! A transfer-rate meter over a sliding window of samples taken at injected times.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept; with one sample per `SPACING` the window is about two seconds.
const SAMPLES: usize = 20;
const SPACING: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Records that `total` bytes had moved by `now`.
    pub(crate) fn record(&mut self, now: Instant, total: u64) {
        match self.samples.back_mut() {
            Some((t, b)) if now.saturating_duration_since(*t) < SPACING => *b = total,
            _ => {
                if self.samples.len() == SAMPLES {
                    self.samples.pop_front();
                }
                self.samples.push_back((now, total));
            }
        }
    }

    /// Bytes per second over the window (0 before two samples).
    pub(crate) fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                (b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
    fn rate_over_the_window() {
        let t = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.rate(), 0.0);
        for i in 0..=50u64 {
            m.record(t + Duration::from_millis(100 * i), i * 1_000_000);
        }
        assert!((m.rate() - 10_000_000.0).abs() < 1.0, "{}", m.rate());
    }
}
