//! Ed25519 keys for TUF roles, kept in files of their own (never the hub's CA key).
//!
//! Invariant: a private key file is created with mode 0600 and is refused on load if
//! anyone but its owner can read it.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::{Ed25519Key, Ed25519Scheme, Key};

use crate::error::Error;

/// An Ed25519 signing key for one TUF role.
pub struct RoleKey {
    signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for RoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private material.
        f.debug_struct("RoleKey")
            .field("keyid", &self.key_id())
            .finish()
    }
}

/// The on-disk form: securesystemslib-like, private half hex-encoded.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    keytype: String,
    scheme: String,
    keyid: String,
    keyval: KeyVal,
}

#[derive(Serialize, Deserialize)]
struct KeyVal {
    public: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private: Option<String>,
}

fn key_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::TufKey {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The TUF public key object for a raw Ed25519 public key.
pub fn public_key(raw: [u8; 32]) -> Key {
    Key::Ed25519 {
        keyval: Ed25519Key {
            public: Decoded::from(raw.to_vec()),
            _extra: HashMap::new(),
        },
        scheme: Ed25519Scheme::Ed25519,
        _extra: HashMap::new(),
    }
}

/// The TUF key id (hex SHA-256 of the key's canonical JSON) of `key`.
pub fn key_id(key: &Key) -> Result<String, Error> {
    key.key_id().map(hex::encode).map_err(|e| Error::TufRepo {
        reason: format!("cannot compute key id: {e}"),
    })
}

impl RoleKey {
    /// The key for a 32-byte seed (from the OS RNG in the shell, fixed in tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The TUF public key object.
    pub fn public(&self) -> Key {
        public_key(self.signing.verifying_key().to_bytes())
    }

    /// The key id, hex.
    pub fn key_id(&self) -> String {
        // The canonical JSON of an Ed25519 key object always serialises.
        key_id(&self.public()).unwrap_or_default()
    }

    /// Signs `message` (canonical JSON of a `signed` object).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the key pair to `path` with mode 0600; refuses to replace a file unless
    /// `overwrite`.
    pub fn write(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        let file = KeyFile {
            keytype: "ed25519".to_owned(),
            scheme: "ed25519".to_owned(),
            keyid: self.key_id(),
            keyval: KeyVal {
                public: hex::encode(self.signing.verifying_key().to_bytes()),
                private: Some(hex::encode(self.signing.to_bytes())),
            },
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| key_err(path, e.to_string()))?;
        write_file(path, &bytes, 0o600, overwrite)
    }

    /// Writes only the public half (for an offline root key's operator to hand over).
    pub fn write_public(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        let file = KeyFile {
            keytype: "ed25519".to_owned(),
            scheme: "ed25519".to_owned(),
            keyid: self.key_id(),
            keyval: KeyVal {
                public: hex::encode(self.signing.verifying_key().to_bytes()),
                private: None,
            },
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| key_err(path, e.to_string()))?;
        write_file(path, &bytes, 0o644, overwrite)
    }

    /// Loads a key pair written by [`RoleKey::write`]; the file must be mode 0600 or
    /// stricter and its public half must match the private half.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let meta = fs::metadata(path).map_err(|e| key_err(path, e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(key_err(path, "readable by group or others: chmod 600 it"));
        }
        let bytes = fs::read(path).map_err(|e| key_err(path, e.to_string()))?;
        let file: KeyFile =
            serde_json::from_slice(&bytes).map_err(|e| key_err(path, e.to_string()))?;
        if file.keytype != "ed25519" || file.scheme != "ed25519" {
            return Err(key_err(path, "not an ed25519 key"));
        }
        let private = file
            .keyval
            .private
            .ok_or_else(|| key_err(path, "holds no private key (a public key file?)"))?;
        let seed: [u8; 32] = hex::decode(private)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| key_err(path, "private key is not 32 hex bytes"))?;
        let key = Self::from_seed(seed);
        if hex::encode(key.signing.verifying_key().to_bytes()) != file.keyval.public {
            return Err(key_err(path, "public key does not match the private key"));
        }
        Ok(key)
    }
}

/// Loads the public key of a key file (private or public-only).
pub fn load_public(path: &Path) -> Result<Key, Error> {
    let bytes = fs::read(path).map_err(|e| key_err(path, e.to_string()))?;
    let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| key_err(path, e.to_string()))?;
    let raw: [u8; 32] = hex::decode(&file.keyval.public)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| key_err(path, "public key is not 32 hex bytes"))?;
    Ok(public_key(raw))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| key_err(dir, e.to_string()))?;
    }
    if overwrite {
        return crate::tuf::store::write_atomic(path, bytes, mode)
            .map_err(|e| key_err(path, e.to_string()));
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| key_err(path, format!("{e} (refusing to replace an existing key)")))?;
    f.write_all(bytes)
        .map_err(|e| key_err(path, e.to_string()))?;
    f.sync_all().map_err(|e| key_err(path, e.to_string()))
}

/// Hex key id -> tough's decoded key id.
pub(crate) fn decoded_id(keyid: &str) -> Result<Decoded<Hex>, Error> {
    hex::decode(keyid)
        .map(Decoded::from)
        .map_err(|_| Error::TufRepo {
            reason: format!("key id {keyid} is not hex"),
        })
}
