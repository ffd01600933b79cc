//! docs/policy.md and docs/policy.schema.json say what the parser does: every JSON example
//! in the document parses, validates and draws no warning (with its peers known), and the
//! schema accepts every document the parser accepts — the examples, and random policies
//! in both the form the hub stores and the form operators write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bauxite_conduit::PeerId;
use bauxite_conduit::policy::{Direction, PeerMatch, Policy, Protocol, Redundancy, Rule, Verdict};
use proptest::prelude::*;
use serde_json::Value;

fn docs(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&docs("policy.schema.json")).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

/// Marks an example whose `lint` is expected to warn.
const WARNS: &str = "<!-- policy-lint: warns -->";

/// The ```json blocks of a markdown text, each with whether the line before it is [`WARNS`].
fn json_blocks(md: &str) -> Vec<(bool, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(bool, String)> = None;
    let mut previous = "";
    for line in md.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```json") => current = Some((previous.trim() == WARNS, String::new())),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some((_, block)), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
        previous = line;
    }
    blocks
}

fn peers_in(value: &Value) -> Vec<PeerId> {
    value["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["peer"].as_str().and_then(PeerId::from_hex))
        .collect()
}

#[test]
fn every_example_in_the_docs_parses_validates_and_lints_clean() {
    let validator = schema();
    let blocks = json_blocks(&docs("policy.md"));
    assert!(blocks.len() >= 5, "found only {} examples", blocks.len());
    for (warns, block) in blocks {
        let value: Value = serde_json::from_str(&block).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "schema refuses\n{block}: {errors:?}");
        let policy: Policy = serde_json::from_str(&block).unwrap();
        policy.validate().unwrap();
        let warnings = policy.lint(&peers_in(&value));
        assert_eq!(!warnings.is_empty(), warns, "{block}: {warnings:?}");
        // The stored form is schema-valid too.
        let stored = serde_json::to_value(&policy).unwrap();
        assert!(validator.is_valid(&stored), "{stored}");
    }
}

#[test]
fn the_schema_refuses_what_the_parser_refuses_by_shape() {
    let validator = schema();
    for bad in [
        r#"{"rule": []}"#,
        r#"{"rules": [{"prot": "tcp"}]}"#,
        r#"{"rules": [{"peer": "bob"}]}"#,
        r#"{"rules": [{"ports": "ssh"}]}"#,
        r#"{"rules": [{"ports": [1, 2, 3]}]}"#,
        r#"{"rules": [{"ports": 70000}]}"#,
        r#"{"rules": [{"direction": "up"}]}"#,
        r#"{"default": "maybe"}"#,
    ] {
        let value: Value = serde_json::from_str(bad).unwrap();
        assert!(!validator.is_valid(&value), "schema accepts {bad}");
        assert!(
            serde_json::from_str::<Policy>(bad).is_err(),
            "parser accepts {bad}"
        );
    }
}

fn any_rule() -> impl Strategy<Value = Rule> {
    let peer = prop_oneof![
        Just(PeerMatch::Any),
        any::<[u8; 16]>().prop_map(|b| PeerMatch::Peer(PeerId::from_hex(&hex(&b)).unwrap())),
    ];
    let protocol = prop_oneof![
        Just(Protocol::Any),
        Just(Protocol::Icmp),
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        any::<u8>().prop_map(Protocol::Number),
    ];
    let direction = prop_oneof![
        Just(Direction::Inbound),
        Just(Direction::Outbound),
        Just(Direction::Both)
    ];
    let ports =
        proptest::option::of((any::<u16>(), any::<u16>()).prop_map(|(a, b)| a.min(b)..=a.max(b)));
    let redundancy = prop_oneof![Just(Redundancy::None), Just(Redundancy::Duplicate)];
    (peer, protocol, ports, direction, redundancy).prop_map(
        |(peer, protocol, ports, direction, redundancy)| Rule {
            peer,
            protocol,
            ports,
            direction,
            redundancy,
        },
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    /// Anything the parser reads back, the schema accepts: the stored form, and the
    /// rules as `Display` writes them (ports as text).
    #[test]
    fn the_schema_accepts_every_policy(
        rules in proptest::collection::vec(any_rule(), 0..5), deny in any::<bool>(),
    ) {
        let validator = schema();
        let policy = Policy { rules, default: if deny { Verdict::Deny } else { Verdict::Allow } };
        let stored = serde_json::to_value(&policy).unwrap();
        prop_assert!(validator.is_valid(&stored), "{}", stored);
        let friendly = format!(
            r#"{{"rules": [{}]}}"#,
            policy.rules.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        );
        let value: Value = serde_json::from_str(&friendly).unwrap();
        prop_assert!(validator.is_valid(&value), "{}", friendly);
        let reread: Policy = serde_json::from_str(&friendly).unwrap();
        prop_assert_eq!(reread.rules, policy.rules);
    }
}
