//! ICE bookkeeping on the simulator: the node's half of ICE (roles, signals, what an
//! agent's findings do to the path, the relay ladder after a failed agent, restarts,
//! per-stage timings), driven deterministically. A signaling relay in the test plays the
//! hub (each signal arrives [`SIGNAL_DELAY`] after it was sent) and a model plays the
//! agents ([`ice_model`]): it trickles one candidate per agent and, when told, reports
//! what real checks would find — a pair between the peers' addresses when the NAT oracle
//! says a direct path exists, failure otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::time::{Duration, Instant};

use bauxite_conduit::identity::Identity;
use bauxite_conduit::node::{
    DEFAULT_TURN_AFTER, Event, HUB_PROBE_INTERVAL, ICE_MAX_RESTARTS, ICE_RESTART_BACKOFF,
    IceAction, IcePhase, IceSignal, NodeConfig, SignedSignal,
};
use bauxite_conduit::path::Path;
use bauxite_conduit::peers::{PeerInfo, PeerRegistry};
use bauxite_conduit::sim::{Mapping, NatBehaviour, SimNet, direct_path_expected};
use bauxite_conduit::{BauxiteNode, VirtualIp};

#[path = "support/critical_stream.rs"]
mod critical_stream;
#[path = "support/ice_model.rs"]
mod ice_model;

use critical_stream::{arrivals, events, path, stream_until};
use ice_model::{CHECKS, Ice, SIGNAL_DELAY, ice_net, ice_net_knowing, lower, report_checks};

#[test]
fn the_lower_id_invites_the_other_offers_and_answers_and_both_trickle() {
    let (net, ice) = ice_net(None, None, NodeConfig::default(), false);
    let (lo, hi) = (lower(&net), 1 - lower(&net));
    // The other side's BYE (sent as it learned of the inviter) found the INVITE still
    // unanswered: the same INVITE went again, and its copy was ignored (one OFFER).
    assert_eq!(ice.count(hi, |s| matches!(s, IceSignal::Bye)), 1);
    assert_eq!(ice.count(lo, |s| matches!(s, IceSignal::Invite { .. })), 2);
    assert_eq!(ice.count(hi, |s| matches!(s, IceSignal::Invite { .. })), 0);
    assert_eq!(ice.count(hi, |s| matches!(s, IceSignal::Offer { .. })), 1);
    assert_eq!(ice.count(hi, |s| matches!(s, IceSignal::Answer)), 1);
    assert_eq!(
        ice.count(lo, |s| matches!(
            s,
            IceSignal::Offer { .. } | IceSignal::Answer
        )),
        0
    );
    for i in [lo, hi] {
        assert_eq!(ice.count(i, |s| matches!(s, IceSignal::Candidate(_))), 1);
        assert_eq!(
            ice.remote_candidates[i], 1,
            "node {i} got the other's candidate"
        );
        assert!(ice.started[i].is_some(), "node {i} started its checks");
    }
    assert_eq!(ice.controlling[lo], Some(true));
    assert_eq!(ice.controlling[hi], Some(false));
    assert!(ice.refused.is_empty(), "{:?}", ice.refused);
}

