//! Signing and publishing: versions bumped, expiries set, files written in the order
//! that keeps every published timestamp pointing at files already there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::num::NonZeroU64;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;
use sha2::Digest as _;
use tough::schema::decoded::Decoded;
use tough::schema::{Hashes, Metafile, Role, RoleType, Root, Signature, Signed, Snapshot};

use super::keys::{RoleKey, decoded_id};
use super::{PublishedRole, Repository, expiry_from, repo_err};
use crate::error::Error;
use crate::tuf::store::{quote, write_atomic};
use crate::tuf::trusted::TrustedSet;

/// The signing keys available for a publish, by role name.
#[derive(Debug, Default)]
pub struct Signers<'a> {
    keys: BTreeMap<String, Vec<&'a RoleKey>>,
}

impl<'a> Signers<'a> {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers `key` for `role` (a key not listed for the role is not used).
    pub fn add(&mut self, role: &str, key: &'a RoleKey) -> &mut Self {
        self.keys.entry(role.to_owned()).or_default().push(key);
        self
    }

    fn usable(&self, role: &str, allowed: &BTreeSet<String>) -> Vec<&'a RoleKey> {
        let mut seen = BTreeSet::new();
        self.keys
            .get(role)
            .into_iter()
            .flatten()
            .filter(|k| allowed.contains(&k.key_id()) && seen.insert(k.key_id()))
            .copied()
            .collect()
    }
}

/// What a publish wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// New root version, if root changed.
    pub root: Option<u64>,
    /// Targets roles re-signed, with their new versions.
    pub targets: BTreeMap<String, u64>,
    /// Snapshot version.
    pub snapshot: u64,
    /// Timestamp version.
    pub timestamp: u64,
}

fn keyids_of(root: &Root, role: RoleType) -> (BTreeSet<String>, u64) {
    root.roles
        .get(&role)
        .map(|r| {
            (
                r.keyids.iter().map(hex::encode).collect(),
                r.threshold.get(),
            )
        })
        .unwrap_or_default()
}

