//! `bauxite keygen`: the node's mesh identity (Ed25519 + X25519, printed as a
//! `[[peers]]` entry to paste into other nodes' configs), and with `--raw` an Ed25519
//! manifest-signing key pair as raw bytes, the format `identity/manifest-verify.pub`
//! expects. Private keys never leave 0600 files.

use std::path::{Path, PathBuf};

use bauxite_conduit::identity::{Identity, PublicIdentity};
use ed25519_dalek::SigningKey;

use crate::error::ToolError;
use crate::fsutil::write_new;

/// File name of the raw 32-byte public key.
pub const PUBLIC_KEY_FILE: &str = "manifest-verify.pub";
/// File name of the raw 32-byte private key (seed).
pub const PRIVATE_KEY_FILE: &str = "manifest-verify.key";

/// Paths written by [`write_raw_keypair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    /// The public key (0644).
    pub public: PathBuf,
    /// The private key (0600).
    pub private: PathBuf,
}

/// Writes the key pair derived from `seed` into `out_dir`.
pub fn write_raw_keypair(
    out_dir: &Path,
    seed: &[u8; 32],
    force: bool,
) -> Result<KeyPaths, ToolError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ToolError::Io {
        action: "create",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let key = SigningKey::from_bytes(seed);
    let paths = KeyPaths {
        public: out_dir.join(PUBLIC_KEY_FILE),
        private: out_dir.join(PRIVATE_KEY_FILE),
    };
    for p in [&paths.public, &paths.private] {
        if !force && p.exists() {
            return Err(ToolError::Exists { path: p.clone() });
        }
    }
    let write = |path: &Path, bytes: &[u8], mode| {
        write_new(path, bytes, mode, force).map_err(|source| ToolError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    };
    write(&paths.private, seed, 0o600)?;
    write(&paths.public, key.verifying_key().as_bytes(), 0o644)?;
    Ok(paths)
}

/// Loads the identity at `path`, or creates it (0600, atomically) if there is none.
/// Returns it and whether it was created now.
pub fn load_or_create_identity(path: &Path) -> Result<(Identity, bool), bauxite_conduit::Error> {
    let existed = path.exists();
    let identity = Identity::load_or_generate(path)?;
    Ok((identity, !existed))
}

/// The `[[peers]]` entry other nodes need to accept this identity, as TOML.
pub fn peer_entry(public: &PublicIdentity, name: &str) -> String {
    format!(
        "[[peers]]\nname = \"{name}\"\nstatic_public = \"{}\"\nsigning_public = \"{}\"\nvirtual_ip = \"100.64.0.X\"        # this node's [node] virtual_ip, without the prefix\n# endpoint = \"192.0.2.7:51820\" # where this node listens, if reachable\n",
        hex::encode(public.static_public),
        hex::encode(public.signing_public),
    )
}

/// 32 bytes from the OS random number generator (the shell's only randomness).
#[allow(clippy::disallowed_methods)]
pub fn os_seed() -> Result<[u8; 32], ToolError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ToolError::Random(e.to_string()))?;
    Ok(seed)
}

/// Parses a raw private key: a 32-byte seed, or 64 bytes of seed ‖ public key (the
/// format Go's `ed25519.PrivateKey` writes), whose public half must match.
pub fn parse_private_key(bytes: &[u8], path: &Path) -> Result<SigningKey, ToolError> {
    let bad = |reason: String| ToolError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    match bytes.len() {
        32 | 64 => {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&bytes[..32]);
            let key = SigningKey::from_bytes(&seed);
            if bytes.len() == 64 && key.verifying_key().as_bytes()[..] != bytes[32..] {
                return Err(bad("public half does not match the seed".into()));
            }
            Ok(key)
        }
        n => Err(bad(format!("expected 32 (or 64) raw bytes, found {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_is_created_once_and_printed_as_peer_entry() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("id/identity.key");
        let (first, created) = load_or_create_identity(&path).unwrap();
        assert!(created);
        let (again, created) = load_or_create_identity(&path).unwrap();
        assert!(!created);
        assert_eq!(first.public(), again.public());
        let entry = peer_entry(&first.public(), "robot-1");
        assert!(entry.contains(&hex::encode(first.public().static_public)));
        assert!(entry.contains("name = \"robot-1\""));
        let value: toml::Value = toml::from_str(&entry).unwrap();
        assert_eq!(
            value["peers"][0]["signing_public"].as_str().unwrap().len(),
            64
        );
    }

    #[test]
    fn writes_raw_keys_with_modes() {
        let d = tempfile::tempdir().unwrap();
        let p = write_raw_keypair(d.path(), &[9; 32], false).unwrap();
        assert_eq!(std::fs::read(&p.public).unwrap().len(), 32);
        let private = std::fs::read(&p.private).unwrap();
        assert_eq!(private.len(), 32);
        let mode = std::fs::metadata(&p.private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            write_raw_keypair(d.path(), &[9; 32], false),
            Err(ToolError::Exists { .. })
        ));
        let key = parse_private_key(&private, &p.private).unwrap();
        let mut go_style = private.clone();
        go_style.extend_from_slice(key.verifying_key().as_bytes());
        assert!(parse_private_key(&go_style, &p.private).is_ok());
        go_style[40] ^= 1;
        assert!(parse_private_key(&go_style, &p.private).is_err());
    }
}