#[test]
fn every_pair_of_nat_boxes_runs_on_turn_while_checks_run_then_direct_when_the_oracle_says_so() {
    let kinds: Vec<Option<NatBehaviour>> = std::iter::once(None)
        .chain(NatBehaviour::all().map(Some))
        .collect();
    let mut wrong = Vec::new();
    let ei = |n: Option<NatBehaviour>| n.is_none_or(|n| n.mapping == Mapping::EndpointIndependent);
    for &a in &kinds {
        for &b in &kinds {
            // Where a direct path needs addresses only real checks discover (both sides
            // NATed, one mapping per destination), the model has no pair to report: the
            // NAT lab covers those with real agents.
            if direct_path_expected(a, b) && !(a.is_none() || b.is_none() || (ei(a) && ei(b))) {
                continue;
            }
            let (mut net, mut ice) = ice_net(a, b, NodeConfig::default(), true);
            let both = |net: &SimNet| {
                let (x, y) = (net.nodes[0].peer_id(), net.nodes[1].peer_id());
                net.nodes[0].is_connected(y, net.now) && net.nodes[1].is_connected(x, net.now)
            };
            let mut next = 0;
            // Up on TURN well before `turn_after` (1 s) could have moved anything there.
            let up = stream_until(&mut net, &mut next, Duration::from_millis(300), both);
            let early = (path(&net, 0).kind(), path(&net, 1).kind());
            let direct = direct_path_expected(a, b);
            report_checks(&mut net, direct, [a, b]);
            ice.settle(&mut net);
            let switched_at = next;
            stream_until(&mut net, &mut next, Duration::from_secs(2), |_| false);
            let want = if direct { "direct" } else { "turn" };
            let now = (path(&net, 0).kind(), path(&net, 1).kind());
            // The move off TURN is reported (once per side at most).
            let peer1 = net.nodes[1].peer_id();
            let left_turn = events(&mut net, 0)
                .iter()
                .filter(|e| {
                    **e == Event::TurnRelay {
                        peer: peer1,
                        active: false,
                    }
                })
                .count();
            // Exactly once where the agent selected the pair; a side that learned the
            // peer's address from its packets instead may bounce while TURN-relayed
            // packets are still arriving (the relay ladder's own rule).
            let learned = !ei(b) && direct;
            let ok = if !direct {
                left_turn == 0
            } else if learned {
                left_turn >= 1
            } else {
                left_turn == 1
            };
            if !ok {
                wrong.push(format!(
                    "{a:?} x {b:?}: {left_turn} moves off TURN reported"
                ));
            }
            // No Critical packet lost or doubled across the switch (the last 100 ms may
            // still be on the way).
            let settled = next.saturating_sub(10);
            let lost_or_doubled = (0..2).any(|to| {
                let seen = arrivals(&net, to);
                (switched_at.saturating_sub(10)..settled).any(|id| seen.get(&id) != Some(&1))
            });
            if !up || early != ("turn", "turn") || now != (want, want) || lost_or_doubled {
                wrong.push(format!("{a:?} x {b:?}: up {up}, early {early:?}, then {now:?} (want {want}), lost/doubled {lost_or_doubled}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Whether each node has a session with the other.
fn both_up(net: &SimNet) -> bool {
    let (x, y) = (net.nodes[0].peer_id(), net.nodes[1].peer_id());
    net.nodes[0].is_connected(y, net.now) && net.nodes[1].is_connected(x, net.now)
}

/// Whether node `i` reported moving onto the hub relay.
fn went_to_hub(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::HubRelay { active: true, .. }))
}

/// Both nodes behind symmetric NATs, each knowing the other's hub-listed address (which
/// never answers), the hub relay on after 3 s, no TURN yet, both agents failed.
fn failed_without_turn() -> (SimNet, Ice) {
    let config = NodeConfig {
        hub_relay_after: Some(Duration::from_secs(3)),
        ..NodeConfig::default()
    };
    let symmetric = NatBehaviour::all().last();
    assert!(!direct_path_expected(symmetric, symmetric));
    let (mut net, mut ice) = ice_net_knowing(symmetric, symmetric, config, false, true);
    report_checks(&mut net, false, [symmetric, symmetric]);
    ice.settle(&mut net);
    (net, ice)
}

#[test]
fn a_failed_agent_leaves_a_peer_without_turn_to_the_ladder_and_the_hub_moves_it_up_to_turn() {
    let (mut net, _ice) = failed_without_turn();
    // The failure alone moves nothing: a TURN address may still come.
    for i in 0..2 {
        assert_eq!(path(&net, i).kind(), "direct", "node {i}");
        assert!(
            !went_to_hub(&events(&mut net, i)),
            "node {i} went to the hub at once"
        );
    }
    // The ladder takes the silent peer onto the hub after `hub_relay_after`.
    let started = net.now;
    let mut next = 0;
    let on_hub =
        |net: &SimNet| both_up(net) && (path(net, 0), path(net, 1)) == (Path::Hub, Path::Hub);
    assert!(stream_until(
        &mut net,
        &mut next,
        Duration::from_secs(5),
        on_hub
    ));
    assert!(
        net.now - started >= Duration::from_secs(3),
        "not before hub_relay_after"
    );
    // The TURN addresses become known (the topology lists the allocations): the peers on
    // the hub probe TURN too and move up to it, TURN beating the hub.
    net.enable_turn();
    let switched_at = next;
    let on_turn = |net: &SimNet| (path(net, 0).kind(), path(net, 1).kind()) == ("turn", "turn");
    assert!(
        stream_until(&mut net, &mut next, HUB_PROBE_INTERVAL * 3, on_turn),
        "still {:?} {:?} {:?}",
        (path(&net, 0), path(&net, 1)),
        events(&mut net, 0).into_iter().take(12).collect::<Vec<_>>(),
        events(&mut net, 1).into_iter().take(12).collect::<Vec<_>>()
    );
    // And it stays there (no bounce back to the hub) while the stream goes on.
    stream_until(&mut net, &mut next, Duration::from_secs(5), |_| false);
    assert_eq!(
        (path(&net, 0).kind(), path(&net, 1).kind()),
        ("turn", "turn")
    );
    // No Critical packet lost or doubled across the move (the last 100 ms may still be
    // on the way).
    let settled = next.saturating_sub(10);
    for to in 0..2 {
        let seen = arrivals(&net, to);
        let bad: Vec<u32> = (switched_at..settled)
            .filter(|id| seen.get(id) != Some(&1))
            .collect();
        assert!(
            bad.is_empty(),
            "node {to}: {} ids lost or doubled",
            bad.len()
        );
    }
}

#[test]
fn a_turn_address_that_arrives_after_the_agent_failed_puts_the_peer_on_turn() {
    let (mut net, _ice) = failed_without_turn();
    let mut next = 0;
    // The handshake goes out on the dead direct path for a while...
    stream_until(&mut net, &mut next, Duration::from_millis(200), |_| false);
    // ...then the peers' allocations reach each other through the topology.
    net.enable_turn();
    let on_turn = |net: &SimNet| {
        both_up(net) && (path(net, 0).kind(), path(net, 1).kind()) == ("turn", "turn")
    };
    assert!(stream_until(
        &mut net,
        &mut next,
        Duration::from_secs(2),
        on_turn
    ));
    stream_until(&mut net, &mut next, Duration::from_secs(5), |_| false);
    for i in 0..2 {
        assert_eq!(path(&net, i).kind(), "turn", "node {i}");
        assert!(
            !went_to_hub(&events(&mut net, i)),
            "node {i} went through the hub"
        );
    }
}

/// The sessions node `i` opened or answered, in the order its signals first named them.
fn sessions(ice: &Ice, i: usize) -> Vec<(Instant, u64)> {
    let mut seen: Vec<(Instant, u64)> = Vec::new();
    for &(at, from, session) in &ice.log {
        if from == i && session != 0 && !seen.iter().any(|(_, s)| *s == session) {
            seen.push((at, session));
        }
    }
    seen
}

/// Two public nodes with TURN, on the direct pair their agents selected.
fn on_a_pair() -> (SimNet, Ice, u32) {
    let (mut net, mut ice) = ice_net(None, None, NodeConfig::default(), true);
    report_checks(&mut net, true, [None, None]);
    ice.settle(&mut net);
    let mut next = 0;
    let direct = |net: &SimNet| {
        both_up(net) && (path(net, 0).kind(), path(net, 1).kind()) == ("direct", "direct")
    };
    assert!(stream_until(
        &mut net,
        &mut next,
        Duration::from_secs(1),
        direct
    ));
    (net, ice, next)
}

/// Streams in 100 ms steps with the signaling relay running, until both agents of a new
/// session started (then returns true) or `limit` passed.
fn until_restarted(net: &mut SimNet, ice: &mut Ice, next: &mut u32, limit: Duration) -> bool {
    ice.started = [None, None];
    let end = net.now + limit;
    while net.now < end {
        stream_until(net, next, Duration::from_millis(100), |_| false);
        ice.settle(net);
        if ice.started.iter().all(Option::is_some) {
            return true;
        }
    }
    false
}

#[test]
fn a_pair_that_stops_answering_restarts_ice_and_the_new_pair_takes_over() {
    let (mut net, mut ice, mut next) = on_a_pair();
    let lo = lower(&net);
    let before = sessions(&ice, lo);
    let created = ice.created;
    let ufrags = |ice: &Ice| -> Vec<String> {
        ice.sent
            .iter()
            .filter_map(|(i, s)| match s {
                IceSignal::Invite { ufrag, .. } if *i == lo => Some(ufrag.clone()),
                _ => None,
            })
            .collect()
    };
    let first_ufrag = ufrags(&ice)[0].clone();
    // The uplink is cut under the pair: direct datagrams are lost, TURN still relays.
    net.direct_blocked = true;
    let cut = net.now;
    assert!(until_restarted(
        &mut net,
        &mut ice,
        &mut next,
        Duration::from_secs(5)
    ));
    // The silent pair moved the peer onto TURN (traffic goes on) and restarted ICE: a new
    // session with new credentials, a new agent on each side.
    let after = sessions(&ice, lo);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after[before.len()].0 - cut <= DEFAULT_TURN_AFTER + Duration::from_millis(200));
    assert!(
        ufrags(&ice).iter().any(|u| *u != first_ufrag),
        "new credentials"
    );
    assert_eq!(
        ice.created,
        created.map(|n| n + 1),
        "a new agent on each side"
    );
    for i in 0..2 {
        assert_eq!(path(&net, i).kind(), "turn", "node {i}");
    }
    assert!(ice.refused.is_empty(), "{:?}", ice.refused);
    // The uplink is back and the new checks find a pair: direct again.
    net.direct_blocked = false;
    report_checks(&mut net, true, [None, None]);
    ice.settle(&mut net);
    stream_until(&mut net, &mut next, Duration::from_millis(500), |_| false);
    for i in 0..2 {
        assert_eq!(path(&net, i).kind(), "direct", "node {i}");
        let status = net.nodes[i].peer_status(net.now);
        assert_eq!(
            status[0].ice.as_ref().map(|s| s.phase),
            Some(IcePhase::Connected)
        );
    }
    // A working pair starts the count again: the next loss restarts at once.
    net.direct_blocked = true;
    let cut = net.now;
    assert!(until_restarted(
        &mut net,
        &mut ice,
        &mut next,
        Duration::from_secs(5)
    ));
    let again = sessions(&ice, lo);
    assert_eq!(again.len(), after.len() + 1);
    assert!(again[after.len()].0 - cut <= DEFAULT_TURN_AFTER + Duration::from_millis(200));
}

#[test]
fn restarts_are_bounded_and_back_off_while_no_pair_works() {
    let (mut net, mut ice, mut next) = on_a_pair();
    let lo = lower(&net);
    let first = sessions(&ice, lo).len();
    net.direct_blocked = true;
    // Every restarted session's checks fail (the uplink stays cut) for two minutes.
    let end = net.now + Duration::from_secs(120);
    while net.now < end {
        let left = end - net.now;
        if until_restarted(&mut net, &mut ice, &mut next, left) {
            report_checks(&mut net, false, [None, None]);
            ice.settle(&mut net);
        }
    }
    let all = sessions(&ice, lo);
    let restarts = &all[first..];
    assert_eq!(restarts.len(), ICE_MAX_RESTARTS as usize, "{all:?}");
    // Each restart waits twice as long as the one before (give or take the signals'
    // trips: whichever side's timer fires first asks the other).
    for (k, w) in restarts.windows(2).enumerate() {
        let least = ICE_RESTART_BACKOFF * (1 << k) - SIGNAL_DELAY * 2;
        assert!(
            w[1].0 - w[0].0 >= least,
            "restart {}: {:?} < {least:?}",
            k + 2,
            w[1].0 - w[0].0
        );
    }
    // The relay carried the session all along.
    assert!(both_up(&net));
    assert_eq!(
        (path(&net, 0).kind(), path(&net, 1).kind()),
        ("turn", "turn")
    );
    assert!(ice.refused.is_empty(), "{:?}", ice.refused);
}

#[test]
fn stages_add_up_to_the_connect_time_on_the_virtual_clock() {
    let (mut net, mut ice) = ice_net(None, None, NodeConfig::default(), false);
    let lo = lower(&net);
    let checked = net.now + CHECKS;
    net.run_until(checked);
    // With nothing in flight the clock does not move by itself.
    net.now = net.now.max(checked);
    report_checks(&mut net, true, [None, None]);
    ice.settle(&mut net);
    let mut next = 0;
    let both = |net: &SimNet| {
        let (x, y) = (net.nodes[0].peer_id(), net.nodes[1].peer_id());
        net.nodes[0].is_connected(y, net.now) && net.nodes[1].is_connected(x, net.now)
    };
    assert!(stream_until(
        &mut net,
        &mut next,
        Duration::from_secs(1),
        both
    ));
    let status = net.nodes[lo].peer_status(net.now);
    let ice_status = status[0].ice.clone().unwrap();
    assert_eq!(ice_status.phase, IcePhase::Connected);
    let stages = ice_status.stages;
    // The inviter's candidate left at once; the other's came back after the INVITE's and
    // the candidate's trips through the hub.
    assert_eq!(stages.signaling, Some(SIGNAL_DELAY * 2));
    // From the other's first candidate (when the signals settled) to the pair.
    assert_eq!(stages.checks, Some(CHECKS));
    let handshake = stages.handshake.unwrap();
    assert!(handshake > Duration::ZERO);
    assert_eq!(
        stages.total,
        Some(SIGNAL_DELAY * 2 + CHECKS + handshake),
        "{stages:?}"
    );
    // The metrics endpoint has the same numbers.
    let peer = net.nodes[1 - lo].peer_id();
    assert_eq!(
        net.nodes[lo].metrics().connect_stages.snapshot(),
        vec![(peer, stages)]
    );
}

fn node(n: u8) -> (BauxiteNode, Identity, PeerInfo) {
    let identity = Identity::from_secrets([n; 32], [n + 100; 32]);
    let public = identity.public();
    let info = PeerInfo::new(
        format!("node-{n}"),
        VirtualIp::from(std::net::Ipv4Addr::new(100, 64, 0, n)),
        public.static_public,
        public.signing_public,
        None,
    );
    let node = BauxiteNode::new(
        Identity::from_secrets([n; 32], [n + 100; 32]),
        PeerRegistry::new(),
        NodeConfig::default(),
        [n; 32],
        Instant::now(),
        1_800_000_000_000_000_000,
    );
    (node, identity, info)
}

#[test]
fn signals_that_break_the_roles_the_session_or_the_signature_are_refused() {
    let (mut x, xi, x_info) = node(1);
    let (mut y, yi, y_info) = node(2);
    let now = Instant::now();
    x.upsert_peer(y_info.clone()).unwrap();
    y.upsert_peer(x_info.clone()).unwrap();
    x.enable_ice(true);
    y.enable_ice(true);
    let (lo, lo_id, hi, hi_id) = if x_info.id < y_info.id {
        (&mut x, &xi, &mut y, &yi)
    } else {
        (&mut y, &yi, &mut x, &xi)
    };
    let invite = || IceSignal::Invite {
        ufrag: "abcdefgh".into(),
        pwd: "p".repeat(24),
    };
    // The higher ID may not invite: the lower one refuses its INVITE.
    let from_hi = SignedSignal::seal(hi_id, lo_id.peer_id(), 1, invite()).encode();
    assert!(
        lo.handle_ice_signal(now, hi_id.peer_id(), &from_hi)
            .is_err()
    );
    assert!(lo.poll_ice().is_none(), "nothing done for a refused INVITE");
    // A candidate for a session that was never opened.
    let stray =
        SignedSignal::seal(lo_id, hi_id.peer_id(), 9, IceSignal::Candidate("x".into())).encode();
    assert!(hi.handle_ice_signal(now, lo_id.peer_id(), &stray).is_err());
    // An INVITE signed by someone else than the listed sender (a hub posing as it).
    let forged = SignedSignal::seal(hi_id, hi_id.peer_id(), 1, invite()).encode();
    assert!(hi.handle_ice_signal(now, lo_id.peer_id(), &forged).is_err());
    assert!(hi.poll_ice().is_none());
    // The genuine INVITE opens the session: agent, OFFER, ANSWER, checks.
    let genuine = SignedSignal::seal(lo_id, hi_id.peer_id(), 1, invite()).encode();
    hi.handle_ice_signal(now, lo_id.peer_id(), &genuine)
        .unwrap();
    let actions: Vec<IceAction> = std::iter::from_fn(|| hi.poll_ice()).collect();
    assert!(
        matches!(
            actions[0],
            IceAction::Create {
                controlling: false,
                ..
            }
        ),
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| matches!(a, IceAction::Start { .. })));
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, IceAction::Signal { .. }))
            .count(),
        2
    );
    // The peer leaves the topology: its agent is closed.
    hi.remove_peer(lo_id.peer_id());
    assert_eq!(
        hi.poll_ice(),
        Some(IceAction::Close {
            peer: lo_id.peer_id()
        })
    );
}

