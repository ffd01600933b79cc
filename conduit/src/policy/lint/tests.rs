use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::super::{Flow, PolicyEngine};
use super::*;
use crate::ip::{IpView, build};

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn alice() -> PeerId {
    PeerId::from_signing_public(&[1; 32])
}

fn bob() -> PeerId {
    PeerId::from_signing_public(&[2; 32])
}

fn policy(json: &str) -> Policy {
    let json = json.replace("ALICE", &alice().to_string());
    let policy: Policy = serde_json::from_str(&json).unwrap();
    policy.validate().unwrap();
    policy
}

fn lint(json: &str) -> Vec<PolicyWarning> {
    policy(json).lint(&[alice(), bob()])
}

#[test]
fn a_sound_policy_has_no_warnings() {
    assert_eq!(lint("{}"), []);
    assert_eq!(lint(r#"{"rules": [{"protocol": "icmp"}]}"#), []);
    let ssh = r#"{"rules": [
        {"peer": "ALICE", "protocol": "tcp", "ports": "22", "direction": "inbound"},
        {"peer": "ALICE", "protocol": "tcp", "ports": "1024-65535", "direction": "outbound"}
    ]}"#;
    assert_eq!(lint(ssh), []);
}

#[test]
fn unknown_peers_are_named() {
    let json = r#"{"rules": [{"peer": "ALICE"}, {"peer": "0123456789abcdef0123456789abcdef"}]}"#;
    let stranger = PeerId::from_hex("0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(
        lint(json),
        [PolicyWarning::UnknownPeer {
            index: 1,
            peer: stranger
        }]
    );
    assert_eq!(
        policy(json).lint(&[]).len(),
        2,
        "no known node: both rules name strangers"
    );
}

#[test]
fn duplicates_and_shadowed_rules_are_reported_once() {
    let json = r#"{"rules": [
        {"protocol": "tcp", "ports": "1-65535"},
        {"protocol": {"number": 6}, "ports": [22, 22], "direction": "inbound"},
        {"protocol": "tcp", "ports": "1-65535"},
        {"protocol": "icmp"},
        {"protocol": "icmp", "direction": "outbound", "peer": "ALICE"}
    ]}"#;
    assert_eq!(
        lint(json),
        [
            PolicyWarning::Shadowed { index: 1, by: 0 },
            PolicyWarning::Duplicate { index: 2, first: 0 },
            PolicyWarning::Shadowed { index: 4, by: 3 },
        ]
    );
    // A broader rule later in the list shadows an earlier narrow one too: order does not
    // decide anything in an allow-list.
    let later = r#"{"rules": [{"protocol": "udp", "ports": "5006"}, {"protocol": "udp"}]}"#;
    assert_eq!(lint(later), [PolicyWarning::Shadowed { index: 0, by: 1 }]);
}

#[test]
fn contradictory_defaults_are_reported() {
    assert_eq!(
        lint(r#"{"rules": [{"protocol": "tcp"}], "default": "allow"}"#),
        [PolicyWarning::RulesIgnored { rules: 1 }]
    );
    assert_eq!(
        lint(r#"{"default": "deny"}"#),
        [PolicyWarning::DeniesEverything]
    );
}

#[test]
fn a_port_rule_without_a_reply_rule_is_reported() {
    assert_eq!(
        lint(r#"{"rules": [{"protocol": "tcp", "ports": "22"}]}"#),
        [PolicyWarning::RepliesBlocked { index: 0 }]
    );
    // Inbound-only requests need only an outbound reply rule, for the same peer.
    let json = r#"{"rules": [
        {"peer": "ALICE", "protocol": "tcp", "ports": "22", "direction": "inbound"},
        {"protocol": "tcp", "direction": "outbound"}
    ]}"#;
    assert_eq!(lint(json), []);
    let wrong_peer = r#"{"rules": [
        {"protocol": "tcp", "ports": "22", "direction": "inbound"},
        {"peer": "ALICE", "protocol": "tcp", "direction": "outbound"}
    ]}"#;
    assert_eq!(
        lint(wrong_peer),
        [PolicyWarning::RepliesBlocked { index: 0 }]
    );
}

