//! The hub's update repository: TUF metadata signed with keys of its own, chunk indexes as
//! targets, package images kept for the mesh node to serve.
//!
//! Layout under the data dir:
//!
//! ```text
//! updates/repo/metadata/   published TUF metadata (N.root.json, root.json, N.targets.json,
//!                          N.snapshot.json, timestamp.json); what GetMetadata serves
//! updates/repo/targets/    chunk indexes under consistent-snapshot names; what GetTarget serves
//! updates/keys/            targets.key, snapshot.key, timestamp.key (0600): the online keys
//! updates/images/          copies of file packages, named by their index digest
//! updates/root.key         only if first start had no --root-key-out: move it offline
//! ```
//!
//! Invariant: the published metadata always verifies from the current `root.json` (every
//! change is one `publish`, which writes the timestamp last), and a package's targets
//! are published before the store records the package, so nothing the hub offers is
//! missing from the signed metadata. The repository is edited under one lock; callers
//! run these methods on blocking threads (file IO, signing).

pub mod build;
pub mod keys;
pub mod names;
pub mod resign;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bauxite_forge::tuf::TopRole;
use bauxite_forge::tuf::repo::{Published, RepoOptions, Repository, RoleKey, RoleSpec};
use jiff::Timestamp;

use self::build::Built;
use self::keys::{OnlineKeys, write_root_key};
use crate::clock::UnixTime;
use crate::pki::files;
use crate::{Error, Result};

/// The top-level targets role, which lists every package.
const TARGETS: &str = "targets";

/// Where the root key goes on first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootKeyOut {
    /// A file the operator named (`serve --root-key-out PATH`), to carry offline.
    File(PathBuf),
    /// `updates/root.key` in the data dir, warned about at every start until moved.
    DataDir,
}

/// Randomness for new keys (the OS RNG in the shell, fixed seeds in tests).
pub type KeySeeds = [[u8; 32]; 4];

/// What [`UpdateRepo::open_or_create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// An existing repository.
    Existing,
    /// A new repository; the root key was written to this file.
    Created {
        /// The root key file.
        root_key: PathBuf,
    },
}

/// The update repository and its online keys.
#[derive(Debug)]
pub struct UpdateRepo {
    dir: PathBuf,
    options: RepoOptions,
    repo: Mutex<Repository>,
    keys: OnlineKeys,
    root: Mutex<Arc<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `UnixTime` as the TUF repository's time type.
pub fn tuf_time(now: UnixTime) -> Timestamp {
    Timestamp::from_second(i64::try_from(now.0).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX)
}

fn spec(key: &RoleKey) -> RoleSpec {
    RoleSpec {
        keys: vec![key.public()],
        threshold: 1,
    }
}

impl UpdateRepo {
    /// Opens `data_dir/updates`, or creates it: new online keys and root key from
    /// `seeds`, a first publish, the root key written to `root_key_out`.
    pub fn open_or_create(
        data_dir: &Path,
        now: UnixTime,
        root_key_out: &RootKeyOut,
        seeds: impl FnOnce() -> Result<KeySeeds>,
    ) -> Result<(Self, Opened)> {
        let dir = data_dir.join("updates");
        let repo_dir = dir.join("repo");
        let options = RepoOptions::default();
        if repo_dir.join("metadata").join("timestamp.json").exists() {
            let repo = Repository::open(&repo_dir, options.clone())?;
            let keys = OnlineKeys::load(&dir.join("keys"))?;
            let me = Self::assemble(dir, options, repo, keys)?;
            return Ok((me, Opened::Existing));
        }
        files::create_private_dir(&dir)?;
        let [root_seed, targets, snapshot, timestamp] = seeds()?;
        let keys = OnlineKeys::create(&dir.join("keys"), [targets, snapshot, timestamp])?;
        let root_key = RoleKey::from_seed(root_seed);
        let roles = [
            (TopRole::Root, spec(&root_key)),
            (TopRole::Targets, spec(&keys.targets)),
            (TopRole::Snapshot, spec(&keys.snapshot)),
            (TopRole::Timestamp, spec(&keys.timestamp)),
        ]
        .into();
        // A leftover of an interrupted first start (no timestamp yet) is replaced whole.
        let _ = std::fs::remove_dir_all(&repo_dir);
        let mut repo = Repository::create(&repo_dir, options.clone(), &roles, tuf_time(now))?;
        let key_file = match root_key_out {
            RootKeyOut::File(path) => path.clone(),
            RootKeyOut::DataDir => dir.join("root.key"),
        };
        // The key is written before the first publish: a crash in between leaves a key
        // and no repository (the next start refuses to overwrite the key and says so),
        // never a repository whose root key is lost.
        write_root_key(&root_key, &key_file)?;
        let mut signers = keys.signers();
        signers.add("root", &root_key);
        repo.publish(&signers, tuf_time(now))?;
        drop(signers);
        drop(root_key);
        let me = Self::assemble(dir, options, repo, keys)?;
        Ok((me, Opened::Created { root_key: key_file }))
    }

