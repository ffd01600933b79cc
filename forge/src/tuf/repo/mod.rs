//! The repository side: create a TUF repository, add targets, delegate, rotate keys,
//! and publish signed metadata with consistent snapshots.
//!
//! Layout under the repository directory:
//!
//! ```text
//! metadata/N.root.json   every root version (and root.json, the newest)
//! metadata/N.targets.json, metadata/N.<role>.json   targets roles, by version
//! metadata/N.snapshot.json, metadata/timestamp.json
//! targets/<dir>/<sha256>.<name>   target content, hash-prefixed in its sub-folder
//! ```
//!
//! Invariant: publishing writes every file a new timestamp points to before the timestamp
//! itself, so a client never sees a timestamp naming files that are not there yet; and
//! nothing is written unless every role it signs reaches its threshold (root: the old and
//! the new thresholds).
//!
//! Edits are in memory until [`Repository::publish`]; [`Repository::open`] rebuilds the
//! editor from the published metadata, so a hub restart loses only unpublished edits.

mod edit;
pub mod keys;
mod offline;
mod publish;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use tough::schema::{RoleKeys, RoleType, Root, Signed, Snapshot, Targets};

pub use edit::Delegation;
pub use keys::RoleKey;
pub use offline::{sign_metadata, sign_root};
pub use publish::{Published, Signers};

use super::hashes::HashAlgorithm;
use super::metadata::TopRole;
use super::store::quote;
use crate::error::Error;

/// Metadata lifetimes from the moment of publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Root: long, it is signed offline.
    pub root: SignedDuration,
    /// Targets and delegated targets.
    pub targets: SignedDuration,
    /// Snapshot.
    pub snapshot: SignedDuration,
    /// Timestamp: short, it is what limits a freeze attack.
    pub timestamp: SignedDuration,
}

impl Default for Expiry {
    fn default() -> Self {
        let days = |d: i64| SignedDuration::from_hours(24 * d);
        Self {
            root: days(365),
            targets: days(90),
            snapshot: days(7),
            timestamp: days(1),
        }
    }
}

/// Repository settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOptions {
    /// Metadata lifetimes.
    pub expiry: Expiry,
    /// Hash algorithms listed for targets (sha256 is always listed: other TUF clients
    /// need it, and it names the published files).
    pub hashes: Vec<HashAlgorithm>,
}

impl Default for RepoOptions {
    fn default() -> Self {
        Self {
            expiry: Expiry::default(),
            hashes: vec![HashAlgorithm::Sha256, HashAlgorithm::Blake3],
        }
    }
}

/// Keys and threshold for a role.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// Public keys allowed to sign.
    pub keys: Vec<tough::schema::key::Key>,
    /// Signatures required.
    pub threshold: u64,
}

/// A published targets role: its version and the bytes published.
#[derive(Debug, Clone)]
struct PublishedRole {
    version: u64,
    bytes: Vec<u8>,
}

/// A TUF repository being edited and published.
#[derive(Debug)]
pub struct Repository {
    dir: PathBuf,
    options: RepoOptions,
    root: Root,
    root_bytes: Option<Vec<u8>>,
    root_dirty: bool,
    // A root signed offline, verified, waiting for the next publish to be written.
    imported_root: Option<(Root, Vec<u8>)>,
    roles: BTreeMap<String, Targets>,
    published: BTreeMap<String, PublishedRole>,
    dirty: BTreeSet<String>,
    snapshot_version: u64,
    timestamp_version: u64,
}

fn repo_err(reason: impl Into<String>) -> Error {
    Error::TufRepo {
        reason: reason.into(),
    }
}

pub(crate) fn role_type(role: TopRole) -> RoleType {
    match role {
        TopRole::Root => RoleType::Root,
        TopRole::Timestamp => RoleType::Timestamp,
        TopRole::Snapshot => RoleType::Snapshot,
        TopRole::Targets => RoleType::Targets,
    }
}

fn non_zero(n: u64, what: &str) -> Result<NonZeroU64, Error> {
    NonZeroU64::new(n).ok_or_else(|| repo_err(format!("{what}: must be at least 1")))
}

