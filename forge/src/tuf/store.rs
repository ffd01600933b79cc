//! Where trusted metadata lives between runs: one file per role, holding the exact bytes
//! that were verified.
//!
//! Invariant: a role's file is either its previous content or the complete new content
//! (temp file, fsync, rename, fsync of the directory), and its name cannot leave the
//! directory: role names are percent-encoded, so `/` and `..` never reach the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::Error;

/// Characters left as they are when a name becomes a file name or URL segment: the
/// unreserved set, as Python's `urllib.parse.quote(name, "")` leaves them.
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// Percent-encodes `name` so it is one path segment (no `/`).
pub fn quote(name: &str) -> String {
    utf8_percent_encode(name, QUOTE).to_string()
}

/// Storage for trusted metadata, keyed by role name.
pub trait MetadataStore {
    /// The stored bytes for `role`, if any.
    fn load(&self, role: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Replaces the stored bytes for `role`, atomically.
    fn store(&mut self, role: &str, bytes: &[u8]) -> Result<(), Error>;
}

/// A plain directory: `root.json`, `timestamp.json`, `snapshot.json`, `targets.json`,
/// and `<percent-encoded role>.json` for delegated roles.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file that holds `role`.
    pub fn path_of(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{}.json", quote(role)))
    }
}

impl MetadataStore for DirStore {
    fn load(&self, role: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path_of(role);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn store(&mut self, role: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path_of(role);
        fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            action: "create directory",
            path: self.dir.clone(),
            source,
        })?;
        write_atomic(&path, bytes, 0o644).map_err(|source| Error::Io {
            action: "write",
            path,
            source,
        })
    }
}

/// Temp sibling of `path`: hidden, and not ending in `.json`.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part"))
}

/// Writes `bytes` to `path` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let _ = fs::remove_file(&tmp);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// fsyncs the directory holding `path`, so a rename inside it survives power loss.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}
