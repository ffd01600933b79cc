//! Certificate renewal: a node, over mutual TLS with its current certificate, gets a new
//! one for the same keys, node ID and virtual IP, with a new validity.
//!
//! Invariant: nothing is issued unless every check passed — the presented certificate names
//! an active (confirmed, unrevoked) node, is not expired at `now`, binds exactly the keys and
//! address the hub holds for that node and is for its TLS key, and the request carries a
//! proof signed by the node's identity key over the hub CA, its keys and the presented
//! certificate ([`proof::renew_challenge`]). The renewal is one audited commit
//! (`node.cert_renewed`); from then on only the new certificate is accepted for other
//! calls. An earlier certificate of the same node and key is still accepted *for renewal*
//! while unexpired (TLS has checked the CA's signature): a node whose answer was lost
//! before it wrote the new certificate renews again instead of being locked out.

use bauxite_dispatch_api::pki::LeafFacts;

use super::Hub;
use crate::clock::UnixTime;
use crate::error::{CallRefused, ProvisionRejected};
use crate::pki::CertRole;
use crate::proof::{self, NodeKeys};
use crate::store::{Change, NodeRecord};
use crate::token::CaFingerprint;
use crate::{Error, Result};

/// Shortest node-certificate lifetime a hub accepts (`serve --node-cert-validity`): below
/// it, the renewal window and clock-skew allowance leave no useful validity.
pub const MIN_NODE_CERT_VALIDITY_SECS: u64 = 60;

/// A renewed certificate and the node it belongs to.
#[derive(Clone, Debug)]
pub struct Renewed {
    /// The node record with the new certificate's fingerprint.
    pub record: NodeRecord,
    /// The new client certificate (PEM).
    pub cert_pem: String,
    /// Its notAfter.
    pub not_after: UnixTime,
}

impl Hub {
    /// Sets the lifetime of the node certificates this hub issues (at least
    /// [`MIN_NODE_CERT_VALIDITY_SECS`]).
    pub fn with_node_cert_validity(mut self, secs: u64) -> Self {
        self.node_cert_validity = secs.max(MIN_NODE_CERT_VALIDITY_SECS);
        self
    }

    /// The lifetime of issued node certificates, in seconds.
    pub fn node_cert_validity(&self) -> u64 {
        self.node_cert_validity
    }

    /// Renews the certificate `cert_der` (the caller's, verified against the CA by TLS) at
    /// `now`, if `proof` is the node's signature over the renewal challenge.
    pub fn renew(&self, now: UnixTime, cert_der: Option<&[u8]>, proof: &[u8]) -> Result<Renewed> {
        let der = cert_der.ok_or(CallRefused::NoClientCertificate)?;
        let CertRole::Node(binding) = CertRole::from_der(der)? else {
            return Err(Error::InvalidArgument {
                field: "client certificate",
                problem: "the admin certificate is not renewed over the node API".into(),
            });
        };
        let id = binding.node_id;
        let facts = LeafFacts::from_der(der)?;
        let mut state = self.write()?;
        if state.pending.contains_key(&id) {
            return Err(CallRefused::NotConfirmed(id).into());
        }
        let node = state
            .nodes
            .get(&id)
            .cloned()
            .ok_or(CallRefused::UnknownNode(id))?;
        if let Some(at) = node.revoked_at {
            return Err(CallRefused::Revoked { node: id, at }.into());
        }
        if now.0 >= facts.not_after {
            return Err(CallRefused::CertificateExpired {
                node: id,
                at: UnixTime(facts.not_after),
            }
            .into());
        }
        let held = (node.ed25519, node.x25519, node.virtual_ip);
        if (binding.ed25519, binding.x25519, binding.virtual_ip) != held
            || facts.public_key != node.tls_key
        {
            return Err(CallRefused::NotIssued(id).into());
        }
        let keys = NodeKeys {
            ed25519: node.ed25519,
            x25519: node.x25519,
            tls: node.tls_key,
        };
        let presented = CaFingerprint::of_der(der);
        proof::verify_renewal(&self.ca.fingerprint(), &keys, &presented, proof)
            .map_err(ProvisionRejected::from)?;
        let issued = self
            .ca
            .issue_node(&binding, &node.tls_key, now, self.node_cert_validity)?;
        let not_after = UnixTime(LeafFacts::from_der(&issued.cert_der)?.not_after);
        let record = NodeRecord {
            cert_sha256: CaFingerprint::of_der(&issued.cert_der).0,
            ..node
        };
        let detail = format!(
            "node {id} {:?} ({}) renewed its certificate: valid until {not_after} (was until {})",
            record.name,
            record.virtual_ip,
            UnixTime(facts.not_after)
        );
        let change = Change {
            nodes: vec![record.clone()],
            ..Change::default()
        };
        self.commit_locked(
            &mut state,
            now,
            &format!("node:{id}"),
            "node.cert_renewed",
            detail,
            change,
        )?;
        Ok(Renewed {
            record,
            cert_pem: issued.cert_pem,
            not_after,
        })
    }
}
