//! Update bookkeeping: packages, which node should run what, and what nodes report.
//!
//! Invariant: a node's assignment sequence only grows, each change is committed with its
//! audit entry before any `WatchUpdates` stream sees it, and a report is audited exactly
//! when it changes the node's state (or names a new assignment), never for progress alone.
//! Progress reports live in memory (they would cost a durable write each); the last
//! state transition of every node is durable.

use std::collections::BTreeMap;

use bauxite_conduit::PeerId;
use bauxite_conduit::service::ServicePort;

use super::{Caller, Hub, lock};
use crate::clock::UnixTime;
use crate::proto::node::{ImageSource, UpdateAssignment};
use crate::store::updates::package_key;
use crate::store::{
    AssignmentRecord, Change, NodeRecord, PackageRecord, Store, UpdateReportRecord,
};
use crate::{Error, Result};

/// What the hub knows about updates, mirrored from the store.
#[derive(Debug, Default)]
pub(crate) struct UpdateBook {
    packages: BTreeMap<Vec<u8>, PackageRecord>,
    assignments: BTreeMap<PeerId, AssignmentRecord>,
    reports: BTreeMap<PeerId, UpdateReportRecord>,
}

impl UpdateBook {
    pub(crate) fn load(store: &dyn Store) -> Result<Self> {
        Ok(Self {
            packages: store
                .packages()?
                .into_iter()
                .map(|p| (p.key(), p))
                .collect(),
            assignments: store
                .assignments()?
                .into_iter()
                .map(|a| (a.node, a))
                .collect(),
            reports: store.update_reports()?.into_iter().collect(),
        })
    }

    /// Mirrors a committed change; true when an assignment changed.
    pub(crate) fn apply(&mut self, change: &Change) -> bool {
        for p in &change.packages {
            self.packages.insert(p.key(), p.clone());
        }
        for a in &change.assignments {
            self.assignments.insert(a.node, a.clone());
        }
        for (node, r) in &change.update_reports {
            self.reports.insert(*node, r.clone());
        }
        !change.assignments.is_empty()
    }
}

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

/// Longest package name accepted.
pub const MAX_PACKAGE_NAME: usize = 128;
/// Longest state name and free-text detail kept from a node's report.
const MAX_STATE_LEN: usize = 64;
const MAX_DETAIL_LEN: usize = 1024;
const MAX_LABEL_LEN: usize = 256;

/// Checks a package name: one or more `/`-separated segments of ASCII letters, digits,
/// `.`, `_`, `-`, none empty, `.` or `..` (it becomes a TUF target path).
pub fn check_package_name(name: &str) -> Result<()> {
    let bad = |problem: &str| Error::InvalidArgument {
        field: "package name",
        problem: format!("{name:?}: {problem}"),
    };
    if name.is_empty() || name.len() > MAX_PACKAGE_NAME {
        return Err(bad("must be 1 to 128 characters"));
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad("has an empty, '.' or '..' segment"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad("use letters, digits, '.', '_', '-' and '/' only"));
        }
    }
    Ok(())
}

/// Checks a version label: a safe directory name on robots (forge `layout::Version`) made
/// of one to four dot-separated numbers (what firmware metadata can compare).
pub fn check_version(version: &str) -> Result<()> {
    bauxite_forge::layout::Version::parse(version).map_err(|e| Error::InvalidArgument {
        field: "version",
        problem: e.to_string(),
    })?;
    if bauxite_forge::tuf::firmware::parse_version(version).is_none() {
        return Err(Error::InvalidArgument {
            field: "version",
            problem: format!("{version:?}: use one to four dot-separated numbers, e.g. 2.0.1"),
        });
    }
    Ok(())
}

/// The image's TUF target name for a package (`<name>/<version>.img`).
pub fn target_name(name: &str, version: &str) -> String {
    format!("{name}/{version}.img")
}

fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Hub {
    /// Every package, revoked ones included, in (name, version) order.
    pub fn packages(&self) -> Vec<PackageRecord> {
        lock(&self.state)
            .updates
            .packages
            .values()
            .cloned()
            .collect()
    }

    /// The package `name` `version`, if it was ever created.
    pub fn package(&self, name: &str, version: &str) -> Option<PackageRecord> {
        lock(&self.state)
            .updates
            .packages
            .get(&package_key(name, version))
            .cloned()
    }

    /// Refuses a name or version that is invalid or already used (revoked packages too:
    /// a name and version never name two images).
    pub fn check_new_package(&self, name: &str, version: &str) -> Result<()> {
        check_package_name(name)?;
        check_version(version)?;
        if self.package(name, version).is_some() {
            return Err(Error::PackageExists {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        Ok(())
    }

    /// Records a package the repository just published.
    pub fn record_package(
        &self,
        now: UnixTime,
        caller: Caller,
        record: PackageRecord,
    ) -> Result<()> {
        let mut state = lock(&self.state);
        if state.updates.packages.contains_key(&record.key()) {
            return Err(Error::PackageExists {
                name: record.name,
                version: record.version,
            });
        }
        let detail = format!(
            "package {} {} ({}, {} bytes, {} chunks, index {})",
            record.name,
            record.version,
            record.image.kind(),
            record.length,
            record.chunk_count,
            hex::encode(record.index_digest)
        );
        let change = Change {
            packages: vec![record],
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &caller.actor(),
            "package.create",
            detail,
            change,
        )
    }

    /// Marks a package revoked (its targets were removed from the signed metadata).
    pub fn revoke_package(
        &self,
        now: UnixTime,
        caller: Caller,
        name: &str,
        version: &str,
    ) -> Result<PackageRecord> {
        self.revoke_package_as(now, &caller.actor(), name, version)
    }

    /// [`revoke_package`](Self::revoke_package) on behalf of `actor` (`hub` when the hub
    /// completes a revoke a crash interrupted).
    pub fn revoke_package_as(
        &self,
        now: UnixTime,
        actor: &str,
        name: &str,
        version: &str,
    ) -> Result<PackageRecord> {
        let mut state = lock(&self.state);
        let mut record = state
            .updates
            .packages
            .get(&package_key(name, version))
            .cloned()
            .ok_or_else(|| Error::UnknownPackage {
                name: name.to_owned(),
                version: version.to_owned(),
            })?;
        if record.revoked_at.is_some() {
            return Ok(record);
        }
        record.revoked_at = Some(now);
        let detail = format!("package {name} {version} revoked");
        let change = Change {
            packages: vec![record.clone()],
            ..Change::default()
        };
        self.commit_locked(&mut state, now, actor, "package.revoke", detail, change)?;
        Ok(record)
    }

    /// Assigns a package (or a rollback) to nodes; returns the nodes whose assignment
    /// changed. One audit entry names them all.
    pub fn deploy(&self, now: UnixTime, caller: Caller, deploy: &Deploy) -> Result<Vec<PeerId>> {
        let mut state = lock(&self.state);
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
        let mut state = lock(&self.state);
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

#[cfg(test)]
mod tests;
