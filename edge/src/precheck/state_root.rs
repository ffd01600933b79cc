//! The state root: one directory on the persistent partition holding everything that
//! must survive an OS replacement. After [`StateRoot::prepare`] returns, the root is an
//! absolute, canonical directory on a persistent filesystem and every layout directory
//! exists inside it (no layout entry resolves outside the root).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::StateRootError;

/// Environment variable that disables the persistent-filesystem check (tests only).
pub const SKIP_MOUNT_CHECK_ENV: &str = "BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK";

/// Directories created under the root at start, in creation order.
pub const LAYOUT: [&str; 6] = [
    "bootstrap",
    "identity",
    "runtime/binaries",
    "epoch",
    "edge/segments",
    "edge/relay",
];

/// `statfs` magic of tmpfs.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `statfs` magic of ramfs.
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;
/// `statfs` magic of overlayfs.
pub const OVERLAYFS_MAGIC: u64 = 0x794c_7630;

/// Whether a filesystem survives an OS replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// Anything not known to be ephemeral.
    Persistent,
    /// Ephemeral, with its name.
    Ephemeral(&'static str),
}

/// Classifies a `statfs` magic number.
pub fn classify_fs(magic: u64) -> FsKind {
    match magic {
        TMPFS_MAGIC => FsKind::Ephemeral("tmpfs"),
        RAMFS_MAGIC => FsKind::Ephemeral("ramfs"),
        OVERLAYFS_MAGIC => FsKind::Ephemeral("overlay"),
        _ => FsKind::Persistent,
    }
}

/// The mount decision: refuse an ephemeral filesystem unless the test hatch is set.
pub fn mount_verdict(root: &Path, magic: u64, skip_check: bool) -> Result<(), StateRootError> {
    match classify_fs(magic) {
        FsKind::Ephemeral(fs) if !skip_check => Err(StateRootError::Ephemeral {
            path: root.to_path_buf(),
            fs,
        }),
        _ => Ok(()),
    }
}

/// A prepared state root; the accessors name every file precheck touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    /// Creates (if needed) and validates the state root and its layout.
    pub fn prepare(root: &Path, skip_mount_check: bool) -> Result<Self, StateRootError> {
        if !root.is_absolute() {
            return Err(StateRootError::NotAbsolute {
                path: root.to_path_buf(),
            });
        }
        if root.exists() && !root.is_dir() {
            return Err(StateRootError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        // Refuse before creating anything on an ephemeral filesystem.
        let existing = root.ancestors().find(|a| a.exists()).unwrap_or(root);
        let magic = crate::sys::fs_magic(existing).map_err(io("statfs", existing))?;
        mount_verdict(root, magic, skip_mount_check)?;
        fs::create_dir_all(root).map_err(io("create", root))?;
        let canonical = fs::canonicalize(root).map_err(io("resolve", root))?;
        let magic = crate::sys::fs_magic(&canonical).map_err(io("statfs", &canonical))?;
        mount_verdict(&canonical, magic, skip_mount_check)?;
        let me = Self { root: canonical };
        for dir in LAYOUT {
            me.ensure_dir(&me.root.join(dir))?;
        }
        for dir in [me.current_dir(), me.previous_dir()] {
            if fs::symlink_metadata(&dir).is_ok() {
                me.ensure_dir(&dir)?;
            }
        }
        Ok(me)
    }

    /// Wraps an already-prepared root without touching the disk (for tools and tests).
    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), StateRootError> {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => {
                return Err(StateRootError::NotADirectory {
                    path: dir.to_path_buf(),
                });
            }
            Err(_) => fs::create_dir_all(dir).map_err(io("create", dir))?,
        }
        let target = fs::canonicalize(dir).map_err(io("resolve", dir))?;
        if !target.starts_with(&self.root) {
            return Err(StateRootError::Escapes {
                path: dir.to_path_buf(),
                target,
                root: self.root.clone(),
            });
        }
        if !target.is_dir() {
            return Err(StateRootError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(())
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `bootstrap/`.
    pub fn bootstrap_dir(&self) -> PathBuf {
        self.root.join("bootstrap")
    }
    /// `bootstrap/os_fingerprint.json`.
    pub fn fingerprint_path(&self) -> PathBuf {
        self.root.join("bootstrap/os_fingerprint.json")
    }
    /// `identity/manifest-verify.pub`.
    pub fn verify_key_path(&self) -> PathBuf {
        self.root.join("identity/manifest-verify.pub")
    }
    /// `runtime/binaries/`: the only source directory for manifest operations.
    pub fn binaries_dir(&self) -> PathBuf {
        self.root.join("runtime/binaries")
    }
    /// `runtime/manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("runtime/manifest.json")
    }
    /// `runtime/manifest.json.sig`.
    pub fn manifest_sig_path(&self) -> PathBuf {
        self.root.join("runtime/manifest.json.sig")
    }
    /// `epoch/`.
    pub fn epoch_dir(&self) -> PathBuf {
        self.root.join("epoch")
    }
    /// `epoch/current/`.
    pub fn current_dir(&self) -> PathBuf {
        self.root.join("epoch/current")
    }
    /// `epoch/previous/`.
    pub fn previous_dir(&self) -> PathBuf {
        self.root.join("epoch/previous")
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateRootError {
    let path = path.to_path_buf();
    move |source| StateRootError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_filesystems_are_refused() {
        let p = Path::new("/state");
        for (magic, name) in [
            (TMPFS_MAGIC, "tmpfs"),
            (RAMFS_MAGIC, "ramfs"),
            (OVERLAYFS_MAGIC, "overlay"),
        ] {
            let e = mount_verdict(p, magic, false).unwrap_err();
            assert!(matches!(e, StateRootError::Ephemeral { fs, .. } if fs == name));
            assert!(mount_verdict(p, magic, true).is_ok(), "skip hatch");
        }
        assert!(
            mount_verdict(p, 0xEF53, false).is_ok(),
            "ext4 is persistent"
        );
    }

    #[test]
    fn real_statfs_agrees_with_the_decision() {
        let dir = tempfile::tempdir().unwrap();
        let magic = crate::sys::fs_magic(dir.path()).unwrap();
        let verdict = mount_verdict(dir.path(), magic, false);
        assert_eq!(
            verdict.is_ok(),
            classify_fs(magic) == FsKind::Persistent,
            "magic {magic:#x}"
        );
        let prepared = StateRoot::prepare(dir.path(), false);
        assert_eq!(prepared.is_ok(), verdict.is_ok());
    }

    #[test]
    fn layout_is_created_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let sr = StateRoot::prepare(&root, true).unwrap();
        for d in LAYOUT {
            assert!(sr.root().join(d).is_dir(), "{d}");
        }
    }

    #[test]
    fn file_in_place_of_layout_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bootstrap"), b"x").unwrap();
        let e = StateRoot::prepare(dir.path(), true).unwrap_err();
        assert!(matches!(e, StateRootError::NotADirectory { .. }), "{e}");
    }

    #[test]
    fn symlinked_layout_dir_escaping_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        fs::create_dir_all(root.join("edge")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("edge/relay")).unwrap();
        let e = StateRoot::prepare(&root, true).unwrap_err();
        assert!(matches!(e, StateRootError::Escapes { .. }), "{e}");
    }

    #[test]
    fn relative_root_is_refused() {
        let e = StateRoot::prepare(Path::new("rel/state"), true).unwrap_err();
        assert!(matches!(e, StateRootError::NotAbsolute { .. }));
    }
}
