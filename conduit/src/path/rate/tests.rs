use std::time::{Duration, Instant};

use super::*;
use crate::Lane;

const MSS: usize = 1350;

/// Some origin for test time; only differences from it matter.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

#[test]
fn only_bulk_is_ever_held_back() {
    let now = origin();
    let mut c = RateBulk::default();
    c.on_sent(now, MSS);
    assert!(!c.can_send(now, Lane::Bulk, MSS), "paced");
    assert!(c.can_send(now, Lane::Critical, MSS));
    assert!(c.can_send(now, Lane::Telemetry, MSS));
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn bulk_leaves_at_the_pacing_rate() {
    let t0 = origin();
    let mut c = RateBulk::default();
    let rate = c.pacing_rate();
    c.on_sent(t0, MSS);
    let gap = Duration::from_secs_f64(MSS as f64 / rate);
    assert!(!c.can_send_bulk(t0 + gap - Duration::from_micros(1), MSS));
    assert!(c.can_send_bulk(t0 + gap, MSS));
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + gap),
        "a wake-up for the next packet"
    );
}

/// A bottleneck of `rate` bytes/s with a drop-tail buffer and `one_way` propagation each
/// way, driven in 50 µs steps by an always-backlogged sender; acks carry receive stamps.
struct Link {
    rate: f64,
    one_way: Duration,
    /// Packets in the bottleneck: when each left the sender.
    queue: std::collections::VecDeque<Instant>,
    /// When the head of the queue finishes serialising.
    busy_until: Option<Instant>,
    /// Acks on their way back: (arrives at sender, sent at, arrived at receiver).
    acks: std::collections::VecDeque<(Instant, Instant, Instant)>,
    /// Largest queueing delay seen since the last reset.
    worst_queue: Duration,
}

impl Link {
    fn new(rate: f64, one_way: Duration) -> Self {
        Self {
            rate,
            one_way,
            queue: Default::default(),
            busy_until: None,
            acks: Default::default(),
            worst_queue: Duration::ZERO,
        }
    }

    /// Runs the link and the sender from `now` for `length`.
    fn run(&mut self, c: &mut RateBulk, origin: Instant, now: &mut Instant, length: Duration) {
        let end = *now + length;
        let step = Duration::from_micros(50);
        while *now < end {
            while c.can_send_bulk(*now, MSS) {
                c.on_sent(*now, MSS);
                self.queue.push_back(*now);
            }
            let service = Duration::from_secs_f64(MSS as f64 / self.rate);
            loop {
                let Some(&sent) = self.queue.front() else {
                    self.busy_until = None;
                    break;
                };
                let start = self.busy_until.unwrap_or(sent).max(sent);
                let done = start + service;
                if done > *now {
                    self.busy_until = Some(start);
                    break;
                }
                self.queue.pop_front();
                self.busy_until = Some(done);
                self.worst_queue = self.worst_queue.max(start - sent);
                let arrived = done + self.one_way;
                self.acks.push_back((arrived + self.one_way, sent, arrived));
            }
            while self.acks.front().is_some_and(|a| a.0 <= *now) {
                let Some((at, sent, arrived)) = self.acks.pop_front() else {
                    break;
                };
                c.on_feedback(
                    at,
                    Feedback {
                        bytes: MSS,
                        round_trip: at - sent,
                        one_way: Some(
                            arrived - origin + Duration::from_secs(1000) - (sent - origin),
                        ),
                        bulk: true,
                    },
                );
            }
            if c.poll_timeout().is_some_and(|t| t <= *now) {
                c.handle_timeout(*now);
            }
            *now += step;
        }
    }
}

/// On a clean 10 Mbit/s path with 20 ms each way: bw is found; cruising, the only queue
/// is a probe's (a quarter of the rate for a round trip: 10 ms, plus a packet); when the
/// rate halves bw follows within a few round trips and the overshoot's queue is drained;
/// when it triples bw follows within three seconds (on a quiet path a probe queues at
/// most two brake targets until one finds more capacity, then probes at full gain).
#[test]
fn bw_follows_the_bottleneck_down_and_up_and_the_queue_stays_small() {
    let t0 = origin();
    let mut now = t0;
    let mut c = RateBulk::default();
    let mut link = Link::new(10e6 / 8.0, ms(20));
    link.run(&mut c, t0, &mut now, Duration::from_secs(3));
    let bw = c.bw() * 8.0;
    assert!((9e6..=11e6).contains(&bw), "found 10 Mbit/s: {bw}");
    link.worst_queue = Duration::ZERO;
    link.run(&mut c, t0, &mut now, Duration::from_secs(2));
    assert!(
        link.worst_queue < ms(12),
        "cruising, only a probe queues: {:?}",
        link.worst_queue
    );
    link.rate = 5e6 / 8.0;
    link.run(&mut c, t0, &mut now, ms(400));
    let bw = c.bw() * 8.0;
    assert!((4.5e6..=5.7e6).contains(&bw), "followed the drop: {bw}");
    link.worst_queue = Duration::ZERO;
    link.run(&mut c, t0, &mut now, Duration::from_secs(2));
    assert!(
        link.worst_queue < ms(25),
        "the drop's queue is gone: {:?}",
        link.worst_queue
    );
    link.rate = 15e6 / 8.0;
    link.run(&mut c, t0, &mut now, Duration::from_secs(3));
    let bw = c.bw() * 8.0;
    assert!((13e6..=16.5e6).contains(&bw), "followed the rise: {bw}");
}