#[test]
fn a_restarted_controlled_node_gets_a_new_invite_and_the_session_comes_back() {
    let (mut net, mut ice) = ice_net(None, None, NodeConfig::default(), false);
    let (lo, hi) = (lower(&net), 1 - lower(&net));
    report_checks(&mut net, true, [None, None]);
    ice.settle(&mut net);
    let both = |net: &SimNet| {
        let (x, y) = (net.nodes[0].peer_id(), net.nodes[1].peer_id());
        net.nodes[0].is_connected(y, net.now) && net.nodes[1].is_connected(x, net.now)
    };
    let mut next = 0;
    assert!(stream_until(
        &mut net,
        &mut next,
        Duration::from_secs(1),
        both
    ));
    let invites = ice.count(lo, |s| matches!(s, IceSignal::Invite { .. }));
    // The controlled node crashes and comes back: it knows the inviter again and says so.
    net.restart(hi);
    net.nodes[hi].enable_ice(true);
    ice.started[hi] = None;
    let peer = net.nodes[lo].peer_id();
    net.nodes[hi].ice_begin(net.now, peer).unwrap();
    ice.settle(&mut net);
    // The inviter dropped the session it had and invited anew; the checks run again.
    assert_eq!(
        ice.count(lo, |s| matches!(s, IceSignal::Invite { .. })),
        invites + 1
    );
    assert_eq!(ice.closed[lo], 1, "the old agent closed");
    assert!(ice.started[hi].is_some(), "the restarted node checks again");
    let status = net.nodes[hi].peer_status(net.now);
    assert_eq!(
        status[0].ice.as_ref().map(|i| i.phase),
        Some(IcePhase::Checking)
    );
    assert!(ice.refused.is_empty(), "{:?}", ice.refused);
}