/// Signs `signed` with `keys` and serialises the envelope.
pub(crate) fn sign_role<T: Role + Serialize>(
    signed: &T,
    keys: &[&RoleKey],
) -> Result<Vec<u8>, Error> {
    let canonical = signed
        .canonical_form()
        .map_err(|e| repo_err(format!("canonical JSON: {e}")))?;
    let signatures = keys
        .iter()
        .map(|k| {
            Ok(Signature {
                keyid: decoded_id(&k.key_id())?,
                sig: Decoded::from(k.sign(&canonical).to_vec()),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut out = serde_json::to_vec_pretty(&Signed { signed, signatures })
        .map_err(|e| repo_err(format!("serialise: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

fn metafile(version: u64, bytes: &[u8]) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: Decoded::from(sha2::Sha256::digest(bytes).to_vec()),
            _extra: HashMap::new(),
        }),
        version: NonZeroU64::new(version).unwrap_or(NonZeroU64::MIN),
        _extra: HashMap::new(),
    }
}

fn enough(role: &str, have: usize, threshold: u64) -> Result<(), Error> {
    if (have as u64) < threshold {
        return Err(repo_err(format!(
            "{role}: {have} usable key(s) for a threshold of {threshold}; pass the role's key files"
        )));
    }
    Ok(())
}

impl Repository {
    /// The delegation rule (key ids, threshold) for targets role `role`.
    fn rule_for(&self, root: &Root, role: &str) -> Result<(BTreeSet<String>, u64), Error> {
        if role == "targets" {
            return Ok(keyids_of(root, RoleType::Targets));
        }
        self.roles
            .values()
            .filter_map(|t| t.delegations.as_ref())
            .flat_map(|d| d.roles.iter())
            .find(|r| r.name == role)
            .map(|r| {
                (
                    r.keyids.iter().map(hex::encode).collect(),
                    r.threshold.get(),
                )
            })
            .ok_or_else(|| repo_err(format!("no role delegates {role}")))
    }

    /// Signs every changed role, a new snapshot and timestamp, and writes them. Root,
    /// if changed, must be signable by `signers` under both the old and new thresholds;
    /// with an offline root key use [`Repository::export_root`] and
    /// [`Repository::import_root`] first.
    pub fn publish(&mut self, signers: &Signers<'_>, now: Timestamp) -> Result<Published, Error> {
        let meta_dir = self.metadata_dir();
        let mut writes: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let expiry = self.options.expiry;

        let new_root = if self.root_dirty {
            let mut next = self.root.clone();
            if self.root_bytes.is_some() {
                next.version = next.version.saturating_add(1);
            }
            next.expires = expiry_from(now, expiry.root)?;
            let (mut allowed, _) = keyids_of(&next, RoleType::Root);
            if let Some(old) = &self.root_bytes {
                let old: Signed<Root> =
                    serde_json::from_slice(old).map_err(|e| repo_err(format!("root: {e}")))?;
                allowed.extend(keyids_of(&old.signed, RoleType::Root).0);
            }
            let bytes = sign_role(&next, &signers.usable("root", &allowed))?;
            let check = match &self.root_bytes {
                Some(old) => TrustedSet::new(old, now).and_then(|mut s| s.update_root(&bytes)),
                None => TrustedSet::new(&bytes, now).map(|_| ()),
            };
            check.map_err(|r| {
                repo_err(format!(
                    "root v{} not signable here ({r}); export it, sign it with the offline root key, import it",
                    next.version
                ))
            })?;
            Some((next, bytes))
        } else {
            self.imported_root.clone()
        };
        let root = new_root.as_ref().map(|(r, _)| r).unwrap_or(&self.root);

        let mut published = self.published.clone();
        let mut versions = BTreeMap::new();
        let mut signed_roles = BTreeMap::new();
        for role in &self.dirty {
            let mut content = self
                .roles
                .get(role)
                .cloned()
                .ok_or_else(|| repo_err(format!("no targets role {role}")))?;
            let version = published.get(role).map_or(1, |p| p.version + 1);
            content.version = NonZeroU64::new(version).unwrap_or(NonZeroU64::MIN);
            content.expires = expiry_from(now, expiry.targets)?;
            let (allowed, threshold) = self.rule_for(root, role)?;
            let keys = signers.usable(role, &allowed);
            enough(role, keys.len(), threshold)?;
            let bytes = sign_role(&content, &keys)?;
            writes.push((
                meta_dir.join(format!("{version}.{}.json", quote(role))),
                bytes.clone(),
            ));
            published.insert(role.clone(), PublishedRole { version, bytes });
            versions.insert(role.clone(), version);
            signed_roles.insert(role.clone(), content);
        }

        let snapshot_version = self.snapshot_version + 1;
        let mut snapshot = Snapshot::new(
            root.spec_version.clone(),
            NonZeroU64::new(snapshot_version).unwrap_or(NonZeroU64::MIN),
            expiry_from(now, expiry.snapshot)?,
        );
        for (role, p) in &published {
            snapshot
                .meta
                .insert(format!("{role}.json"), metafile(p.version, &p.bytes));
        }
        let (allowed, threshold) = keyids_of(root, RoleType::Snapshot);
        let keys = signers.usable("snapshot", &allowed);
        enough("snapshot", keys.len(), threshold)?;
        let snapshot_bytes = sign_role(&snapshot, &keys)?;
        writes.push((
            meta_dir.join(format!("{snapshot_version}.snapshot.json")),
            snapshot_bytes.clone(),
        ));

        if let Some((next, bytes)) = &new_root {
            writes.push((
                meta_dir.join(format!("{}.root.json", next.version)),
                bytes.clone(),
            ));
            writes.push((meta_dir.join("root.json"), bytes.clone()));
        }

        let timestamp_version = self.timestamp_version + 1;
        let mut timestamp = tough::schema::Timestamp::new(
            root.spec_version.clone(),
            NonZeroU64::new(timestamp_version).unwrap_or(NonZeroU64::MIN),
            expiry_from(now, expiry.timestamp)?,
        );
        timestamp.meta.insert(
            "snapshot.json".to_owned(),
            metafile(snapshot_version, &snapshot_bytes),
        );
        let (allowed, threshold) = keyids_of(root, RoleType::Timestamp);
        let keys = signers.usable("timestamp", &allowed);
        enough("timestamp", keys.len(), threshold)?;
        writes.push((
            meta_dir.join("timestamp.json"),
            sign_role(&timestamp, &keys)?,
        ));

        fs::create_dir_all(&meta_dir).map_err(|source| Error::Io {
            action: "create directory",
            path: meta_dir.clone(),
            source,
        })?;
        for (path, bytes) in &writes {
            write_atomic(path, bytes, 0o644).map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
        }

        for (role, content) in signed_roles {
            self.roles.insert(role, content);
        }
        self.published = published;
        self.dirty.clear();
        let root_version = new_root.as_ref().map(|(r, _)| r.version.get());
        if let Some((next, bytes)) = new_root {
            self.root = next;
            self.root_bytes = Some(bytes);
            self.root_dirty = false;
        }
        self.imported_root = None;
        self.snapshot_version = snapshot_version;
        self.timestamp_version = timestamp_version;
        Ok(Published {
            root: root_version,
            targets: versions,
            snapshot: snapshot_version,
            timestamp: timestamp_version,
        })
    }
}
