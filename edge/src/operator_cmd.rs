//! `bauxite operator ...`: the operator lock's tools. The operator key is made and used
//! on the operator's machine (never on the hub): `keygen` writes it, `sign` signs a
//! node's key request (`request`, run on the node, prints it); the signed record is
//! uploaded with `bauxite-dispatch nodes sign`. Nodes pin the public key at join
//! (`--operator-key`) in `trust/operator.keys` under the state root.
//!
//! Files: `operator.key` (0600, the 32-byte Ed25519 seed as 64 hex digits) and
//! `operator.pub` (0644, the public key as 64 hex digits, the format `--operator-key`
//! and `trust/operator.keys` read: one key per line, `#` comments).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use bauxite_dispatch_api::operator::{
    KeyRecord, NodeKeyFacts, SignedKeyRecord, parse_operator_keys,
};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::ToolError;
use crate::fsutil::{read_capped, write_new};
use crate::keygen::KeyPaths;

/// The operator's private key file name.
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// The operator's public key file name.
pub const OPERATOR_PUB_FILE: &str = "operator.pub";
/// Where a node pins its operator keys, relative to the state root.
pub const TRUST_FILE: &str = "trust/operator.keys";
/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ToolError {
    let path = path.to_path_buf();
    move |source| ToolError::Io {
        action,
        path,
        source,
    }
}

