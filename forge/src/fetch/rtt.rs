//! Round-trip estimation and retransmission timeouts (RFC 6298), per server.

use std::time::Duration;

/// Smoothed RTT and its variation, from request-to-first-fragment samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    initial: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: initial / 2,
            initial,
        }
    }

    /// Folds in one sample (RFC 6298 section 2, alpha 1/8, beta 1/4).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed RTT (the initial guess before any sample).
    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.initial)
    }

    /// The timeout after `attempts` consecutive timeouts: `srtt + 4 rttvar`, doubled per
    /// attempt, within `min..=max`.
    pub(crate) fn rto(&self, attempts: u32, min: Duration, max: Duration) -> Duration {
        let base = (self.srtt() + self.rttvar * 4).max(min);
        base.saturating_mul(1 << attempts.min(16)).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_samples_backs_off_and_caps() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(ms(100));
        assert_eq!(r.rto(0, ms(10), ms(5000)), ms(300));
        r.sample(ms(20));
        assert_eq!(r.srtt(), ms(20));
        assert_eq!(r.rto(0, ms(10), ms(5000)), ms(60));
        for _ in 0..50 {
            r.sample(ms(20));
        }
        assert!(r.rto(0, ms(10), ms(5000)) < ms(25));
        assert_eq!(r.rto(0, ms(30), ms(5000)), ms(30), "floor");
        assert_eq!(r.rto(3, ms(30), ms(5000)), ms(240), "backoff doubles");
        assert_eq!(r.rto(40, ms(30), ms(1000)), ms(1000), "cap");
    }
}
