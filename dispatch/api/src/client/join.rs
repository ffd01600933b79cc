//! `join`: a node's first contact with the hub. The node's keys are made on the node; only
//! public keys and a proof of possession travel. Provisioning has two phases: [`join`]
//! registers the node (pending), and [`confirm`], once the caller has written the
//! credentials, makes it a member.

use std::path::Path;
use std::sync::Arc;

use bauxite_conduit::identity::Identity;
use bauxite_conduit::{PeerId, VirtualIp};
use rcgen::{KeyPair, PKCS_ED25519};
use zeroize::Zeroizing;

use super::channel::connect;
use super::tls::{PinnedCa, pinned_config};
use crate::pki::{CertRole, NodeBinding, files, pem_to_der};
use crate::proof::{self, NodeKeys};
use crate::proto::node::ProvisionRequest;
use crate::proto::node::provisioning_service_client::ProvisioningServiceClient;
use crate::token::{CaFingerprint, JoinToken};
use crate::{Error, Result};

/// What a node needs for mutual TLS with the hub (all PEM).
#[derive(Clone)]
pub struct NodeCredentials {
    /// The hub CA certificate (`ca.crt`).
    pub ca_pem: String,
    /// The node's client certificate (`node.crt`).
    pub cert_pem: String,
    /// The node's TLS private key (`node.key`, PKCS#8), generated on the node.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials").finish_non_exhaustive()
    }
}

/// The outcome of a successful join.
#[derive(Clone, Debug)]
pub struct JoinResult {
    /// Certificates and key for [`HubClient::connect_mtls`](super::HubClient::connect_mtls).
    pub credentials: NodeCredentials,
    /// The address assigned inside the mesh.
    pub virtual_ip: VirtualIp,
    /// The node's peer ID (derived from its Ed25519 key).
    pub node_id: PeerId,
    /// The mesh CIDR, e.g. `100.64.0.0/10`.
    pub mesh_cidr: String,
    /// The registration is pending until [`confirm`] succeeds, at the latest by this time
    /// (Unix seconds); then the hub deletes it and frees the address.
    pub confirm_by_unix: u64,
    /// The update repository's TUF `root.json` as the hub published it (empty if the hub
    /// hosts no updates): the node's initial update trust, received over the CA-pinned
    /// channel. Nothing here is trusted beyond that: the TUF client checks it is signed by
    /// its own root threshold.
    pub update_root: Vec<u8>,
}

impl NodeCredentials {
    /// Writes `ca.crt`, `node.crt` (0644) and `node.key` (0600) into `dir` (created 0700).
    pub fn save(&self, dir: &Path) -> Result<()> {
        files::create_private_dir(dir)?;
        files::write_atomic(&dir.join("ca.crt"), self.ca_pem.as_bytes(), 0o644)?;
        files::write_atomic(&dir.join("node.crt"), self.cert_pem.as_bytes(), 0o644)?;
        files::write_secret(&dir.join("node.key"), self.key_pem.as_bytes())
    }

    /// Reads what [`save`](Self::save) wrote, refusing a `node.key` readable by others.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            ca_pem: files::read_text(&dir.join("ca.crt"))?,
            cert_pem: files::read_text(&dir.join("node.crt"))?,
            key_pem: Zeroizing::new(files::read_secret(&dir.join("node.key"))?),
        })
    }
}

/// Joins the mesh: verifies the hub against the token's CA fingerprint, proves possession
/// of `identity`, and checks that the returned certificate binds exactly our keys.
pub async fn join(
    token: &JoinToken,
    hub: &str,
    identity: &Identity,
    name: &str,
) -> Result<JoinResult> {
    let tls_key =
        KeyPair::generate_for(&PKCS_ED25519).map_err(|e| Error::Certificate(e.to_string()))?;
    let public = identity.public();
    let mut tls_public = [0u8; 32];
    if tls_key.public_key_raw().len() != 32 {
        return Err(Error::Certificate(
            "unexpected Ed25519 public key size".into(),
        ));
    }
    tls_public.copy_from_slice(tls_key.public_key_raw());
    let keys = NodeKeys {
        ed25519: public.signing_public,
        x25519: public.static_public,
        tls: tls_public,
    };
    let proof = identity.sign(&proof::challenge(token.id, &token.ca, &keys, name));

    let verifier = Arc::new(PinnedCa::new(token.ca));
    let channel = match connect(hub, pinned_config(verifier.clone())?).await {
        Ok(channel) => channel,
        Err(e) => {
            return Err(match verifier.mismatch() {
                Some(found) => Error::CaFingerprintMismatch {
                    expected: token.ca,
                    found,
                },
                None => e,
            });
        }
    };
    let request = ProvisionRequest {
        token_id: token.id.to_string(),
        token_secret: token.secret.to_vec(),
        ca_fingerprint: token.ca.0.to_vec(),
        ed25519_public: keys.ed25519.to_vec(),
        x25519_public: keys.x25519.to_vec(),
        tls_public_key: keys.tls.to_vec(),
        name: name.to_owned(),
        proof: proof.to_vec(),
    };
    let response = ProvisioningServiceClient::new(channel)
        .provision_node(request)
        .await?
        .into_inner();

    // Trust nothing in the answer that we can check.
    let ca_der = pem_to_der(&response.ca_pem)?;
    let ca_seen = CaFingerprint::of_der(&ca_der);
    if !ca_seen.matches(&token.ca) {
        return Err(Error::CaFingerprintMismatch {
            expected: token.ca,
            found: ca_seen,
        });
    }
    let virtual_ip: std::net::Ipv4Addr = response.virtual_ip.parse().map_err(|_| {
        Error::Certificate(format!(
            "hub sent an invalid virtual IP {:?}",
            response.virtual_ip
        ))
    })?;
    let expected = NodeBinding::new(keys.ed25519, keys.x25519, VirtualIp::from(virtual_ip));
    if CertRole::from_der(&pem_to_der(&response.cert_pem)?)? != CertRole::Node(expected) {
        return Err(Error::Certificate(
            "the issued certificate does not bind this node's keys".into(),
        ));
    }
    Ok(JoinResult {
        credentials: NodeCredentials {
            ca_pem: response.ca_pem,
            cert_pem: response.cert_pem,
            key_pem: Zeroizing::new(tls_key.serialize_pem()),
        },
        virtual_ip: expected.virtual_ip,
        node_id: expected.node_id,
        mesh_cidr: response.mesh_cidr,
        confirm_by_unix: response.confirm_by_unix,
        update_root: response.update_root,
    })
}

/// The second phase of provisioning: tells the hub, over mutual TLS with the certificate
/// [`join`] obtained, that this node has written its credentials, so it becomes a member
/// (until then it is in no topology, and an unconfirmed registration expires). Call it
/// after the credentials are durable; confirming again is harmless. Returns the node's
/// name in the mesh.
pub async fn confirm(hub: &str, credentials: &NodeCredentials) -> Result<String> {
    let client = super::HubClient::connect_mtls(hub, credentials).await?;
    let answer = client
        .provisioning()
        .confirm_provision(crate::proto::node::ConfirmProvisionRequest {})
        .await?
        .into_inner();
    Ok(answer.name)
}
