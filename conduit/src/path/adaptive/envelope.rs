//! The upper envelope of one-way delays: the largest of the last few samples, against the
//! smallest such envelope of the recent past.
//!
//! Why the top and not the bottom: on a radio bearer the jitter is added after the
//! bottleneck and never reorders, so a packet that arrives behind a later-jittered one
//! waits for it. The denser the traffic, the closer every packet's delay is pushed to the
//! top of the jitter range: at full rate the path's *minimum* delay rises by up to twice
//! the jitter with no queue at all, and a minimum filter reads that as a queue. The
//! *maximum* of a few samples is the base delay plus the jitter's top plus the queue,
//! whatever the density, so its rise is the queue's.
//!
//! Invariant: `queuing` is `None` until the ring is full, never negative; the base holds
//! only envelopes of a full ring.

use std::time::{Duration, Instant};

use super::delay::{BaseHistory, DelayFilter};

/// Samples the envelope is the maximum of.
pub(super) const ENVELOPE: usize = 8;

/// The upper envelope of one stream of one-way delays, and its base.
#[derive(Clone, Debug)]
pub(in crate::path) struct Envelope {
    recent: [Duration; ENVELOPE],
    filled: usize,
    next: usize,
    /// The envelope's own base history (its smallest tops).
    base: BaseHistory,
    /// The same samples' minimum filter: how far the path's floor moved.
    bottom: DelayFilter,
}

impl Default for Envelope {
    fn default() -> Self {
        Self {
            recent: [Duration::ZERO; ENVELOPE],
            filled: 0,
            next: 0,
            base: BaseHistory::default(),
            bottom: DelayFilter::default(),
        }
    }
}

impl Envelope {
    /// Takes one one-way delay sample measured at `now`.
    pub(in crate::path) fn on_sample(&mut self, now: Instant, delay: Duration) {
        self.bottom.on_sample(now, delay);
        self.recent[self.next] = delay;
        self.next = (self.next + 1) % ENVELOPE;
        self.filled = (self.filled + 1).min(ENVELOPE);
        if let Some(top) = self.current() {
            self.base.on_sample(now, top);
        }
    }

    /// The largest of the last [`ENVELOPE`] samples.
    pub(in crate::path) fn current(&self) -> Option<Duration> {
        (self.filled == ENVELOPE).then(|| self.recent.iter().copied().max().unwrap_or_default())
    }

    /// The smallest envelope of the base history.
    pub(in crate::path) fn base(&self) -> Option<Duration> {
        self.base.min()
    }

    /// The envelope's rise over its base: the queue.
    pub(in crate::path) fn queuing(&self) -> Option<Duration> {
        Some(self.current()?.saturating_sub(self.base()?))
    }

    /// The path got longer: moves the base up by as much as the bottom of the same
    /// samples rose over its own base (the window sat at its floor, so the bottom saw
    /// no queue), keeping the envelope's width. Re-measuring the top itself would take
    /// in whatever queue the last samples still held.
    pub(in crate::path) fn rebase(&mut self, horizon: Duration) {
        let Some(shift) = self.bottom.queuing(horizon) else {
            return;
        };
        self.bottom.rebase(horizon);
        if let Some(base) = self.base() {
            self.base.reset_to(base + shift);
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

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1e3)
    }

    /// A radio bearer's one-way delays, as `bauxite_netem`'s link plays them: base delay
    /// `base` plus a uniform jitter in ±`jitter` drawn from a fixed LCG, never below zero,
    /// and in order (a packet never arrives before the one sent before it).
    struct Bearer {
        state: u64,
        base: f64,
        jitter: f64,
        last_arrival: f64,
    }

    impl Bearer {
        fn new(base: f64, jitter: f64) -> Self {
            Self {
                state: 0x2545_f491_4f6c_dd1d,
                base,
                jitter,
                last_arrival: 0.0,
            }
        }

        /// The one-way delay in ms of a packet that leaves the bottleneck at `departs`
        /// (ms) after waiting `queue` ms in it.
        fn delay(&mut self, departs: f64, queue: f64) -> f64 {
            self.state = self
                .state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
            let offset = self.jitter * (2.0 * unit - 1.0);
            let arrival = (departs + self.base + offset)
                .max(departs)
                .max(self.last_arrival);
            self.last_arrival = arrival;
            arrival - departs + queue
        }
    }

