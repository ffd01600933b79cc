//! Durable file primitives: a file written with [`write_atomic`] is either the old
//! content or the complete new content after a crash, never a torn mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of temporary files written by [`write_atomic`]; leftovers are safe to delete.
pub const TMP_SUFFIX: &str = ".tmp";

/// Path of the temporary sibling used while writing `path`.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// fsync a directory so renames and creations inside it survive power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` via temp file, fsync, rename and parent fsync; `mode` sets
/// the permission bits of a newly written file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = tmp_sibling(path);
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
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes a new file that must not exist yet (for key material), with `mode`.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> io::Result<()> {
    if overwrite {
        return write_atomic(path, bytes, mode);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Largest config, manifest, key, certificate or state file read whole: far above any
/// real one, low enough that a wrong path (a disk image, a log) cannot exhaust memory.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// Reads a whole file of at most `limit` bytes. A larger one is refused before it is read
/// (`ErrorKind::FileTooLarge`, the message giving both sizes); a file that grows while
/// being read is cut at `limit + 1` bytes and refused too.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "it is {len} bytes, more than the {limit}-byte limit for this file; is it the right file?"
            ),
        )
    };
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    io::Read::read_to_end(&mut io::Read::take(file, limit + 1), &mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a file of at most [`MAX_SMALL_FILE`] bytes, mapping "not found" to `None`.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match read_capped(path, MAX_SMALL_FILE) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
