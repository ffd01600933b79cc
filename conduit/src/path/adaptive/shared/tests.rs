use super::*;

/// Some origin for test time; only differences from it matter.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn ms(n: f64) -> Duration {
    Duration::from_secs_f64(n.max(0.0) / 1e3)
}

/// Uniform noise in ± `amplitude` ms from a fixed LCG.
struct Noise(u64);

impl Noise {
    fn next(&mut self, amplitude: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        amplitude * (2.0 * unit - 1.0)
    }
}

/// A queue that swings by ± 3 ms about 5 ms with `period` ms, as a bottleneck's does
/// under two windows' sawtooth.
fn queue(t: f64, period: f64) -> f64 {
    5.0 + 3.0 * (std::f64::consts::TAU * t / period).sin()
}

const FRESH: Duration = Duration::from_millis(30);
const GUARD: Duration = Duration::from_millis(4);

/// Two windows read every millisecond for `seconds` (b first): `a(t)` and `b(t)` in ms.
/// Returns the last reading of each, and what it got back.
fn run(
    pool: &SharedEnvelopes,
    seconds: f64,
    mut a: impl FnMut(f64) -> f64,
    mut b: impl FnMut(f64) -> f64,
) -> ((Duration, Duration), (Duration, Duration)) {
    let (mut wa, mut wb) = (pool.join(), pool.join());
    let start = origin();
    let mut last = Default::default();
    for i in 0..(seconds * 1e3) as u64 {
        let t = i as f64;
        let now = start + ms(t);
        let (own_a, own_b) = (ms(a(t)), ms(b(t)));
        let got_b = wb.read(now, own_b, FRESH, GUARD);
        let got_a = wa.read(now, own_a, FRESH, GUARD);
        last = ((own_a, got_a), (own_b, got_b));
    }
    last
}

/// Behind one bottleneck the narrow window's envelope reads the same swinging queue
/// plus 3 ms of its longer span's peaks: once the readings have moved together for a
/// while it reads the wide window's, and the wide one keeps its own.
#[test]
fn windows_whose_readings_move_together_read_the_smallest() {
    let pool = SharedEnvelopes::default();
    let (mut na, mut nb) = (Noise(1), Noise(2));
    let ((own_a, got_a), (own_b, got_b)) = run(
        &pool,
        3.0,
        |t| queue(t, 400.0) + 3.0 + na.next(1.0),
        |t| queue(t, 400.0) + nb.next(1.0),
    );
    assert!(own_a > own_b, "{own_a:?} {own_b:?}");
    assert_eq!(got_a, own_b.max(own_a.saturating_sub(GUARD)));
    assert_eq!(got_b, own_b);
}

/// Two robots on cells of their own: queues that swing independently. Each window
/// reads its own queue, even when the other's is far smaller.
#[test]
fn a_window_on_a_cell_of_its_own_reads_its_own_queue() {
    let pool = SharedEnvelopes::default();
    let (mut na, mut nb) = (Noise(3), Noise(4));
    let start = origin();
    let (mut wa, mut wb) = (pool.join(), pool.join());
    let mut lowered = 0;
    for i in 0..4000u64 {
        let t = i as f64;
        let now = start + ms(t);
        let own_a = ms(queue(t, 370.0) + 6.0 + na.next(1.0));
        let own_b = ms(queue(t, 530.0) + nb.next(1.0));
        lowered += usize::from(wa.read(now, own_a, FRESH, GUARD) < own_a);
        assert_eq!(wb.read(now, own_b, FRESH, GUARD), own_b);
    }
    assert_eq!(lowered, 0, "readings lowered by an unrelated window");
}

/// However much smaller a correlated window's reading, a window's is lowered by at most
/// its guard (its target): a correlation found by chance costs a bounded queue.
#[test]
fn a_reading_is_lowered_by_at_most_the_guard() {
    let pool = SharedEnvelopes::default();
    let ((own_a, got_a), (_, got_b)) = run(
        &pool,
        3.0,
        |t| 4.0 * queue(t, 400.0) + 10.0,
        |t| queue(t, 400.0) / 4.0,
    );
    assert_eq!(got_a, own_a - GUARD);
    assert!(got_b < got_a);
}

/// A window that stepped out (off the envelope, or alone again) and one whose last
/// reading is older than `fresh_for` lower nobody's reading; one that stepped out
/// starts its history over when it comes back.
#[test]
fn stale_windows_and_those_that_stepped_out_do_not_count() {
    let pool = SharedEnvelopes::default();
    let (mut wa, mut wb) = (pool.join(), pool.join());
    let start = origin();
    let mut now = start;
    for i in 0..3000u64 {
        let t = i as f64;
        now = start + ms(t);
        wa.read(now, ms(queue(t, 400.0) + 2.0), FRESH, GUARD);
        wb.read(now, ms(queue(t, 400.0)), FRESH, GUARD);
    }
    assert_eq!(pool.taking_part(), 2);
    let own = ms(queue(3000.0, 400.0) + 2.0);
    assert!(wa.read(now, own, FRESH, GUARD) < own, "shared before");
    // b's last reading is now older than `fresh_for`.
    let later = now + FRESH + Duration::from_millis(1);
    assert_eq!(wa.read(later, own, FRESH, GUARD), own);
    // b steps out, then reads again at once: its history is gone.
    wb.step_out();
    assert_eq!(pool.taking_part(), 1);
    wb.read(later, ms(1.0), FRESH, GUARD);
    assert_eq!(pool.taking_part(), 2);
    assert_eq!(wa.read(later, own, FRESH, GUARD), own);
}

/// At most [`MEMBERS`] windows take part; a window that leaves frees its place, and its
/// slot goes to the next to join.
#[test]
fn at_most_a_bounded_number_of_windows_take_part() {
    let pool = SharedEnvelopes::default();
    let now = origin();
    let mut windows: Vec<Membership> = (0..MEMBERS + 2).map(|_| pool.join()).collect();
    for w in &mut windows {
        assert_eq!(w.read(now, ms(3.0), FRESH, GUARD), ms(3.0));
    }
    assert_eq!(pool.taking_part(), MEMBERS);
    windows.truncate(MEMBERS - 1);
    assert_eq!(pool.taking_part(), MEMBERS - 1);
    let mut next = pool.join();
    next.read(now, ms(3.0), FRESH, GUARD);
    assert_eq!(pool.taking_part(), MEMBERS);
    assert_eq!(pool.lock().joined.len(), MEMBERS + 2, "slots are reused");
}
