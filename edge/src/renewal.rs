//! When the daemon renews its hub certificate, sans IO: the hub connector reads the clock
//! and calls the hub; this decides from the certificate's validity, the time passed in and
//! what happened before.
//!
//! Renewal is due once less than a third of the certificate's validity is left, or once it
//! is inside the precheck's 7-day margin ([`ROTATION_MARGIN`]), whichever comes first, so
//! precheck's exit 3 stays the rare case of a node that could not reach its hub for weeks.
//! For certificates shorter than 14 days the 7-day margin would make every fresh
//! certificate due at once, so there it is capped at half the validity. After a failure the
//! next attempt waits a jittered, growing delay ([`Backoff`]); after a success at least
//! [`MIN_INTERVAL_SECS`] pass before the next, whatever the hub's lifetime.

use std::time::Duration;

use bauxite_dispatch_api::pki::LeafFacts;

use crate::hub::Backoff;
use crate::precheck::cert::ROTATION_MARGIN;

/// First retry delay after a failed renewal.
pub const RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest retry delay.
pub const RETRY_CAP: Duration = Duration::from_secs(3600);
/// Least time between two successful renewals.
pub const MIN_INTERVAL_SECS: u64 = 60;

/// The instant (Unix seconds) from which a certificate valid over
/// `[not_before, not_after]` is due for renewal.
pub fn renew_from(not_before: u64, not_after: u64) -> u64 {
    let span = not_after.saturating_sub(not_before);
    let margin = u64::try_from(ROTATION_MARGIN.whole_seconds()).unwrap_or(0);
    let window = (span / 3).max(margin.min(span / 2));
    not_after.saturating_sub(window)
}

/// The renewal schedule across connections.
#[derive(Clone, Debug)]
pub struct Renewal {
    backoff: Backoff,
    retry_at: u64,
    renewed_at: Option<u64>,
}

impl Renewal {
    /// A schedule whose retry jitter comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP, seed),
            retry_at: 0,
            renewed_at: None,
        }
    }

    /// When (Unix seconds) the certificate `facts` should next be renewed.
    pub fn due_at(&self, facts: &LeafFacts) -> u64 {
        let floor = self
            .renewed_at
            .map_or(0, |at| at.saturating_add(MIN_INTERVAL_SECS));
        renew_from(facts.not_before, facts.not_after)
            .max(self.retry_at)
            .max(floor)
    }

    /// A renewal succeeded at `now`.
    pub fn succeeded(&mut self, now: u64) {
        self.backoff.reset();
        self.retry_at = 0;
        self.renewed_at = Some(now);
    }

    /// A renewal failed at `now`; returns the delay before the next attempt.
    pub fn failed(&mut self, now: u64) -> Duration {
        let delay = self.backoff.next_delay();
        self.retry_at = now.saturating_add(delay.as_secs().max(1));
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn facts(not_before: u64, not_after: u64) -> LeafFacts {
        LeafFacts {
            not_before,
            not_after,
            public_key: Vec::new(),
        }
    }

    #[test]
    fn a_third_of_long_validity_and_seven_days_of_short() {
        // Ten years: a third left (well before the 7-day margin).
        let ten_years = 3650 * DAY;
        assert_eq!(renew_from(0, ten_years), ten_years - ten_years / 3);
        // 15 days: the 7-day margin comes first.
        assert_eq!(renew_from(0, 15 * DAY), 8 * DAY);
        // 90 days: a third (30 days) comes first.
        assert_eq!(renew_from(0, 90 * DAY), 60 * DAY);
        // 2 hours: capped at half, so a fresh certificate is not due at once.
        assert_eq!(renew_from(0, 7200), 3600);
        // Nonsense validity does not underflow.
        assert_eq!(renew_from(10, 5), 5);
    }

    #[test]
    fn failures_back_off_with_jitter_and_success_resets() {
        let cert = facts(0, 90 * DAY);
        let mut r = Renewal::new(1);
        let now = 61 * DAY;
        assert_eq!(r.due_at(&cert), 60 * DAY);
        let first = r.failed(now);
        assert!(first >= RETRY_BASE / 2 && first <= RETRY_BASE, "{first:?}");
        assert_eq!(r.due_at(&cert), now + first.as_secs().max(1));
        let second = r.failed(now);
        assert!(
            second >= RETRY_BASE && second <= RETRY_BASE * 2,
            "{second:?}"
        );
        for _ in 0..30 {
            assert!(r.failed(now) <= RETRY_CAP);
        }
        r.succeeded(now);
        assert_eq!(r.due_at(&cert), now + MIN_INTERVAL_SECS);
        // The renewed certificate's own schedule rules once it is later.
        let renewed = facts(now, now + 90 * DAY);
        assert_eq!(r.due_at(&renewed), now + 60 * DAY);
        // Two schedules with other seeds retry at other times.
        let (mut a, mut b) = (Renewal::new(1), Renewal::new(2));
        let da: Vec<_> = (0..6).map(|_| a.failed(now)).collect();
        let db: Vec<_> = (0..6).map(|_| b.failed(now)).collect();
        assert_ne!(da, db);
    }
}
