//! The TUF client workflow (specification section 5) driven over a [`MetadataSource`],
//! a [`TargetSource`](super::TargetSource) and a [`MetadataStore`], with `now` as an input.
//!
//! Driving rules: [`Client::init`] once with a root obtained out of band; then per update
//! check [`Client::refresh`] (root chain, timestamp, snapshot, top-level targets), then
//! [`Client::find_target`] for each name (loads only the delegated roles on that name's
//! path), then `download_target` or `fetch_target_bytes` (in `download.rs`).
//! Each `refresh` starts again from the stored metadata, so a refusal leaves the store as
//! the last complete verification left it.
//!
//! Invariant: nothing is stored, returned or written under a target's final name before
//! the metadata vouching for it passed every check of the trusted set (`trusted.rs`).

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::download::check_target_name;
pub use super::download::url_path;
use super::hashes::Hashes;
use super::refusal::Refusal;
use super::source::{FetchError, MetadataSource, read_bounded};
use super::store::{MetadataStore, quote};
use super::trusted::{TimestampOutcome, TrustedSet};
use crate::error::Error;

/// Download limits and traversal bounds; the defaults are python-tuf's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes read for one root version.
    pub root_max: u64,
    /// Most bytes read for timestamp.
    pub timestamp_max: u64,
    /// Most bytes read for snapshot when timestamp does not list its length.
    pub snapshot_max: u64,
    /// Most bytes read for a targets role when snapshot does not list its length.
    pub targets_max: u64,
    /// Most root versions accepted in one refresh.
    pub max_root_rotations: u64,
    /// Most targets roles visited for one target lookup.
    pub max_delegations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            root_max: 512_000,
            timestamp_max: 16_384,
            snapshot_max: 2_000_000,
            targets_max: 5_000_000,
            max_root_rotations: 256,
            max_delegations: 32,
        }
    }
}

/// A target as trusted metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    /// The target path.
    pub name: String,
    /// Signed length.
    pub length: u64,
    /// Signed hashes.
    pub hashes: Hashes,
    /// Signed `custom` object, if any.
    pub custom: Option<Value>,
    /// The targets role that listed it.
    pub role: String,
    /// URL path under the targets base (hash-prefixed with consistent snapshots).
    pub url_path: String,
}

/// A TUF client over a metadata store.
#[derive(Debug)]
pub struct Client<S> {
    store: S,
    limits: Limits,
    trusted: Option<TrustedSet>,
}

