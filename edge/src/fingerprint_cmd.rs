//! `bauxite fingerprint show|tamper`: inspect the stored OS fingerprint, and overwrite
//! its hash to simulate an OS replacement (tutorials and drills) without a new OS.

use crate::error::{Error, FingerprintError};
use crate::precheck::fingerprint::{CompositeHash, FingerprintRecord};
use crate::precheck::state_root::StateRoot;
use crate::precheck::{load_fingerprint, save_fingerprint};

fn stored(root: &StateRoot) -> Result<FingerprintRecord, Error> {
    load_fingerprint(root)?.ok_or_else(|| {
        FingerprintError::Io {
            action: "read",
            path: root.fingerprint_path(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no fingerprint yet; run `bauxite precheck` first",
            ),
        }
        .into()
    })
}

/// The stored record as pretty JSON, or one field's value when `field` is given.
pub fn show(root: &StateRoot, field: Option<&str>) -> Result<String, Error> {
    let record = stored(root)?;
    let value = record.to_value();
    match field {
        None => Ok(String::from_utf8_lossy(&record.to_json()).into_owned()),
        Some(f) => match value.get(f) {
            Some(serde_json::Value::String(s)) => Ok(format!("{s}\n")),
            Some(v) => Ok(format!("{v}\n")),
            None => Err(crate::error::ToolError::Argument(format!(
                "unknown field {f:?}; use composite_hash, os_release, uname_release, boot_epoch or captured_at"
            ))
            .into()),
        },
    }
}

/// Replaces the stored composite hash with `hash`; returns (before, after) records.
pub fn tamper(
    root: &StateRoot,
    hash: CompositeHash,
) -> Result<(FingerprintRecord, FingerprintRecord), Error> {
    let before = stored(root)?;
    let mut after = before.clone();
    after.composite_hash = hash;
    save_fingerprint(root, &after)?;
    Ok((before, after))
}
