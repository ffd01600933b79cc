use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::ip::build;

const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn alice() -> PeerId {
    PeerId::from_signing_public(&[1; 32])
}

fn bob() -> PeerId {
    PeerId::from_signing_public(&[2; 32])
}

fn tcp(dport: u16) -> Vec<u8> {
    let mut pkt = Vec::new();
    build::ipv4_tcp(A, B, 40000, dport, b"x", &mut pkt);
    pkt
}

fn rule(
    peer: PeerMatch,
    protocol: Protocol,
    ports: Option<RangeInclusive<u16>>,
    direction: Direction,
) -> Rule {
    Rule {
        peer,
        protocol,
        ports,
        direction,
        redundancy: Redundancy::None,
    }
}

fn engine(rules: Vec<Rule>) -> PolicyEngine {
    let mut engine = PolicyEngine::new();
    engine
        .load(Policy {
            rules,
            default: Verdict::Deny,
        })
        .unwrap();
    engine
}

#[test]
fn allows_everything_until_a_policy_is_loaded() {
    let pkt = tcp(22);
    let view = IpView::parse(&pkt).unwrap();
    let mut engine = PolicyEngine::new();
    assert_eq!(engine.check(Flow::Outbound, alice(), &view), Verdict::Allow);
    engine
        .load(Policy {
            rules: vec![],
            default: Verdict::Deny,
        })
        .unwrap();
    assert_eq!(engine.check(Flow::Outbound, alice(), &view), Verdict::Deny);
    engine.clear();
    assert_eq!(engine.check(Flow::Inbound, alice(), &view), Verdict::Allow);
}

#[test]
fn matches_peer_protocol_ports_and_direction() {
    let ssh_from_alice = rule(
        PeerMatch::Peer(alice()),
        Protocol::Tcp,
        Some(22..=22),
        Direction::Inbound,
    );
    let engine = engine(vec![ssh_from_alice]);
    let (ssh, web) = (tcp(22), tcp(80));
    let (ssh, web) = (IpView::parse(&ssh).unwrap(), IpView::parse(&web).unwrap());
    assert_eq!(engine.check(Flow::Inbound, alice(), &ssh), Verdict::Allow);
    assert_eq!(
        engine.check(Flow::Inbound, bob(), &ssh),
        Verdict::Deny,
        "other peer"
    );
    assert_eq!(
        engine.check(Flow::Outbound, alice(), &ssh),
        Verdict::Deny,
        "other direction"
    );
    assert_eq!(
        engine.check(Flow::Inbound, alice(), &web),
        Verdict::Deny,
        "other port"
    );
    let mut udp = Vec::new();
    build::ipv4_udp(A, B, 1, 22, b"", &mut udp);
    assert_eq!(
        engine.check(Flow::Inbound, alice(), &IpView::parse(&udp).unwrap()),
        Verdict::Deny
    );
}

#[test]
fn icmp_rule_covers_icmpv6_and_counts_denials() {
    let engine = engine(vec![rule(
        PeerMatch::Any,
        Protocol::Icmp,
        None,
        Direction::Both,
    )]);
    let metrics = Metrics::default();
    let mut pkt = Vec::new();
    build::ipv6(
        std::net::Ipv6Addr::LOCALHOST,
        std::net::Ipv6Addr::LOCALHOST,
        PROTO_ICMPV6,
        &[0; 8],
        &mut pkt,
    );
    assert_eq!(
        engine.check_counted(
            Flow::Outbound,
            bob(),
            &IpView::parse(&pkt).unwrap(),
            &metrics
        ),
        Verdict::Allow
    );
    let web = tcp(80);
    assert_eq!(
        engine.check_counted(
            Flow::Outbound,
            bob(),
            &IpView::parse(&web).unwrap(),
            &metrics
        ),
        Verdict::Deny
    );
    assert_eq!(Metrics::get(&metrics.policy_denied), 1);
}