    /// Feeds `packets` packets `gap` ms apart, each `queue` ms queued, to both filters.
    fn feed(
        bearer: &mut Bearer,
        filters: (&mut Envelope, &mut DelayFilter),
        at: &mut f64,
        gap: f64,
        queue: f64,
        packets: usize,
    ) {
        for _ in 0..packets {
            *at += gap;
            let delay = ms(bearer.delay(*at, queue));
            let now = origin() + ms(*at);
            filters.0.on_sample(now, delay);
            filters.1.on_sample(now, delay);
        }
    }

    /// Section 9's finding: on an in-order bearer with ±3 ms of jitter, traffic at full
    /// rate (a packet every 0.22 ms: 1395 bytes at 50 Mbit/s) arrives near the top of the
    /// jitter range, so a minimum filter reads more than 5 ms of queue where there is
    /// none; the envelope reads less (its base is the smallest top seen, which sparse
    /// traffic puts below the jitter's top), and a real queue shows in it at once.
    #[test]
    fn dense_traffic_on_an_in_order_bearer_is_less_queue_to_the_envelope() {
        let mut bearer = Bearer::new(3.0, 3.0);
        let (mut envelope, mut minimum) = (Envelope::default(), DelayFilter::default());
        let mut at = 0.0;
        // Sparse traffic first (a small window: one packet every 5 ms) sets both bases.
        feed(
            &mut bearer,
            (&mut envelope, &mut minimum),
            &mut at,
            5.0,
            0.0,
            200,
        );
        // Then full rate, no queue.
        feed(
            &mut bearer,
            (&mut envelope, &mut minimum),
            &mut at,
            0.22,
            0.0,
            2000,
        );
        let phantom = minimum.queuing(Duration::ZERO).unwrap();
        let seen = envelope.queuing().unwrap();
        assert!(phantom > ms(5.0), "the minimum filter reads {phantom:?}");
        assert!(seen + ms(1.5) < phantom, "the envelope reads {seen:?}");
        // A real queue of 4 ms: the envelope shows it with the first sample, the minimum
        // of the newest four not yet.
        feed(
            &mut bearer,
            (&mut envelope, &mut minimum),
            &mut at,
            0.22,
            4.0,
            1,
        );
        assert!(
            envelope.queuing().unwrap() >= seen + ms(3.0),
            "{:?}",
            envelope.queuing()
        );
        assert!(minimum.queuing(Duration::ZERO).unwrap() < phantom + ms(1.0));
    }

    /// A longer path moves the envelope's base by as much as the path's floor rose, not
    /// to the top of the last samples (which may still hold a queue).
    #[test]
    fn a_rebase_moves_the_base_by_the_floor_s_rise_and_keeps_the_width() {
        let mut bearer = Bearer::new(3.0, 3.0);
        let (mut envelope, mut unused) = (Envelope::default(), DelayFilter::default());
        let mut at = 0.0;
        feed(
            &mut bearer,
            (&mut envelope, &mut unused),
            &mut at,
            5.0,
            0.0,
            400,
        );
        let before = envelope.base().unwrap();
        // The path gets 6 ms longer; the window falls to its floor, where the last
        // samples of a 10 ms queue are still in the ring when the base is re-measured.
        bearer.base = 9.0;
        feed(
            &mut bearer,
            (&mut envelope, &mut unused),
            &mut at,
            5.0,
            0.0,
            40,
        );
        feed(
            &mut bearer,
            (&mut envelope, &mut unused),
            &mut at,
            5.0,
            10.0,
            4,
        );
        feed(
            &mut bearer,
            (&mut envelope, &mut unused),
            &mut at,
            5.0,
            0.0,
            4,
        );
        envelope.rebase(Duration::ZERO);
        let rise = envelope.base().unwrap().as_secs_f64() - before.as_secs_f64();
        assert!((0.004..0.009).contains(&rise), "base rose {rise}");
        // Once the queued samples have left the ring, no queue is left.
        feed(
            &mut bearer,
            (&mut envelope, &mut unused),
            &mut at,
            5.0,
            0.0,
            ENVELOPE,
        );
        assert!(
            envelope.queuing().unwrap() < ms(2.0),
            "{:?}",
            envelope.queuing()
        );
    }

    #[test]
    fn nothing_until_the_ring_is_full() {
        let mut envelope = Envelope::default();
        for i in 0..ENVELOPE - 1 {
            envelope.on_sample(origin(), ms(i as f64));
            assert_eq!(envelope.queuing(), None);
        }
        envelope.rebase(Duration::ZERO);
        assert_eq!(envelope.base(), None);
        envelope.on_sample(origin(), ms(1.0));
        assert_eq!(envelope.queuing(), Some(Duration::ZERO));
    }
}