#[test]
fn warnings_say_what_to_do() {
    for (warning, needle) in [
        (
            PolicyWarning::UnknownPeer {
                index: 0,
                peer: alice(),
            },
            "nodes list",
        ),
        (
            PolicyWarning::Duplicate { index: 1, first: 0 },
            "delete one",
        ),
        (PolicyWarning::Shadowed { index: 1, by: 0 }, "delete it"),
        (PolicyWarning::RulesIgnored { rules: 2 }, "drop `default`"),
        (PolicyWarning::DeniesEverything, "blocks all"),
        (PolicyWarning::RepliesBlocked { index: 0 }, "1024-65535"),
    ] {
        assert!(warning.to_string().contains(needle), "{warning}");
    }
}

fn any_rule() -> impl Strategy<Value = Rule> {
    let peer = prop_oneof![
        Just(PeerMatch::Any),
        Just(PeerMatch::Peer(alice())),
        Just(PeerMatch::Peer(bob()))
    ];
    let protocol = prop_oneof![
        Just(Protocol::Any),
        Just(Protocol::Icmp),
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Number(6)),
        Just(Protocol::Number(17)),
    ];
    let direction = prop_oneof![
        Just(Direction::Inbound),
        Just(Direction::Outbound),
        Just(Direction::Both)
    ];
    let ports = proptest::option::of((0u16..60, 0u16..60).prop_map(|(a, b)| a.min(b)..=a.max(b)));
    (peer, protocol, ports, direction).prop_map(|(peer, protocol, ports, direction)| Rule {
        peer,
        protocol,
        ports: if protocol == Protocol::Icmp {
            None
        } else {
            ports
        },
        direction,
        redundancy: crate::policy::Redundancy::None,
    })
}

fn any_packet() -> impl Strategy<Value = Vec<u8>> {
    (0u8..3, 0u16..60).prop_map(|(kind, port)| {
        let mut pkt = Vec::new();
        match kind {
            0 => build::ipv4_tcp(A, B, 9, port, b"", &mut pkt),
            1 => build::ipv4_udp(A, B, 9, port, b"", &mut pkt),
            _ => build::ipv4_icmp_echo(A, B, 9, port, b"", &mut pkt),
        }
        pkt
    })
}

fn verdict(rules: &[Rule], flow: Flow, peer: PeerId, pkt: &[u8]) -> Verdict {
    let mut engine = PolicyEngine::new();
    engine
        .load(Policy {
            rules: rules.to_vec(),
            default: Verdict::Deny,
        })
        .unwrap();
    engine.check(flow, peer, &IpView::parse(pkt).unwrap())
}

proptest! {
    /// `covers` is sound: whatever the covered rule matches, the covering one matches.
    #[test]
    fn covers_is_sound(
        a in any_rule(), b in any_rule(), pkt in any_packet(),
        inbound in any::<bool>(), from_alice in any::<bool>(),
    ) {
        let flow = if inbound { Flow::Inbound } else { Flow::Outbound };
        let peer = if from_alice { alice() } else { bob() };
        let view = IpView::parse(&pkt).unwrap();
        if a.covers(&b) && b.matches(flow, peer, &view) {
            prop_assert!(a.matches(flow, peer, &view));
        }
    }

    /// Deleting every rule reported as a duplicate or shadowed (one at a time, the
    /// highest index first) changes no verdict.
    #[test]
    fn deleting_redundant_rules_changes_no_verdict(
        rules in proptest::collection::vec(any_rule(), 0..7),
        pkt in any_packet(), inbound in any::<bool>(), from_alice in any::<bool>(),
    ) {
        let flow = if inbound { Flow::Inbound } else { Flow::Outbound };
        let peer = if from_alice { alice() } else { bob() };
        let before = verdict(&rules, flow, peer, &pkt);
        let mut pruned = rules.clone();
        loop {
            let policy = Policy { rules: pruned.clone(), default: Verdict::Deny };
            let redundant = policy.lint(&[alice(), bob()]).into_iter().rev().find_map(|w| match w {
                PolicyWarning::Duplicate { index, .. } | PolicyWarning::Shadowed { index, .. } => Some(index),
                _ => None,
            });
            let Some(index) = redundant else { break };
            pruned.remove(index);
            prop_assert_eq!(verdict(&pruned, flow, peer, &pkt), before);
        }
    }
}
