//! `bauxite manifest sign|verify`: raw Ed25519 signatures over a file's exact bytes,
//! written next to it as `FILE.sig` (64 bytes), as precheck verifies them.

use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;

use crate::error::{Error, ToolError};
use crate::fsutil::write_atomic;
use crate::keygen::parse_private_key;
use crate::precheck::manifest::{parse_verify_key, verify_signature};

fn read(path: &Path) -> Result<Vec<u8>, ToolError> {
    crate::fsutil::read_capped(path, crate::fsutil::MAX_SMALL_FILE).map_err(|source| {
        ToolError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The signature path for `file`: `file` with `.sig` appended.
pub fn sig_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Signs `file` with the raw private key at `key`; returns the `.sig` path.
pub fn sign(file: &Path, key: &Path) -> Result<PathBuf, ToolError> {
    let signing = parse_private_key(&read(key)?, key)?;
    let sig = signing.sign(&read(file)?).to_bytes();
    let out = sig_path(file);
    write_atomic(&out, &sig, 0o644).map_err(|source| ToolError::Io {
        action: "write",
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// Verifies `file` against `file.sig` with the raw public key at `public_key`.
pub fn verify(file: &Path, public_key: &Path) -> Result<(), Error> {
    let key = parse_verify_key(&read(public_key)?).map_err(|reason| ToolError::BadKey {
        path: public_key.to_path_buf(),
        reason,
    })?;
    let sig = sig_path(file);
    verify_signature(&key, &read(file)?, &read(&sig)?, file, &sig)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let d = tempfile::tempdir().unwrap();
        let keys = crate::keygen::write_raw_keypair(d.path(), &[3; 32], false).unwrap();
        let file = d.path().join("manifest.json");
        std::fs::write(&file, br#"{"version":"1","operations":[]}"#).unwrap();
        let sig = sign(&file, &keys.private).unwrap();
        assert_eq!(std::fs::read(&sig).unwrap().len(), 64);
        verify(&file, &keys.public).unwrap();
        std::fs::write(&file, br#"{"version":"1","operations":[ ]}"#).unwrap();
        assert!(verify(&file, &keys.public).is_err());
    }
}
