//! Where metadata and targets come from: two small traits, so the workflow runs the same
//! over HTTP, over the mesh, or from a directory (a USB bundle, a test).
//!
//! Invariant: the client never reads more than `max_len + 1` bytes from a source,
//! whatever the source does, so an endless-data attack costs at most the limit.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::refusal::Refusal;

/// A fetch that did not produce bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The file is not published (HTTP 404/403, a missing file).
    #[error("{path}: not found on the repository")]
    NotFound {
        /// What was asked for.
        path: String,
    },
    /// The source announced more than the limit.
    #[error("{path}: larger than the {limit}-byte limit")]
    TooLarge {
        /// What was asked for.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// Anything else (connection, timeout, status); retry later or check the URL.
    #[error("{path}: {reason}; check the repository URL and the network")]
    Transport {
        /// What was asked for.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// Source of metadata files, named as published (`2.root.json`, `timestamp.json`, ...).
pub trait MetadataSource {
    /// Opens `file_name`; `max_len` is the most the client will read (sources may refuse
    /// earlier from a declared length).
    fn fetch_metadata(
        &mut self,
        file_name: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError>;
}

/// Source of target files, by URL path under the targets base (`a/b/<hash>.name`).
pub trait TargetSource {
    /// Opens `path`; `max_len` is the signed length.
    fn fetch_target(&mut self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, FetchError>;
}

/// Reads at most `max_len` bytes; one more is an endless-data refusal.
pub(crate) fn read_bounded(
    what: &str,
    reader: &mut dyn Read,
    max_len: u64,
) -> Result<Result<Vec<u8>, Refusal>, io::Error> {
    let mut buf = Vec::new();
    reader
        .take(max_len.saturating_add(1))
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max_len {
        return Ok(Err(Refusal::TooLarge {
            what: what.to_owned(),
            limit: max_len,
        }));
    }
    Ok(Ok(buf))
}

/// A repository published to a directory: `metadata/` and `targets/` under one root.
#[derive(Debug, Clone)]
pub struct DirSource {
    metadata: PathBuf,
    targets: PathBuf,
}

impl DirSource {
    /// Metadata from `metadata`, targets from `targets`.
    pub fn new(metadata: impl Into<PathBuf>, targets: impl Into<PathBuf>) -> Self {
        Self {
            metadata: metadata.into(),
            targets: targets.into(),
        }
    }
}

fn open(path: PathBuf, shown: &str) -> Result<Box<dyn Read>, FetchError> {
    // Names reach here percent-encoded or checked by the client; this guard keeps a
    // directory source safe on its own too.
    if shown
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(FetchError::NotFound {
            path: shown.to_owned(),
        });
    }
    match File::open(&path) {
        Ok(f) => Ok(Box::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FetchError::NotFound {
            path: shown.to_owned(),
        }),
        Err(e) => Err(FetchError::Transport {
            path: shown.to_owned(),
            reason: e.to_string(),
        }),
    }
}

impl MetadataSource for DirSource {
    fn fetch_metadata(
        &mut self,
        file_name: &str,
        _max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError> {
        open(self.metadata.join(file_name), file_name)
    }
}

impl TargetSource for DirSource {
    fn fetch_target(
        &mut self,
        path: &str,
        _max_len: u64,
    ) -> Result<Box<dyn Read + '_>, FetchError> {
        open(self.targets.join(path), path)
    }
}
