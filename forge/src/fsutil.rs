//! Durable file primitives. Invariant: a file written with [`write_atomic`] is, after a
//! crash at any point, either its old content or its complete new content; a leftover
//! `*.tmp` sibling is never read and is safe to delete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::crash::{AtomicStep, CrashHook, CrashPoint};

/// Suffix of temporary files and links.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Path of the temporary sibling used while replacing `path`.
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// fsync a directory so creations, renames and removals inside it survive power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Reads a file, mapping "not found" to `None`.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` through a temp file, fsync, rename and an fsync of the
/// parent, consulting `hook` before each step (`point` names the file being written).
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    hook: &mut dyn CrashHook,
    point: fn(AtomicStep) -> CrashPoint,
) -> io::Result<()> {
    let tmp = tmp_sibling(path);
    hook.before(point(AtomicStep::CreateTmp))?;
    remove_file_if_present(&tmp)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half])?;
    hook.before(point(AtomicStep::Torn))?;
    f.write_all(&bytes[half..])?;
    hook.before(point(AtomicStep::SyncTmp))?;
    f.sync_all()?;
    drop(f);
    hook.before(point(AtomicStep::Rename))?;
    fs::rename(&tmp, path)?;
    hook.before(point(AtomicStep::SyncDir))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