/// Whole seconds: TUF's `expires` format has no fractions.
pub(crate) fn expiry_from(now: Timestamp, lifetime: SignedDuration) -> Result<Timestamp, Error> {
    let t = now
        .checked_add(lifetime)
        .map_err(|e| repo_err(format!("expiry out of range: {e}")))?;
    Timestamp::from_second(t.as_second()).map_err(|e| repo_err(format!("expiry: {e}")))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<(T, Vec<u8>), Error> {
    let bytes = fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let value =
        serde_json::from_slice(&bytes).map_err(|e| repo_err(format!("{}: {e}", path.display())))?;
    Ok((value, bytes))
}

impl Repository {
    /// A new repository in `dir` (nothing is written until [`Repository::publish`]);
    /// `roles` gives the keys and threshold of each top-level role.
    pub fn create(
        dir: impl Into<PathBuf>,
        options: RepoOptions,
        roles: &BTreeMap<TopRole, RoleSpec>,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let expires = expiry_from(now, options.expiry.root)?;
        let mut root = Root {
            spec_version: "1.0.31".to_owned(),
            consistent_snapshot: true,
            version: NonZeroU64::MIN,
            expires,
            keys: HashMap::new(),
            roles: HashMap::new(),
            _extra: HashMap::new(),
        };
        for role in TopRole::ALL {
            let spec = roles
                .get(&role)
                .ok_or_else(|| repo_err(format!("no keys for the {} role", role.name())))?;
            set_root_role(&mut root, role, spec)?;
        }
        let targets = Targets::new(
            "1.0.31".to_owned(),
            NonZeroU64::MIN,
            expiry_from(now, options.expiry.targets)?,
        );
        Ok(Self {
            dir: dir.into(),
            options,
            root,
            root_bytes: None,
            root_dirty: true,
            imported_root: None,
            roles: BTreeMap::from([("targets".to_owned(), targets)]),
            published: BTreeMap::new(),
            dirty: BTreeSet::from(["targets".to_owned()]),
            snapshot_version: 0,
            timestamp_version: 0,
        })
    }

    /// Reopens a published repository from its metadata.
    pub fn open(dir: impl Into<PathBuf>, options: RepoOptions) -> Result<Self, Error> {
        let dir = dir.into();
        let meta = dir.join("metadata");
        let root_version = latest_root_version(&meta)?;
        let (root, root_bytes): (Signed<Root>, _) =
            read_json(&meta.join(format!("{root_version}.root.json")))?;
        let (timestamp, _): (Signed<tough::schema::Timestamp>, _) =
            read_json(&meta.join("timestamp.json"))?;
        let snapshot_version = timestamp
            .signed
            .meta
            .get("snapshot.json")
            .map(|m| m.version.get())
            .ok_or_else(|| repo_err("timestamp.json lists no snapshot.json"))?;
        let (snapshot, _): (Signed<Snapshot>, _) =
            read_json(&meta.join(format!("{snapshot_version}.snapshot.json")))?;
        let mut roles = BTreeMap::new();
        let mut published = BTreeMap::new();
        for (file, info) in &snapshot.signed.meta {
            let role = file
                .strip_suffix(".json")
                .ok_or_else(|| repo_err(format!("snapshot lists {file}")))?;
            let version = info.version.get();
            let (targets, bytes): (Signed<Targets>, _) =
                read_json(&meta.join(format!("{version}.{}.json", quote(role))))?;
            roles.insert(role.to_owned(), targets.signed);
            published.insert(role.to_owned(), PublishedRole { version, bytes });
        }
        Ok(Self {
            dir,
            options,
            root: root.signed,
            root_bytes: Some(root_bytes),
            root_dirty: false,
            imported_root: None,
            roles,
            published,
            dirty: BTreeSet::new(),
            snapshot_version,
            timestamp_version: timestamp.signed.version.get(),
        })
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The published metadata directory.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    /// The published targets directory.
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    /// The newest published root's exact bytes (what clients are initialised with).
    pub fn root_bytes(&self) -> Option<&[u8]> {
        self.root_bytes.as_deref()
    }

    /// The root being edited (its version is the published one until the next publish).
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// A targets role's current content, `targets` or a delegated role.
    pub fn targets(&self, role: &str) -> Option<&Targets> {
        self.roles.get(role)
    }

    /// Replaces the keys and threshold of a top-level role in the next root; rotating
    /// targets keys also re-signs targets at the next publish.
    pub fn set_role_keys(&mut self, role: TopRole, spec: &RoleSpec) -> Result<(), Error> {
        set_root_role(&mut self.root, role, spec)?;
        prune_unused_keys(&mut self.root);
        self.root_dirty = true;
        if role == TopRole::Targets {
            self.dirty.insert("targets".to_owned());
        }
        Ok(())
    }

    /// Marks a role for re-signing with a new version (and fresh expiry) at the next
    /// publish, even without content changes.
    pub fn touch(&mut self, role: &str) -> Result<(), Error> {
        if role == "root" {
            self.root_dirty = true;
            return Ok(());
        }
        if !self.roles.contains_key(role) {
            return Err(repo_err(format!("no targets role {role}")));
        }
        self.dirty.insert(role.to_owned());
        Ok(())
    }
}

fn set_root_role(root: &mut Root, role: TopRole, spec: &RoleSpec) -> Result<(), Error> {
    let mut keyids = Vec::new();
    for key in &spec.keys {
        let id = keys::decoded_id(&keys::key_id(key)?)?;
        root.keys.insert(id.clone(), key.clone());
        if !keyids.contains(&id) {
            keyids.push(id);
        }
    }
    if (keyids.len() as u64) < spec.threshold {
        return Err(repo_err(format!(
            "{}: threshold {} with only {} key(s)",
            role.name(),
            spec.threshold,
            keyids.len()
        )));
    }
    root.roles.insert(
        role_type(role),
        RoleKeys {
            keyids,
            threshold: non_zero(spec.threshold, role.name())?,
            _extra: HashMap::new(),
        },
    );
    Ok(())
}

fn prune_unused_keys(root: &mut Root) {
    let used: BTreeSet<Vec<u8>> = root
        .roles
        .values()
        .flat_map(|r| r.keyids.iter().map(|k| k.to_vec()))
        .collect();
    root.keys.retain(|id, _| used.contains(&id.to_vec()));
}

fn latest_root_version(meta: &Path) -> Result<u64, Error> {
    let entries = fs::read_dir(meta).map_err(|source| Error::Io {
        action: "list",
        path: meta.to_path_buf(),
        source,
    })?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".root.json")?.parse::<u64>().ok()
        })
        .max()
        .ok_or_else(|| repo_err(format!("no N.root.json in {}", meta.display())))
}
