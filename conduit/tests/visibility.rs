//! What the node tells `bauxite status` about a peer (round trip, handshake timing,
//! session age, the hub's label for the endpoint), and when it says a path went quiet
//! (the shell's cue to ask STUN again at once after a NAT rebinding), and which
//! controller paces bulk, on the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bauxite_conduit::Lane;
use bauxite_conduit::ip::build;
use bauxite_conduit::node::{
    BulkController, Event, NodeConfig, PeerStatus, QUIET_AFTER, TunVerdict,
};
use bauxite_conduit::path::Path;
use bauxite_conduit::path::auto::Mode;
use bauxite_conduit::peers::CandidateKind;
use bauxite_conduit::sim::{LinkConfig, SimNet};

/// The simulator's default one-way latency.
const LAT: Duration = Duration::from_millis(5);
/// Slack for "this many one-way trips": well under a millisecond of work.
const SLACK: Duration = Duration::from_millis(1);

fn udp(net: &SimNet, from: usize, id: u32) -> Vec<u8> {
    let mut payload = [0u8; 200];
    payload[..4].copy_from_slice(&id.to_be_bytes());
    let mut out = Vec::new();
    let (src, dst) = (net.vips[from].addr(), net.vips[1 - from].addr());
    build::ipv4_udp(src, dst, 40000, 9000, &payload, &mut out);
    out
}

fn status(net: &SimNet, i: usize) -> PeerStatus {
    let mut all = net.nodes[i].peer_status(net.now);
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn quiet_events(net: &mut SimNet, i: usize) -> Vec<Event> {
    std::iter::from_fn(|| net.nodes[i].poll_event())
        .filter(|e| matches!(e, Event::PathQuiet { .. }))
        .collect()
}

fn near(value: Option<Duration>, want: Duration) -> bool {
    value.is_some_and(|v| v + SLACK >= want && v <= want + SLACK)
}

#[test]
fn status_reports_round_trip_handshake_timing_session_age_and_endpoint_kind() {
    let mut net = SimNet::new(
        NodeConfig::default(),
        LinkConfig::default(),
        5,
        Instant::now(),
    );
    let before = status(&net, 0);
    assert!(!before.established);
    assert_eq!(
        (before.rtt, before.connect_time, before.connected_for),
        (None, None, None)
    );

    let t0 = net.now;
    let p = udp(&net, 0, 1);
    net.send_from(0, &p);
    net.run_for(Duration::from_secs(2));
    let dialler = status(&net, 0);
    assert!(dialler.established);
    // One initiation answered at once: the handshake took one round trip, the first
    // round-trip sample; the session is as old as the time since then.
    assert!(near(dialler.connect_time, 2 * LAT), "{dialler:?}");
    assert!(near(dialler.rtt, 2 * LAT), "{dialler:?}");
    let since = net.now.saturating_duration_since(t0 + 2 * LAT);
    assert!(near(dialler.connected_for, since), "{dialler:?}");
    assert_eq!(dialler.endpoint_kind, None, "the hub labelled nothing");
    // The answering side did not dial: no handshake time, but the acknowledged packets
    // it sent back give it a round trip too.
    let p = udp(&net, 1, 2);
    net.send_from(1, &p);
    net.run_for(Duration::from_secs(1));
    let answerer = status(&net, 1);
    assert!(answerer.established);
    assert_eq!(answerer.connect_time, None);
    assert!(answerer.rtt.is_some_and(|r| r >= 2 * LAT), "{answerer:?}");
    assert!(answerer.connected_for.is_some());

    // The hub labels node 1's address server-reflexive: status says so.
    let Path::Direct(addr) = dialler.path else {
        panic!("{dialler:?}")
    };
    let view = net
        .view_of(1)
        .with_candidate_kinds(vec![(addr, CandidateKind::ServerReflexive)]);
    let now = net.now;
    net.nodes[0].replace_peers(now, vec![view]);
    let labelled = status(&net, 0);
    assert_eq!(labelled.endpoint_kind, Some(CandidateKind::ServerReflexive));
    assert_eq!(CandidateKind::ServerReflexive.name(), "srflx");
    assert!(labelled.established, "a label changes no session");
}

#[test]
fn a_path_that_goes_quiet_is_reported_once_and_a_working_one_never() {
    let mut net = SimNet::new(
        NodeConfig::default(),
        LinkConfig::default(),
        9,
        Instant::now(),
    );
    for id in 0..20 {
        let p = udp(&net, id % 2, id as u32);
        net.send_from(id % 2, &p);
        net.run_for(Duration::from_millis(500));
    }
    assert_eq!(
        quiet_events(&mut net, 0),
        [],
        "acknowledged traffic is not quiet"
    );
    assert_eq!(quiet_events(&mut net, 1), []);

    // Node 1 moves (its NAT rebound): node 0's packets go to the old address and die.
    net.rebind(1, SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 40007)));
    let sent = net.now;
    let p = udp(&net, 0, 100);
    net.send_from(0, &p);
    net.run_until(sent + QUIET_AFTER - SLACK);
    assert_eq!(quiet_events(&mut net, 0), [], "not before QUIET_AFTER");
    net.run_until(sent + QUIET_AFTER + SLACK);
    let peer = net.nodes[1].peer_id();
    assert_eq!(quiet_events(&mut net, 0), [Event::PathQuiet { peer }]);
    // More unanswered packets: reported once per silence, not once per packet.
    for id in 101..105 {
        let p = udp(&net, 0, id);
        net.send_from(0, &p);
        net.run_for(Duration::from_millis(700));
    }
    assert_eq!(quiet_events(&mut net, 0), []);

    // Node 1 speaks from its new address: node 0 hears it, follows it, and its next
    // packets are acknowledged — nothing quiet any more.
    let p = udp(&net, 1, 200);
    net.send_from(1, &p);
    net.run_for(Duration::from_millis(100));
    for id in 201..205 {
        let p = udp(&net, 0, id);
        net.send_from(0, &p);
        net.run_for(Duration::from_millis(700));
    }
    assert_eq!(quiet_events(&mut net, 0), []);
    // A silence after that is a new one, reported again.
    net.rebind(1, SocketAddr::from((Ipv4Addr::new(198, 51, 100, 8), 40008)));
    let p = udp(&net, 0, 300);
    net.send_from(0, &p);
    net.run_for(QUIET_AFTER + SLACK);
    assert_eq!(quiet_events(&mut net, 0), [Event::PathQuiet { peer }]);
}

