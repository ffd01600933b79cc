//! What `bauxite-dispatch policy set` shows before it sets anything: the policy file,
//! read and validated locally; its lint warnings against the hub's nodes; and the change
//! against the hub's current document, in words and rule by rule.
//!
//! Invariant: pure — the caller fetches the current policy and the nodes (`ShowPolicy`,
//! `ListNodes`) and prints the result; nothing here talks to the hub.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use bauxite_conduit::PeerId;
use bauxite_conduit::policy::{PeerMatch, Policy, PolicyWarning, Rule, Verdict};

use crate::{Error, Result};

/// Largest policy file read (the gRPC message carrying it is capped at 1 MiB too).
pub const MAX_POLICY_FILE: u64 = 1 << 20;

/// Reads, parses and validates a policy file; errors name the file, and the rule and
/// field of the first problem.
pub fn load(path: &Path) -> Result<Policy> {
    let bytes = crate::pki::files::read_capped(path, MAX_POLICY_FILE)?;
    parse(&bytes).map_err(|e| Error::InvalidPolicy(format!("{}: {e}", path.display())))
}

/// Parses and validates policy JSON (what the hub stores, or what an operator wrote).
pub fn parse(json: &[u8]) -> std::result::Result<Policy, String> {
    let policy: Policy = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    policy.validate().map_err(|e| e.to_string())?;
    Ok(policy)
}

/// The meaning of a policy in a few words (`None`: no policy set).
pub fn describe(policy: Option<&Policy>) -> String {
    let Some(policy) = policy else {
        return "no policy: allow all".to_owned();
    };
    let n = policy.rules.len();
    let rules = if n == 1 { "rule" } else { "rules" };
    match (n, policy.default) {
        (0, Verdict::Allow) => "allow all (no rules)".to_owned(),
        (0, Verdict::Deny) => "deny all (no rules, default deny)".to_owned(),
        (_, Verdict::Deny) => format!("allow-list of {n} {rules} (default deny)"),
        (_, Verdict::Allow) => format!("allow all ({n} {rules} ignored: default allow)"),
    }
}

/// How a new policy differs from the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    /// [`describe`] of the current policy.
    pub before: String,
    /// [`describe`] of the new one.
    pub after: String,
    /// Rules only the new policy has (each extra copy of a repeated rule counts).
    pub added: Vec<Rule>,
    /// Rules only the current policy has.
    pub removed: Vec<Rule>,
    /// Rules both have.
    pub kept: usize,
    /// The new policy is the current one (same rules, same default): nothing to set.
    pub unchanged: bool,
}

/// Compares `new` with `current` rule by rule (order does not matter in an allow-list).
pub fn diff(current: Option<&Policy>, new: &Policy) -> PolicyChange {
    let mut remaining: Vec<&Rule> = current
        .map(|c| c.rules.iter().collect())
        .unwrap_or_default();
    let mut added = Vec::new();
    let mut kept = 0;
    for rule in &new.rules {
        match remaining.iter().position(|r| *r == rule) {
            Some(i) => {
                remaining.swap_remove(i);
                kept += 1;
            }
            None => added.push(rule.clone()),
        }
    }
    let removed: Vec<Rule> = remaining.into_iter().cloned().collect();
    let unchanged =
        current.is_some_and(|c| c.default == new.default) && added.is_empty() && removed.is_empty();
    PolicyChange {
        before: describe(current),
        after: describe(Some(new)),
        added,
        removed,
        kept,
        unchanged,
    }
}

/// Node names by peer ID, to say which node a rule's `peer` is.
pub type NodeNames = BTreeMap<PeerId, String>;

fn with_name(rule: &Rule, names: &NodeNames) -> String {
    match rule.peer {
        PeerMatch::Peer(id) => match names.get(&id) {
            Some(name) => format!("{rule}  (peer {name:?})"),
            None => format!("{rule}  (peer not in this mesh)"),
        },
        PeerMatch::Any => rule.to_string(),
    }
}

