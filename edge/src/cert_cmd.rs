//! `bauxite cert self-signed`: a throwaway node certificate for tutorials and tests,
//! so nothing outside the `bauxite` binary is needed to exercise the expiry check.

use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use time::{Duration, OffsetDateTime};

use crate::error::ToolError;
use crate::fsutil::write_atomic;

/// A self-signed P-256 certificate valid from `not_before` for `validity`; returns the
/// certificate and private key as PEM.
pub fn self_signed(
    common_name: &str,
    not_before: OffsetDateTime,
    validity: Duration,
) -> Result<(String, String), ToolError> {
    let err = |e: rcgen::Error| ToolError::CertGen(e.to_string());
    let mut params = CertificateParams::new(vec![common_name.to_owned()]).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_before + validity;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a self-signed certificate (0644) and its key (0600).
pub fn write_self_signed(
    common_name: &str,
    now: OffsetDateTime,
    days: i64,
    cert_out: &Path,
    key_out: &Path,
) -> Result<OffsetDateTime, ToolError> {
    let (cert, key) = self_signed(common_name, now, Duration::days(days))?;
    for (path, bytes, mode) in [(cert_out, &cert, 0o644), (key_out, &key, 0o600)] {
        write_atomic(path, bytes.as_bytes(), mode).map_err(|source| ToolError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(now + Duration::days(days))
}
