//! Pacing for the bulk lane, so bulk never fills the queues below the scheduler.
//!
//! Invariant: a [`CongestionStrategy`] can only ever hold back [`Lane::Bulk`];
//! [`CongestionStrategy::can_send`] answers `true` for critical and telemetry whatever the
//! strategy's state, because priority inside the process is worthless once the kernel's
//! socket queue is full of bulk.
//!
//! Driving rules (all bulk-only, all sans-IO):
//! 1. before sending a bulk packet ask `can_send` (or pass `can_send_bulk` to
//!    [`DataPlaneScheduler::dequeue_paced`](crate::scheduler::DataPlaneScheduler::dequeue_paced));
//! 2. after sending it call `on_sent`;
//! 3. when the receiver acknowledges bulk bytes call `on_feedback` with the ack's
//!    [`Feedback`] (or `on_ack` with one delay sample), or `on_loss` when they are known
//!    lost;
//! 4. arm a timer for `poll_timeout` and call `handle_timeout` when it fires.

use std::time::{Duration, Instant};

use super::feedback::AckSample;
use crate::Lane;

/// What one acknowledgement tells the bulk controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feedback {
    /// Bulk bytes it settled.
    pub bytes: usize,
    /// Round trip of the sampled packet.
    pub round_trip: Duration,
    /// One-way delay of the same packet plus the two clocks' constant offset (only its
    /// changes mean anything); `None` from a peer that sends no receive timestamps.
    pub one_way: Option<Duration>,
    /// Whether the sampled packet was a bulk packet (comparable with bulk's other
    /// samples: same time on the wire).
    pub bulk: bool,
}

impl Feedback {
    /// The ack's best delay sample: the batch's largest packet when that was bulk (the
    /// newest is mostly a control packet under a 1 kHz loop), else the newest packet.
    pub fn from_ack(sample: &AckSample) -> Self {
        match sample.largest.filter(|l| l.from_bulk) {
            Some(largest) => Self {
                bytes: sample.bulk_bytes,
                round_trip: largest.round_trip,
                one_way: Some(largest.one_way),
                bulk: true,
            },
            None => Self {
                bytes: sample.bulk_bytes,
                round_trip: sample.round_trip,
                one_way: sample.one_way,
                bulk: sample.from_bulk,
            },
        }
    }
}

/// A bulk-lane pacing policy, driven with bulk bytes sent, acknowledged and lost.
pub trait CongestionStrategy {
    /// `bytes` of bulk traffic were put on the wire.
    fn on_sent(&mut self, now: Instant, bytes: usize);

    /// `bytes` of bulk traffic were acknowledged; `one_way_delay` is the delay sample.
    fn on_ack(&mut self, now: Instant, bytes: usize, one_way_delay: Duration);

    /// Names the peer this controller paces, for its debug-level trace lines (several
    /// peers' lines are otherwise told apart by their round trips alone). The default
    /// keeps no name.
    fn name_for_trace(&mut self, peer: &str) {
        let _ = peer;
    }

    /// `bytes` of bulk traffic were acknowledged by an ack that named a small packet
    /// (critical, telemetry): its `round_trip` is not comparable with bulk's (less time on
    /// the wire) but shows the same queue. The default only settles the bytes, as
    /// [`forget`](Self::forget).
    fn on_settled(&mut self, now: Instant, bytes: usize, round_trip: Duration) {
        let _ = (now, round_trip);
        self.forget(bytes);
    }

    /// The receiver saw the path's delivery rate fall to `delivered` bulk bytes per second
    /// (its [`RateDropFrame`](super::RateDropFrame), checked against the send log: the
    /// same packets took longer to arrive than to send). The default ignores it.
    fn on_rate_drop(&mut self, now: Instant, delivered: f64) {
        let _ = (now, delivered);
    }

    /// An acknowledgement arrived. The default hands its round trip to
    /// [`on_ack`](Self::on_ack) (bulk sample) or [`on_settled`](Self::on_settled).
    fn on_feedback(&mut self, now: Instant, feedback: Feedback) {
        if feedback.bulk {
            self.on_ack(now, feedback.bytes, feedback.round_trip);
        } else {
            self.on_settled(now, feedback.bytes, feedback.round_trip);
        }
    }

    /// `bytes` of bulk traffic are known lost.
    fn on_loss(&mut self, now: Instant, bytes: usize);

    /// `bytes` of bulk traffic left the flight without a verdict (their peer was removed):
    /// neither a delay sample nor a loss signal.
    fn forget(&mut self, bytes: usize);

    /// Whether a bulk packet of `bytes` may leave now.
    fn can_send_bulk(&self, now: Instant, bytes: usize) -> bool;

    /// Bulk bytes sent and neither acknowledged nor lost.
    fn bytes_in_flight(&self) -> usize;

