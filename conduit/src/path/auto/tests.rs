use std::collections::VecDeque;
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

/// A bottleneck of `rate` bytes/s with `base` round trip and a deterministic jitter of
/// up to `±jitter` on each packet's way (in order: an ack never overtakes the one
/// before), driven in 100 µs steps by an always-backlogged sender; acks carry receive
/// stamps.
struct Path {
    rate: f64,
    base: Duration,
    jitter: Duration,
    lcg: u64,
    /// When the bottleneck has sent everything queued.
    free_at: Instant,
    /// Acks on their way back: (arrives at sender, sent at, arrived at receiver).
    acks: VecDeque<(Instant, Instant, Instant)>,
    /// Bulk bytes acknowledged so far.
    acked: usize,
    now: Instant,
}

impl Path {
    fn new(rate_bps: f64, base: Duration, now: Instant) -> Self {
        Self {
            rate: rate_bps / 8.0,
            base,
            jitter: Duration::ZERO,
            lcg: 0x2545_f491_4f6c_dd1d,
            free_at: now,
            acks: VecDeque::new(),
            acked: 0,
            now,
        }
    }

    fn noise(&mut self) -> Duration {
        self.lcg = self
            .lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let unit = (self.lcg >> 11) as f64 / (1u64 << 53) as f64;
        self.jitter.mul_f64(2.0 * unit)
    }

    /// Delivers the acks due by now and fires the controller's timer if it is due.
    fn settle(&mut self, c: &mut AutoBulk) {
        while self.acks.front().is_some_and(|&(at, _, _)| at <= self.now) {
            let (at, sent, arrived) = self.acks.pop_front().unwrap_or_else(|| unreachable!());
            self.acked += MSS;
            c.on_feedback(
                at,
                Feedback {
                    bytes: MSS,
                    round_trip: at - sent,
                    one_way: Some(arrived - sent),
                    bulk: true,
                },
            );
        }
        if c.poll_timeout().is_some_and(|t| t <= self.now) {
            c.handle_timeout(self.now);
        }
    }

    /// Delivers what is on its way for `length` and sends no new bulk.
    fn run_idle(&mut self, c: &mut AutoBulk, length: Duration) {
        let end = self.now + length;
        while self.now < end {
            self.settle(c);
            self.now += Duration::from_micros(100);
        }
    }

    /// Runs `c` on the path for `length`; returns the largest queue the bottleneck held.
    fn run(&mut self, c: &mut AutoBulk, length: Duration) -> Duration {
        let end = self.now + length;
        let mut worst = Duration::ZERO;
        while self.now < end {
            while c.can_send(self.now, Lane::Bulk, MSS) {
                c.on_sent(self.now, MSS);
                let start = self.free_at.max(self.now);
                worst = worst.max(start - self.now);
                self.free_at = start + Duration::from_secs_f64(MSS as f64 / self.rate);
                // The jitter is centred on base + jitter, so it never goes below base.
                let arrived = self.free_at + self.base / 2 + self.noise();
                let back = arrived + self.base / 2;
                let back = self
                    .acks
                    .back()
                    .map_or(back, |&(last, _, _)| back.max(last));
                self.acks.push_back((back, self.now, arrived));
            }
            self.settle(c);
            self.now += Duration::from_micros(100);
        }
        worst
    }
}

#[test]
fn a_quiet_path_moves_to_the_rate_model_once_it_has_been_quiet_for_a_second() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    assert_eq!(c.mode(), Mode::Adaptive, "starts on the safe window");
    path.run(&mut c, ms(900));
    assert_eq!(c.mode(), Mode::Adaptive, "not quiet for a second yet");
    path.run(&mut c, ms(1100));
    assert_eq!(c.mode(), Mode::Rate);
    assert_eq!(c.switches(), 1);
    // The rate model decides now: it holds bulk exactly when it says so.
    let now = path.now;
    assert_eq!(
        c.can_send_bulk(now, MSS),
        c.rate().can_send_bulk(now, MSS),
        "the active controller answers"
    );
    // And it took over at the path's rate, not from a startup.
    let bw = c.rate().bw() * 8.0;
    assert!((16e6..=21e6).contains(&bw), "bw {bw}");
    // Staying quiet, it stays.
    path.run(&mut c, ms(2000));
    assert_eq!((c.mode(), c.switches()), (Mode::Rate, 1));
}

