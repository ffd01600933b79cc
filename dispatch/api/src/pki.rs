//! What both sides agree on about certificates and key files: the identity a hub-issued
//! certificate binds ([`binding`]), the name the hub's certificate carries
//! ([`SERVER_NAME`]), and how private keys are kept on disk ([`files`]).

pub mod binding;
pub mod files;
pub mod validity;

pub use binding::{ADMIN_URI, CertRole, NodeBinding};
pub use validity::LeafFacts;

use crate::{Error, Result};

/// The DNS name in the hub's server certificate; clients verify the hub against this name
/// whatever address they dialled (the CA is private to one hub and pinned, so the name
/// only has to distinguish the hub's certificate from the nodes').
pub const SERVER_NAME: &str = "bauxite-dispatch";

/// Decodes the first certificate of a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| Error::Certificate(format!("not a PEM certificate: {e}")))
}