    /// Whether a packet of `lane` may leave now; only bulk is ever held back.
    ///
    /// Implementations should not override this: it is what keeps pacing off the
    /// critical and telemetry lanes.
    fn can_send(&self, now: Instant, lane: Lane, bytes: usize) -> bool {
        lane != Lane::Bulk || self.can_send_bulk(now, bytes)
    }

    /// When `handle_timeout` next needs to run, if ever.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs timer-driven logic (for example: acknowledgements stopped coming).
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
}

/// No pacing: bulk always may send. For tests and for links known to be uncongested.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullCongestionStrategy;

impl CongestionStrategy for NullCongestionStrategy {
    fn on_sent(&mut self, _now: Instant, _bytes: usize) {}
    fn on_ack(&mut self, _now: Instant, _bytes: usize, _one_way_delay: Duration) {}
    fn on_loss(&mut self, _now: Instant, _bytes: usize) {}
    fn forget(&mut self, _bytes: usize) {}
    fn can_send_bulk(&self, _now: Instant, _bytes: usize) -> bool {
        true
    }
    fn bytes_in_flight(&self) -> usize {
        0
    }
}

/// Default bulk bytes allowed in flight by [`BulkWindowStrategy`].
pub const DEFAULT_BULK_WINDOW: usize = 256 * 1024;
/// Default time without acknowledgements after which in-flight bulk is presumed lost.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// A fixed window: at most `max_in_flight` bulk bytes unacknowledged.
///
/// If acknowledgements stop for `stall_timeout`, the in-flight bytes are presumed lost and
/// the window reopens, so a lost ack cannot stall bulk forever.
#[derive(Clone, Copy, Debug)]
pub struct BulkWindowStrategy {
    max_in_flight: usize,
    stall_timeout: Duration,
    in_flight: usize,
    last_progress: Option<Instant>,
}

impl Default for BulkWindowStrategy {
    fn default() -> Self {
        Self::new(DEFAULT_BULK_WINDOW, DEFAULT_STALL_TIMEOUT)
    }
}

impl BulkWindowStrategy {
    /// A window of `max_in_flight` bytes that reopens after `stall_timeout` without acks.
    pub fn new(max_in_flight: usize, stall_timeout: Duration) -> Self {
        Self {
            max_in_flight,
            stall_timeout,
            in_flight: 0,
            last_progress: None,
        }
    }

    fn release(&mut self, now: Instant, bytes: usize) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
        self.last_progress = Some(now);
    }
}

impl CongestionStrategy for BulkWindowStrategy {
    fn on_sent(&mut self, now: Instant, bytes: usize) {
        if self.in_flight == 0 {
            self.last_progress = Some(now);
        }
        self.in_flight = self.in_flight.saturating_add(bytes);
    }

    fn on_ack(&mut self, now: Instant, bytes: usize, _one_way_delay: Duration) {
        self.release(now, bytes);
    }

    fn on_loss(&mut self, now: Instant, bytes: usize) {
        self.release(now, bytes);
    }

    fn forget(&mut self, bytes: usize) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    fn can_send_bulk(&self, _now: Instant, bytes: usize) -> bool {
        // An empty window always admits one packet, however large, so bulk cannot wedge.
        self.in_flight == 0 || self.in_flight.saturating_add(bytes) <= self.max_in_flight
    }

    fn bytes_in_flight(&self) -> usize {
        self.in_flight
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight == 0 {
            return None;
        }
        self.last_progress.map(|at| at + self.stall_timeout)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| deadline <= now) {
            self.in_flight = 0;
            self.last_progress = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some origin for test time; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn null_strategy_never_blocks() {
        let now = origin();
        let mut null = NullCongestionStrategy;
        null.on_sent(now, usize::MAX);
        assert!(
            Lane::ALL
                .iter()
                .all(|&lane| null.can_send(now, lane, 1 << 30))
        );
        assert_eq!(null.poll_timeout(), None);
    }

    #[test]
    fn window_bounds_bulk_only_and_reopens_on_ack_or_stall() {
        let t0 = origin();
        let mut window = BulkWindowStrategy::new(3000, Duration::from_secs(1));
        assert!(
            window.can_send(t0, Lane::Bulk, 10_000),
            "empty window admits one packet"
        );
        window.on_sent(t0, 1400);
        window.on_sent(t0, 1400);
        assert!(!window.can_send(t0, Lane::Bulk, 1400));
        assert!(window.can_send(t0, Lane::Critical, 1400));
        assert!(window.can_send(t0, Lane::Telemetry, 1400));
        window.on_ack(
            t0 + Duration::from_millis(10),
            1400,
            Duration::from_millis(5),
        );
        assert!(window.can_send(t0, Lane::Bulk, 1400));
        window.on_sent(t0, 1400);
        let deadline = window.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_millis(1010));
        window.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(window.bytes_in_flight(), 2800, "not yet");
        window.handle_timeout(deadline);
        assert_eq!((window.bytes_in_flight(), window.poll_timeout()), (0, None));
    }
}