/// A controller that never hands over: the rate model only shadows the window.
fn shadowing() -> AutoBulk {
    AutoBulk::new(AutoConfig {
        quiet_for: Duration::from_secs(3600),
        ..AutoConfig::default()
    })
}

#[test]
fn the_shadowed_rate_model_measures_the_path_the_window_paces() {
    for (rate, base) in [(20e6, ms(4)), (20e6, ms(10)), (50e6, ms(4)), (5e6, ms(40))] {
        let t0 = origin();
        let mut c = shadowing();
        let mut path = Path::new(rate, base, t0);
        // One round at a time: the model's bw is the window's delivery rate, measured on
        // its sends and acks a round or two behind it (a sample spans 1.5 rounds). The
        // window fills these paths in 10 to 30 rounds (it grows as LEDBAT does), the model
        // follows it within 40.
        let mut rounds = 0;
        while c.rate().bw() * 8.0 < 0.9 * rate {
            rounds += 1;
            assert!(
                rounds <= 40,
                "{rate} b/s, {base:?}: bw {}",
                c.rate().bw() * 8.0
            );
            path.run(&mut c, base);
        }
        // The window keeps pacing; the model keeps measuring, and never overstates.
        path.run(&mut c, ms(2000));
        assert_eq!(c.mode(), Mode::Adaptive);
        let bw = c.rate().bw() * 8.0;
        assert!(
            (0.9 * rate..=1.05 * rate).contains(&bw),
            "{rate} b/s, {base:?}: bw {bw}"
        );
        // The path's round trip: its base plus one packet's time on the wire (the
        // window's own queue, under its 250 µs target, stays out of the minimum).
        let min_rtt = c.rate().min_rtt().unwrap_or_default();
        let wire = Duration::from_secs_f64(MSS as f64 * 8.0 / rate);
        assert!(
            min_rtt >= base + wire && min_rtt <= base + wire + ms(1),
            "{rate} b/s, {base:?}: min rtt {min_rtt:?}"
        );
    }
}

#[test]
fn a_path_quiet_before_bulk_hands_over_a_second_into_bulk_at_the_measured_rate() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(10), t0);
    // Two seconds of a control loop alone, acknowledged at 1 kHz: the path is quiet, but
    // no bulk flows, so nothing is measured for bulk and nothing counts towards the hand-over.
    for _ in 0..2000 {
        path.now += ms(1);
        c.on_feedback(
            path.now,
            Feedback {
                bytes: 0,
                round_trip: ms(10),
                one_way: Some(ms(5)),
                bulk: false,
            },
        );
    }
    assert_eq!(c.mode(), Mode::Adaptive);
    // Bulk starts: the window paces it for a second of quiet before the model takes over.
    let start = path.now;
    while c.mode() == Mode::Adaptive {
        path.run(&mut c, ms(1));
        assert!(path.now - start <= ms(1500), "no hand-over");
    }
    assert!(path.now - start >= ms(1000), "after {:?}", path.now - start);
    // It takes over at the rate the window measured, not at a floor.
    let bw = c.rate().bw() * 8.0;
    assert!((18e6..=21e6).contains(&bw), "bw {bw}");
    assert!(c.rate().pacing_rate() * 8.0 >= 0.7 * bw);
    // And bulk keeps the path's rate from the first second after it.
    let acked = path.acked;
    path.run(&mut c, ms(1000));
    let got = (path.acked - acked) as f64 * 8.0;
    assert!(got >= 0.9 * 20e6, "{got} b/s after the hand-over");
    assert_eq!((c.mode(), c.switches()), (Mode::Rate, 1));
}

#[test]
fn a_pause_in_bulk_restarts_the_count() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    path.run(&mut c, ms(600));
    // Bulk pauses for longer than `quiet_for` while the path stays quiet (its acks drain
    // within a round trip), then resumes: the second of quiet counts from the new spell.
    path.run_idle(&mut c, ms(1200));
    path.run(&mut c, ms(900));
    assert_eq!((c.mode(), c.switches()), (Mode::Adaptive, 0));
    path.run(&mut c, ms(200));
    assert_eq!((c.mode(), c.switches()), (Mode::Rate, 1));
}

#[test]
fn jitter_moves_it_back_to_the_adaptive_window() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    path.run(&mut c, ms(2000));
    assert_eq!(c.mode(), Mode::Rate);
    path.jitter = ms(5);
    path.run(&mut c, ms(500));
    assert_eq!(
        c.mode(),
        Mode::Adaptive,
        "target {:?}",
        c.adaptive().target()
    );
    assert_eq!(c.switches(), 2);
    // While it jitters, it never goes back to the rate model.
    path.run(&mut c, ms(5000));
    assert_eq!((c.mode(), c.switches()), (Mode::Adaptive, 2));
}

