//! Deployments and reports: which node should run what, and what nodes say.
//!
//! Invariant: a node's assignment sequence only grows, each change is committed with its
//! audit entry before any `WatchUpdates` stream sees it, and a report is audited exactly
//! when it changes the node's state (or names a new assignment), never for progress alone.
//! Progress reports live in memory (they would cost a durable write each); the last
//! state transition of every node is durable.

use bauxite_conduit::PeerId;
use bauxite_conduit::service::ServicePort;

use super::{Caller, Hub, lock};
use crate::clock::UnixTime;
use crate::proto::node::{ImageSource, UpdateAssignment};
use crate::store::updates::package_key;
use crate::store::{AssignmentRecord, Change, NodeRecord, UpdateReportRecord};
use crate::{Error, Result};

/// Who a deployment is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployTo {
    /// These node IDs (hex).
    Nodes(Vec<String>),
    /// Every active node (the hub's own mesh node excepted).
    All,
}

/// A `DeployUpdate` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deploy {
    /// Package name (may be empty with `rollback`).
    pub name: String,
    /// Package version (may be empty with `rollback`).
    pub version: String,
    /// Which nodes.
    pub to: DeployTo,
    /// Ask for a rollback to the previous version instead.
    pub rollback: bool,
}

/// A node's update picture: its record, assignment and last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUpdates {
    /// The node.
    pub node: NodeRecord,
    /// What it was asked to run, if anything.
    pub assignment: Option<AssignmentRecord>,
    /// What it last said.
    pub report: Option<UpdateReportRecord>,
}

/// Longest state name and free-text detail kept from a node's report.
const MAX_STATE_LEN: usize = 64;
const MAX_DETAIL_LEN: usize = 1024;
const MAX_LABEL_LEN: usize = 256;

fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Hub {
    /// changed. One audit entry names them all.
    pub fn deploy(&self, now: UnixTime, caller: Caller, deploy: &Deploy) -> Result<Vec<PeerId>> {
        let mut state = self.write()?;
        let target = if deploy.rollback && deploy.name.is_empty() {
            String::new()
        } else {
            let package = state
                .updates
                .packages
                .get(&package_key(&deploy.name, &deploy.version))
                .ok_or_else(|| Error::UnknownPackage {
                    name: deploy.name.clone(),
                    version: deploy.version.clone(),
                })?;
            if package.revoked_at.is_some() && !deploy.rollback {
                return Err(Error::PackageRevoked {
                    name: deploy.name.clone(),
                    version: deploy.version.clone(),
                });
            }
            package.target.clone()
        };
        let nodes: Vec<PeerId> = match &deploy.to {
            DeployTo::All => state
                .nodes
                .values()
                .filter(|n| n.revoked_at.is_none() && Some(n.id) != state.hub_node)
                .map(|n| n.id)
                .collect(),
            DeployTo::Nodes(ids) if ids.is_empty() => {
                return Err(Error::InvalidArgument {
                    field: "nodes",
                    problem: "name nodes with --node ID, or use --all".into(),
                });
            }
            DeployTo::Nodes(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for text in ids {
                    let node = PeerId::from_hex(text)
                        .and_then(|id| state.nodes.get(&id))
                        .filter(|n| n.revoked_at.is_none())
                        .ok_or_else(|| Error::UnknownNode(text.clone()))?;
                    if Some(node.id) == state.hub_node {
                        return Err(Error::HubNode(node.id));
                    }
                    if !out.contains(&node.id) {
                        out.push(node.id);
                    }
                }
                out
            }
        };
        let mut assignments = Vec::new();
        for node in nodes {
            let previous = state.updates.assignments.get(&node);
            let unchanged = previous.is_some_and(|p| {
                p.name == deploy.name
                    && p.version == deploy.version
                    && p.rollback == deploy.rollback
            });
            if unchanged {
                continue;
            }
            assignments.push(AssignmentRecord {
                node,
                sequence: previous.map_or(1, |p| p.sequence + 1),
                name: deploy.name.clone(),
                version: deploy.version.clone(),
                target: target.clone(),
                rollback: deploy.rollback,
                assigned_at: now,
            });
        }
        let changed: Vec<PeerId> = assignments.iter().map(|a| a.node).collect();
        if changed.is_empty() {
            return Ok(changed);
        }
        let what = if deploy.rollback {
            "rollback"
        } else {
            "install"
        };
        let ids: Vec<String> = changed.iter().map(PeerId::to_string).collect();
        let detail = format!(
            "{what} {} {} on {} node(s): {}",
            deploy.name,
            deploy.version,
            changed.len(),
            ids.join(", ")
        );
        let change = Change {
            assignments,
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &caller.actor(),
            "update.deploy",
            detail,
            change,
        )?;
        Ok(changed)
    }

    /// A feed that changes whenever any node's assignment changes.
    pub fn subscribe_assignments(&self) -> tokio::sync::watch::Receiver<u64> {
        self.assignments.subscribe()
    }

    /// What `node` should run, as `WatchUpdates` sends it (sequence 0: nothing assigned).
    pub fn assignment_message(&self, node: PeerId) -> UpdateAssignment {
        let state = lock(&self.state);
        let sources = state
            .hub_node
            .and_then(|id| state.nodes.get(&id))
            .map(|hub| ImageSource {
                virtual_ip: hub.virtual_ip.to_string(),
                port: u32::from(ServicePort::FORGE.get()),
            })
            .into_iter()
            .collect();
        match state.updates.assignments.get(&node) {
            Some(a) => UpdateAssignment {
                sequence: a.sequence,
                target: a.target.clone(),
                version: a.version.clone(),
                sources,
                rollback: a.rollback,
            },
            None => UpdateAssignment {
                sources,
                ..UpdateAssignment::default()
            },
        }
    }

    /// Keeps `node`'s report; a change of state (or of assignment) is also stored and
    /// audited. Returns whether it was a transition.
    pub fn report_update(
        &self,
        now: UnixTime,
        node: PeerId,
        mut report: UpdateReportRecord,
    ) -> Result<bool> {
        report.state = clip(&report.state, MAX_STATE_LEN);
        report.target = clip(&report.target, MAX_LABEL_LEN);
        report.version = clip(&report.version, MAX_LABEL_LEN);
        report.active_version = clip(&report.active_version, MAX_LABEL_LEN);
        report.detail = clip(&report.detail, MAX_DETAIL_LEN);
        report.reported_at = now;
        if report.state.is_empty() {
            return Err(Error::InvalidArgument {
                field: "state",
                problem: "empty; send a forge UpdateState name".into(),
            });
        }
        let mut state = self.write()?;
        let previous = state.updates.reports.get(&node);
        let transition =
            previous.is_none_or(|p| p.state != report.state || p.sequence != report.sequence);
        if !transition {
            state.updates.reports.insert(node, report);
            return Ok(false);
        }
        let from = previous.map_or("-".to_owned(), |p| p.state.clone());
        let detail = format!(
            "node {node} {} {} (assignment {}): {from} -> {}{}",
            report.target,
            report.version,
            report.sequence,
            report.state,
            if report.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", report.detail)
            }
        );
        let change = Change {
            update_reports: vec![(node, report)],
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &format!("node:{node}"),
            "update.state",
            detail,
            change,
        )?;
        Ok(true)
    }

    /// Records an update action that changes no record (a root import) in the audit log.
    pub fn record_update_event(
        &self,
        now: UnixTime,
        caller: Caller,
        action: &str,
        detail: String,
    ) -> Result<()> {
        self.commit(now, &caller.actor(), action, detail, Change::default())
    }

    /// Every node except the hub's own, with its assignment and last report.
    pub fn update_view(&self) -> Vec<NodeUpdates> {
        let state = lock(&self.state);
        state
            .nodes
            .values()
            .filter(|n| Some(n.id) != state.hub_node)
            .map(|n| NodeUpdates {
                node: n.clone(),
                assignment: state.updates.assignments.get(&n.id).cloned(),
                report: state.updates.reports.get(&n.id).cloned(),
            })
            .collect()
    }
}