fn bad_key(path: &Path, reason: impl ToString) -> ToolError {
    ToolError::BadKey {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Writes an operator key pair from `seed` into `out_dir` (created 0700 if missing).
pub fn keygen(out_dir: &Path, seed: &[u8; 32], force: bool) -> Result<KeyPaths, ToolError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .map_err(io("create", out_dir))?;
    let paths = KeyPaths {
        public: out_dir.join(OPERATOR_PUB_FILE),
        private: out_dir.join(OPERATOR_KEY_FILE),
    };
    for p in [&paths.public, &paths.private] {
        if !force && p.exists() {
            return Err(ToolError::Exists { path: p.clone() });
        }
    }
    let key = SigningKey::from_bytes(seed);
    let secret = Zeroizing::new(format!("{}\n", hex::encode(seed)));
    write_new(&paths.private, secret.as_bytes(), 0o600, force)
        .map_err(io("write", &paths.private))?;
    let public = format!(
        "# bauxite operator key: pin it on nodes with `bauxite join --operator-key FILE`\n{}\n",
        hex::encode(key.verifying_key().as_bytes())
    );
    write_new(&paths.public, public.as_bytes(), 0o644, force)
        .map_err(io("write", &paths.public))?;
    Ok(paths)
}

/// Loads the operator's private key; refuses a file others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, ToolError> {
    let mode = std::fs::metadata(path)
        .map_err(io("read", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(bad_key(
            path,
            format!(
                "mode {:o} lets others read the operator key: chmod 600 {}",
                mode & 0o777,
                path.display()
            ),
        ));
    }
    let text = Zeroizing::new(read_capped(path, MAX_KEY_FILE).map_err(io("read", path))?);
    let mut seed = Zeroizing::new([0u8; 32]);
    let hex_text = std::str::from_utf8(&text).map_err(|_| bad_key(path, "not text"))?;
    hex::decode_to_slice(hex_text.trim(), seed.as_mut()).map_err(|_| {
        bad_key(
            path,
            "expected 64 hex digits (from `bauxite operator keygen`)",
        )
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads operator public keys (one per line, `#` comments).
pub fn read_operator_keys(path: &Path) -> Result<Vec<[u8; 32]>, ToolError> {
    let bytes = read_capped(path, MAX_KEY_FILE).map_err(io("read", path))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad_key(path, "not text"))?;
    parse_operator_keys(text).map_err(|e| bad_key(path, e))
}

/// Reads the node's pinned keys (`hub.operator_keys`). With a state root, the file's real
/// path (symlinks resolved) must lie inside the root's real path: the config check is
/// lexical, this one catches a link that leads out.
pub fn read_pinned_keys(
    path: &Path,
    state_root: Option<&Path>,
) -> Result<Vec<[u8; 32]>, ToolError> {
    if let Some(root) = state_root {
        let real = std::fs::canonicalize(path).map_err(io("resolve", path))?;
        let real_root = std::fs::canonicalize(root).map_err(io("resolve", root))?;
        if !real.starts_with(&real_root) {
            return Err(bad_key(
                path,
                format!(
                    "it resolves to {}, outside the state root {}",
                    real.display(),
                    real_root.display()
                ),
            ));
        }
    }
    read_operator_keys(path)
}

/// The keys of every file in `files`, in order, without repeats.
pub fn collect_operator_keys(files: &[PathBuf]) -> Result<Vec<[u8; 32]>, ToolError> {
    let mut keys = Vec::new();
    for file in files {
        for key in read_operator_keys(file)? {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// The text of `trust/operator.keys` for `keys`.
pub fn trust_file_text(keys: &[[u8; 32]]) -> String {
    let mut text = String::from(
        "# Operator keys this node trusts (the operator lock): a peer is accepted only when\n\
         # its key record is signed by one of them. Written by `bauxite join --operator-key`.\n",
    );
    for key in keys {
        text.push_str(&hex::encode(key));
        text.push('\n');
    }
    text
}

/// Signs a node's request (`bxkr1.` text) valid until `not_after` (Unix seconds).
pub fn sign(
    key: &SigningKey,
    request: &str,
    not_after: u64,
    serial: u64,
) -> Result<SignedKeyRecord, ToolError> {
    let facts = NodeKeyFacts::from_text(request)
        .map_err(|e| ToolError::Argument(format!("the key request: {e}")))?;
    Ok(KeyRecord {
        facts,
        not_after,
        serial,
    }
    .sign(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_conduit::identity::Identity;
    use bauxite_dispatch_api::operator::OperatorLock;

    #[test]
    fn keygen_sign_and_pin_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("op");
        let paths = keygen(&out, &[5; 32], false).unwrap();
        let mode = std::fs::metadata(&paths.private)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            keygen(&out, &[6; 32], false),
            Err(ToolError::Exists { .. })
        ));
        let key = load_signing_key(&paths.private).unwrap();
        let keys = collect_operator_keys(&[paths.public.clone(), paths.public.clone()]).unwrap();
        assert_eq!(keys, vec![key.verifying_key().to_bytes()]);
        let trust = dir.path().join("operator.keys");
        std::fs::write(&trust, trust_file_text(&keys)).unwrap();
        let lock = OperatorLock::new(read_operator_keys(&trust).unwrap());

        let public = Identity::from_secrets([1; 32], [2; 32]).public();
        let facts = crate::operator_lock::own_facts(&public, "100.64.0.9".parse().unwrap());
        let signed = sign(&key, &facts.to_text(), 2_000_000_000, 3).unwrap();
        assert!(lock.check(&facts, &signed.encode(), 1_900_000_000).is_ok());
        assert!(matches!(
            sign(&key, "bxkr1.00", 1, 1),
            Err(ToolError::Argument(_))
        ));

        // Pinned keys must resolve inside the state root.
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("trust")).unwrap();
        let inside = root.join("trust/operator.keys");
        std::fs::copy(&trust, &inside).unwrap();
        assert_eq!(read_pinned_keys(&inside, Some(&root)).unwrap(), keys);
        let link = root.join("trust/link.keys");
        std::os::unix::fs::symlink(&trust, &link).unwrap();
        let e = read_pinned_keys(&link, Some(&root)).unwrap_err();
        assert!(e.to_string().contains("outside the state root"), "{e}");

        // A private key others can read is refused.
        std::fs::set_permissions(&paths.private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_signing_key(&paths.private).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
