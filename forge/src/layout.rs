//! Where forge keeps its files under the state root, and the names allowed in it.
//!
//! Invariant: every path forge builds is `root/versions/<Version>/<fixed name>`,
//! `root/current` or `root/rollback.marker`, where `root` is canonical and a [`Version`]
//! can never contain a path separator, `..`, or a NUL; and a directory forge writes into
//! is checked to resolve inside the root (a planted symlink is refused).
//!
//! ```text
//! {state_root}/
//!   versions/<version>/image            the staged (later: active) image
//!   versions/<version>/checkpoint.bin   while staging: the chunks verified and durable
//!   current -> versions/<version>       relative symlink, replaced only by rename(2)
//!   rollback.marker                     JSON: the activation in progress, blocked versions
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io};

/// Directory of all versions.
pub const VERSIONS_DIR: &str = "versions";
/// The staged image inside a version directory.
pub const IMAGE_FILE: &str = "image";
/// The staging checkpoint inside a version directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// The active-version symlink.
pub const CURRENT_LINK: &str = "current";
/// The activation record.
pub const MARKER_FILE: &str = "rollback.marker";

/// Longest version string.
pub const MAX_VERSION_LEN: usize = 64;

/// A version string that is safe as a directory name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    /// Validates `s`: 1 to 64 bytes of ASCII letters, digits, `.`, `_`, `+`, `-`,
    /// not starting with `.` or `-` (so no `.`, `..`, hidden names or option-like names).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason| {
            Err(Error::InvalidVersion {
                version: s.chars().take(80).collect(),
                reason,
            })
        };
        if s.is_empty() {
            return bad("empty");
        }
        if s.len() > MAX_VERSION_LEN {
            return bad("longer than 64 bytes");
        }
        if s.starts_with('.') || s.starts_with('-') {
            return bad("starts with '.' or '-'");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        {
            return bad("contains a character other than letters, digits, '.', '_', '+', '-'");
        }
        Ok(Self(s.to_owned()))
    }

    /// The version string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Forge's view of the state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens an existing state root and creates `versions/` in it if needed.
    pub fn open(root: &Path) -> Result<Self> {
        let root = fs::canonicalize(root).map_err(io("resolve", root))?;
        let me = Self { root };
        let versions = me.versions_dir();
        match fs::create_dir(&versions) {
            Ok(()) => crate::fsutil::sync_dir(&me.root).map_err(io("fsync", &me.root))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &versions)(e)),
        }
        me.check_inside(&versions)?;
        Ok(me)
    }

    /// The canonical state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `versions/`.
    pub fn versions_dir(&self) -> PathBuf {
        self.root.join(VERSIONS_DIR)
    }

    /// `versions/<v>/`.
    pub fn version_dir(&self, v: &Version) -> PathBuf {
        self.versions_dir().join(v.as_str())
    }

    /// `versions/<v>/image`.
    pub fn image_path(&self, v: &Version) -> PathBuf {
        self.version_dir(v).join(IMAGE_FILE)
    }

    /// `versions/<v>/checkpoint.bin`.
    pub fn checkpoint_path(&self, v: &Version) -> PathBuf {
        self.version_dir(v).join(CHECKPOINT_FILE)
    }

    /// `current`.
    pub fn current_link(&self) -> PathBuf {
        self.root.join(CURRENT_LINK)
    }

    /// `rollback.marker`.
    pub fn marker_path(&self) -> PathBuf {
        self.root.join(MARKER_FILE)
    }

    /// The link target `current` must have for version `v`.
    pub(crate) fn link_target(v: &Version) -> PathBuf {
        Path::new(VERSIONS_DIR).join(v.as_str())
    }

    /// The version `current` points to; `None` before the first activation.
    pub fn current(&self) -> Result<Option<Version>> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("readlink", &link)(e)),
        };
        let bad = || Error::BadCurrentLink {
            path: link.clone(),
            target: target.clone(),
        };
        let mut parts = target.components();
        let (Some(first), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if first.as_os_str() != VERSIONS_DIR {
            return Err(bad());
        }
        let v = name
            .as_os_str()
            .to_str()
            .and_then(|s| Version::parse(s).ok())
            .ok_or_else(bad)?;
        if !self.version_dir(&v).is_dir() {
            return Err(bad());
        }
        Ok(Some(v))
    }

    /// Refuses a path that resolves outside the root (a symlink planted in its place).
    pub(crate) fn check_inside(&self, path: &Path) -> Result<()> {
        let resolved = fs::canonicalize(path).map_err(io("resolve", path))?;
        if !resolved.starts_with(&self.root) {
            return Err(Error::PathEscapesRoot {
                path: path.to_path_buf(),
                resolved,
                root: self.root.clone(),
            });
        }
        Ok(())
    }

    /// Creates `versions/<v>/` if needed; refuses a symlink in its place.
    pub(crate) fn ensure_version_dir(&self, v: &Version) -> Result<PathBuf> {
        let dir = self.version_dir(v);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let resolved = fs::canonicalize(&dir).unwrap_or_default();
                return Err(Error::PathEscapesRoot {
                    path: dir,
                    resolved,
                    root: self.root.clone(),
                });
            }
            Ok(_) => {}
            Err(_) => {
                fs::create_dir(&dir).map_err(io("create", &dir))?;
                let versions = self.versions_dir();
                crate::fsutil::sync_dir(&versions).map_err(io("fsync", &versions))?;
            }
        }
        self.check_inside(&dir)?;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn versions_that_could_escape_are_refused() {
        for bad in [
            "", ".", "..", "../x", "a/b", "a\0b", ".hidden", "-rf", "a b", "é", "x\\y",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Version::parse(&"a".repeat(65)).is_err());
        for good in ["1.0.0", "2.0.0-rc.1+build.7", "v2_x", &"a".repeat(64)] {
            assert_eq!(Version::parse(good).unwrap().as_str(), good);
        }
    }

    proptest! {
        #[test]
        fn a_valid_version_is_one_plain_path_component(s in "\\PC{0,70}") {
            if let Ok(v) = Version::parse(&s) {
                let p = Path::new(v.as_str());
                let comps: Vec<_> = p.components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
            }
        }
    }

    #[test]
    fn current_link_must_name_a_version_dir() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::open(d.path()).unwrap();
        assert_eq!(l.current().unwrap(), None);
        let v = Version::parse("1.0").unwrap();
        l.ensure_version_dir(&v).unwrap();
        std::os::unix::fs::symlink(Layout::link_target(&v), l.current_link()).unwrap();
        assert_eq!(l.current().unwrap(), Some(v));
        fs::remove_file(l.current_link()).unwrap();
        std::os::unix::fs::symlink("/etc", l.current_link()).unwrap();
        assert!(matches!(l.current(), Err(Error::BadCurrentLink { .. })));
    }

    #[test]
    fn a_symlinked_version_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let l = Layout::open(d.path()).unwrap();
        let v = Version::parse("2.0").unwrap();
        std::os::unix::fs::symlink(outside.path(), l.version_dir(&v)).unwrap();
        assert!(matches!(
            l.ensure_version_dir(&v),
            Err(Error::PathEscapesRoot { .. })
        ));
    }
}