#[test]
fn a_jittery_path_never_leaves_the_adaptive_window() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(30), t0);
    path.jitter = ms(5);
    path.run(&mut c, ms(10_000));
    assert_eq!((c.mode(), c.switches()), (Mode::Adaptive, 0));
}

#[test]
fn between_the_thresholds_nothing_changes_either_way() {
    let t0 = origin();
    let config = AutoConfig::default();
    let floor = config.adaptive.min_target.as_secs_f64();
    let in_band = |c: &AutoBulk| {
        let t = c.adaptive().target().as_secs_f64();
        t > floor * config.quiet_below && t < floor * config.noisy_above
    };
    // On the adaptive window: a path whose target sits in the band never becomes quiet.
    // (Up to 1.5 ms of in-order jitter puts it there; the denser the bulk, the less of
    // it the trend filter sees, so the band's path moves with the window's growth.)
    let mut adaptive = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    path.jitter = Duration::from_micros(1500);
    path.run(&mut adaptive, ms(5000));
    assert!(in_band(&adaptive), "{:?}", adaptive.adaptive().target());
    assert_eq!((adaptive.mode(), adaptive.switches()), (Mode::Adaptive, 0));
    // On the rate model: the same path is not jittery enough to leave it.
    let mut rate = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    path.run(&mut rate, ms(2000));
    assert_eq!(rate.mode(), Mode::Rate);
    path.jitter = Duration::from_micros(1500);
    path.run(&mut rate, ms(5000));
    assert!(in_band(&rate), "{:?}", rate.adaptive().target());
    assert_eq!((rate.mode(), rate.switches()), (Mode::Rate, 1));
}

#[test]
fn quiet_spells_shorter_than_quiet_for_do_not_flap() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    for _ in 0..10 {
        path.jitter = ms(5);
        path.run(&mut c, ms(300));
        path.jitter = Duration::ZERO;
        path.run(&mut c, ms(600));
    }
    assert_eq!((c.mode(), c.switches()), (Mode::Adaptive, 0));
}

#[test]
fn a_rate_drop_after_switching_is_followed_without_a_standing_queue() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    path.run(&mut c, ms(3000));
    assert_eq!(c.mode(), Mode::Rate);
    // The link's rate quarters (a fixed uplink renegotiated, a shaper changed).
    path.rate /= 4.0;
    path.run(&mut c, ms(1000));
    let bw = c.rate().bw() * 8.0;
    assert!((4e6..=5.5e6).contains(&bw), "bw followed the drop: {bw}");
    // After a second the queue is the probes' only: a few packets at 5 Mbit/s, whichever
    // controller decides (the drop's delay ramp may read as jitter for a moment and hand
    // the path back to the window, which is as safe).
    let worst = path.run(&mut c, ms(2000));
    assert!(worst <= ms(12), "queue after the drop settled: {worst:?}");
    // It never flaps: at most one hand-back and one return in those seconds. (At 5 Mbit/s
    // a packet takes 2.2 ms to send, and the window's own bursts read as more jitter than
    // the quiet threshold, so once handed back the path may stay on the window, which is
    // as safe.)
    path.run(&mut c, ms(1500));
    assert!(c.switches() <= 3, "{} switches", c.switches());
}

#[test]
fn only_bulk_is_ever_held_back_in_either_mode() {
    let t0 = origin();
    let mut c = AutoBulk::default();
    let mut path = Path::new(20e6, ms(4), t0);
    for _ in 0..2 {
        path.run(&mut c, ms(1500));
        let now = path.now;
        while c.can_send_bulk(now, MSS) {
            c.on_sent(now, MSS);
        }
        assert!(!c.can_send(now, Lane::Bulk, MSS));
        assert!(c.can_send(now, Lane::Critical, MSS));
        assert!(c.can_send(now, Lane::Telemetry, MSS));
    }
    assert_eq!(c.mode(), Mode::Rate);
}

/// Runs two peers of one node side by side for `length`, a millisecond at a time each.
fn run_both(
    (pa, ca): (&mut Path, &mut AutoBulk),
    (pb, cb): (&mut Path, &mut AutoBulk),
    length: Duration,
) {
    for _ in 0..length.as_millis() {
        pa.run(ca, ms(1));
        pb.run(cb, ms(1));
    }
}

