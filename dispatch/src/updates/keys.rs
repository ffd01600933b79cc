//! The update repository's keys: the online ones the hub keeps, and where the root key
//! goes on first start.
//!
//! Invariant: every key here is a TUF role key of its own (never the hub CA's key), each
//! private key file is 0600 in a 0700 directory and refused when others can read it, and
//! the hub never holds the root key after first start: it is written out once (to
//! `--root-key-out`, or else to `updates/root.key` with a warning at every start until an
//! operator moves it away) and dropped.

use std::path::{Path, PathBuf};

use bauxite_forge::tuf::repo::{RoleKey, Signers};

use crate::pki::files;
use crate::{Error, Result};

/// The roles whose keys stay on the hub.
pub const ONLINE_ROLES: [&str; 3] = ["targets", "snapshot", "timestamp"];

/// The online keys: targets (package create/revoke), snapshot and timestamp (every
/// publish and the re-signing timer).
#[derive(Debug)]
pub struct OnlineKeys {
    /// Signs the top-level targets role.
    pub targets: RoleKey,
    /// Signs snapshots.
    pub snapshot: RoleKey,
    /// Signs timestamps.
    pub timestamp: RoleKey,
}

fn key_path(dir: &Path, role: &str) -> PathBuf {
    dir.join(format!("{role}.key"))
}

impl OnlineKeys {
    /// Loads `targets.key`, `snapshot.key` and `timestamp.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            targets: RoleKey::load(&key_path(dir, "targets"))?,
            snapshot: RoleKey::load(&key_path(dir, "snapshot"))?,
            timestamp: RoleKey::load(&key_path(dir, "timestamp"))?,
        })
    }

    /// Makes the keys from three seeds (OS randomness in the shell) and writes them to
    /// `dir` (created 0700), replacing leftovers of an interrupted first start.
    pub fn create(dir: &Path, seeds: [[u8; 32]; 3]) -> Result<Self> {
        files::create_private_dir(dir)?;
        let [targets, snapshot, timestamp] = seeds.map(RoleKey::from_seed);
        let keys = Self {
            targets,
            snapshot,
            timestamp,
        };
        for (role, key) in keys.by_role() {
            key.write(&key_path(dir, role), true)?;
        }
        Ok(keys)
    }

    fn by_role(&self) -> [(&'static str, &RoleKey); 3] {
        [
            ("targets", &self.targets),
            ("snapshot", &self.snapshot),
            ("timestamp", &self.timestamp),
        ]
    }

    /// The signers for a publish.
    pub fn signers(&self) -> Signers<'_> {
        let mut signers = Signers::new();
        for (role, key) in self.by_role() {
            signers.add(role, key);
        }
        signers
    }
}

/// Writes a new root key to `path` (0600), refusing to replace a file: a root key is
/// never overwritten by accident.
pub fn write_root_key(key: &RoleKey, path: &Path) -> Result<()> {
    key.write(path, false).map_err(|e| match e {
        bauxite_forge::Error::TufKey { path, reason } => Error::InvalidArgument {
            field: "root key file",
            problem: format!(
                "{}: {reason}; choose another path (a leftover of an interrupted first start can be deleted)",
                path.display()
            ),
        },
        other => other.into(),
    })
}