/// The summary `policy set` prints; `label` names the file, `version` the current
/// document (0: none).
pub fn render(label: &str, version: u64, change: &PolicyChange, names: &NodeNames) -> String {
    let mut out = String::new();
    let against = if version == 0 {
        "no policy set yet".to_owned()
    } else {
        format!("the current policy (version {version})")
    };
    let _ = writeln!(out, "{label} against {against}:");
    let _ = writeln!(out, "  before: {}", change.before);
    let _ = writeln!(out, "  after:  {}", change.after);
    for rule in &change.added {
        let _ = writeln!(out, "  + {}", with_name(rule, names));
    }
    for rule in &change.removed {
        let _ = writeln!(out, "  - {}", with_name(rule, names));
    }
    if change.kept > 0 {
        let rules = if change.kept == 1 { "rule" } else { "rules" };
        let _ = writeln!(out, "  = {} {rules} unchanged", change.kept);
    }
    if change.unchanged {
        let _ = writeln!(out, "  no change");
    }
    out
}

/// Lint warnings with the hub's active nodes as the known peers.
pub fn warnings(policy: &Policy, names: &NodeNames) -> Vec<PolicyWarning> {
    let known: Vec<PeerId> = names.keys().copied().collect();
    policy.lint(&known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn describes_each_meaning() {
        assert_eq!(describe(None), "no policy: allow all");
        assert_eq!(describe(Some(&policy("{}"))), "allow all (no rules)");
        assert_eq!(
            describe(Some(&policy(r#"{"default": "deny"}"#))),
            "deny all (no rules, default deny)"
        );
        assert_eq!(
            describe(Some(&policy(r#"{"rules": [{"protocol": "tcp"}]}"#))),
            "allow-list of 1 rule (default deny)"
        );
        assert_eq!(
            describe(Some(&policy(
                r#"{"rules": [{}, {"protocol": "udp"}], "default": "allow"}"#
            ))),
            "allow all (2 rules ignored: default allow)"
        );
    }

    #[test]
    fn diff_counts_added_removed_and_kept_rules_as_a_multiset() {
        let current =
            policy(r#"{"rules": [{"protocol": "icmp"}, {"protocol": "udp", "ports": 5006}]}"#);
        let new = policy(
            r#"{"rules": [{"protocol": "tcp", "ports": "22"}, {"protocol": "icmp"}, {"protocol": "icmp"}]}"#,
        );
        let change = diff(Some(&current), &new);
        assert_eq!(change.kept, 1);
        assert_eq!(
            change
                .added
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                r#"{"protocol":"tcp","ports":"22"}"#,
                r#"{"protocol":"icmp"}"#
            ]
        );
        assert_eq!(change.removed.len(), 1);
        assert!(!change.unchanged);
        // Order and the way ports are written do not make a change.
        let same = policy(
            r#"{"rules": [{"protocol": "udp", "ports": "5006-5006"}, {"protocol": "icmp"}]}"#,
        );
        assert!(diff(Some(&current), &same).unchanged);
        // Nothing set yet: even `{}` is a change (a version appears), though its meaning is not.
        let first = diff(None, &policy("{}"));
        assert!(!first.unchanged);
        assert_eq!(first.before, "no policy: allow all");
    }

    #[test]
    fn render_names_the_peers_rules_name() {
        let robot = PeerId::from_signing_public(&[7; 32]);
        let stranger = PeerId::from_signing_public(&[8; 32]);
        let new = policy(&format!(
            r#"{{"rules": [{{"peer": "{robot}", "protocol": "tcp", "ports": 22}}, {{"peer": "{stranger}"}}]}}"#
        ));
        let names = NodeNames::from([(robot, "robot-7".to_owned())]);
        let text = render("p.json", 3, &diff(None, &new), &names);
        assert!(
            text.starts_with("p.json against the current policy (version 3):"),
            "{text}"
        );
        assert!(text.contains("before: no policy: allow all"), "{text}");
        assert!(
            text.contains("after:  allow-list of 2 rules (default deny)"),
            "{text}"
        );
        assert!(text.contains(r#"(peer "robot-7")"#), "{text}");
        assert!(text.contains("(peer not in this mesh)"), "{text}");
        let warned = warnings(&new, &names);
        assert!(
            warned.contains(&PolicyWarning::UnknownPeer {
                index: 1,
                peer: stranger
            }),
            "{warned:?}"
        );
    }

    #[test]
    fn a_bad_file_is_named_with_its_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, r#"{"rules": [{"protocol": "icmp", "ports": 22}]}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("p.json") && e.contains("rule 0, field `ports`"),
            "{e}"
        );
        std::fs::write(&path, vec![b' '; (MAX_POLICY_FILE + 1) as usize]).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("limit"), "{e}");
    }
}
