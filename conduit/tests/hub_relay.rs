//! The hub relay on the simulator: a site whose UDP is blocked reaches its peer through
//! the hub's data channel; when the block lifts, both ends move back to the direct path by
//! themselves, without a new handshake and without losing a packet of a Critical-lane
//! stream; a direct session whose UDP breaks mid-stream falls back to the hub, losing at
//! most what was sent in the detection window.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::time::{Duration, Instant};

use bauxite_conduit::node::{DEFAULT_HUB_RELAY_AFTER, Event, HUB_PROBE_INTERVAL, NodeConfig};
use bauxite_conduit::path::Path;
use bauxite_conduit::sim::{HUB_DELAY, LinkConfig, SimNet};

#[path = "support/critical_stream.rs"]
mod critical_stream;

use critical_stream::{TICK, arrivals, events, path, stream_until};

fn config() -> NodeConfig {
    NodeConfig {
        hub_relay_after: Some(DEFAULT_HUB_RELAY_AFTER),
        ..NodeConfig::default()
    }
}

#[test]
fn blocked_udp_goes_through_the_hub_and_moves_back_to_direct_without_loss() {
    let start = Instant::now();
    let mut net = SimNet::new(config(), LinkConfig::default(), 11, start);
    net.udp_blocked[0] = true;
    let mut next = 0u32;

    // Blocked: the handshake goes unanswered on UDP, then runs through the hub.
    let up = stream_until(&mut net, &mut next, Duration::from_secs(10), |n| {
        let (a, b) = (n.nodes[0].peer_id(), n.nodes[1].peer_id());
        n.nodes[0].is_connected(b, n.now) && n.nodes[1].is_connected(a, n.now)
    });
    assert!(up, "the session comes up through the hub");
    eprintln!("session up through the hub after {:?}", net.now - start);
    assert!(
        net.now - start <= DEFAULT_HUB_RELAY_AFTER + Duration::from_secs(1),
        "on the hub within the detection time ({:?})",
        net.now - start
    );
    assert_eq!(path(&net, 0), Path::Hub);
    assert_eq!(path(&net, 1), Path::Hub, "answers go back through the hub");
    let first_on_hub = next;
    // A while on the hub: direct probes keep failing, nothing moves.
    stream_until(&mut net, &mut next, Duration::from_secs(5), |_| false);
    assert_eq!((path(&net, 0), path(&net, 1)), (Path::Hub, Path::Hub));
    assert!(net.stats.hub_relayed > 0);
    assert!(net.stats.udp_blocked > 0, "probes kept trying UDP");
    let handshakes = net.nodes[0]
        .metrics()
        .handshakes_completed
        .load(std::sync::atomic::Ordering::Relaxed)
        + net.nodes[1]
            .metrics()
            .handshakes_completed
            .load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..2 {
        assert!(
            events(&mut net, i).contains(&Event::HubRelay {
                peer: net.nodes[1 - i].peer_id(),
                active: true
            }),
            "node {i} reports the hub relay"
        );
    }

    // The block lifts: both move to the direct path within a few probe intervals.
    net.udp_blocked[0] = false;
    let lifted = net.now;
    let direct = stream_until(&mut net, &mut next, Duration::from_secs(5), |n| {
        matches!(path(n, 0), Path::Direct(_)) && matches!(path(n, 1), Path::Direct(_))
    });
    assert!(direct, "both ends move back to direct");
    eprintln!("upgrade to direct after {:?}", net.now - lifted);
    assert!(
        net.now - lifted <= HUB_PROBE_INTERVAL * 2 + HUB_DELAY * 4,
        "upgrade took {:?}",
        net.now - lifted
    );
    // Drain what is in flight on both paths.
    let last = next;
    stream_until(&mut net, &mut next, Duration::from_secs(1), |_| false);
    net.run_for(Duration::from_secs(1));
    assert!(matches!(path(&net, 0), Path::Direct(_)));
    assert!(matches!(path(&net, 1), Path::Direct(_)));
    for i in 0..2 {
        assert!(
            events(&mut net, i).contains(&Event::HubRelay {
                peer: net.nodes[1 - i].peer_id(),
                active: false
            }),
            "node {i} reports leaving the hub"
        );
    }
    let after = net.nodes[0]
        .metrics()
        .handshakes_completed
        .load(std::sync::atomic::Ordering::Relaxed)
        + net.nodes[1]
            .metrics()
            .handshakes_completed
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        after, handshakes,
        "no new handshake: the session moved as is"
    );

    // Every packet sent from the moment the hub carried the session, across the switch,
    // arrived exactly once at both ends (the replay window drops nothing it should keep
    // and lets no duplicate through).
    for to in 0..2 {
        let seen = arrivals(&net, to);
        let missing: Vec<u32> = (first_on_hub..last)
            .filter(|id| !seen.contains_key(id))
            .collect();
        assert!(missing.is_empty(), "node {to} missed {missing:?}");
        assert!(seen.values().all(|&n| n == 1), "node {to} got duplicates");
    }
}

#[test]
fn a_direct_session_whose_udp_breaks_falls_back_to_the_hub_losing_only_the_window() {
    let start = Instant::now();
    let mut net = SimNet::new(config(), LinkConfig::default(), 12, start);
    let mut next = 0u32;
    let direct = stream_until(&mut net, &mut next, Duration::from_secs(2), |n| {
        matches!(path(n, 0), Path::Direct(_)) && !n.delivered[1].is_empty()
    });
    assert!(direct);
    stream_until(&mut net, &mut next, Duration::from_millis(500), |_| false);

    net.udp_blocked[1] = true;
    let broke_at = next;
    let on_hub = stream_until(&mut net, &mut next, Duration::from_secs(6), |n| {
        path(n, 0) == Path::Hub && path(n, 1) == Path::Hub
    });
    assert!(on_hub, "both fall back to the hub");
    let switched_at = next;
    stream_until(&mut net, &mut next, Duration::from_secs(2), |_| false);
    let last = next;
    net.run_for(Duration::from_secs(1));

    // Lost: at most what went out on UDP between the break and the switch (the
    // detection window, `hub_relay_after` plus a tick); everything after arrived.
    let window =
        u32::try_from((DEFAULT_HUB_RELAY_AFTER + TICK * 2).as_millis() / TICK.as_millis()).unwrap();
    for to in 0..2 {
        let seen = arrivals(&net, to);
        let lost: Vec<u32> = (0..last).filter(|id| !seen.contains_key(id)).collect();
        assert!(
            lost.iter().all(|id| (broke_at..switched_at).contains(id)),
            "node {to} lost packets outside the window: {lost:?}"
        );
        eprintln!("node {to}: {} lost in the detection window", lost.len());
        assert!(lost.len() as u32 <= window, "node {to} lost {}", lost.len());
        assert!(
            (switched_at..last).all(|id| seen.contains_key(&id)),
            "nothing lost once on the hub"
        );
    }
}

#[test]
fn without_a_hub_relay_nothing_changes() {
    let start = Instant::now();
    let mut net = SimNet::new(NodeConfig::default(), LinkConfig::default(), 13, start);
    net.udp_blocked[0] = true;
    let mut next = 0u32;
    let up = stream_until(&mut net, &mut next, Duration::from_secs(8), |n| {
        n.nodes[0].is_connected(n.nodes[1].peer_id(), n.now)
    });
    assert!(!up, "no UDP, no hub relay: no session");
    assert_eq!(net.stats.hub_relayed, 0);
    assert!(!matches!(path(&net, 0), Path::Hub));
}