#[test]
fn the_delivery_rate_is_measured_on_the_receivers_clock() {
    use super::sampler::RateSampler;
    let t0 = origin();
    let mut s = RateSampler::default();
    // 1000 bytes every ms leave the sender and arrive 1 ms apart; their acks come back
    // bunched (reverse-path jitter): two at a time every 2 ms.
    for i in 0..200u64 {
        let sent = t0 + ms(i);
        let arrived = Duration::from_secs(100) + ms(i) + ms(20);
        let ack_at = t0 + ms(40 + i + i % 2);
        let round_trip = ack_at - sent;
        s.on_ack(ack_at, 1000, round_trip, Some(arrived - ms(i)), ms(50));
    }
    let sample = s.sample(ms(50)).unwrap();
    assert!((sample.delivered - 1e6).abs() < 1e4, "{sample:?}");
    assert!((sample.sent - 1e6).abs() < 1e4, "{sample:?}");
    assert_eq!(s.sample(ms(500)), None, "not that much history");
}

#[test]
fn a_bottleneck_shows_as_delivery_below_the_send_rate() {
    use super::sampler::RateSampler;
    let t0 = origin();
    let mut s = RateSampler::default();
    // Sent at 2 MB/s, delivered at 1 MB/s (a queue grows by 1 ms per packet).
    for i in 0..200u64 {
        let sent = Duration::from_micros(500 * i);
        let arrived = ms(i) + ms(20);
        let ack_at = t0 + ms(i) + ms(40);
        let round_trip = (ack_at - t0) - sent;
        s.on_ack(ack_at, 1000, round_trip, Some(arrived - sent), ms(50));
    }
    let sample = s.sample(ms(50)).unwrap();
    assert!((sample.delivered - 1e6).abs() < 2e4, "{sample:?}");
    assert!((sample.sent - 2e6).abs() < 4e4, "{sample:?}");
}

#[test]
fn the_windowed_minimum_forgets_old_rounds() {
    use super::sampler::MinRtt;
    let mut m = MinRtt::<3>::default();
    assert_eq!(m.get(), None);
    m.on_sample(ms(20));
    for _ in 0..2 {
        m.next_round();
        m.on_sample(ms(40));
    }
    assert_eq!(m.get(), Some(ms(20)));
    m.next_round();
    m.on_sample(ms(45));
    assert_eq!(m.get(), Some(ms(40)), "the 20 ms round is three rounds old");
}

/// The receiver's rate-drop report (path/arrival.rs) cuts bw and the pacing rate at
/// once, holds bulk while the flight above the new rate drains, acts once per round trip,
/// and is ignored when the sender already sends about that slowly.
#[test]
fn a_confirmed_rate_drop_cuts_at_once_and_once_per_round_trip() {
    let t0 = origin();
    let mut c = RateBulk::default();
    let before = c.pacing_rate();
    for _ in 0..20 {
        c.on_sent(t0, MSS);
    }
    c.on_rate_drop(t0, before / 4.0);
    assert_eq!(c.bw(), before / 4.0);
    assert_eq!(c.phase(), Phase::Drain);
    assert!(c.pacing_rate() < before / 4.0);
    assert!(
        !c.can_send_bulk(t0 + ms(1), MSS),
        "held while the queue drains"
    );
    // A second report within the round trip describes packets sent before the cut.
    c.on_rate_drop(t0 + ms(1), before / 8.0);
    assert_eq!(c.bw(), before / 4.0);
    // After it, a report at about the rate we now send at is our own slowness.
    let later = t0 + Duration::from_secs(1);
    c.on_rate_drop(later, c.pacing_rate());
    assert_eq!(c.bw(), before / 4.0);
    c.on_rate_drop(later, before / 8.0);
    assert_eq!(c.bw(), before / 8.0);
}
