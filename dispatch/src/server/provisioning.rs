//! `ProvisioningService`: `ProvisionNode`, the only call that needs no client
//! certificate, `ConfirmProvision`, the second phase, authenticated by the certificate
//! the first phase issued, and `RenewCertificate`, a node's renewal over mutual TLS.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::clock::UnixTime;
use crate::hub::{Hub, ProvisionInput};
use crate::proof::NodeKeys;
use crate::proto::node::provisioning_service_server::ProvisioningService;
use crate::proto::node::{
    ConfirmProvisionRequest, ConfirmProvisionResponse, ProvisionRequest, ProvisionResponse,
    RenewCertificateRequest, RenewCertificateResponse,
};
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
                tracing::info!(node = %done.record.id, ip = %done.record.virtual_ip, %token, %remote, confirm_by = %done.confirm_by, "node registered; waiting for its confirmation");
                Ok(Response::new(ProvisionResponse {
                    ca_pem: self.0.ca().cert_pem().to_owned(),
                    cert_pem: done.cert_pem,
                    virtual_ip: done.record.virtual_ip.to_string(),
                    node_id: done.record.id.to_string(),
                    mesh_cidr: self.0.cidr().to_string(),
                    update_root: self.1.root_json().to_vec(),
                    confirm_by_unix: done.confirm_by.0,
                }))
            }
            Err(e) => {
                tracing::warn!(%token, %remote, error = %e, "provisioning refused");
                Err(e.into())
            }
        }
    }

    async fn confirm_provision(
        &self,
        request: Request<ConfirmProvisionRequest>,
    ) -> Result<Response<ConfirmProvisionResponse>, Status> {
        let cert = request
            .extensions()
            .get::<super::tls::ConnInfo>()
            .and_then(|info| info.client_cert.clone());
        let refused = |e: crate::Error| {
            self.0
                .metrics()
                .calls_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(error = %e, "confirmation refused");
            Status::from(e)
        };
        let node = match self
            .0
            .authorize_confirm(cert.as_deref().map(Vec::as_slice))
            .map_err(refused)?
        {
            crate::hub::Caller::Node(id) => id,
            crate::hub::Caller::Admin | crate::hub::Caller::AdminUi => {
                return Err(bauxite_dispatch_api::Refusal::NodesOnly
                    .to_status("this call is for nodes, not the admin certificate"));
            }
        };
        let record = self.0.confirm(UnixTime::now(), node).map_err(refused)?;
        tracing::info!(node = %record.id, ip = %record.virtual_ip, name = %record.name, "node confirmed");
        Ok(Response::new(ConfirmProvisionResponse {
            node_id: record.id.to_string(),
            name: record.name,
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let cert = request
            .extensions()
            .get::<super::tls::ConnInfo>()
            .and_then(|info| info.client_cert.clone());
        if let Some(der) = &cert
            && matches!(
                crate::pki::CertRole::from_der(der),
                Ok(crate::pki::CertRole::Admin)
            )
        {
            return Err(bauxite_dispatch_api::Refusal::NodesOnly
                .to_status("this call is for nodes, not the admin certificate"));
        }
        let proof = request.into_inner().proof;
        match self
            .0
            .renew(UnixTime::now(), cert.as_deref().map(Vec::as_slice), &proof)
        {
            Ok(renewed) => {
                tracing::info!(node = %renewed.record.id, not_after = %renewed.not_after, "node certificate renewed");
                Ok(Response::new(RenewCertificateResponse {
                    cert_pem: renewed.cert_pem,
                    not_after_unix: renewed.not_after.0,
                }))
            }
            Err(e) => {
                self.0
                    .metrics()
                    .calls_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(error = %e, "certificate renewal refused");
                Err(e.into())
            }
        }
    }
}
