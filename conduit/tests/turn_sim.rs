//! TURN on the simulator: the rung between direct and the hub. For every pair of NAT
//! boxes, with a TURN server giving both nodes an allocation, the session comes up, and
//! it runs direct exactly when the oracle says a direct path exists, through TURN
//! otherwise (TURN is never kept when direct works); a session on TURN moves to a direct
//! path as soon as one opens, without a new handshake and without losing a packet of a
//! Critical-lane stream; and when TURN does not answer either, the hub takes over.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bauxite_conduit::node::{
    DEFAULT_HUB_RELAY_AFTER, DEFAULT_TURN_AFTER, Event, HUB_PROBE_INTERVAL, NodeConfig,
};
use bauxite_conduit::path::Path;
use bauxite_conduit::sim::{
    Filtering, LinkConfig, Mapping, NatBehaviour, NodeSpec, SimNet, direct_path_expected,
};

#[path = "support/critical_stream.rs"]
mod critical_stream;

use critical_stream::{arrivals, events, path, stream_until};

const SYMMETRIC: NatBehaviour = NatBehaviour {
    mapping: Mapping::AddressAndPortDependent,
    filtering: Filtering::AddressAndPortDependent,
};

fn connected(net: &SimNet) -> bool {
    let (a, b) = (net.nodes[0].peer_id(), net.nodes[1].peer_id());
    net.nodes[0].is_connected(b, net.now) && net.nodes[1].is_connected(a, net.now)
}

fn handshakes(net: &SimNet) -> u64 {
    net.nodes
        .iter()
        .map(|n| n.metrics().handshakes_completed.load(Ordering::Relaxed))
        .sum()
}

fn spec(nat: Option<NatBehaviour>) -> NodeSpec {
    nat.map_or_else(NodeSpec::public, NodeSpec::behind)
}

fn turn_net(a: Option<NatBehaviour>, b: Option<NatBehaviour>, seed: u64) -> SimNet {
    let mut net = SimNet::build(
        NodeConfig::default(),
        LinkConfig::default(),
        seed,
        Instant::now(),
        [spec(a), spec(b)],
    );
    net.enable_turn();
    net
}

