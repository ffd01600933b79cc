//! The link model, driven by a virtual clock and a seeded RNG: every figure below is a
//! property of the model, checked over many datagrams, and replays exactly.

#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::time::{Duration, Instant};

use bauxite_netem::{Drop, GilbertElliott, Impairments, Link, Profile, Verdict, trace};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

#[test]
fn rate_limit_spaces_departures_by_serialisation_time() {
    let t0 = Instant::now();
    let imp = Impairments {
        rate_bps: Some(8_000_000),
        delay: Duration::from_millis(10),
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(1);
    let mut last = None;
    for _ in 0..100 {
        // 1000 bytes at 8 Mbit/s: 1 ms each, all offered at once.
        let Verdict::Deliver(d) = link.offer(t0, 1000, &imp, &mut r) else {
            panic!("nothing should drop without a buffer limit or loss");
        };
        assert_eq!(d.at, d.departs + Duration::from_millis(10));
        if let Some(prev) = last {
            assert_eq!(d.departs - prev, Duration::from_millis(1));
        }
        last = Some(d.departs);
    }
    assert_eq!(link.free_at() - t0, Duration::from_millis(100));
}

#[test]
fn buffer_bounds_the_queueing_delay_and_drops_the_tail() {
    let t0 = Instant::now();
    let imp = Impairments {
        rate_bps: Some(1_000_000),
        buffer_bytes: Some(10_000),
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(2);
    let (mut sent, mut dropped) = (0, 0);
    // Offered at 10x the rate for a second.
    for i in 0..1000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        match link.offer(now, 1250, &imp, &mut r) {
            Verdict::Deliver(d) => {
                sent += 1;
                // Queueing + own serialisation never exceeds what the buffer holds.
                assert!(d.departs - now <= imp.serialization(10_000));
            }
            Verdict::Drop(Drop::Buffer) => dropped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The rate (100 datagrams per second of 1250 bytes) plus the buffer's 8.
    assert!((100..=110).contains(&sent), "{sent} sent");
    assert_eq!(sent + dropped, 1000);
}

#[test]
fn jitter_stays_within_bounds_and_never_reorders_by_default() {
    let t0 = Instant::now();
    let imp = Impairments {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(3);
    let mut prev = t0;
    let mut spread = (Duration::MAX, Duration::ZERO);
    // Spaced wider than the jitter window, so the in-order rule never binds and the
    // delays span it; closer spacing is checked by the property test below.
    for i in 0..10_000u64 {
        let now = t0 + Duration::from_millis(11 * i);
        let Verdict::Deliver(d) = link.offer(now, 100, &imp, &mut r) else {
            panic!("no loss configured");
        };
        let delay = d.at - now;
        assert!(delay >= Duration::from_millis(25), "{delay:?}");
        // A held-back predecessor can add to the upper bound by at most its own lateness.
        assert!(delay <= Duration::from_millis(35), "{delay:?}");
        assert!(d.at >= prev, "reordered");
        prev = d.at;
        spread = (spread.0.min(delay), spread.1.max(delay));
    }
    assert!(spread.0 < Duration::from_millis(26) && spread.1 > Duration::from_millis(34));
}

#[test]
fn jitter_may_reorder_when_asked() {
    let t0 = Instant::now();
    let imp = Impairments {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(5),
        jitter_reorders: true,
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(4);
    let mut prev = t0;
    let mut reordered = 0;
    for i in 0..1000u64 {
        let now = t0 + Duration::from_micros(100 * i);
        if let Verdict::Deliver(d) = link.offer(now, 100, &imp, &mut r) {
            reordered += usize::from(d.at < prev);
            prev = d.at;
        }
    }
    assert!(reordered > 100, "{reordered}");
}

#[test]
fn gilbert_elliott_gives_the_configured_mean_in_bursts() {
    let t0 = Instant::now();
    let ge = GilbertElliott::bursty(0.01, 3.0);
    assert!((ge.mean_loss() - 0.01).abs() < 1e-12);
    let imp = Impairments {
        loss: ge,
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(5);
    let n = 400_000;
    let (mut lost, mut bursts, mut in_burst) = (0u32, 0u32, false);
    for _ in 0..n {
        let l = matches!(link.offer(t0, 100, &imp, &mut r), Verdict::Drop(Drop::Loss));
        lost += u32::from(l);
        bursts += u32::from(l && !in_burst);
        in_burst = l;
    }
    // Bursts make losses correlated: the standard error of the mean over n datagrams is
    // sqrt(p(1-p)/n) times sqrt((1+rho)/(1-rho)) with rho = 1 - to_good - to_bad ~ 0.66,
    // about 3.2e-4 here; 4 sigma is 1.3e-3.
    let mean = f64::from(lost) / f64::from(n);
    assert!((mean - 0.01).abs() < 0.0013, "mean loss {mean}");
    let burst = f64::from(lost) / f64::from(bursts);
    assert!((2.6..3.4).contains(&burst), "mean burst {burst}");
}

#[test]
fn blackouts_and_outage_steps_drop_everything() {
    let t0 = Instant::now();
    let mut profile = Profile::fixed(Impairments::default());
    profile.blackouts = vec![(Duration::from_secs(1), Duration::from_millis(500))];
    let mut link = Link::new(t0);
    let mut r = rng(6);
    for ms in (0..3000u64).step_by(10) {
        let elapsed = Duration::from_millis(ms);
        let v = link.offer(t0 + elapsed, 100, &profile.at(elapsed), &mut r);
        let dark = (1000..1500).contains(&ms);
        assert_eq!(
            matches!(v, Verdict::Drop(Drop::Blackout)),
            dark,
            "at {ms} ms"
        );
    }
    let outage = trace::parse("0 1000 5\n100 0 5\n200 1000 5\n", Impairments::default()).unwrap();
    assert!(outage.at(Duration::from_millis(150)).blackout);
    assert!(!outage.at(Duration::from_millis(250)).blackout);
}

#[test]
fn mtu_drops_larger_datagrams_only() {
    let t0 = Instant::now();
    let imp = Impairments {
        mtu: Some(1500),
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(7);
    assert!(matches!(
        link.offer(t0, 1500, &imp, &mut r),
        Verdict::Deliver(_)
    ));
    assert_eq!(link.offer(t0, 1501, &imp, &mut r), Verdict::Drop(Drop::Mtu));
}

#[test]
fn duplication_and_corruption_follow_their_probabilities() {
    let t0 = Instant::now();
    let imp = Impairments {
        duplicate: 0.1,
        corrupt: 0.05,
        ..Impairments::default()
    };
    let mut link = Link::new(t0);
    let mut r = rng(8);
    let (mut dups, mut flips) = (0u32, 0u32);
    let n = 20_000u32;
    for _ in 0..n {
        let Verdict::Deliver(d) = link.offer(t0, 64, &imp, &mut r) else {
            panic!("no loss configured");
        };
        dups += u32::from(d.duplicate_at.is_some_and(|at| at > d.at));
        if let Some(f) = d.flip {
            assert!(f.byte < 64 && f.mask.count_ones() == 1);
            let mut buf = [0u8; 64];
            f.apply(&mut buf);
            assert_eq!(buf.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
            flips += 1;
        }
    }
    // Binomial: 4 standard deviations.
    assert!((f64::from(dups) - 2000.0).abs() < 4.0 * 42.5, "{dups}");
    assert!((f64::from(flips) - 1000.0).abs() < 4.0 * 30.9, "{flips}");
}

#[test]
fn a_run_is_a_pure_function_of_its_seed() {
    let t0 = Instant::now();
    let profile = Profile::lte();
    let run = |seed| {
        let mut link = Link::new(t0);
        let mut r = rng(seed);
        (0..5000u64)
            .map(|i| {
                let e = Duration::from_micros(700 * i);
                link.offer(t0 + e, 1200, &profile.at(e), &mut r)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn presets_follow_their_schedules() {
    let lte = Profile::lte();
    for s in 0..12u64 {
        let imp = lte.at(Duration::from_millis(s * 1000 + 500));
        let mbit = imp.rate_bps.unwrap() / 1_000_000;
        assert!((5..=30).contains(&mbit));
        assert!((20..=40).contains(&imp.delay.as_millis()));
        assert_eq!(imp.jitter, Duration::from_millis(5));
    }
    // The schedule repeats every 6 s.
    assert_eq!(
        lte.at(Duration::from_millis(1500)),
        lte.at(Duration::from_millis(7500))
    );
    let wifi = Profile::wifi();
    assert!(wifi.at(Duration::from_millis(19_950)).blackout);
    assert!(!wifi.at(Duration::from_millis(19_850)).blackout);
    assert!(Profile::named("dialup").is_err());
}

/// The literal reading of issue 14's LTE figures: the same rates, each second, and the
/// same ranges, but the 5 Mbit/s second is not the 40 ms one.
#[test]
fn the_literal_lte_profile_decouples_delay_from_rate() {
    let (lte, literal) = (Profile::lte(), Profile::named("lte-literal").unwrap());
    let mut delays = std::collections::BTreeSet::new();
    for ms in (250..6000).step_by(500) {
        let (a, b) = (
            lte.at(Duration::from_millis(ms)),
            literal.at(Duration::from_millis(ms)),
        );
        assert_eq!(a.rate_bps, b.rate_bps, "at {ms} ms");
        assert_eq!(
            (a.jitter, a.loss, a.buffer_bytes),
            (b.jitter, b.loss, b.buffer_bytes)
        );
        assert!((20..=40).contains(&b.delay.as_millis()));
        delays.insert(b.delay.as_millis());
    }
    assert_eq!(delays.into_iter().collect::<Vec<_>>(), [20, 25, 30, 40]);
    let slowest = literal.at(Duration::from_millis(3500));
    assert_eq!(slowest.rate_bps, Some(5_000_000));
    assert_eq!(slowest.delay, Duration::from_millis(25));
}

proptest! {
    #[test]
    fn trace_format_round_trips(
        raw in proptest::collection::vec((1u64..10_000, 0u64..10_000_000, 0u64..5_000), 1..50),
        period in proptest::option::of(1u64..10_000),
    ) {
        let mut at = 0;
        let mut text = String::new();
        for (gap, kbit, delay) in &raw {
            text.push_str(&format!("{at} {kbit} {delay} # comment\n\n"));
            at += gap;
        }
        if let Some(p) = period {
            text.push_str(&format!("period {}\n", at + p));
        }
        let profile = trace::parse(&text, Impairments::default()).unwrap();
        prop_assert_eq!(profile.steps.len(), raw.len());
        let again = trace::parse(&trace::format(&profile), Impairments::default()).unwrap();
        prop_assert_eq!(again, profile);
    }

    #[test]
    fn trace_parser_never_panics(text in "\\PC{0,400}") {
        let _ = trace::parse(&text, Impairments::default());
    }

    #[test]
    fn departures_never_go_back_in_time(
        lens in proptest::collection::vec(1usize..1500, 1..200),
        seed in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let profile = Profile::wifi();
        let mut link = Link::new(t0);
        let mut r = rng(seed);
        let mut prev = (t0, t0);
        for (i, len) in lens.into_iter().enumerate() {
            let e = Duration::from_micros(50 * i as u64);
            if let Verdict::Deliver(d) = link.offer(t0 + e, len, &profile.at(e), &mut r) {
                prop_assert!(d.departs >= prev.0 && d.at >= prev.1 && d.at >= d.departs);
                prev = (d.departs, d.at);
            }
        }
    }
}

/// The capacity over one period is the presets' mean rate times the period (Wi-Fi 49.5
/// Mbit/s counting its 100 ms outage, LTE 17.5), wherever the interval starts; a part of
/// a period counts its own steps; a blackout carries nothing; an unlimited link has none.
#[test]
fn capacity_integrates_the_schedule_over_any_interval() {
    let s = Duration::from_secs_f64;
    let close = |got: Option<f64>, want: f64| {
        let got = got.expect("a limited rate");
        assert!((got - want).abs() < 1.0, "{got} bits, want {want}");
    };
    let wifi = Profile::wifi();
    for start in [0.0, 0.25, 1.7, 9.95, 23.4] {
        close(wifi.capacity_bits(s(start), s(start + 10.0)), 495e6);
    }
    // 1.5-2.0 s at 20 Mbit/s, then 50: 10 + 25 Mbit.
    close(wifi.capacity_bits(s(1.5), s(2.5)), 35e6);
    // The outage at 9.9-10 s: only 9.8-9.9 carries anything.
    close(wifi.capacity_bits(s(9.8), s(10.0)), 5e6);
    let lte = Profile::lte();
    close(lte.capacity_bits(s(3.3), s(9.3)), 105e6);
    close(lte.capacity_bits(s(12.0), s(24.0)), 210e6);
    assert_eq!(
        Profile::fixed(Impairments::default()).capacity_bits(s(0.0), s(1.0)),
        None
    );
    close(
        Profile::fixed(Impairments {
            rate_bps: Some(8_000_000),
            ..Impairments::default()
        })
        .capacity_bits(s(0.0), s(2.0)),
        16e6,
    );
}

proptest! {
    /// Capacity adds up over adjacent intervals and never exceeds the fastest step's
    /// rate times the length.
    #[test]
    fn capacity_is_additive_and_bounded(a in 0u64..40_000, b in 0u64..40_000, c in 0u64..40_000, wifi in any::<bool>()) {
        let mut t = [a, b, c];
        t.sort_unstable();
        let ms = Duration::from_millis;
        let profile = if wifi { Profile::wifi() } else { Profile::lte() };
        let whole = profile.capacity_bits(ms(t[0]), ms(t[2])).unwrap();
        let parts = profile.capacity_bits(ms(t[0]), ms(t[1])).unwrap()
            + profile.capacity_bits(ms(t[1]), ms(t[2])).unwrap();
        prop_assert!((whole - parts).abs() < 1.0, "{whole} against {parts}");
        prop_assert!(whole <= 80e6 * (t[2] - t[0]) as f64 / 1e3 + 1.0);
    }
}
