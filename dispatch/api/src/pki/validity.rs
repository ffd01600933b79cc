//! A certificate's validity window and public key, read from DER: what renewal decides on.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, Result};

/// The facts of a leaf certificate that renewal needs (signature checked elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafFacts {
    /// Start of validity (Unix seconds).
    pub not_before: u64,
    /// End of validity (Unix seconds).
    pub not_after: u64,
    /// The raw subject public key (32 bytes for Ed25519).
    pub public_key: Vec<u8>,
}

impl LeafFacts {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::Certificate(format!("unparsable certificate: {e}")))?;
        let secs = |t: i64| u64::try_from(t).unwrap_or(0);
        Ok(Self {
            not_before: secs(cert.validity().not_before.timestamp()),
            not_after: secs(cert.validity().not_after.timestamp()),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self> {
        Self::from_der(&super::pem_to_der(pem)?)
    }
}