#[test]
fn every_pair_of_nat_boxes_connects_direct_when_the_oracle_says_so_and_through_turn_otherwise() {
    let kinds: Vec<Option<NatBehaviour>> = std::iter::once(None)
        .chain(NatBehaviour::all().map(Some))
        .collect();
    let mut wrong = Vec::new();
    let mut via_turn = 0;
    for (n, &a) in kinds.iter().enumerate() {
        for (m, &b) in kinds.iter().enumerate() {
            let mut net = turn_net(a, b, (n * kinds.len() + m) as u64);
            let mut next = 0;
            // Up, and settled: a direct path that opens late has had probe rounds to win.
            let up = stream_until(&mut net, &mut next, Duration::from_secs(4), connected);
            stream_until(&mut net, &mut next, HUB_PROBE_INTERVAL * 4, |_| false);
            let first_after = next;
            stream_until(&mut net, &mut next, Duration::from_millis(500), |_| false);
            let direct = direct_path_expected(a, b);
            let kinds_now = (path(&net, 0).kind(), path(&net, 1).kind());
            let want = if direct { "direct" } else { "turn" };
            if !up || kinds_now != (want, want) {
                wrong.push(format!(
                    "{a:?} / {b:?}: up {up}, paths {kinds_now:?}, want {want}"
                ));
                continue;
            }
            via_turn += usize::from(!direct);
            net.run_for(Duration::from_millis(500));
            for to in 0..2 {
                let seen = arrivals(&net, to);
                assert!(
                    (first_after..next - 1).all(|id| seen.contains_key(&id)),
                    "{a:?} / {b:?}: node {to} misses packets on the settled path"
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} pairs wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        via_turn > 0,
        "some pairs have no direct path and ran through TURN"
    );
}

#[test]
fn symmetric_nat_on_both_sides_goes_through_turn_with_a_ping_each_way() {
    let start = Instant::now();
    let mut net = turn_net(Some(SYMMETRIC), Some(SYMMETRIC), 7);
    assert!(!direct_path_expected(Some(SYMMETRIC), Some(SYMMETRIC)));
    let mut next = 0;
    let up = stream_until(&mut net, &mut next, Duration::from_secs(5), |n| {
        connected(n) && !n.delivered[0].is_empty() && !n.delivered[1].is_empty()
    });
    assert!(up, "the session comes up through TURN");
    let took = net.now - start;
    eprintln!("symmetric/symmetric up through TURN after {took:?}");
    assert!(
        took <= DEFAULT_TURN_AFTER + Duration::from_secs(1),
        "TURN is chosen within its detection time ({took:?})"
    );
    for i in 0..2 {
        assert_eq!(
            path(&net, i).kind(),
            "turn",
            "node {i}: {:?}",
            path(&net, i)
        );
        assert!(
            events(&mut net, i).contains(&Event::TurnRelay {
                peer: net.nodes[1 - i].peer_id(),
                active: true
            }),
            "node {i} reports TURN"
        );
    }
    assert!(net.stats.turn_relayed > 0);
    assert!(
        net.stats.nat_dropped > 0,
        "the boxes refused the direct attempts"
    );
}

#[test]
fn a_session_on_turn_moves_to_direct_when_it_opens_without_handshake_or_loss() {
    let start = Instant::now();
    let mut net = turn_net(None, None, 21);
    net.direct_blocked = true;
    let mut next = 0;
    let up = stream_until(&mut net, &mut next, Duration::from_secs(5), connected);
    assert!(up, "up through TURN");
    assert!(net.now - start <= DEFAULT_TURN_AFTER + Duration::from_secs(1));
    // A while on TURN: direct probes keep failing, nothing moves.
    stream_until(&mut net, &mut next, Duration::from_secs(3), |_| false);
    assert_eq!(
        (path(&net, 0).kind(), path(&net, 1).kind()),
        ("turn", "turn")
    );
    let first_on_turn = next;
    let before = handshakes(&net);

    net.direct_blocked = false;
    let lifted = net.now;
    let direct = stream_until(&mut net, &mut next, Duration::from_secs(5), |n| {
        matches!(path(n, 0), Path::Direct(_)) && matches!(path(n, 1), Path::Direct(_))
    });
    assert!(direct, "both ends move to direct");
    eprintln!("upgrade from TURN to direct after {:?}", net.now - lifted);
    assert!(net.now - lifted <= HUB_PROBE_INTERVAL * 2 + Duration::from_millis(200));
    let last = next;
    stream_until(&mut net, &mut next, Duration::from_secs(1), |_| false);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        handshakes(&net),
        before,
        "no new handshake: the session moved as is"
    );
    for i in 0..2 {
        assert!(matches!(path(&net, i), Path::Direct(_)));
        assert!(events(&mut net, i).contains(&Event::TurnRelay {
            peer: net.nodes[1 - i].peer_id(),
            active: false
        }));
    }
    for to in 0..2 {
        let seen = arrivals(&net, to);
        let missing: Vec<u32> = (first_on_turn..last)
            .filter(|id| !seen.contains_key(id))
            .collect();
        assert!(missing.is_empty(), "node {to} missed {missing:?}");
        assert!(seen.values().all(|&n| n == 1), "node {to} got duplicates");
    }
}

#[test]
fn when_turn_does_not_answer_either_the_hub_takes_over() {
    let config = NodeConfig {
        hub_relay_after: Some(DEFAULT_HUB_RELAY_AFTER),
        ..NodeConfig::default()
    };
    let mut net = SimNet::new(config, LinkConfig::default(), 5, Instant::now());
    net.enable_turn();
    net.udp_blocked[0] = true;
    let mut next = 0;
    let on_turn = stream_until(&mut net, &mut next, Duration::from_secs(3), |n| {
        path(n, 0).kind() == "turn"
    });
    assert!(on_turn, "TURN is tried first");
    let up = stream_until(&mut net, &mut next, Duration::from_secs(10), |n| {
        connected(n) && path(n, 0) == Path::Hub && path(n, 1) == Path::Hub
    });
    assert!(up, "then the hub carries the session");
    assert!(net.stats.hub_relayed > 0);
}