impl<S: MetadataStore> Client<S> {
    /// A client over `store` (initialised or not).
    pub fn new(store: S, limits: Limits) -> Self {
        Self {
            store,
            limits,
            trusted: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Stores `root_bytes` as the trust anchor after checking it is signed by its own
    /// root threshold (expiry is checked at refresh).
    pub fn init(&mut self, root_bytes: &[u8]) -> Result<(), Error> {
        TrustedSet::new(root_bytes, Timestamp::UNIX_EPOCH)?;
        self.store.store("root", root_bytes)?;
        self.trusted = None;
        Ok(())
    }

    /// Runs sections 5.3-5.6 at time `now`: root chain, timestamp, snapshot, targets.
    pub fn refresh(
        &mut self,
        source: &mut dyn MetadataSource,
        now: Timestamp,
    ) -> Result<(), Error> {
        self.trusted = None;
        let root = self.store.load("root")?.ok_or(Error::TufNotInitialised)?;
        let mut set = TrustedSet::new(&root, now)?;
        self.update_root(&mut set, source)?;
        set.check_root_fresh()?;
        self.update_timestamp(&mut set, source)?;
        self.update_snapshot(&mut set, source)?;
        load_targets(
            &mut set,
            &mut self.store,
            source,
            &self.limits,
            "targets",
            "root",
        )?;
        self.trusted = Some(set);
        Ok(())
    }

    fn update_root(
        &mut self,
        set: &mut TrustedSet,
        source: &mut dyn MetadataSource,
    ) -> Result<(), Error> {
        let first = set.root().meta.header.version + 1;
        for version in first..first.saturating_add(self.limits.max_root_rotations) {
            let name = format!("{version}.root.json");
            let bytes = match fetch(source, &name, self.limits.root_max) {
                Ok(b) => b,
                Err(Error::TufFetch(FetchError::NotFound { .. })) => return Ok(()),
                Err(e) => return Err(e),
            };
            set.update_root(&bytes)?;
            self.store.store("root", &bytes)?;
        }
        Ok(())
    }

    fn update_timestamp(
        &mut self,
        set: &mut TrustedSet,
        source: &mut dyn MetadataSource,
    ) -> Result<(), Error> {
        if let Some(local) = self.store.load("timestamp")? {
            // A local timestamp that no longer verifies (rotated keys) or has expired still
            // may pin versions; one that fails is simply not a reference.
            if let Err(refusal) = set.update_timestamp(&local) {
                tracing::debug!(%refusal, "tuf.local_timestamp_not_final");
            }
        }
        let bytes = fetch(source, "timestamp.json", self.limits.timestamp_max)?;
        if set.update_timestamp(&bytes)? == TimestampOutcome::Updated {
            self.store.store("timestamp", &bytes)?;
        }
        Ok(())
    }

    fn update_snapshot(
        &mut self,
        set: &mut TrustedSet,
        source: &mut dyn MetadataSource,
    ) -> Result<(), Error> {
        if let Some(local) = self.store.load("snapshot")? {
            match set.update_snapshot(&local, true) {
                Ok(()) => return Ok(()),
                Err(refusal) => tracing::debug!(%refusal, "tuf.local_snapshot_not_final"),
            }
        }
        let listed = set
            .timestamp()
            .map(|t| t.meta.snapshot.clone())
            .ok_or(Error::TufNotInitialised)?;
        let name = if set.root().meta.consistent_snapshot {
            format!("{}.snapshot.json", listed.version)
        } else {
            "snapshot.json".to_owned()
        };
        let bytes = fetch(
            source,
            &name,
            listed.length.unwrap_or(self.limits.snapshot_max),
        )?;
        set.update_snapshot(&bytes, false)?;
        self.store.store("snapshot", &bytes)?;
        Ok(())
    }

    /// Section 5.7: finds `name` by pre-order depth-first search of the delegations that
    /// cover it, loading only those roles. Needs a successful [`Client::refresh`].
    pub fn find_target(
        &mut self,
        source: &mut dyn MetadataSource,
        name: &str,
    ) -> Result<TargetInfo, Error> {
        check_target_name(name)?;
        let set = self.trusted.as_mut().ok_or(Error::TufNotRefreshed)?;
        let mut stack = vec![("targets".to_owned(), "root".to_owned())];
        let mut visited = BTreeSet::new();
        while let Some((role, delegator)) = stack.pop() {
            if visited.len() >= self.limits.max_delegations {
                break;
            }
            if visited.contains(&(role.clone(), delegator.clone())) {
                continue;
            }
            load_targets(
                set,
                &mut self.store,
                source,
                &self.limits,
                &role,
                &delegator,
            )?;
            let meta = &set.targets(&role).ok_or(Error::TufNotRefreshed)?.meta;
            if let Some(t) = meta.targets.get(name) {
                let url_path = url_path(name, &t.hashes, set.root().meta.consistent_snapshot)?;
                return Ok(TargetInfo {
                    name: name.to_owned(),
                    length: t.length,
                    hashes: t.hashes.clone(),
                    custom: t.custom.clone(),
                    role,
                    url_path,
                });
            }
            let children = meta
                .delegations
                .as_ref()
                .map(|d| d.roles_for(name))
                .unwrap_or_default();
            visited.insert((role.clone(), delegator));
            let mut next = Vec::new();
            for (child, terminating) in children {
                next.push((child, role.clone()));
                if terminating {
                    // A terminating delegation ends the search outside its subtree.
                    stack.clear();
                    break;
                }
            }
            stack.extend(next.into_iter().rev());
        }
        Err(Refusal::TargetNotFound {
            name: name.to_owned(),
        }
        .into())
    }
}

/// Loads targets metadata for `role` as delegated by `delegator`: already verified on
/// that edge, else the bytes already loaded (verified again against this delegator),
/// else the stored copy, else the repository's version named by snapshot.
fn load_targets<S: MetadataStore>(
    set: &mut TrustedSet,
    store: &mut S,
    source: &mut dyn MetadataSource,
    limits: &Limits,
    role: &str,
    delegator: &str,
) -> Result<(), Error> {
    if set.has_edge(role, delegator) {
        return Ok(());
    }
    if let Some(loaded) = set.targets(role) {
        let bytes = loaded.bytes.clone();
        return Ok(set.update_targets(&bytes, role, delegator)?);
    }
    if let Some(local) = store.load(role)? {
        match set.update_targets(&local, role, delegator) {
            Ok(()) => return Ok(()),
            Err(refusal) => tracing::debug!(role, %refusal, "tuf.local_targets_not_final"),
        }
    }
    let listed = set.snapshot_entry(role)?;
    let name = if set.root().meta.consistent_snapshot {
        format!("{}.{}.json", listed.version, quote(role))
    } else {
        format!("{}.json", quote(role))
    };
    let bytes = fetch(source, &name, listed.length.unwrap_or(limits.targets_max))?;
    set.update_targets(&bytes, role, delegator)?;
    store.store(role, &bytes)?;
    Ok(())
}

fn fetch(source: &mut dyn MetadataSource, name: &str, max_len: u64) -> Result<Vec<u8>, Error> {
    let mut reader = source.fetch_metadata(name, max_len)?;
    Ok(read_bounded(name, &mut reader, max_len).map_err(|e| transport(name, e))??)
}

pub(crate) fn transport(path: &str, e: std::io::Error) -> Error {
    Error::TufFetch(FetchError::Transport {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
