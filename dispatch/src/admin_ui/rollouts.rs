//! The rollouts page: the update deployments as the hub holds them (each node's
//! assignment and its last report), grouped by what was deployed, with a phase derived
//! from the reports. Read-only: deploying stays an admin command (`update deploy`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hub::NodeUpdates;

/// forge states after which a node runs the deployed version for good.
const DONE: &[&str] = &["VALID", "COMMITTED"];

/// One rollout: every node assigned the same package version (or the same rollback).
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct RolloutRow {
    /// `name version`, or `rollback`.
    pub what: String,
    /// Nodes it was assigned to.
    pub nodes: usize,
    /// The newest assignment time among them.
    pub assigned: String,
    /// `assigned` (no node reported yet), `in progress`, `complete`, `failed` (some node
    /// failed or rolled back).
    pub phase: &'static str,
    /// How many nodes are in each reported state (`no report` for silence), by state.
    pub states: Vec<(String, usize)>,
}

fn failed(state: &str) -> bool {
    state.contains("FAIL") || state.contains("ROLLED_BACK") || state.contains("REJECTED")
}

/// The rollouts, newest first.
pub fn rollouts(view: Vec<NodeUpdates>) -> Vec<RolloutRow> {
    let mut groups: BTreeMap<(String, String, bool), Vec<NodeUpdates>> = BTreeMap::new();
    for node in view {
        if let Some(a) = &node.assignment {
            let key = (a.name.clone(), a.version.clone(), a.rollback);
            groups.entry(key).or_default().push(node);
        }
    }
    let mut rows: Vec<(u64, RolloutRow)> = groups
        .into_iter()
        .map(|((name, version, rollback), nodes)| {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            let mut newest = 0;
            for n in &nodes {
                let Some(a) = &n.assignment else { continue };
                newest = newest.max(a.assigned_at.0);
                // Only a report about this assignment counts.
                let state = n
                    .report
                    .as_ref()
                    .filter(|r| r.sequence == a.sequence)
                    .map_or_else(|| "no report".to_owned(), |r| r.state.clone());
                *states.entry(state).or_default() += 1;
            }
            let phase = if states.keys().any(|s| failed(s)) {
                "failed"
            } else if states.keys().all(|s| DONE.contains(&s.as_str())) {
                "complete"
            } else if states.keys().all(|s| s == "no report") {
                "assigned"
            } else {
                "in progress"
            };
            let what = if rollback {
                format!("rollback {name} {version}").trim_end().to_owned()
            } else {
                format!("{name} {version}")
            };
            let row = RolloutRow {
                what,
                nodes: nodes.len(),
                assigned: crate::clock::UnixTime(newest).to_string(),
                phase,
                states: states.into_iter().collect(),
            };
            (newest, row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.what.cmp(&b.1.what)));
    rows.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use bauxite_conduit::{PeerId, VirtualIp};

    use super::*;
    use crate::clock::UnixTime;
    use crate::store::{AssignmentRecord, NodeRecord, UpdateReportRecord};
    use crate::token::TokenId;

    fn node(b: u8, assigned: Option<(&str, u64)>, report: Option<(&str, u64)>) -> NodeUpdates {
        let id = PeerId([b; 16]);
        NodeUpdates {
            node: NodeRecord {
                id,
                name: format!("n{b}"),
                virtual_ip: VirtualIp::from(std::net::Ipv4Addr::new(100, 64, 0, b)),
                ed25519: [b; 32],
                x25519: [b; 32],
                tls_key: [b; 32],
                cert_sha256: [b; 32],
                joined_at: UnixTime(1),
                token: TokenId([0; 8]),
                revoked_at: None,
                endpoint: None,
            },
            assignment: assigned.map(|(version, sequence)| AssignmentRecord {
                node: id,
                sequence,
                name: "firmware".into(),
                version: version.into(),
                target: format!("firmware-{version}"),
                rollback: false,
                assigned_at: UnixTime(1_780_000_000 + sequence),
            }),
            report: report.map(|(state, sequence)| UpdateReportRecord {
                sequence,
                state: state.into(),
                ..UpdateReportRecord::default()
            }),
        }
    }

    #[test]
    fn groups_by_version_and_derives_the_phase_from_reports_about_this_assignment() {
        let rows = rollouts(vec![
            node(1, Some(("2.0.0", 1)), Some(("COMMITTED", 1))),
            node(2, Some(("2.0.0", 1)), Some(("PENDING_VALIDATION", 1))),
            // A report about an older assignment does not count for this one.
            node(3, Some(("2.0.0", 2)), Some(("COMMITTED", 1))),
            node(4, Some(("3.0.0", 3)), None),
            node(5, None, None),
        ]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].what, "firmware 3.0.0", "newest first");
        assert_eq!(rows[0].phase, "assigned");
        assert_eq!(rows[1].nodes, 3);
        assert_eq!(rows[1].phase, "in progress");
        assert_eq!(
            rows[1].states,
            [
                ("COMMITTED".to_owned(), 1),
                ("PENDING_VALIDATION".to_owned(), 1),
                ("no report".to_owned(), 1)
            ]
        );
        let done = rollouts(vec![node(1, Some(("2.0.0", 1)), Some(("VALID", 1)))]);
        assert_eq!(done[0].phase, "complete");
        let bad = rollouts(vec![
            node(1, Some(("2.0.0", 1)), Some(("VALID", 1))),
            node(2, Some(("2.0.0", 1)), Some(("ROLLED_BACK_UNHEALTHY", 1))),
        ]);
        assert_eq!(bad[0].phase, "failed");
    }
}
