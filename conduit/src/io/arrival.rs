//! Kernel receive stamps on the node's monotonic clock.
//!
//! The kernel stamps each datagram when it arrives (`SO_TIMESTAMPNS`, Unix time). The
//! node's clock is monotonic, so the shell reads both clocks once per receive call and
//! places each stamp by its age: arrived = monotonic now − (Unix now − stamp).
//!
//! Why: a peer's bulk controller reads queue from the one-way delays this node's acks
//! report. Stamped with the time the shell got round to a batch, every sample also holds
//! the time the datagram waited in the socket behind the batch before it and for the
//! node to be scheduled: a millisecond of noise on a path whose queue target is two.

use std::time::{Duration, Instant};

/// Oldest stamp believed. The socket holds a few milliseconds of traffic; an older
/// stamp means the wall clock stepped (NTP) between the kernel's stamp and our read.
const MAX_AGE: Duration = Duration::from_secs(1);

/// The two clocks read together, once per receive call.
#[derive(Clone, Copy, Debug)]
pub(super) struct ArrivalClock {
    now: Instant,
    unix_now: Duration,
}

impl ArrivalClock {
    /// `now` and `unix_nanos` read back to back.
    pub(super) fn new(now: Instant, unix_nanos: u64) -> Self {
        Self {
            now,
            unix_now: Duration::from_nanos(unix_nanos),
        }
    }

    /// The monotonic time read: the node's `now` for this call's datagrams (later
    /// stamps than a `now` read before the call would be cut to it).
    pub(super) fn now(&self) -> Instant {
        self.now
    }

    /// When a datagram stamped `stamp` arrived, on the monotonic clock; `now` when there
    /// is no stamp, or it lies in the future or over [`MAX_AGE`] back (a clock step).
    pub(super) fn arrived(&self, stamp: Option<Duration>) -> Instant {
        stamp
            .and_then(|stamp| self.unix_now.checked_sub(stamp))
            .filter(|age| *age <= MAX_AGE)
            .and_then(|age| self.now.checked_sub(age))
            .unwrap_or(self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    const UNIX: u64 = 1_800_000_000_000_000_000;

    #[test]
    fn a_stamp_lands_its_age_before_now() {
        let now = origin();
        let clock = ArrivalClock::new(now, UNIX);
        let stamp = Duration::from_nanos(UNIX) - Duration::from_micros(1_250);
        assert_eq!(
            clock.arrived(Some(stamp)),
            now - Duration::from_micros(1_250)
        );
    }

    #[test]
    fn no_stamp_a_future_stamp_or_a_stale_one_is_now() {
        let now = origin();
        let clock = ArrivalClock::new(now, UNIX);
        let unix = Duration::from_nanos(UNIX);
        assert_eq!(clock.arrived(None), now);
        assert_eq!(clock.arrived(Some(unix + Duration::from_millis(3))), now);
        assert_eq!(clock.arrived(Some(unix - Duration::from_secs(2))), now);
    }

    proptest! {
        /// Whatever the stamp, the arrival is never after now nor more than a second
        /// before it, and later stamps never arrive earlier.
        #[test]
        fn arrivals_stay_within_a_second_and_keep_order(
            a in 0u64..3_000_000_000,
            b in 0u64..3_000_000_000,
        ) {
            let now = origin();
            let clock = ArrivalClock::new(now, UNIX);
            let stamp = |back: u64| Duration::from_nanos(UNIX - back);
            let (at_a, at_b) = (clock.arrived(Some(stamp(a))), clock.arrived(Some(stamp(b))));
            for at in [at_a, at_b] {
                prop_assert!(at <= now && now - at <= MAX_AGE);
            }
            if a <= b && b <= 1_000_000_000 {
                prop_assert!(at_a >= at_b, "a later stamp arrives no earlier");
            }
        }
    }
}
