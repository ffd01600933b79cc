//! `ProvisioningService`: the only call that needs no client certificate.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::clock::UnixTime;
use crate::hub::{Hub, ProvisionInput};
use crate::proof::NodeKeys;
use crate::proto::node::provisioning_service_server::ProvisioningService;
use crate::proto::node::{ProvisionRequest, ProvisionResponse};
use crate::token::{CaFingerprint, TokenId};
use crate::updates::UpdateRepo;

/// Serves `ProvisionNode`; the update repository supplies the TUF root new nodes trust.
pub struct Provisioning(pub Arc<Hub>, pub Arc<UpdateRepo>);

fn key32(bytes: &[u8], field: &str) -> Result<[u8; 32], Status> {
    bytes.try_into().map_err(|_| {
        Status::invalid_argument(format!("{field} must be 32 bytes, got {}", bytes.len()))
    })
}

fn decode(req: ProvisionRequest) -> Result<ProvisionInput, Status> {
    Ok(ProvisionInput {
        token_id: TokenId::from_hex(&req.token_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        secret: Zeroizing::new(key32(&req.token_secret, "token_secret")?),
        ca: CaFingerprint(key32(&req.ca_fingerprint, "ca_fingerprint")?),
        keys: NodeKeys {
            ed25519: key32(&req.ed25519_public, "ed25519_public")?,
            x25519: key32(&req.x25519_public, "x25519_public")?,
            tls: key32(&req.tls_public_key, "tls_public_key")?,
        },
        name: req.name,
        proof: req.proof,
    })
}

#[tonic::async_trait]
impl ProvisioningService for Provisioning {
    async fn provision_node(
        &self,
        request: Request<ProvisionRequest>,
    ) -> Result<Response<ProvisionResponse>, Status> {
        let remote = request
            .extensions()
            .get::<super::tls::ConnInfo>()
            .map(|i| i.remote.to_string())
            .unwrap_or_default();
        let input = decode(request.into_inner())?;
        let token = input.token_id;
        match self.0.provision(UnixTime::now(), input) {
            Ok(done) => {
                tracing::info!(node = %done.record.id, ip = %done.record.virtual_ip, %token, %remote, "node provisioned");
                Ok(Response::new(ProvisionResponse {
                    ca_pem: self.0.ca().cert_pem().to_owned(),
                    cert_pem: done.cert_pem,
                    virtual_ip: done.record.virtual_ip.to_string(),
                    node_id: done.record.id.to_string(),
                    mesh_cidr: self.0.cidr().to_string(),
                    update_root: self.1.root_json().to_vec(),
                }))
            }
            Err(e) => {
                tracing::warn!(%token, %remote, error = %e, "provisioning refused");
                Err(e.into())
            }
        }
    }
}
