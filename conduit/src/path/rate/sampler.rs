//! Delivery-rate samples from cumulative acknowledgements, and a windowed minimum of the
//! round trip.
//!
//! Invariant: a rate sample always spans at least the interval it was asked for (or
//! `None` is returned), and compares bytes with the time they took *on the same clock*:
//! the receiver's (from the ack's receive stamps) when the peer stamps its acks, so the
//! reverse path's jitter and ack bunching stay out of the estimate, else the sender's ack
//! arrivals. The two are never mixed in one sample.

use std::time::{Duration, Instant};

/// Snapshots kept: at [`MIN_GAP_DIVISOR`] per interval, two intervals of history.
const SNAPSHOTS: usize = 32;
/// A snapshot is taken at most every interval / this.
const MIN_GAP_DIVISOR: f64 = 12.0;

/// The acknowledged state at one ack.
#[derive(Clone, Copy, Debug)]
struct Snap {
    /// When the acknowledged packet left, seconds since the sampler's origin.
    sent: f64,
    /// When it arrived (receiver clock) or its ack arrived (sender clock), seconds.
    recv: f64,
    /// Bulk bytes settled up to and including this ack.
    delivered: u64,
}

/// One delivery-rate sample over (at least) a requested interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RateSample {
    /// Bytes per second the path delivered.
    pub(crate) delivered: f64,
    /// Bytes per second the same bytes were sent at.
    pub(crate) sent: f64,
}

/// Cumulative delivery snapshots over the last two sample intervals.
#[derive(Clone, Debug)]
pub(crate) struct RateSampler {
    snaps: [Option<Snap>; SNAPSHOTS],
    next: usize,
    origin: Option<Instant>,
    delivered: u64,
    /// The newest ack's state (the ring holds thinned older ones).
    head: Option<Snap>,
    /// Whether `recv` times are the receiver's clock; `None` before the first ack.
    stamped: Option<bool>,
}

impl Default for RateSampler {
    fn default() -> Self {
        Self {
            snaps: [None; SNAPSHOTS],
            next: 0,
            origin: None,
            delivered: 0,
            head: None,
            stamped: None,
        }
    }
}

impl RateSampler {
    /// Takes one ack received at `now`: it settled `bytes`, its sampled packet took
    /// `round_trip`, and arrived `one_way` after it left (plus the clocks' constant
    /// offset) when the peer stamps its acks. `interval` is the span samples are asked
    /// for (snapshots are thinned to a twelfth of it).
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        bytes: usize,
        round_trip: Duration,
        one_way: Option<Duration>,
        interval: Duration,
    ) {
        let origin = *self.origin.get_or_insert(now);
        let at = now.saturating_duration_since(origin).as_secs_f64();
        let sent = at - round_trip.as_secs_f64();
        let stamped = one_way.is_some();
        if self.stamped.is_some_and(|was| was != stamped) {
            // Receiver and sender clocks never meet in one sample.
            self.snaps = [None; SNAPSHOTS];
            self.head = None;
        }
        self.stamped = Some(stamped);
        let recv = one_way.map_or(at, |ow| sent + ow.as_secs_f64());
        self.delivered = self.delivered.saturating_add(bytes as u64);
        let head = Snap {
            sent,
            recv,
            delivered: self.delivered,
        };
        self.head = Some(head);
        let min_gap = interval.as_secs_f64() / MIN_GAP_DIVISOR;
        let newest = self.snaps[(self.next + SNAPSHOTS - 1) % SNAPSHOTS];
        if newest.is_none_or(|last| recv - last.recv >= min_gap) {
            // Thinned so the ring covers two intervals however fast acks come.
            self.snaps[self.next] = Some(head);
            self.next = (self.next + 1) % SNAPSHOTS;
        }
    }

    /// The delivery rate over the newest stretch of at least `interval`, and the rate the
    /// same bytes were sent at; `None` until that much history exists.
    pub(crate) fn sample(&self, interval: Duration) -> Option<RateSample> {
        let newest = self.head?;
        let span = interval.as_secs_f64();
        let start = (1..=SNAPSHOTS)
            .map(|back| self.snaps[(self.next + SNAPSHOTS - back) % SNAPSHOTS])
            .take_while(Option::is_some)
            .flatten()
            .find(|s| newest.recv - s.recv >= span)?;
        let bytes = newest.delivered.saturating_sub(start.delivered) as f64;
        let recv = newest.recv - start.recv;
        let sent = (newest.sent - start.sent).max(f64::MIN_POSITIVE);
        (recv > 0.0).then(|| RateSample {
            delivered: bytes / recv,
            sent: bytes / sent,
        })
    }
}

/// The smallest round trip of the last `ROUNDS` rounds, one bucket per round: a path whose
/// delay grows (a loaded cell) is re-measured within that many rounds, and a queue we
/// drain is never older than that.
#[derive(Clone, Debug)]
pub(crate) struct MinRtt<const ROUNDS: usize> {
    buckets: [Option<Duration>; ROUNDS],
    current: usize,
}

impl<const ROUNDS: usize> Default for MinRtt<ROUNDS> {
    fn default() -> Self {
        Self {
            buckets: [None; ROUNDS],
            current: 0,
        }
    }
}

impl<const ROUNDS: usize> MinRtt<ROUNDS> {
    /// Takes a round-trip sample into the current round's bucket.
    pub(crate) fn on_sample(&mut self, rtt: Duration) {
        let b = &mut self.buckets[self.current];
        *b = Some(b.map_or(rtt, |m| m.min(rtt)));
    }

    /// A new round starts: the oldest round is forgotten.
    pub(crate) fn next_round(&mut self) {
        self.current = (self.current + 1) % ROUNDS;
        self.buckets[self.current] = None;
    }

    /// The minimum over the window, `None` before any sample.
    pub(crate) fn get(&self) -> Option<Duration> {
        self.buckets.iter().flatten().min().copied()
    }
}
