//! Parsed views of TUF metadata as the client reads it.
//!
//! Invariant: parsing never decides trust. It turns bytes into typed views and keeps the
//! `signed` object as received, so signatures are checked over exactly what was signed
//! (unknown fields included); the trusted set decides what to believe.
//!
//! Keys and key ids are `tough`'s types. Hashes, delegations and targets have views of
//! their own because `tough`'s schema requires sha256 in every `hashes` object and knows
//! neither succinct hash-bin delegations nor the per-segment pattern rules.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::hashes::Hashes;
use super::refusal::Refusal;
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

fn malformed(role: &str, reason: impl ToString) -> Refusal {
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

fn header(role: &str, expected_type: &str, signed: &Value) -> Result<Header, Refusal> {
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

fn body<T: for<'de> Deserialize<'de>>(role: &str, signed: &Value) -> Result<T, Refusal> {
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

/// One target as a targets role lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TargetFile {
    /// Length in bytes.
    pub length: u64,
    /// Hashes of the content.
    pub hashes: Hashes,
    /// Application data (for firmware, see [`super::firmware::FirmwareInfo`]).
    #[serde(default)]
    pub custom: Option<Value>,
}

/// Which target paths a delegated role is trusted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathSpec {
    Patterns(Vec<String>),
    HashPrefixes(Vec<String>),
}

impl PathSpec {
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Patterns(p) => p.iter().any(|p| super::pattern::path_matches(p, path)),
            Self::HashPrefixes(p) => p
                .iter()
                .any(|p| super::pattern::hash_prefix_matches(p, path)),
        }
    }
}

/// A delegation to a named role.
#[derive(Debug, Clone)]
pub(crate) struct DelegatedRole {
    pub(crate) name: String,
    pub(crate) rule: RoleRule,
    pub(crate) terminating: bool,
    pub(crate) paths: PathSpec,
}

/// Succinct hash-bin delegations (TAP 15).
#[derive(Debug, Clone)]
pub(crate) struct SuccinctRoles {
    pub(crate) rule: RoleRule,
    pub(crate) bit_length: u32,
    pub(crate) name_prefix: String,
}

/// The delegations of a targets role.
#[derive(Debug, Clone)]
pub(crate) struct Delegations {
    pub(crate) keys: KeyRing,
    pub(crate) roles: Vec<DelegatedRole>,
    pub(crate) succinct: Option<SuccinctRoles>,
}

impl Delegations {
    /// The roles to visit for `path`, in order, each with its terminating flag.
    pub(crate) fn roles_for(&self, path: &str) -> Vec<(String, bool)> {
        if let Some(s) = &self.succinct {
            let name = super::pattern::succinct_role_for(&s.name_prefix, s.bit_length, path);
            return vec![(name, true)];
        }
        self.roles
            .iter()
            .filter(|r| r.paths.matches(path))
            .map(|r| (r.name.clone(), r.terminating))
            .collect()
    }

    /// The key rule for the delegated role `name`, if this metadata delegates it.
    pub(crate) fn rule_for(&self, name: &str) -> Option<&RoleRule> {
        if let Some(s) = &self.succinct {
            return super::pattern::is_succinct_role(&s.name_prefix, s.bit_length, name)
                .then_some(&s.rule);
        }
        self.roles.iter().find(|r| r.name == name).map(|r| &r.rule)
    }
}

/// Parsed targets metadata (top-level or delegated).
#[derive(Debug, Clone)]
pub struct TargetsMeta {
    /// Version and expiry.
    pub header: Header,
    /// Targets by path.
    pub targets: BTreeMap<String, TargetFile>,
    pub(crate) delegations: Option<Delegations>,
}

#[derive(Deserialize)]
struct RawDelegatedRole {
    name: String,
    keyids: Vec<String>,
    threshold: u64,
    #[serde(default)]
    terminating: bool,
    paths: Option<Vec<String>>,
    path_hash_prefixes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawSuccinct {
    keyids: Vec<String>,
    threshold: u64,
    bit_length: u32,
    name_prefix: String,
}

#[derive(Deserialize)]
struct RawDelegations {
    keys: BTreeMap<String, Value>,
    roles: Option<Vec<RawDelegatedRole>>,
    succinct_roles: Option<RawSuccinct>,
}

impl TargetsMeta {
    pub(crate) fn parse(role: &str, signed: &Value) -> Result<Self, Refusal> {
        #[derive(Deserialize)]
        struct Raw {
            targets: BTreeMap<String, TargetFile>,
            delegations: Option<RawDelegations>,
        }
        let header = header(role, "targets", signed)?;
        let raw: Raw = body(role, signed)?;
        let delegations = raw
            .delegations
            .map(|d| parse_delegations(d).map_err(|e| malformed(role, e)))
            .transpose()?;
        Ok(Self {
            header,
            targets: raw.targets,
            delegations,
        })
    }
}

fn parse_delegations(raw: RawDelegations) -> Result<Delegations, String> {
    let keys = KeyRing::parse(&raw.keys)?;
    match (raw.roles, raw.succinct_roles) {
        (Some(list), None) => {
            let mut names = BTreeSet::new();
            let mut roles = Vec::with_capacity(list.len());
            for r in list {
                // A delegated role named like a top-level role would share its file name.
                if r.name.is_empty() || TopRole::ALL.iter().any(|t| t.name() == r.name) {
                    return Err(format!("delegated role name {:?} is reserved", r.name));
                }
                if !names.insert(r.name.clone()) {
                    return Err(format!("delegated role {:?} listed twice", r.name));
                }
                let paths = match (r.paths, r.path_hash_prefixes) {
                    (Some(p), None) => PathSpec::Patterns(p),
                    (None, Some(p)) => PathSpec::HashPrefixes(p),
                    _ => {
                        return Err(format!(
                            "role {:?}: exactly one of paths, path_hash_prefixes",
                            r.name
                        ));
                    }
                };
                roles.push(DelegatedRole {
                    rule: RoleRule::parse(&r.keyids, r.threshold)?,
                    name: r.name,
                    terminating: r.terminating,
                    paths,
                });
            }
            Ok(Delegations {
                keys,
                roles,
                succinct: None,
            })
        }
        (None, Some(s)) => {
            if !(1..=32).contains(&s.bit_length) {
                return Err(format!("succinct_roles bit_length {}", s.bit_length));
            }
            Ok(Delegations {
                keys,
                roles: Vec::new(),
                succinct: Some(SuccinctRoles {
                    rule: RoleRule::parse(&s.keyids, s.threshold)?,
                    bit_length: s.bit_length,
                    name_prefix: s.name_prefix,
                }),
            })
        }
        _ => Err("delegations need exactly one of roles, succinct_roles".to_owned()),
    }
}
