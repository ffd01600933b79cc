//! Target downloads: streamed through the signed hashes into a hidden temp file, renamed
//! to the target's final name only once length and every known hash matched.
//!
//! Invariant: a file under a target's final name in the target directory always holds
//! bytes that matched the signed metadata when it was written.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use super::client::{Client, TargetInfo, transport};
use super::hashes::{HashAlgorithm, Hashes, MultiHasher, check_digests};
use super::refusal::Refusal;
use super::source::{TargetSource, read_bounded};
use super::store::{MetadataStore, quote, sync_parent, temp_sibling};
use crate::error::Error;

impl<S: MetadataStore> Client<S> {
    /// Fetches a target into memory, bounded by and verified against its signed length
    /// and hashes (for small targets such as a chunk index).
    pub fn fetch_target_bytes(
        &self,
        source: &mut dyn TargetSource,
        info: &TargetInfo,
    ) -> Result<Vec<u8>, Error> {
        let algorithms = info.hashes.algorithms(&info.name)?;
        let mut reader = source.fetch_target(&info.url_path, info.length)?;
        let bytes = read_bounded(&info.name, &mut reader, info.length)
            .map_err(|e| transport(&info.url_path, e))??;
        let mut hasher = MultiHasher::new(&algorithms);
        hasher.update(&bytes);
        check_digests(&info.name, Some(info.length), Some(&info.hashes), hasher)?;
        Ok(bytes)
    }

    /// Downloads a target into `dir` as `<percent-encoded name>`, streaming through the
    /// hashes into a hidden temp file that is renamed only once verified. A file already
    /// there with the signed length and hashes is reused without a download.
    pub fn download_target(
        &self,
        source: &mut dyn TargetSource,
        info: &TargetInfo,
        dir: &Path,
    ) -> Result<PathBuf, Error> {
        let algorithms = info.hashes.algorithms(&info.name)?;
        let dest = dir.join(quote(&info.name));
        if verify_file(&dest, info, &algorithms).is_ok() {
            return Ok(dest);
        }
        let tmp = temp_sibling(&dest);
        let result = stream_to(source, info, &algorithms, &tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        fs::rename(&tmp, &dest).map_err(|source| io_err("rename", &dest, source))?;
        sync_parent(&dest).map_err(|source| io_err("sync", dir, source))?;
        Ok(dest)
    }
}

fn stream_to(
    source: &mut dyn TargetSource,
    info: &TargetInfo,
    algorithms: &[HashAlgorithm],
    tmp: &Path,
) -> Result<(), Error> {
    let _ = fs::remove_file(tmp);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|source| io_err("create", tmp, source))?;
    let mut reader = source.fetch_target(&info.url_path, info.length)?;
    let mut hasher = MultiHasher::new(algorithms);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| transport(&info.url_path, e))?;
        if n == 0 {
            break;
        }
        if hasher.length() + n as u64 > info.length {
            return Err(Refusal::TooLarge {
                what: info.name.clone(),
                limit: info.length,
            }
            .into());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|source| io_err("write", tmp, source))?;
    }
    check_digests(&info.name, Some(info.length), Some(&info.hashes), hasher)?;
    out.sync_all().map_err(|source| io_err("sync", tmp, source))
}

fn verify_file(path: &Path, info: &TargetInfo, algorithms: &[HashAlgorithm]) -> Result<(), Error> {
    let mut f = File::open(path).map_err(|source| io_err("open", path, source))?;
    let mut hasher = MultiHasher::new(algorithms);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|source| io_err("read", path, source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if hasher.length() > info.length {
            break;
        }
    }
    Ok(check_digests(
        &info.name,
        Some(info.length),
        Some(&info.hashes),
        hasher,
    )?)
}

/// Refuses target names that could escape a directory or a URL path.
pub(crate) fn check_target_name(name: &str) -> Result<(), Refusal> {
    let bad = |reason| {
        Err(Refusal::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.starts_with('/') {
        return bad("empty or absolute");
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("empty, `.` or `..` segment");
    }
    Ok(())
}

/// The URL path of a target: each segment percent-encoded; with consistent snapshots the
/// last segment is prefixed by `<hash>.` of the preferred known algorithm.
pub fn url_path(name: &str, hashes: &Hashes, consistent_snapshot: bool) -> Result<String, Refusal> {
    check_target_name(name)?;
    let (dir, base) = match name.rsplit_once('/') {
        Some((d, b)) => (Some(d), b),
        None => (None, name),
    };
    let base = if consistent_snapshot {
        let (_, digest) = hashes.url_hash().ok_or_else(|| Refusal::NoKnownHash {
            what: name.to_owned(),
            algorithms: hashes.0.keys().cloned().collect(),
        })?;
        format!("{}.{}", digest, quote(base))
    } else {
        quote(base)
    };
    Ok(match dir {
        Some(d) => {
            let d: Vec<String> = d.split('/').map(quote).collect();
            format!("{}/{base}", d.join("/"))
        }
        None => base,
    })
}

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
