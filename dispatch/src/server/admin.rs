//! `AdminService`: operator commands, admin certificate only, each change audited.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth;
use super::hosting::{Hosting, NewImage};
use crate::audit::page;
use crate::clock::{UnixTime, os_random};
use crate::hub::{Deploy, DeployTo, Hub, NewToken};
use crate::proto::admin::admin_service_server::AdminService;
use crate::proto::admin::{
    AuditEntry, CreateTokenRequest, CreateTokenResponse, ListNodesRequest, ListNodesResponse,
    NodeInfo, RevokeNodeRequest, RevokeNodeResponse, SetPolicyRequest, ShowAuditRequest,
    ShowAuditResponse, SignNodeRequest, SignNodeResponse, VerifyAuditRequest, VerifyAuditResponse,
};
use crate::proto::admin::{
    CreatePackageRequest, DeployUpdateRequest, DeployUpdateResponse, ExportRootRequest,
    ImportRootResponse, ListPackagesRequest, ListPackagesResponse, ListUpdatesRequest,
    ListUpdatesResponse, NodeUpdate, PackageInfo, RevokePackageRequest, RootMetadata,
    create_package_request,
};
use crate::proto::node::{PolicyDocument, PolicyRequest};
use crate::store::PackageRecord;

/// Serves the admin commands: the hub, and the update hosting the package calls use.
pub struct Admin(pub Arc<Hub>, pub Hosting);

fn package_info(p: PackageRecord) -> PackageInfo {
    PackageInfo {
        kind: p.image.kind().to_owned(),
        name: p.name,
        version: p.version,
        length: p.length,
        chunk_count: u64::from(p.chunk_count),
        index_digest: hex::encode(p.index_digest),
        revoked: p.revoked_at.is_some(),
        created_at_unix: p.created_at.0,
    }
}

