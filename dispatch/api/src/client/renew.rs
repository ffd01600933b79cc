//! `renew`: a node asks the hub, over its current mutual-TLS channel, for a new client
//! certificate for the same keys, and checks the answer before anything is written.

use bauxite_conduit::identity::Identity;
use rcgen::KeyPair;
use zeroize::Zeroizing;

use super::HubClient;
use super::join::NodeCredentials;
use crate::pki::{CertRole, LeafFacts, pem_to_der};
use crate::proof::{self, NodeKeys};
use crate::proto::node::RenewCertificateRequest;
use crate::token::CaFingerprint;
use crate::{Error, Result};

/// Renews the certificate in `credentials` through `hub` (connected with exactly those
/// credentials), proving possession of `identity`. Returns the credentials with the new
/// certificate, after checking it binds the same identity, virtual IP and TLS key and
/// lasts longer than the old one; the caller writes it and reconnects with it.
pub async fn renew(
    hub: &HubClient,
    identity: &Identity,
    credentials: &NodeCredentials,
) -> Result<NodeCredentials> {
    let old_der = pem_to_der(&credentials.cert_pem)?;
    let CertRole::Node(binding) = CertRole::from_der(&old_der)? else {
        return Err(Error::Certificate(
            "only a node certificate can be renewed".into(),
        ));
    };
    let old = LeafFacts::from_der(&old_der)?;
    let tls = KeyPair::from_pem(&credentials.key_pem)
        .map_err(|e| Error::Certificate(format!("node.key: {e}")))?;
    let tls_public: [u8; 32] = tls
        .public_key_raw()
        .try_into()
        .map_err(|_| Error::Certificate("node.key is not an Ed25519 key".into()))?;
    if old.public_key != tls_public {
        return Err(Error::Certificate(
            "node.crt does not belong to node.key".into(),
        ));
    }
    let public = identity.public();
    let keys = NodeKeys {
        ed25519: public.signing_public,
        x25519: public.static_public,
        tls: tls_public,
    };
    if (keys.ed25519, keys.x25519) != (binding.ed25519, binding.x25519) {
        return Err(Error::Certificate(
            "node.crt does not bind this node's identity".into(),
        ));
    }
    let ca = CaFingerprint::of_der(&pem_to_der(&credentials.ca_pem)?);
    let presented = CaFingerprint::of_der(&old_der);
    let proof = identity.sign(&proof::renew_challenge(&ca, &keys, &presented));
    let answer = hub
        .provisioning()
        .renew_certificate(RenewCertificateRequest {
            proof: proof.to_vec(),
        })
        .await?
        .into_inner();
    // Trust nothing in the answer that we can check.
    let new_der = pem_to_der(&answer.cert_pem)?;
    if CertRole::from_der(&new_der)? != CertRole::Node(binding) {
        return Err(Error::Certificate(
            "the renewed certificate does not bind this node's identity and address".into(),
        ));
    }
    let new = LeafFacts::from_der(&new_der)?;
    if new.public_key != tls_public {
        return Err(Error::Certificate(
            "the renewed certificate is for another TLS key".into(),
        ));
    }
    if new.not_after <= old.not_after {
        return Err(Error::Certificate(format!(
            "the renewed certificate expires no later than the old one ({} <= {})",
            new.not_after, old.not_after
        )));
    }
    Ok(NodeCredentials {
        ca_pem: credentials.ca_pem.clone(),
        cert_pem: answer.cert_pem,
        key_pem: Zeroizing::new(credentials.key_pem.to_string()),
    })
}
