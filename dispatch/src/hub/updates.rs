//! Update bookkeeping: the packages the hub hosts, mirrored from the store. Deployments
//! and the nodes' reports are in `deploy.rs`.
//!
//! Invariant: a package is named by its name and version once and for ever (a revoked
//! one keeps its record), and every package change is committed with its audit entry.

use std::collections::BTreeMap;

use bauxite_conduit::PeerId;

use super::{Caller, Hub, lock};
use crate::clock::UnixTime;
use crate::store::updates::package_key;
use crate::store::{AssignmentRecord, Change, PackageRecord, Store, UpdateReportRecord};
use crate::{Error, Result};

/// What the hub knows about updates, mirrored from the store.
#[derive(Debug, Default)]
pub(crate) struct UpdateBook {
    pub(super) packages: BTreeMap<Vec<u8>, PackageRecord>,
    pub(super) assignments: BTreeMap<PeerId, AssignmentRecord>,
    pub(super) reports: BTreeMap<PeerId, UpdateReportRecord>,
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

/// Longest package name accepted.
pub const MAX_PACKAGE_NAME: usize = 128;

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
        let mut state = self.write()?;
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
        let mut state = self.write()?;
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
}

#[cfg(test)]
mod tests;