#[test]
fn validation_names_rule_and_field() {
    let ok = rule(PeerMatch::Any, Protocol::Any, None, Direction::Both);
    let mut engine = PolicyEngine::new();
    for (bad, needle) in [
        (
            rule(
                PeerMatch::Any,
                Protocol::Tcp,
                Some(RangeInclusive::new(90, 80)),
                Direction::Both,
            ),
            "90..=80 is empty",
        ),
        (
            rule(PeerMatch::Any, Protocol::Icmp, Some(1..=2), Direction::Both),
            "has no ports",
        ),
        (
            rule(
                PeerMatch::Any,
                Protocol::Number(47),
                Some(1..=2),
                Direction::Both,
            ),
            "has no ports",
        ),
    ] {
        let err = engine
            .load(Policy {
                rules: vec![ok.clone(), bad],
                default: Verdict::Deny,
            })
            .unwrap_err();
        let Error::PolicyRule {
            index: 1,
            field: "ports",
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(
        engine.policy().is_none(),
        "a refused policy is not installed"
    );
}

#[test]
fn reads_json_with_defaults_and_rejects_typos() {
    let json = format!(
        r#"{{"rules": [{{"peer": "{}", "protocol": "udp", "ports": {{"start": 5006, "end": 5010}}}},
                      {{"protocol": {{"number": 47}}, "direction": "outbound"}}]}}"#,
        alice()
    );
    let policy: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(policy.default, Verdict::Deny);
    assert_eq!(policy.rules[0].peer, PeerMatch::Peer(alice()));
    assert_eq!(policy.rules[0].direction, Direction::Both);
    assert_eq!(policy.rules[1].protocol, Protocol::Number(47));
    assert_eq!(
        serde_json::from_str::<Policy>(&serde_json::to_string(&policy).unwrap()).unwrap(),
        policy
    );
    assert!(serde_json::from_str::<Policy>(r#"{"rules": [{"prot": "tcp"}]}"#).is_err());
    let err = serde_json::from_str::<Policy>(r#"{"rules": [{"peer": "bob"}]}"#).unwrap_err();
    assert!(err.to_string().contains("neither \"any\""), "{err}");
}

#[test]
fn an_empty_document_allows_all_and_rules_make_an_allow_list() {
    let parse = |json: &str| serde_json::from_str::<Policy>(json).unwrap();
    let ssh = tcp(22);
    let view = IpView::parse(&ssh).unwrap();
    for (json, default, verdict) in [
        ("{}", Verdict::Allow, Verdict::Allow),
        (r#"{"rules": []}"#, Verdict::Allow, Verdict::Allow),
        (r#"{"default": "deny"}"#, Verdict::Deny, Verdict::Deny),
        (
            r#"{"rules": [{"protocol": "udp"}]}"#,
            Verdict::Deny,
            Verdict::Deny,
        ),
        (
            r#"{"rules": [{"protocol": "tcp", "ports": "22"}]}"#,
            Verdict::Deny,
            Verdict::Allow,
        ),
        (
            r#"{"rules": [{"protocol": "udp"}], "default": "allow"}"#,
            Verdict::Allow,
            Verdict::Allow,
        ),
    ] {
        let policy = parse(json);
        assert_eq!(policy.default, default, "{json}");
        let mut engine = PolicyEngine::new();
        engine.load(policy.clone()).unwrap();
        assert_eq!(
            engine.check(Flow::Inbound, alice(), &view),
            verdict,
            "{json}"
        );
        // Written back with `default` explicit, the meaning survives any reader.
        let written = serde_json::to_string(&policy).unwrap();
        assert!(written.contains("\"default\""), "{written}");
        assert_eq!(parse(&written), policy);
    }
    assert!(serde_json::from_str::<Policy>(r#"{"default": "maybe"}"#).is_err());
    assert!(serde_json::from_str::<Policy>(r#"{"rule": []}"#).is_err());
}

#[test]
fn rules_display_as_the_json_an_operator_writes() {
    let rule: Rule = serde_json::from_str(&format!(
        r#"{{"peer": "{}", "protocol": "tcp", "ports": [1000, 2000], "direction": "inbound"}}"#,
        alice()
    ))
    .unwrap();
    let shown = rule.to_string();
    assert_eq!(
        shown,
        format!(
            r#"{{"peer":"{}","protocol":"tcp","ports":"1000-2000","direction":"inbound"}}"#,
            alice()
        )
    );
    assert_eq!(serde_json::from_str::<Rule>(&shown).unwrap(), rule);
    let any: Rule = serde_json::from_str("{}").unwrap();
    assert_eq!(any.to_string(), "{}");
    let gre: Rule = serde_json::from_str(r#"{"protocol": {"number": 47}, "ports": 5}"#).unwrap();
    assert_eq!(gre.to_string(), r#"{"protocol":{"number":47},"ports":"5"}"#);
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
        Just(Protocol::Udp)
    ];
    let direction = prop_oneof![
        Just(Direction::Inbound),
        Just(Direction::Outbound),
        Just(Direction::Both)
    ];
    let ports = proptest::option::of((0u16..100, 0u16..100).prop_map(|(a, b)| a.min(b)..=a.max(b)));
    (peer, protocol, ports, direction).prop_map(|(peer, protocol, ports, direction)| {
        let ports = if protocol == Protocol::Icmp {
            None
        } else {
            ports
        };
        Rule {
            peer,
            protocol,
            ports,
            direction,
            redundancy: Redundancy::None,
        }
    })
}

fn any_packet() -> impl Strategy<Value = Vec<u8>> {
    (0u8..3, 0u16..100).prop_map(|(kind, port)| {
        let mut pkt = Vec::new();
        match kind {
            0 => build::ipv4_tcp(A, B, 9, port, b"", &mut pkt),
            1 => build::ipv4_udp(A, B, 9, port, b"", &mut pkt),
            _ => build::ipv4_icmp_echo(A, B, 9, port, b"", &mut pkt),
        }
        pkt
    })
}

proptest! {
    /// Allow-list monotonicity: adding a rule never denies a packet that was allowed, and
    /// the verdict is Allow exactly when some rule matches. Valid policies survive JSON.
    #[test]
    fn more_rules_never_deny_more(
        rules in proptest::collection::vec(any_rule(), 0..6), extra in any_rule(),
        pkt in any_packet(), inbound in any::<bool>(), from_alice in any::<bool>(),
    ) {
        let flow = if inbound { Flow::Inbound } else { Flow::Outbound };
        let peer = if from_alice { alice() } else { bob() };
        let view = IpView::parse(&pkt).unwrap();
        let before = engine(rules.clone()).check(flow, peer, &view);
        let any_match = rules.iter().any(|r| r.matches(flow, peer, &view));
        prop_assert_eq!(before == Verdict::Allow, any_match);
        let mut more = rules.clone();
        more.push(extra);
        let after = engine(more.clone()).check(flow, peer, &view);
        prop_assert!(!(before == Verdict::Allow && after == Verdict::Deny));
        let policy = Policy { rules: more, default: Verdict::Deny };
        let json = serde_json::to_string(&policy).unwrap();
        prop_assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
    }
}
