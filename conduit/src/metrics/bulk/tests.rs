use std::time::{Duration, Instant};

use super::*;
use crate::path::{AutoBulk, AutoConfig, CongestionStrategy, Feedback};

const MSS: usize = 1350;

/// Some origin for test time; only differences from it matter.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// One bulk packet a millisecond for `length`, each acknowledged after `round_trip(i)`.
fn drive(
    c: &mut AutoBulk,
    now: &mut Instant,
    length: Duration,
    round_trip: impl Fn(u32) -> Duration,
) {
    for i in 0..length.as_millis() as u32 {
        c.on_sent(*now, MSS);
        let rtt = round_trip(i);
        c.on_feedback(
            *now,
            Feedback {
                bytes: MSS,
                round_trip: rtt,
                one_way: Some(rtt / 2),
                bulk: true,
            },
        );
        *now += Duration::from_millis(1);
    }
}

fn line(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(series))
        .map(str::to_string)
}

#[test]
fn a_node_handed_its_own_strategy_reports_nothing() {
    let gauge = BulkPacingGauge::default();
    assert_eq!(gauge.snapshot(), None);
    let mut out = String::new();
    gauge.render_prometheus("n1", &mut out);
    assert!(out.is_empty(), "{out}");
}

#[test]
fn fixed_controllers_and_unpaced_bulk_report_their_own_mode() {
    let gauge = BulkPacingGauge::default();
    gauge.set(PacingSource::Fixed(BulkController::Rate));
    let rate = gauge.snapshot().unwrap();
    assert_eq!(
        (rate.controller_name(), rate.mode, rate.handovers),
        ("rate", Some(Mode::Rate), 0)
    );
    gauge.set(PacingSource::Fixed(BulkController::Adaptive));
    let adaptive = gauge.snapshot().unwrap();
    assert_eq!(
        (adaptive.controller_name(), adaptive.mode),
        ("adaptive", Some(Mode::Adaptive))
    );
    let mut out = String::new();
    gauge.render_prometheus("n1", &mut out);
    assert!(out.contains(
        "bauxite_bulk_pacing{node=\"n1\",controller=\"adaptive\",mode=\"adaptive\"} 1\n"
    ));
    assert!(
        out.contains("bauxite_bulk_pacing{node=\"n1\",controller=\"adaptive\",mode=\"rate\"} 0\n")
    );
    gauge.set(PacingSource::Off);
    let off = gauge.snapshot().unwrap();
    assert_eq!((off.controller_name(), off.mode), ("off", None));
    let mut out = String::new();
    gauge.render_prometheus("n1", &mut out);
    assert!(
        out.contains("controller=\"off\",mode=\"adaptive\"} 0\n"),
        "{out}"
    );
    assert!(
        out.contains("controller=\"off\",mode=\"rate\"} 0\n"),
        "{out}"
    );
}

/// The gauge follows a real `auto` group as its member's path goes quiet and then
/// jitters: the mode in force and the count of hand-overs, in the snapshot and the
/// Prometheus text alike.
#[test]
fn auto_reports_the_group_s_mode_and_its_hand_overs() {
    let group = AutoGroup::new();
    let gauge = BulkPacingGauge::default();
    gauge.set(PacingSource::Auto(group.clone()));
    let start = gauge.snapshot().unwrap();
    assert_eq!(
        (start.controller_name(), start.mode, start.handovers),
        ("auto", Some(Mode::Adaptive), 0)
    );
    let mut c = AutoBulk::in_group(
        AutoConfig::with_floor(Duration::from_micros(250), MSS),
        &group,
    );
    let mut now = origin();
    // A quiet path: the rate model takes over after a second of bulk.
    drive(&mut c, &mut now, Duration::from_millis(2500), |_| {
        Duration::from_millis(4)
    });
    assert_eq!(c.mode(), Mode::Rate);
    let quiet = gauge.snapshot().unwrap();
    assert_eq!((quiet.mode, quiet.handovers), (Some(Mode::Rate), 1));
    let mut out = String::new();
    gauge.render_prometheus("n1", &mut out);
    assert_eq!(
        line(&out, "bauxite_bulk_pacing{").as_deref(),
        Some("bauxite_bulk_pacing{node=\"n1\",controller=\"auto\",mode=\"adaptive\"} 0")
    );
    assert!(
        out.contains("bauxite_bulk_pacing{node=\"n1\",controller=\"auto\",mode=\"rate\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("bauxite_bulk_pacing_handovers_total{node=\"n1\",controller=\"auto\"} 1\n"),
        "{out}"
    );
    // It jitters by 20 ms: the window takes back over.
    drive(&mut c, &mut now, Duration::from_millis(500), |i| {
        Duration::from_millis(if i % 2 == 0 { 4 } else { 24 })
    });
    assert_eq!(c.mode(), Mode::Adaptive);
    let noisy = gauge.snapshot().unwrap();
    assert_eq!((noisy.mode, noisy.handovers), (Some(Mode::Adaptive), 2));
    let mut out = String::new();
    gauge.render_prometheus("n1", &mut out);
    assert!(
        out.contains("bauxite_bulk_pacing_handovers_total{node=\"n1\",controller=\"auto\"} 2\n"),
        "{out}"
    );
    // The count outlives the member (a peer that left): it is the node's.
    drop(c);
    assert_eq!(gauge.snapshot().unwrap().handovers, 2);
}
