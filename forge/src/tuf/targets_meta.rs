//! Parsed targets metadata: targets, and delegations by path pattern, hash prefix or
//! succinct hash bins.
//!
//! Invariant: a parsed delegation list has unique role names, none named like a
//! top-level role (it would share that role's file), and exactly one way of matching
//! paths per role.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::hashes::Hashes;
use super::metadata::{Header, TopRole, body, header, malformed};
use super::refusal::Refusal;
use super::verify::{KeyRing, RoleRule};

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
