//! Target and delegation edits of a [`Repository`]; published by the next `publish`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tough::TargetName;
use tough::schema::decoded::Decoded;
use tough::schema::{DelegatedRole, Delegations, PathPattern, PathSet, Target, Targets};

use super::{Repository, RoleSpec, keys, non_zero, repo_err};
use crate::error::Error;
use crate::tuf::client::url_path;
use crate::tuf::hashes::{HashAlgorithm, Hashes, MultiHasher};
use crate::tuf::metadata::TopRole;
use crate::tuf::store::{sync_parent, temp_sibling};

/// A delegation to add: who may sign which paths.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// The delegated role's name.
    pub name: String,
    /// Its keys and threshold.
    pub keys: RoleSpec,
    /// Path patterns it is trusted for (`firmware/robot-*/*`).
    pub paths: Vec<String>,
    /// Whether a lookup that reaches it stops there.
    pub terminating: bool,
}

fn to_tough_hashes(name: &str, hashes: &Hashes) -> Result<tough::schema::Hashes, Error> {
    let sha256 = hashes
        .get(HashAlgorithm::Sha256)
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| repo_err(format!("{name}: a sha256 hash is required")))?;
    let extra = hashes
        .0
        .iter()
        .filter(|(alg, _)| alg.as_str() != "sha256")
        .map(|(alg, digest)| (alg.clone(), Value::String(digest.clone())))
        .collect();
    Ok(tough::schema::Hashes {
        sha256: Decoded::from(sha256),
        _extra: extra,
    })
}

fn custom_map(name: &str, custom: Option<Value>) -> Result<HashMap<String, Value>, Error> {
    match custom {
        None => Ok(HashMap::new()),
        Some(Value::Object(map)) => Ok(map.into_iter().collect()),
        Some(_) => Err(repo_err(format!("{name}: custom must be a JSON object"))),
    }
}

impl Repository {
    fn algorithms(&self) -> Vec<HashAlgorithm> {
        let mut list = vec![HashAlgorithm::Sha256];
        for a in &self.options.hashes {
            if !list.contains(a) {
                list.push(*a);
            }
        }
        list
    }

    fn role_mut(&mut self, role: &str) -> Result<&mut Targets, Error> {
        self.roles
            .get_mut(role)
            .ok_or_else(|| repo_err(format!("no targets role {role}: delegate it first")))
    }

    /// Lists a target described elsewhere (length and hashes computed by the caller, e.g.
    /// an image generated chunk by chunk and never stored); writes no content.
    pub fn add_target_meta(
        &mut self,
        role: &str,
        name: &str,
        length: u64,
        hashes: &Hashes,
        custom: Option<Value>,
    ) -> Result<(), Error> {
        let target_name =
            TargetName::new(name).map_err(|e| repo_err(format!("target name {name:?}: {e}")))?;
        url_path(name, hashes, true)?;
        let target = Target {
            length,
            hashes: to_tough_hashes(name, hashes)?,
            custom: custom_map(name, custom)?,
            _extra: HashMap::new(),
        };
        self.role_mut(role)?.targets.insert(target_name, target);
        self.dirty.insert(role.to_owned());
        Ok(())
    }

    /// Adds `content` as target `name` of `role`, writing it to the targets directory
    /// under its hash-prefixed name. Returns the hashes listed.
    pub fn add_target(
        &mut self,
        role: &str,
        name: &str,
        content: &[u8],
        custom: Option<Value>,
    ) -> Result<Hashes, Error> {
        let hashes = crate::tuf::hashes::hashes_of(content, &self.algorithms());
        let dest = self.content_path(name, &hashes)?;
        self.write_content(&dest, &mut std::io::Cursor::new(content))?;
        self.add_target_meta(role, name, content.len() as u64, &hashes, custom)?;
        Ok(hashes)
    }

