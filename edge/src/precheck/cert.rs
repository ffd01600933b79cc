//! The mTLS certificate expiry check: a certificate that cannot be read or parsed, is
//! not yet valid, or expires within [`ROTATION_MARGIN`] fails precheck (exit 3) so the
//! node never starts with credentials about to lapse in the field.

use std::path::Path;

use ::time::{Duration, OffsetDateTime};
use x509_parser::prelude::{ASN1Time, FromDer, Pem, X509Certificate};

use super::fingerprint::rfc3339;
use crate::error::CertError;

/// Minimum remaining validity for a certificate to pass.
pub const ROTATION_MARGIN: Duration = Duration::days(7);

/// Validity of a certificate that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Checks the first certificate in `bytes` (PEM, or DER when no PEM block is found)
/// against `now`; `path` is only used in errors.
pub fn check_certificate(
    bytes: &[u8],
    path: &Path,
    now: OffsetDateTime,
) -> Result<CertValidity, CertError> {
    let unparsable = |reason: String| CertError::Unparsable {
        path: path.to_path_buf(),
        reason,
    };
    let der = match Pem::iter_from_buffer(bytes).next() {
        Some(Ok(pem)) if pem.label == "CERTIFICATE" => pem.contents,
        Some(Ok(pem)) => return Err(unparsable(format!("first PEM block is {:?}", pem.label))),
        Some(Err(e)) => return Err(unparsable(format!("bad PEM: {e}"))),
        None => bytes.to_vec(),
    };
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| unparsable(e.to_string()))?;
    let ts = |t: &ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|e| unparsable(format!("validity out of range: {e}")))
    };
    let validity = CertValidity {
        not_before: ts(&cert.validity().not_before)?,
        not_after: ts(&cert.validity().not_after)?,
    };
    if now < validity.not_before {
        return Err(CertError::NotYetValid {
            path: path.to_path_buf(),
            not_before: rfc3339(validity.not_before),
        });
    }
    if validity.not_after - now < ROTATION_MARGIN {
        return Err(CertError::Expiring {
            path: path.to_path_buf(),
            not_after: rfc3339(validity.not_after),
            hours_left: (validity.not_after - now).whole_hours(),
        });
    }
    Ok(validity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_cmd::self_signed;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_618_400).unwrap()
    }

    #[test]
    fn long_lived_cert_passes() {
        let (pem, _) = self_signed("node", now(), Duration::days(365)).unwrap();
        check_certificate(pem.as_bytes(), Path::new("c"), now()).unwrap();
    }

    #[test]
    fn cert_expiring_in_three_days_fails() {
        let (pem, _) = self_signed("node", now(), Duration::days(3)).unwrap();
        let e = check_certificate(pem.as_bytes(), Path::new("c"), now()).unwrap_err();
        assert!(
            matches!(e, CertError::Expiring { hours_left, .. } if (71..=72).contains(&hours_left)),
            "{e}"
        );
    }

    #[test]
    fn garbage_fails_cleanly() {
        let e = check_certificate(b"not a cert", Path::new("c"), now()).unwrap_err();
        assert!(matches!(e, CertError::Unparsable { .. }));
        let e = check_certificate(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            Path::new("c"),
            now(),
        )
        .unwrap_err();
        assert!(matches!(e, CertError::Unparsable { .. }));
    }

    #[test]
    fn not_yet_valid_fails() {
        let later = now() + Duration::days(30);
        let (pem, _) = self_signed("node", later, Duration::days(365)).unwrap();
        let e = check_certificate(pem.as_bytes(), Path::new("c"), now()).unwrap_err();
        assert!(matches!(e, CertError::NotYetValid { .. }));
    }
}