/// Two peers of one node on quiet paths of different rates and round trips.
fn two_quiet_peers() -> (AutoGroup, [AutoBulk; 2], [Path; 2]) {
    let t0 = origin();
    let group = AutoGroup::new();
    let config = AutoConfig::default();
    let peers = [
        AutoBulk::in_group(config, &group),
        AutoBulk::in_group(config, &group),
    ];
    let paths = [Path::new(20e6, ms(4), t0), Path::new(10e6, ms(10), t0)];
    (group, peers, paths)
}

#[test]
fn a_node_whose_peers_all_have_quiet_paths_moves_them_to_the_rate_model_together() {
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(900));
    assert_eq!(
        (a.mode(), b.mode(), group.mode()),
        (Mode::Adaptive, Mode::Adaptive, Mode::Adaptive)
    );
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(1100));
    assert_eq!(
        (a.mode(), b.mode(), group.mode()),
        (Mode::Rate, Mode::Rate, Mode::Rate)
    );
    assert_eq!((group.switches(), a.switches(), b.switches()), (1, 1, 1));
    // Staying quiet, they stay.
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(2000));
    assert_eq!(
        (group.switches(), a.mode(), b.mode()),
        (1, Mode::Rate, Mode::Rate)
    );
}

#[test]
fn one_jittery_peer_keeps_the_whole_node_on_the_adaptive_window() {
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    pb.jitter = ms(5);
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(5000));
    assert!(
        a.adaptive().target() < Duration::from_micros(500),
        "a's own path is quiet: {:?}",
        a.adaptive().target()
    );
    assert_eq!(
        (a.mode(), b.mode(), group.switches()),
        (Mode::Adaptive, Mode::Adaptive, 0)
    );
}

#[test]
fn once_one_peer_jitters_all_go_back_to_the_adaptive_window_together() {
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(2000));
    assert_eq!(group.mode(), Mode::Rate);
    pb.jitter = ms(5);
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(500));
    assert_eq!(
        (a.mode(), b.mode(), group.mode()),
        (Mode::Adaptive, Mode::Adaptive, Mode::Adaptive)
    );
    assert_eq!((group.switches(), a.switches(), b.switches()), (2, 2, 2));
    // While b jitters, neither goes back to the rate model, though a's path stays quiet.
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(5000));
    assert_eq!(
        (group.switches(), a.mode(), b.mode()),
        (2, Mode::Adaptive, Mode::Adaptive)
    );
}

#[test]
fn one_peer_s_short_quiet_spells_do_not_flap_the_node() {
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    for _ in 0..10 {
        pb.jitter = ms(5);
        run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(300));
        pb.jitter = Duration::ZERO;
        run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(600));
    }
    assert_eq!((group.switches(), a.switches(), b.switches()), (0, 0, 0));
}

#[test]
fn a_peer_that_stopped_sending_bulk_or_left_does_not_hold_the_node_back() {
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    pb.jitter = ms(5);
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(2000));
    assert_eq!(group.mode(), Mode::Adaptive);
    // b stops sending: a second later it no longer counts, and a's quiet path decides.
    pa.run(&mut a, ms(2500));
    assert_eq!((a.mode(), group.switches()), (Mode::Rate, 1));
    // A jittery peer that leaves the node (its controller dropped) counts no more either.
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    pb.jitter = ms(5);
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(2000));
    drop(b);
    pa.run(&mut a, ms(1500));
    assert_eq!((a.mode(), group.switches()), (Mode::Rate, 1));
}

/// The group counts its members with bulk in flight, and each member's adaptive window
/// knows whether another sends beside it (then it reads its queue as a full filter would:
/// docs/congestion.md section 18); a member that leaves is counted out.
#[test]
fn each_window_knows_whether_another_of_the_node_sends_beside_it() {
    let (group, [mut a, mut b], [mut pa, mut pb]) = two_quiet_peers();
    pa.run(&mut a, ms(100));
    assert_eq!((group.sending(), a.adaptive().shared()), (1, false));
    run_both((&mut pa, &mut a), (&mut pb, &mut b), ms(100));
    assert_eq!(group.sending(), 2);
    assert!(a.adaptive().shared() && b.adaptive().shared());
    drop(b);
    pa.run(&mut a, ms(100));
    assert_eq!((group.sending(), a.adaptive().shared()), (1, false));
}