/// Keeps node 0's bulk lane to node 1 backlogged with full-size packets for `length`.
fn flood_bulk(net: &mut SimNet, length: Duration) {
    let mut packet = Vec::new();
    let (src, dst) = (net.vips[0].addr(), net.vips[1].addr());
    build::ipv4_udp(src, dst, 40000, 9000, &[0u8; 1322], &mut packet);
    let end = net.now + length;
    while net.now < end {
        while net.nodes[0].scheduler().len(Lane::Bulk) < 64 {
            assert_eq!(net.send_from(0, &packet), TunVerdict::Queued(Lane::Bulk));
        }
        // An idle net does not move its clock by itself.
        let next = net.now + Duration::from_millis(1);
        net.run_until(next);
        net.now = net.now.max(next);
    }
}

/// What `bauxite status` and the metrics endpoint read about bulk pacing, from a node
/// really sending bulk: the default `auto` starts on the adaptive window and, on a clean
/// link, hands bulk to the rate model a second into bulk, once; a node configured with
/// one controller says so and never hands over.
#[test]
fn the_node_reports_which_controller_paces_bulk_and_auto_s_hand_overs() {
    let mut net = SimNet::new(
        NodeConfig::default(),
        LinkConfig::default(),
        11,
        Instant::now(),
    );
    let before = net.nodes[0].metrics().bulk_pacing.snapshot().unwrap();
    assert_eq!(
        (before.controller, before.mode, before.handovers),
        (Some(BulkController::Auto), Some(Mode::Adaptive), 0)
    );
    flood_bulk(&mut net, Duration::from_millis(500));
    let early = net.nodes[0].metrics().bulk_pacing.snapshot().unwrap();
    assert_eq!((early.mode, early.handovers), (Some(Mode::Adaptive), 0));
    flood_bulk(&mut net, Duration::from_millis(2500));
    let after = net.nodes[0].metrics().bulk_pacing.snapshot().unwrap();
    assert_eq!((after.mode, after.handovers), (Some(Mode::Rate), 1));
    let text = net.nodes[0].metrics().render_prometheus("n0");
    assert!(
        text.contains("bauxite_bulk_pacing{node=\"n0\",controller=\"auto\",mode=\"rate\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bauxite_bulk_pacing_handovers_total{node=\"n0\",controller=\"auto\"} 1\n"),
        "{text}"
    );

    let config = NodeConfig {
        bulk_controller: BulkController::Adaptive,
        ..NodeConfig::default()
    };
    let mut net = SimNet::new(config, LinkConfig::default(), 11, Instant::now());
    flood_bulk(&mut net, Duration::from_millis(3000));
    let fixed = net.nodes[0].metrics().bulk_pacing.snapshot().unwrap();
    assert_eq!(
        (fixed.controller, fixed.mode, fixed.handovers),
        (Some(BulkController::Adaptive), Some(Mode::Adaptive), 0)
    );

    let unpaced = NodeConfig {
        bulk_target: None,
        ..NodeConfig::default()
    };
    let net = SimNet::new(unpaced, LinkConfig::default(), 11, Instant::now());
    let off = net.nodes[0].metrics().bulk_pacing.snapshot().unwrap();
    assert_eq!((off.controller_name(), off.mode), ("off", None));
}