/// Most new root keys accepted in one export.
const MAX_ROOT_KEYS: usize = 16;

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
            hub: self.0.is_hub_node(n.id),
            ed25519_public: n.ed25519.to_vec(),
            x25519_public: n.x25519.to_vec(),
            operator_signature: self.0.operator_signature(n.id),
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

    async fn sign_node(
        &self,
        request: Request<SignNodeRequest>,
    ) -> Result<Response<SignNodeResponse>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let text = request.into_inner().signed_record;
        let (node, version) = self.0.sign_node(UnixTime::now(), caller, &text)?;
        tracing::info!(%node, version, "operator-signed key record stored");
        Ok(Response::new(SignNodeResponse {
            node_id: node.to_string(),
            version,
        }))
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
        let req = request.into_inner();
        let limit = page::limit(usize::try_from(req.limit).unwrap_or(usize::MAX));
        let read = self
            .0
            .audit_page(|keys| page::forward(keys, req.after, limit))?;
        let entries = read
            .entries
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
        let (verified, head, problem) = match read.verified {
            Ok(head) => (true, hex::encode(head.hash), String::new()),
            Err(problem) => (false, String::new(), problem.to_string()),
        };
        Ok(Response::new(ShowAuditResponse {
            entries,
            next_after: read.page.next_after,
            total: read.total,
            verified,
            head,
            problem,
        }))
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

    async fn create_package(
        &self,
        request: Request<CreatePackageRequest>,
    ) -> Result<Response<PackageInfo>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let req = request.into_inner();
        let image = match req.image {
            Some(create_package_request::Image::Path(path)) => {
                let path = std::path::PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(Status::invalid_argument(format!(
                        "image path {} must be absolute (it is read by the hub)",
                        path.display()
                    )));
                }
                NewImage::File(path)
            }
            Some(create_package_request::Image::Virtual(v)) => NewImage::Virtual {
                size: v.size,
                seed: v.seed,
            },
            None => {
                return Err(Status::invalid_argument(
                    "give an image: a file path or a virtual image",
                ));
            }
        };
        let record = self
            .1
            .create_package(caller, req.name, req.version, image)
            .await?;
        Ok(Response::new(package_info(record)))
    }

    async fn list_packages(
        &self,
        request: Request<ListPackagesRequest>,
    ) -> Result<Response<ListPackagesResponse>, Status> {
        auth::admin(&self.0, &request)?;
        let packages = self.0.packages().into_iter().map(package_info).collect();
        Ok(Response::new(ListPackagesResponse { packages }))
    }

    async fn revoke_package(
        &self,
        request: Request<RevokePackageRequest>,
    ) -> Result<Response<PackageInfo>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let req = request.into_inner();
        let record = self
            .1
            .revoke_package(caller, &req.name, &req.version)
            .await?;
        Ok(Response::new(package_info(record)))
    }

    async fn deploy_update(
        &self,
        request: Request<DeployUpdateRequest>,
    ) -> Result<Response<DeployUpdateResponse>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let req = request.into_inner();
        let to = if req.all {
            if !req.node_ids.is_empty() {
                return Err(Status::invalid_argument("give node IDs or --all, not both"));
            }
            DeployTo::All
        } else {
            DeployTo::Nodes(req.node_ids)
        };
        let deploy = Deploy {
            name: req.name,
            version: req.version,
            to,
            rollback: req.rollback,
        };
        let changed = self.0.deploy(UnixTime::now(), caller, &deploy)?;
        tracing::info!(package = %deploy.name, version = %deploy.version, rollback = deploy.rollback, nodes = changed.len(), "update deployed");
        Ok(Response::new(DeployUpdateResponse {
            node_ids: changed.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_updates(
        &self,
        request: Request<ListUpdatesRequest>,
    ) -> Result<Response<ListUpdatesResponse>, Status> {
        auth::admin(&self.0, &request)?;
        let nodes = self
            .0
            .update_view()
            .into_iter()
            .map(|view| {
                let crate::hub::NodeUpdates {
                    node,
                    assignment,
                    report,
                } = view;
                let assignment = assignment.unwrap_or_else(|| crate::store::AssignmentRecord {
                    node: node.id,
                    sequence: 0,
                    name: String::new(),
                    version: String::new(),
                    target: String::new(),
                    rollback: false,
                    assigned_at: UnixTime::default(),
                });
                // A report about an older assignment says nothing about this one.
                let report = report
                    .filter(|r| r.sequence == assignment.sequence)
                    .unwrap_or_default();
                NodeUpdate {
                    node_id: node.id.to_string(),
                    name: node.name,
                    sequence: assignment.sequence,
                    target: assignment.target,
                    version: assignment.version,
                    state: report.state,
                    chunks_done: report.chunks_done,
                    chunks_total: report.chunks_total,
                    bytes_transferred: report.bytes_transferred,
                    bytes_retransferred: report.bytes_retransferred,
                    active_version: report.active_version,
                    detail: report.detail,
                    reported_at_unix: report.reported_at.0,
                }
            })
            .collect();
        Ok(Response::new(ListUpdatesResponse { nodes }))
    }

    async fn export_root(
        &self,
        request: Request<ExportRootRequest>,
    ) -> Result<Response<RootMetadata>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let req = request.into_inner();
        if req.root_keys.len() > MAX_ROOT_KEYS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ROOT_KEYS} root keys"
            )));
        }
        let keys = req
            .root_keys
            .iter()
            .map(|k| {
                <[u8; 32]>::try_from(k.as_slice()).map_err(|_| {
                    Status::invalid_argument("a root key must be a 32-byte Ed25519 public key")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let threshold = u64::from(req.threshold.max(1));
        let json = self.1.export_root(caller, keys, threshold).await?;
        Ok(Response::new(RootMetadata { json }))
    }

    async fn import_root(
        &self,
        request: Request<RootMetadata>,
    ) -> Result<Response<ImportRootResponse>, Status> {
        let caller = auth::admin(&self.0, &request)?;
        let version = self
            .1
            .import_root(caller, request.into_inner().json)
            .await?;
        tracing::info!(version, "update root imported");
        Ok(Response::new(ImportRootResponse { version }))
    }
}