    /// Adds the file at `path` as target `name` of `role` (streamed: hashed, then copied
    /// under its hash-prefixed name). Returns the length and hashes listed.
    pub fn add_target_file(
        &mut self,
        role: &str,
        name: &str,
        path: &Path,
        custom: Option<Value>,
    ) -> Result<(u64, Hashes), Error> {
        let io = |action, source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let mut hasher = MultiHasher::new(&self.algorithms());
        let mut f = File::open(path).map_err(|e| io("open", e))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(|e| io("read", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let length = hasher.length();
        let hashes = Hashes(
            hasher
                .finish()
                .into_iter()
                .map(|(a, d)| (a.name().to_owned(), d))
                .collect(),
        );
        let dest = self.content_path(name, &hashes)?;
        let mut f = File::open(path).map_err(|e| io("open", e))?;
        self.write_content(&dest, &mut f)?;
        self.add_target_meta(role, name, length, &hashes, custom)?;
        Ok((length, hashes))
    }

    /// Removes target `name` from `role`; its content file stays for clients still on
    /// the previous snapshot.
    pub fn remove_target(&mut self, role: &str, name: &str) -> Result<(), Error> {
        let target_name = TargetName::new(name).map_err(|e| repo_err(format!("{name:?}: {e}")))?;
        if self.role_mut(role)?.targets.remove(&target_name).is_none() {
            return Err(repo_err(format!("{role} lists no target {name}")));
        }
        self.dirty.insert(role.to_owned());
        Ok(())
    }

    fn content_path(&self, name: &str, hashes: &Hashes) -> Result<PathBuf, Error> {
        Ok(self.targets_dir().join(url_path(name, hashes, true)?))
    }

    fn write_content(&self, dest: &Path, content: &mut dyn std::io::Read) -> Result<(), Error> {
        let io = |action, source| Error::Io {
            action,
            path: dest.to_path_buf(),
            source,
        };
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
        }
        let tmp = temp_sibling(dest);
        let _ = fs::remove_file(&tmp);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io("create", e))?;
        std::io::copy(content, &mut out).map_err(|e| io("write", e))?;
        out.flush().map_err(|e| io("write", e))?;
        out.sync_all().map_err(|e| io("sync", e))?;
        fs::rename(&tmp, dest).map_err(|e| io("rename", e))?;
        sync_parent(dest).map_err(|e| io("sync", e))
    }

    /// Delegates `delegation.paths` of `delegator`'s namespace to a new role (created
    /// empty), listed after the delegator's existing delegations.
    pub fn delegate(&mut self, delegator: &str, delegation: &Delegation) -> Result<(), Error> {
        let name = &delegation.name;
        if TopRole::ALL.iter().any(|t| t.name() == name) || name.is_empty() {
            return Err(repo_err(format!(
                "{name:?} is reserved for a top-level role"
            )));
        }
        if self.roles.contains_key(name) {
            return Err(repo_err(format!("role {name} exists already")));
        }
        let paths = delegation
            .paths
            .iter()
            .map(|p| {
                PathPattern::new(p.as_str()).map_err(|e| repo_err(format!("pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (spec_version, expires) = {
            let parent = self
                .roles
                .get(delegator)
                .ok_or_else(|| repo_err(format!("no targets role {delegator}")))?;
            (parent.spec_version.clone(), parent.expires)
        };
        let parent = self.role_mut(delegator)?;
        let delegations = parent.delegations.get_or_insert_with(Delegations::new);
        let keyids = add_delegation_keys(delegations, &delegation.keys)?;
        delegations.roles.push(DelegatedRole {
            name: name.clone(),
            keyids,
            threshold: non_zero(delegation.keys.threshold, name)?,
            paths: PathSet::Paths(paths),
            terminating: delegation.terminating,
            targets: None,
        });
        self.roles.insert(
            name.clone(),
            Targets::new(spec_version, NonZeroU64::MIN, expires),
        );
        self.dirty.insert(delegator.to_owned());
        self.dirty.insert(name.clone());
        Ok(())
    }

    /// Rotates the keys of delegated role `name` in `delegator`; the role is re-signed
    /// at the next publish.
    pub fn set_delegation_keys(
        &mut self,
        delegator: &str,
        name: &str,
        spec: &RoleSpec,
    ) -> Result<(), Error> {
        let parent = self.role_mut(delegator)?;
        let delegations = parent
            .delegations
            .as_mut()
            .ok_or_else(|| repo_err(format!("{delegator} delegates nothing")))?;
        let keyids = add_delegation_keys(delegations, spec)?;
        let role = delegations
            .roles
            .iter_mut()
            .find(|r| r.name == name)
            .ok_or_else(|| repo_err(format!("{delegator} does not delegate {name}")))?;
        role.keyids = keyids;
        role.threshold = non_zero(spec.threshold, name)?;
        self.dirty.insert(delegator.to_owned());
        self.dirty.insert(name.to_owned());
        Ok(())
    }
}

fn add_delegation_keys(
    delegations: &mut Delegations,
    spec: &RoleSpec,
) -> Result<Vec<Decoded<tough::schema::decoded::Hex>>, Error> {
    let mut keyids = Vec::new();
    for key in &spec.keys {
        let id = keys::decoded_id(&keys::key_id(key)?)?;
        delegations.keys.insert(id.clone(), key.clone());
        if !keyids.contains(&id) {
            keyids.push(id);
        }
    }
    if (keyids.len() as u64) < spec.threshold {
        return Err(repo_err(format!(
            "threshold {} with only {} key(s)",
            spec.threshold,
            keyids.len()
        )));
    }
    Ok(keyids)
}
