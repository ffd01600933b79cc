//! The robot's trusted TUF root for updates: where it lives under the state root, and how
//! `bauxite join` installs it.
//!
//! Invariant: a root is stored only after it verified as a TUF root signed by the
//! threshold of its own root keys (forge's `Client::init`), so the first refresh never
//! starts from a file that cannot be a root; the directory is 0700 and `root.json` 0644
//! (public keys only, but nobody else may swap the anchor).
//!
//! Which root wins at join: a root given with `--update-root FILE` (obtained out of band,
//! e.g. from the release team) is pinned and the hub's is ignored; otherwise the root the
//! hub sent in `ProvisionResponse.update_root` over the CA-pinned provisioning channel;
//! with neither, nothing is written and the agent refuses updates until a root is
//! installed (`bauxite join --force --update-root FILE`).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use bauxite_forge::tuf::{Client, DirStore, Limits, MetadataStore};

/// The TUF metadata directory, relative to the state root.
pub const TUF_DIR: &str = "forge/tuf";

/// `{state_root}/forge/tuf`.
pub fn tuf_dir(state_root: &Path) -> PathBuf {
    state_root.join(TUF_DIR)
}

/// Where an installed update root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootOrigin {
    /// `--update-root FILE`.
    Pinned,
    /// `ProvisionResponse.update_root`.
    Hub,
}

/// Why an update root could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The pinned file could not be read.
    #[error("cannot read the update root {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (part of the message).
        error: std::io::Error,
    },
    /// The bytes are not a self-signed TUF root.
    #[error(
        "the update root from {origin} is not a valid TUF root: {error}; get the repository's \
         root.json from its operator and pass it with --update-root FILE"
    )]
    Invalid {
        /// `--update-root FILE` or `the hub`.
        origin: String,
        /// forge's refusal (part of the message).
        error: bauxite_forge::Error,
    },
    /// The directory could not be created.
    #[error("cannot create {path}: {error}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The OS error (part of the message).
        error: std::io::Error,
    },
}

/// Reads a pinned root file (at most 512 KB, TUF's root limit).
pub fn read_pinned(path: &Path) -> Result<Vec<u8>, TrustError> {
    crate::fsutil::read_capped(path, Limits::default().root_max).map_err(|error| TrustError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// A store that keeps nothing: checking a root without writing it.
struct Nowhere;

impl MetadataStore for Nowhere {
    fn load(&self, _role: &str) -> Result<Option<Vec<u8>>, bauxite_forge::Error> {
        Ok(None)
    }
    fn store(&mut self, _role: &str, _bytes: &[u8]) -> Result<(), bauxite_forge::Error> {
        Ok(())
    }
}

fn origin_name(origin: RootOrigin) -> String {
    match origin {
        RootOrigin::Pinned => "--update-root".to_owned(),
        RootOrigin::Hub => "the hub".to_owned(),
    }
}

/// Checks that `root` is a TUF root signed by its own root threshold, writing nothing.
pub fn check(root: &[u8], origin: RootOrigin) -> Result<(), TrustError> {
    Client::new(Nowhere, Limits::default())
        .init(root)
        .map_err(|error| TrustError::Invalid {
            origin: origin_name(origin),
            error,
        })
}

/// Checks `root` and stores it as `{state_root}/forge/tuf/root.json`, replacing any
/// metadata of an earlier trust (a new root starts a new history).
pub fn install(state_root: &Path, root: &[u8], origin: RootOrigin) -> Result<PathBuf, TrustError> {
    let dir = tuf_dir(state_root);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|error| TrustError::Directory {
            path: dir.clone(),
            error,
        })?;
    let store = DirStore::new(&dir);
    let path = store.path_of("root");
    Client::new(store, Limits::default())
        .init(root)
        .map_err(|error| TrustError::Invalid {
            origin: origin_name(origin),
            error,
        })?;
    for stale in ["timestamp", "snapshot", "targets"] {
        // Metadata trusted under another root must not pin versions under this one.
        let _ = std::fs::remove_file(DirStore::new(&dir).path_of(stale));
    }
    Ok(path)
}

/// Whether a trusted root is installed.
pub fn is_installed(state_root: &Path) -> bool {
    DirStore::new(tuf_dir(state_root)).path_of("root").is_file()
}
