use std::time::{Duration, Instant};

use super::*;
use crate::Lane;

const MSS: usize = 1350;

/// Some origin for test time; only differences from it matter.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One round trip of an ack-clocked sender that always has data: acknowledge every segment
/// in flight with the given one-way delay, refilling the window after each ACK as a real
/// sender does. Returns the time after the round.
fn round(ledbat: &mut Ledbat, now: Instant, delay: Duration) -> Instant {
    fill(ledbat, now);
    let later = now + ms(20);
    for _ in 0..ledbat.bytes_in_flight() / MSS {
        ledbat.on_ack(later, MSS, delay);
        fill(ledbat, later);
    }
    later
}

fn fill(ledbat: &mut Ledbat, now: Instant) {
    while ledbat.can_send_bulk(now, MSS) {
        ledbat.on_sent(now, MSS);
    }
}

#[test]
fn grows_while_delay_is_below_target() {
    let mut ledbat = Ledbat::default();
    let mut now = origin();
    assert_eq!(ledbat.cwnd(), 2 * MSS);
    let mut last = ledbat.cwnd();
    for _ in 0..20 {
        now = round(&mut ledbat, now, ms(10));
        assert!(
            ledbat.cwnd() > last,
            "cwnd {} did not grow past {last}",
            ledbat.cwnd()
        );
        last = ledbat.cwnd();
    }
    assert_eq!(ledbat.queuing_delay(), Some(Duration::ZERO));
    assert_eq!(ledbat.base_delay(), Some(ms(10)));
}

#[test]
fn shrinks_above_target_but_never_below_minimum() {
    let mut ledbat = Ledbat::default();
    let mut now = origin();
    for _ in 0..30 {
        now = round(&mut ledbat, now, ms(10));
    }
    let grown = ledbat.cwnd();
    now = round(&mut ledbat, now, ms(10 + 60));
    assert!(ledbat.cwnd() < grown, "60 ms queue must shrink the window");
    for _ in 0..200 {
        now = round(&mut ledbat, now, ms(10 + 200));
        assert!(ledbat.cwnd() >= 2 * MSS);
    }
    assert_eq!(ledbat.cwnd(), 2 * MSS);
}

#[test]
fn holds_steady_at_target() {
    let mut ledbat = Ledbat::default();
    let mut now = origin();
    for _ in 0..10 {
        now = round(&mut ledbat, now, ms(5));
    }
    // Let the 4-sample filter forget the uncongested samples first.
    now = round(&mut ledbat, now, ms(5 + 25));
    let before = ledbat.cwnd();
    for _ in 0..10 {
        now = round(&mut ledbat, now, ms(5 + 25));
    }
    assert!(
        ledbat.cwnd().abs_diff(before) <= 1,
        "{} vs {before}",
        ledbat.cwnd()
    );
}

#[test]
fn does_not_grow_when_application_limited() {
    let mut ledbat = Ledbat::default();
    let now = origin();
    for _ in 0..100 {
        ledbat.on_sent(now, MSS);
        ledbat.on_ack(now, MSS, ms(1));
    }
    assert!(
        ledbat.cwnd() <= 2 * MSS,
        "cwnd {} grew untested",
        ledbat.cwnd()
    );
}

#[test]
fn base_delay_follows_a_lasting_route_change() {
    let mut ledbat = Ledbat::default();
    let mut now = round(&mut ledbat, origin(), ms(10));
    // The path gets 30 ms longer for good: at first that reads as queuing delay...
    for _ in 0..3 {
        now = round(&mut ledbat, now, ms(40));
    }
    assert_eq!(ledbat.queuing_delay(), Some(ms(30)));
    // ...until the old minute buckets age out of the 10-minute history.
    for _ in 0..11 {
        now += Duration::from_secs(60);
        now = round(&mut ledbat, now, ms(40));
    }
    assert_eq!(ledbat.base_delay(), Some(ms(40)));
    assert_eq!(ledbat.queuing_delay(), Some(Duration::ZERO));
}

#[test]
fn loss_halves_once_per_interval() {
    let mut ledbat = Ledbat::default();
    let mut now = origin();
    for _ in 0..30 {
        now = round(&mut ledbat, now, ms(10));
    }
    let before = ledbat.cwnd();
    ledbat.on_loss(now, MSS);
    let halved = ledbat.cwnd();
    assert!(halved.abs_diff(before / 2) <= 1);
    ledbat.on_loss(now + ms(50), MSS);
    assert_eq!(
        ledbat.cwnd(),
        halved,
        "second loss in the same interval ignored"
    );
    ledbat.on_loss(now + ms(150), MSS);
    assert!(ledbat.cwnd() < halved);
}

#[test]
fn silence_for_a_cto_collapses_the_window() {
    let mut ledbat = Ledbat::default();
    assert_eq!(ledbat.poll_timeout(), None, "nothing in flight");
    let mut now = origin();
    for _ in 0..10 {
        now = round(&mut ledbat, now, ms(10));
    }
    assert!(ledbat.cwnd() > 2 * MSS);
    let deadline = ledbat.poll_timeout().unwrap();
    assert_eq!(ledbat.cto(), ms(32), "three 10 ms round trips plus 2 ms");
    assert_eq!(deadline, now + ms(32), "one CTO after the last ACK");
    ledbat.handle_timeout(deadline - ms(1));
    assert!(ledbat.bytes_in_flight() > 0, "not yet");
    ledbat.handle_timeout(deadline);
    assert_eq!((ledbat.cwnd(), ledbat.bytes_in_flight()), (2 * MSS, 0));
    assert_eq!(ledbat.poll_timeout(), None);
}

#[test]
fn never_blocks_critical_or_telemetry() {
    let mut ledbat = Ledbat::default();
    let now = origin();
    ledbat.on_sent(now, 100 * MSS);
    assert!(!ledbat.can_send(now, Lane::Bulk, MSS));
    assert!(ledbat.can_send(now, Lane::Critical, MSS));
    assert!(ledbat.can_send(now, Lane::Telemetry, MSS));
}

#[test]
fn cto_starts_at_the_configured_maximum_and_never_leaves_its_bounds() {
    let mut ledbat = Ledbat::default();
    assert_eq!(
        ledbat.cto(),
        Duration::from_secs(1),
        "no round trip measured yet"
    );
    let mut now = origin();
    for _ in 0..50 {
        now = round(&mut ledbat, now, Duration::from_micros(100));
    }
    assert_eq!(ledbat.cto(), ms(10), "a LAN's round trip hits the floor");
    for _ in 0..50 {
        now = round(&mut ledbat, now, ms(900));
    }
    assert_eq!(
        ledbat.cto(),
        Duration::from_secs(1),
        "capped by the configured CTO"
    );
}
