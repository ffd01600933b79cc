//! `AdminService`: operator commands, admin certificate only, each change audited.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth;
use crate::clock::{UnixTime, os_random};
use crate::hub::{Hub, NewToken};
use crate::proto::admin::admin_service_server::AdminService;
use crate::proto::admin::{
    AuditEntry, CreateTokenRequest, CreateTokenResponse, ListNodesRequest, ListNodesResponse,
    NodeInfo, RevokeNodeRequest, RevokeNodeResponse, SetPolicyRequest, ShowAuditRequest,
    ShowAuditResponse, VerifyAuditRequest, VerifyAuditResponse,
};
use crate::proto::admin::{
    CreatePackageRequest, DeployUpdateRequest, DeployUpdateResponse, ListPackagesRequest,
    ListPackagesResponse, ListUpdatesRequest, ListUpdatesResponse, PackageInfo,
    RevokePackageRequest,
};
use crate::proto::node::{PolicyDocument, PolicyRequest};

/// Serves the admin commands.
pub struct Admin(pub Arc<Hub>);

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let req = request.into_inner();
        let mut id = [0u8; 8];
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        os_random(&mut id)?;
        os_random(secret.as_mut())?;
        let new = NewToken {
            ttl_secs: req.ttl_seconds,
            uses: req.uses,
            name: req.name,
            id,
            secret,
        };
        let (token, record) = self.0.create_token(UnixTime::now(), caller, new)?;
        tracing::info!(token = %record.id, name = %record.name, uses = record.uses_total, "token created");
        Ok(Response::new(CreateTokenResponse {
            token: token.to_string(),
            token_id: record.id.to_string(),
            expires_at_unix: record.expires_at.0,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        auth::admin(&self.0, &request)?;
        let info = |n: crate::store::NodeRecord, confirm_by: Option<UnixTime>| NodeInfo {
            node_id: n.id.to_string(),
            name: n.name,
            virtual_ip: n.virtual_ip.to_string(),
            revoked: n.revoked_at.is_some(),
            joined_at_unix: n.joined_at.0,
            token_id: n.token.to_string(),
            pending: confirm_by.is_some(),
            confirm_by_unix: confirm_by.map_or(0, |t| t.0),
        };
        let mut nodes: Vec<NodeInfo> = self
            .0
            .nodes()
            .into_iter()
            .map(|n| info(n, None))
            .chain(
                self.0
                    .pending()
                    .into_iter()
                    .map(|p| info(p.node, Some(p.expires_at))),
            )
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn revoke_node(
        &self,
        request: Request<RevokeNodeRequest>,
    ) -> Result<Response<RevokeNodeResponse>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let node = self
            .0
            .revoke(UnixTime::now(), caller, &request.into_inner().node_id)?;
        self.0.metrics().forget(node.id);
        tracing::info!(node = %node.id, "node revoked");
        Ok(Response::new(RevokeNodeResponse {}))
    }

    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Result<Response<PolicyDocument>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let record = self
            .0
            .set_policy(UnixTime::now(), caller, &request.into_inner().json)?;
        tracing::info!(version = record.version, "policy set");
        Ok(Response::new(PolicyDocument {
            version: record.version,
            json: record.json,
        }))
    }

    async fn show_policy(
        &self,
        request: Request<PolicyRequest>,
    ) -> Result<Response<PolicyDocument>, Status> {
        auth::admin(&self.0, &request)?;
        Ok(Response::new((*self.0.policy()).clone()))
    }

    async fn show_audit(
        &self,
        request: Request<ShowAuditRequest>,
    ) -> Result<Response<ShowAuditResponse>, Status> {
        auth::admin(&self.0, &request)?;
        let entries = self
            .0
            .audit_entries()?
            .into_iter()
            .map(|e| AuditEntry {
                index: e.body.index,
                at_unix: e.body.at.0,
                actor: e.body.actor,
                action: e.body.action,
                detail: e.body.detail,
                hash: hex::encode(e.hash),
            })
            .collect();
        Ok(Response::new(ShowAuditResponse { entries }))
    }

    async fn verify_audit(
        &self,
        request: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditResponse>, Status> {
        auth::admin(&self.0, &request)?;
        let (entries, result) = self.0.verify_audit()?;
        let response = match result {
            Ok(head) => VerifyAuditResponse {
                ok: true,
                entries,
                head: hex::encode(head.hash),
                problem: String::new(),
            },
            Err(problem) => VerifyAuditResponse {
                ok: false,
                entries,
                head: String::new(),
                problem: problem.to_string(),
            },
        };
        Ok(Response::new(response))
    }

    // Update hosting is being built (issue 10): until then these calls say so.
    async fn create_package(
        &self,
        request: Request<CreatePackageRequest>,
    ) -> Result<Response<PackageInfo>, Status> {
        auth::admin(&self.0, &request)?;
        Err(Status::unimplemented(
            "this hub does not host update packages yet",
        ))
    }

    async fn list_packages(
        &self,
        request: Request<ListPackagesRequest>,
    ) -> Result<Response<ListPackagesResponse>, Status> {
        auth::admin(&self.0, &request)?;
        Err(Status::unimplemented(
            "this hub does not host update packages yet",
        ))
    }

    async fn revoke_package(
        &self,
        request: Request<RevokePackageRequest>,
    ) -> Result<Response<PackageInfo>, Status> {
        auth::admin(&self.0, &request)?;
        Err(Status::unimplemented(
            "this hub does not host update packages yet",
        ))
    }

    async fn deploy_update(
        &self,
        request: Request<DeployUpdateRequest>,
    ) -> Result<Response<DeployUpdateResponse>, Status> {
        auth::admin(&self.0, &request)?;
        Err(Status::unimplemented(
            "this hub does not host update packages yet",
        ))
    }

    async fn list_updates(
        &self,
        request: Request<ListUpdatesRequest>,
    ) -> Result<Response<ListUpdatesResponse>, Status> {
        auth::admin(&self.0, &request)?;
        Err(Status::unimplemented(
            "this hub does not host update packages yet",
        ))
    }
}