    fn assemble(
        dir: PathBuf,
        options: RepoOptions,
        repo: Repository,
        keys: OnlineKeys,
    ) -> Result<Self> {
        let root = repo
            .root_bytes()
            .ok_or_else(|| Error::InvalidArgument {
                field: "update repository",
                problem: "no published root.json".into(),
            })?
            .to_vec();
        Ok(Self {
            dir,
            options,
            repo: Mutex::new(repo),
            keys,
            root: Mutex::new(Arc::new(root)),
        })
    }

    /// The current `root.json`, as published (what provisioning hands to new nodes).
    pub fn root_json(&self) -> Arc<Vec<u8>> {
        lock(&self.root).clone()
    }

    /// `updates/` in the data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where package image copies live.
    pub fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// The root key file left in the data dir on first start, if it is still there.
    pub fn root_key_on_hub(&self) -> Option<PathBuf> {
        let path = self.dir.join("root.key");
        path.exists().then_some(path)
    }

    /// The published metadata file `name`, if the name is one a node may ask for.
    pub fn metadata_path(&self, name: &str) -> Result<PathBuf> {
        if !names::metadata_name_ok(name) {
            return Err(not_published("metadata", name));
        }
        contained(&self.dir.join("repo").join("metadata"), name, "metadata")
    }

    /// The published target file `name` (a consistent-snapshot path), if the name is one a
    /// node may ask for and it resolves inside the targets directory.
    pub fn target_path(&self, name: &str) -> Result<PathBuf> {
        if !names::target_name_ok(name) {
            return Err(not_published("target", name));
        }
        contained(&self.dir.join("repo").join("targets"), name, "target")
    }

    /// Publishes a firmware image (`target`) and its chunk index (`<target>.chunks`).
    /// Nothing stays listed if the publish fails.
    pub fn publish_firmware(
        &self,
        target: &str,
        version: &str,
        built: &Built,
        now: UnixTime,
    ) -> Result<Published> {
        let mut repo = lock(&self.repo);
        repo.add_firmware(
            TARGETS,
            target,
            version,
            built.length,
            &built.hashes,
            &built.index,
        )?;
        let published = repo.publish(&self.keys.signers(), tuf_time(now));
        if published.is_err() {
            let _ = repo.remove_target(TARGETS, target);
            let _ = repo.remove_target(TARGETS, &format!("{target}.chunks"));
        }
        Ok(published?)
    }

    /// Removes a firmware image and its index from the signed metadata (a target already
    /// gone is not an error) and publishes.
    pub fn remove_firmware(&self, target: &str, now: UnixTime) -> Result<Published> {
        let mut repo = lock(&self.repo);
        let listed = |repo: &Repository, name: &str| {
            repo.targets(TARGETS)
                .is_some_and(|t| t.targets.keys().any(|k| k.raw() == name))
        };
        for name in [target.to_owned(), format!("{target}.chunks")] {
            if listed(&repo, &name) {
                repo.remove_target(TARGETS, &name)?;
            }
        }
        Ok(repo.publish(&self.keys.signers(), tuf_time(now))?)
    }

    /// Target names listed by the top-level targets role, sorted.
    pub fn listed_targets(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.repo)
            .targets(TARGETS)
            .map(|t| t.targets.keys().map(|k| k.raw().to_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn set_root(&self, repo: &Repository) {
        if let Some(bytes) = repo.root_bytes() {
            *lock(&self.root) = Arc::new(bytes.to_vec());
        }
    }
}

fn not_published(what: &'static str, name: &str) -> Error {
    Error::NotPublished {
        what,
        name: name.chars().take(256).collect(),
    }
}

/// `dir/name`, if it is a regular file whose real path lies inside `dir`'s real path.
fn contained(dir: &Path, name: &str, what: &'static str) -> Result<PathBuf> {
    let base = dir.canonicalize().map_err(|_| not_published(what, name))?;
    let path = base
        .join(name)
        .canonicalize()
        .map_err(|_| not_published(what, name))?;
    if !path.starts_with(&base) || !path.is_file() {
        return Err(not_published(what, name));
    }
    Ok(path)
}

mod offline;
mod refresh;

#[cfg(test)]
mod tests;
