//! Parsed views of TUF metadata as the client reads it.
//!
//! Invariant: parsing never decides trust. It turns bytes into typed views and keeps the
//! `signed` object as received, so signatures are checked over exactly what was signed
//! (unknown fields included); the trusted set decides what to believe.
//!
//! Keys and key ids are `tough`'s types. Hashes, delegations and targets (in
//! `targets_meta.rs`) have views of their own because `tough`'s schema requires sha256 in
//! every `hashes` object and knows neither succinct hash-bin delegations nor the
//! per-segment pattern rules.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::hashes::Hashes;
use super::refusal::Refusal;
pub use super::targets_meta::{TargetFile, TargetsMeta};
use super::verify::{KeyRing, RoleRule};

/// The four top-level roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TopRole {
    /// Root of trust: keys and thresholds of every top-level role.
    Root,
    /// Freshness: names the current snapshot.
    Timestamp,
    /// Consistency: versions of every targets metadata file.
    Snapshot,
    /// What may be installed.
    Targets,
}

impl TopRole {
    /// The role's name in metadata and file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Timestamp => "timestamp",
            Self::Snapshot => "snapshot",
            Self::Targets => "targets",
        }
    }

    /// Every top-level role.
    pub const ALL: [TopRole; 4] = [Self::Root, Self::Timestamp, Self::Snapshot, Self::Targets];
}

/// One signature as received.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawSignature {
    pub(crate) keyid: String,
    pub(crate) sig: String,
}

/// A metadata file split into its `signed` object and signatures.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) signed: Value,
    pub(crate) signatures: Vec<RawSignature>,
}

pub(super) fn malformed(role: &str, reason: impl ToString) -> Refusal {
    Refusal::Malformed {
        role: role.to_owned(),
        reason: reason.to_string(),
    }
}

/// Splits `bytes` into an envelope; duplicate signature key ids are refused here.
pub(crate) fn parse_envelope(role: &str, bytes: &[u8]) -> Result<Envelope, Refusal> {
    #[derive(Deserialize)]
    struct Raw {
        signed: Value,
        signatures: Vec<RawSignature>,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| malformed(role, e))?;
    let mut seen = BTreeSet::new();
    for s in &raw.signatures {
        if !seen.insert(s.keyid.to_ascii_lowercase()) {
            return Err(Refusal::DuplicateSignature {
                role: role.to_owned(),
                keyid: s.keyid.clone(),
            });
        }
    }
    Ok(Envelope {
        signed: raw.signed,
        signatures: raw.signatures,
    })
}

/// Version and expiry, common to every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The metadata version (>= 1).
    pub version: u64,
    /// When it stops being trusted.
    pub expires: Timestamp,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(rename = "_type")]
    ty: String,
    spec_version: String,
    version: u64,
    expires: String,
}

pub(super) fn header(role: &str, expected_type: &str, signed: &Value) -> Result<Header, Refusal> {
    let raw: RawHeader = serde_json::from_value(signed.clone()).map_err(|e| malformed(role, e))?;
    if raw.ty != expected_type {
        return Err(Refusal::WrongType {
            role: role.to_owned(),
            found: raw.ty,
        });
    }
    let major = raw.spec_version.split('.').next().unwrap_or_default();
    if major != "1" || raw.spec_version.split('.').count() < 2 {
        return Err(Refusal::SpecVersion {
            role: role.to_owned(),
            found: raw.spec_version,
        });
    }
    if raw.version == 0 {
        return Err(malformed(role, "version 0"));
    }
    let expires =
        Timestamp::from_str(&raw.expires).map_err(|e| malformed(role, format!("expires: {e}")))?;
    Ok(Header {
        version: raw.version,
        expires,
    })
}

pub(super) fn body<T: for<'de> Deserialize<'de>>(role: &str, signed: &Value) -> Result<T, Refusal> {
    serde_json::from_value(signed.clone()).map_err(|e| malformed(role, e))
}

/// A role's key ids and threshold, as written.
#[derive(Debug, Clone, Deserialize)]
struct RawRoleKeys {
    keyids: Vec<String>,
    threshold: u64,
}

/// Parsed root metadata.
#[derive(Debug, Clone)]
pub struct RootMeta {
    /// Version and expiry.
    pub header: Header,
    /// Whether metadata and targets are published under versioned / hashed names.
    pub consistent_snapshot: bool,
    pub(crate) keys: KeyRing,
    pub(crate) roles: BTreeMap<TopRole, RoleRule>,
}

impl RootMeta {
    /// Parses root metadata's `signed` object.
    pub(crate) fn parse(signed: &Value) -> Result<Self, Refusal> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            consistent_snapshot: bool,
            keys: BTreeMap<String, Value>,
            roles: BTreeMap<String, RawRoleKeys>,
        }
        let header = header("root", "root", signed)?;
        let raw: Raw = body("root", signed)?;
        let keys = KeyRing::parse(&raw.keys).map_err(|e| malformed("root", e))?;
        let mut roles = BTreeMap::new();
        for role in TopRole::ALL {
            let spec = raw
                .roles
                .get(role.name())
                .ok_or_else(|| malformed("root", format!("no `{}` role", role.name())))?;
            let rule = RoleRule::parse(&spec.keyids, spec.threshold)
                .map_err(|e| malformed("root", format!("{}: {e}", role.name())))?;
            roles.insert(role, rule);
        }
        Ok(Self {
            header,
            consistent_snapshot: raw.consistent_snapshot,
            keys,
            roles,
        })
    }

    /// The rule for a top-level role (every parsed root has all four).
    pub(crate) fn rule(&self, role: TopRole) -> Option<&RoleRule> {
        self.roles.get(&role)
    }
}

/// Version, length and hashes of a metadata file, as snapshot and timestamp list them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetaFile {
    /// The file's version.
    pub version: u64,
    /// Its length in bytes, if listed.
    #[serde(default)]
    pub length: Option<u64>,
    /// Its hashes, if listed.
    #[serde(default)]
    pub hashes: Option<Hashes>,
}

/// Parsed timestamp metadata.
#[derive(Debug, Clone)]
pub struct TimestampMeta {
    /// Version and expiry.
    pub header: Header,
    /// The snapshot it names.
    pub snapshot: MetaFile,
}

impl TimestampMeta {
    pub(crate) fn parse(signed: &Value) -> Result<Self, Refusal> {
        #[derive(Deserialize)]
        struct Raw {
            meta: BTreeMap<String, MetaFile>,
        }
        let header = header("timestamp", "timestamp", signed)?;
        let raw: Raw = body("timestamp", signed)?;
        let snapshot = raw
            .meta
            .get("snapshot.json")
            .cloned()
            .ok_or_else(|| malformed("timestamp", "no snapshot.json in meta"))?;
        Ok(Self { header, snapshot })
    }
}

/// Parsed snapshot metadata.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    /// Version and expiry.
    pub header: Header,
    /// Every targets metadata file by name (`targets.json`, `<role>.json`).
    pub meta: BTreeMap<String, MetaFile>,
}

impl SnapshotMeta {
    pub(crate) fn parse(signed: &Value) -> Result<Self, Refusal> {
        #[derive(Deserialize)]
        struct Raw {
            meta: BTreeMap<String, MetaFile>,
        }
        let header = header("snapshot", "snapshot", signed)?;
        let raw: Raw = body("snapshot", signed)?;
        Ok(Self {
            header,
            meta: raw.meta,
        })
    }
}
