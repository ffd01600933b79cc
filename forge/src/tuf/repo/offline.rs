//! Offline root: export the unsigned next root, sign it on another machine with a root
//! key file, import the signed root.
//!
//! Invariant: an imported root is accepted only if it is exactly the next version and
//! carries the thresholds of both the current root's root keys and its own, the check a
//! client makes (it runs the client's own verifier).

use std::path::Path;

use jiff::Timestamp;
use olpc_cjson::CanonicalFormatter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tough::schema::{RoleType, Root, Signed};

use super::keys::RoleKey;
use super::{Repository, expiry_from, repo_err};
use crate::error::Error;
use crate::tuf::trusted::TrustedSet;

#[derive(Serialize, Deserialize)]
struct LooseSigned {
    signed: Value,
    signatures: Vec<LooseSignature>,
}

#[derive(Serialize, Deserialize)]
struct LooseSignature {
    keyid: String,
    sig: String,
}

/// Adds (or replaces) the signature of the root key at `key_file` to the root metadata
/// `root_json`: the step run on the offline machine. Returns the new file content.
pub fn sign_root(root_json: &[u8], key_file: &Path) -> Result<Vec<u8>, Error> {
    let key = RoleKey::load(key_file)?;
    let doc: LooseSigned =
        serde_json::from_slice(root_json).map_err(|e| repo_err(format!("root file: {e}")))?;
    if doc.signed.get("_type").and_then(Value::as_str) != Some("root") {
        return Err(repo_err("not root metadata: sign only the exported root"));
    }
    sign_metadata(root_json, &key)
}

/// Adds (or replaces) `key`'s signature over the canonical JSON of any metadata file's
/// `signed` object, keeping the other signatures. Returns the new file content.
pub fn sign_metadata(json: &[u8], key: &RoleKey) -> Result<Vec<u8>, Error> {
    let mut doc: LooseSigned =
        serde_json::from_slice(json).map_err(|e| repo_err(format!("metadata file: {e}")))?;
    let mut canonical = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut canonical, CanonicalFormatter::new());
    doc.signed
        .serialize(&mut ser)
        .map_err(|e| repo_err(format!("canonical JSON: {e}")))?;
    let keyid = key.key_id();
    doc.signatures.retain(|s| s.keyid != keyid);
    doc.signatures.push(LooseSignature {
        sig: hex::encode(key.sign(&canonical)),
        keyid,
    });
    let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| repo_err(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

impl Repository {
    /// The next root (pending key changes, next version, fresh expiry) without
    /// signatures, to carry to the machine holding the root keys.
    pub fn export_root(&self, now: Timestamp) -> Result<Vec<u8>, Error> {
        let mut next = self.root.clone();
        if self.root_bytes.is_some() {
            next.version = next.version.saturating_add(1);
        }
        next.expires = expiry_from(now, self.options.expiry.root)?;
        let doc = Signed {
            signed: next,
            signatures: Vec::new(),
        };
        let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| repo_err(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Takes a root signed offline: it must be the next version, signed by the current
    /// and its own root thresholds. It is written by the next [`Repository::publish`],
    /// together with a snapshot and timestamp signed by the keys it names.
    pub fn import_root(&mut self, signed_root: &[u8], now: Timestamp) -> Result<u64, Error> {
        let current = self.root_bytes.as_ref().ok_or_else(|| {
            repo_err("no published root yet: publish the first root before importing")
        })?;
        let mut check = TrustedSet::new(current, now)?;
        check.update_root(signed_root)?;
        let parsed: Signed<Root> =
            serde_json::from_slice(signed_root).map_err(|e| repo_err(format!("root: {e}")))?;
        let targets_keys_changed =
            parsed.signed.roles.get(&RoleType::Targets) != self.root.roles.get(&RoleType::Targets);
        let version = parsed.signed.version.get();
        if targets_keys_changed {
            self.dirty.insert("targets".to_owned());
        }
        self.root = parsed.signed.clone();
        self.imported_root = Some((parsed.signed, signed_root.to_vec()));
        self.root_dirty = false;
        Ok(version)
    }
}
