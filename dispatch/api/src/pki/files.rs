//! Files under the data dir and the node's state root: secrets 0600, written atomically.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    file.write_all(bytes).map_err(Error::io("write", &tmp))?;
    file.sync_all().map_err(Error::io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync", dir))?;
    }
    Ok(())
}

/// Writes a private key: mode 0600.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Largest certificate, key or small state file read whole: far above any real one, low
/// enough that a wrong path (a disk image, a log) cannot exhaust memory.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// Reads a whole file of at most `limit` bytes; a larger one is refused before it is read
/// (and a file growing while read is cut at `limit + 1` bytes and refused too).
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let too_large = |len: u64| {
        Error::io("read", path)(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "it is {len} bytes, more than the {limit}-byte limit for this file; is it the right file?"
            ),
        ))
    };
    let file = fs::File::open(path).map_err(Error::io("read", path))?;
    let len = file.metadata().map_err(Error::io("read", path))?.len();
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut bytes)
        .map_err(Error::io("read", path))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn read_capped_text(path: &Path) -> Result<String> {
    String::from_utf8(read_capped(path, MAX_SMALL_FILE)?).map_err(|_| {
        Error::io("read", path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// Reads a private key, refusing one readable by group or others.
pub fn read_secret(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(Error::io("read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    read_capped_text(path)
}

/// Reads a public file (certificate, address), at most [`MAX_SMALL_FILE`] bytes.
pub fn read_text(path: &Path) -> Result<String> {
    read_capped_text(path)
}

/// Creates a directory (and missing parents) with mode 0700. An existing directory keeps
/// its mode: it may be shared (`/tmp`, `/etc`) and is the operator's to choose.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("create directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_created_0700_and_an_existing_shared_one_keeps_its_mode() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        create_private_dir(&fresh).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&fresh), 0o700);
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        create_private_dir(root.path()).unwrap();
        assert_eq!(mode(root.path()), 0o1777);
    }
}
