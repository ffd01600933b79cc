//! Trust for updates: The Update Framework (TUF 1.0), repository and client.
//!
//! Invariant: no target byte and no metadata file is trusted before it passed the TUF
//! client workflow (section 5): signature thresholds of the keys its parent delegates,
//! version rules against rollback, expiry against freeze, lengths and hashes signed by
//! its parent against mix-and-match and endless data.
//!
//! - [`client`]: the workflow driver ([`Client`]) over [`MetadataSource`],
//!   [`TargetSource`] and [`MetadataStore`]; `trusted` is its pure state machine.
//! - [`repo`]: create, sign and publish a repository; rotate keys; offline root.
//! - [`firmware`]: the `custom.bauxite` object of firmware targets.
//! - `metadata`, `verify`, `hashes`, `pattern`: parsing, signature thresholds (through
//!   `tough`'s verifier), length and hash checks, delegation path matching.

pub mod client;
mod download;
pub mod firmware;
pub mod hashes;
pub mod metadata;
pub mod pattern;
pub mod refusal;
pub mod repo;
pub mod source;
pub mod store;
mod targets_meta;
pub(crate) mod trusted;
pub(crate) mod verify;

pub use client::{Client, Limits, TargetInfo};
pub use firmware::{FirmwareInfo, FirmwareTarget};
pub use hashes::{HashAlgorithm, Hashes};
pub use metadata::TopRole;
pub use refusal::Refusal;
pub use source::{DirSource, FetchError, MetadataSource, TargetSource};
pub use store::{DirStore, MetadataStore};

/// Parses a metadata file's envelope and `signed` header without verifying anything
/// (for fuzzing and diagnostics): returns the role type and version.
pub fn inspect(bytes: &[u8]) -> Result<(TopRole, u64), Refusal> {
    let env = metadata::parse_envelope("metadata", bytes)?;
    let ty = env
        .signed
        .get("_type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_owned();
    Ok(match ty.as_str() {
        "root" => (
            TopRole::Root,
            metadata::RootMeta::parse(&env.signed)?.header.version,
        ),
        "timestamp" => (
            TopRole::Timestamp,
            metadata::TimestampMeta::parse(&env.signed)?.header.version,
        ),
        "snapshot" => (
            TopRole::Snapshot,
            metadata::SnapshotMeta::parse(&env.signed)?.header.version,
        ),
        _ => (
            TopRole::Targets,
            metadata::TargetsMeta::parse("targets", &env.signed)?
                .header
                .version,
        ),
    })
}
