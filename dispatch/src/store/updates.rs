//! What the hub stores about update packages, deployments and the nodes' update reports.
//!
//! Invariant: a package is named by `(name, version)` once and for ever: a revoked package
//! keeps its record (so the same name and version cannot be reused for other bytes), and a
//! record's `index_digest` names exactly the image the repository signed for it.

use bauxite_conduit::PeerId;
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// Where a package's image bytes come from when the hub serves them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageImage {
    /// A copy of the operator's file, `updates/images/<file>` in the data dir.
    File {
        /// File name inside the images directory (the index digest, hex, plus `.img`).
        file: String,
    },
    /// forge's deterministic virtual image, generated chunk by chunk, never stored.
    Virtual {
        /// Image length in bytes.
        size: u64,
        /// Generator seed.
        seed: u64,
    },
}

impl PackageImage {
    /// `file` or `virtual`, as `package list` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            PackageImage::File { .. } => "file",
            PackageImage::Virtual { .. } => "virtual",
        }
    }
}

/// One update package: a firmware image published as a TUF target with its chunk index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Package name (the first segment of its TUF target path).
    pub name: String,
    /// Version label (dotted numbers; also the staging directory name on robots).
    pub version: String,
    /// The image's TUF target name (`<name>/<version>.img`; the index is `<target>.chunks`).
    pub target: String,
    /// Where the hub reads the image from.
    pub image: PackageImage,
    /// Image length in bytes.
    pub length: u64,
    /// Number of 64 KiB chunks.
    pub chunk_count: u32,
    /// forge `IndexDigest` of the chunk index: names the image on the mesh.
    pub index_digest: [u8; 32],
    /// When it was created.
    pub created_at: UnixTime,
    /// Set once revoked: its targets are gone from the signed metadata.
    pub revoked_at: Option<UnixTime>,
}

impl PackageRecord {
    /// The store key: name and version, NUL-separated (neither may contain NUL).
    pub fn key(&self) -> Vec<u8> {
        package_key(&self.name, &self.version)
    }
}

/// The store key of package `name` `version`.
pub fn package_key(name: &str, version: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + version.len() + 1);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(version.as_bytes());
    key
}

/// What one node was asked to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// The node.
    pub node: PeerId,
    /// Grows by one with every change of this node's assignment, from 1.
    pub sequence: u64,
    /// Package name (empty for a rollback without a named package).
    pub name: String,
    /// Package version.
    pub version: String,
    /// The image's TUF target name (empty with `name`).
    pub target: String,
    /// Roll back to the previous version instead of installing.
    pub rollback: bool,
    /// When the operator made this assignment.
    pub assigned_at: UnixTime,
}

/// A node's report about its update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReportRecord {
    /// The assignment sequence it is about.
    pub sequence: u64,
    /// Target name.
    pub target: String,
    /// Version.
    pub version: String,
    /// forge `UpdateState` name (`PENDING_VALIDATION`, `VALID`, ...).
    pub state: String,
    /// Chunks verified and written.
    pub chunks_done: u64,
    /// Chunks in the image.
    pub chunks_total: u64,
    /// Bytes received for the update.
    pub bytes_transferred: u64,
    /// Bytes received more than once or thrown away.
    pub bytes_retransferred: u64,
    /// The version `current` points to.
    pub active_version: String,
    /// Free text (an error), may be empty.
    pub detail: String,
    /// When the hub received it.
    pub reported_at: UnixTime,
}
