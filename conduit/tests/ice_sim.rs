//! ICE bookkeeping on the simulator: the node's half of ICE (roles, signals, what an
//! agent's findings do to the path, per-stage timings), driven deterministically. A
//! signaling relay in the test plays the hub (each signal arrives [`SIGNAL_DELAY`] after
//! it was sent) and a model plays the agents: it trickles one candidate per agent and,
//! once both agents run, reports what real checks would find — a pair between the peers'
//! addresses when the NAT oracle says a direct path exists, failure otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bauxite_conduit::identity::Identity;
use bauxite_conduit::node::{
    Event, IceAction, IceKind, IcePhase, IceReport, IceSignal, NodeConfig, SignedSignal,
};
use bauxite_conduit::peers::{PeerInfo, PeerRegistry};
use bauxite_conduit::sim::{
    LinkConfig, Mapping, NatBehaviour, NodeSpec, SimNet, direct_path_expected,
};
use bauxite_conduit::{BauxiteNode, Error, VirtualIp};

#[path = "support/critical_stream.rs"]
mod critical_stream;

use critical_stream::{arrivals, events, path, stream_until};

/// One-way delay of a signal through the hub.
const SIGNAL_DELAY: Duration = Duration::from_millis(25);

/// How long the modelled agents' checks take once both run.
const CHECKS: Duration = Duration::from_millis(40);

/// The hub's signaling relay and the agents' model.
#[derive(Default)]
struct Ice {
    /// (due, to, from-index, payload)
    in_flight: VecDeque<(Instant, usize, Vec<u8>)>,
    /// Every signal sent, by sender index, decoded.
    sent: Vec<(usize, IceSignal)>,
    controlling: [Option<bool>; 2],
    started: [Option<Instant>; 2],
    remote_candidates: [usize; 2],
    closed: [usize; 2],
    refused: Vec<Error>,
}

impl Ice {
    /// Takes every action of both nodes: signals go on the wire, agents "gather" one
    /// host candidate at once.
    fn pump(&mut self, net: &mut SimNet) {
        // Each round takes every queued action; agent reports add at most one more per
        // agent, so this ends.
        for _ in 0..64 {
            let mut any = false;
            for i in 0..2 {
                while let Some(action) = net.nodes[i].poll_ice() {
                    any = true;
                    let peer = net.nodes[1 - i].peer_id();
                    match action {
                        IceAction::Create { controlling, .. } => {
                            self.controlling[i] = Some(controlling);
                            let line =
                                format!("candidate:{i} 1 udp 2130706431 10.0.0.{i} 51820 typ host");
                            net.nodes[i].handle_ice(net.now, peer, IceReport::LocalCandidate(line));
                        }
                        IceAction::Signal { kind, payload, .. } => {
                            let signal = SignedSignal::decode(&payload).unwrap().signal;
                            assert_eq!(signal.kind(), kind);
                            self.sent.push((i, signal));
                            self.in_flight
                                .push_back((net.now + SIGNAL_DELAY, 1 - i, payload));
                        }
                        IceAction::Start { .. } => self.started[i] = Some(net.now),
                        IceAction::RemoteCandidate { .. } => self.remote_candidates[i] += 1,
                        IceAction::Close { .. } => self.closed[i] += 1,
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("ICE actions never ran out");
    }

    /// Runs the network and the relay until no signal is in flight.
    fn settle(&mut self, net: &mut SimNet) {
        self.pump(net);
        while let Some(&(due, _, _)) = self.in_flight.front() {
            net.run_until(due);
            net.now = net.now.max(due);
            while let Some((_, to, payload)) =
                self.in_flight.pop_front_if(|(d, _, _)| *d <= net.now)
            {
                let from = net.nodes[1 - to].peer_id();
                if let Err(error) = net.nodes[to].handle_ice_signal(net.now, from, &payload) {
                    self.refused.push(error);
                }
            }
            self.pump(net);
        }
    }

    fn count(&self, from: usize, what: fn(&IceSignal) -> bool) -> usize {
        self.sent
            .iter()
            .filter(|(i, s)| *i == from && what(s))
            .count()
    }
}

fn spec(nat: Option<NatBehaviour>) -> NodeSpec {
    NodeSpec {
        knows_endpoints: false,
        nat,
    }
}

/// Two nodes that know each other's keys but no address, ICE on, sessions begun.
fn ice_net(
    a: Option<NatBehaviour>,
    b: Option<NatBehaviour>,
    config: NodeConfig,
    turn: bool,
) -> (SimNet, Ice) {
    let mut net = SimNet::build(
        config,
        LinkConfig::default(),
        7,
        Instant::now(),
        [spec(a), spec(b)],
    );
    if turn {
        net.enable_turn();
    }
    for i in 0..2 {
        net.nodes[i].enable_ice(true);
    }
    let mut ice = Ice::default();
    for i in 0..2 {
        let peer = net.nodes[1 - i].peer_id();
        net.nodes[i].ice_begin(net.now, peer).unwrap();
    }
    ice.settle(&mut net);
    (net, ice)
}

/// The modelled agents' verdict for both sides: a pair to the other's address when a
/// direct path exists, failure otherwise. `nats` are the two nodes' NAT boxes: a peer
/// whose NAT maps per destination shows up at an address no signal named (a
/// peer-reflexive candidate, which the model cannot predict), so that side reports
/// nothing and learns the address from the peer's first authenticated packet instead.
fn report_checks(net: &mut SimNet, direct: bool, nats: [Option<NatBehaviour>; 2]) {
    for i in 0..2 {
        let peer = net.nodes[1 - i].peer_id();
        let per_destination =
            nats[1 - i].is_some_and(|n| n.mapping != Mapping::EndpointIndependent);
        if direct && per_destination {
            continue;
        }
        let report = if direct {
            IceReport::Selected {
                local: net.view_of(i).endpoint.unwrap(),
                remote: net.view_of(1 - i).endpoint.unwrap(),
                remote_kind: IceKind::ServerReflexive,
                rtt: Some(Duration::from_millis(20)),
            }
        } else {
            IceReport::Failed
        };
        net.nodes[i].handle_ice(net.now, peer, report);
    }
}

fn lower(net: &SimNet) -> usize {
    usize::from(net.nodes[1].peer_id() < net.nodes[0].peer_id())
}

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

#[test]
fn a_failed_agent_puts_a_peer_without_turn_on_the_hub_at_once() {
    let config = NodeConfig {
        hub_relay_after: Some(Duration::from_secs(3)),
        ..NodeConfig::default()
    };
    let symmetric = NatBehaviour::all().last();
    let (mut net, mut ice) = ice_net(symmetric, symmetric, config, false);
    report_checks(&mut net, false, [symmetric, symmetric]);
    ice.settle(&mut net);
    assert_eq!((path(&net, 0).kind(), path(&net, 1).kind()), ("hub", "hub"));
    let mut next = 0;
    let started = net.now;
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
    assert!(
        net.now - started < Duration::from_secs(1),
        "not after hub_relay_after"
    );
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
