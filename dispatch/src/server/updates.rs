//! `UpdateService`: TUF metadata and chunk indexes for nodes, their assignment feed, and
//! their update reports.
//!
//! Invariant: a file is served only from the repository's metadata or targets directory,
//! under a name [`names`](crate::updates::names) accepts and whose real path stays inside
//! that directory, in pieces of at most [`PIECE`] bytes and never more than the caller's
//! `max_length`. Images are never served here: they travel on the mesh. Nothing here needs
//! to be trusted by the node: it verifies everything with TUF.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use bauxite_dispatch_api::Refusal;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth;
use super::feeds::{Feed, STOPPING, stopping};
use crate::Error;
use crate::clock::UnixTime;
use crate::hub::Hub;
use crate::proto::node::update_service_server::UpdateService;
use crate::proto::node::{
    FileChunk, GetFileRequest, ReportUpdateStateResponse, UpdateAssignment, UpdateStateReport,
    WatchUpdatesRequest,
};
use crate::store::UpdateReportRecord;
use crate::updates::UpdateRepo;

/// Bytes per `FileChunk`.
pub const PIECE: usize = 64 * 1024;

/// Serves the update calls of nodes.
pub struct Updates {
    /// The hub (authorisation, assignments, reports).
    pub hub: Arc<Hub>,
    /// The repository whose files are served.
    pub repo: Arc<UpdateRepo>,
}

const REVOKED: &str = "this node was revoked; it must join again with a new identity";

/// Streams `path` in pieces, stopping after `max_length` bytes (0: the whole file).
fn stream_file(path: PathBuf, max_length: u64) -> Result<Feed<FileChunk>, Status> {
    let file = File::open(&path).map_err(|e| Status::from(Error::io("open", &path)(e)))?;
    let mut file = tokio::fs::File::from_std(file);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut left = if max_length == 0 {
            u64::MAX
        } else {
            max_length
        };
        let mut buf = vec![0u8; PIECE];
        // Bounded: every round sends a piece or ends, and the file or `left` runs out.
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(PIECE).min(PIECE);
            let n = match file.read(&mut buf[..want]).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("read failed: {e}"))))
                        .await;
                    break;
                }
            };
            left -= n as u64;
            let piece = FileChunk {
                data: buf[..n].to_vec(),
            };
            if tx.send(Ok(piece)).await.is_err() {
                break;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl UpdateService for Updates {
    type GetMetadataStream = Feed<FileChunk>;
    type GetTargetStream = Feed<FileChunk>;
    type WatchUpdatesStream = Feed<UpdateAssignment>;

    async fn get_metadata(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<Self::GetMetadataStream>, Status> {
        auth::caller(&self.hub, &request)?;
        let req = request.into_inner();
        let path = self.repo.metadata_path(&req.name)?;
        Ok(Response::new(stream_file(path, req.max_length)?))
    }

    async fn get_target(
        &self,
        request: Request<GetFileRequest>,
    ) -> Result<Response<Self::GetTargetStream>, Status> {
        auth::caller(&self.hub, &request)?;
        let req = request.into_inner();
        let path = self.repo.target_path(&req.name)?;
        Ok(Response::new(stream_file(path, req.max_length)?))
    }

    async fn watch_updates(
        &self,
        request: Request<WatchUpdatesRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        let node = auth::node(&self.hub, &request)?;
        let hub = self.hub.clone();
        let mut assignments = hub.subscribe_assignments();
        let mut topology = hub.subscribe_topology();
        let mut closing = hub.closing();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut sent: Option<UpdateAssignment> = None;
            loop {
                assignments.borrow_and_update();
                if !hub.is_active(node) {
                    let _ = tx.send(Err(Refusal::Revoked.to_status(REVOKED))).await;
                    break;
                }
                let current = hub.assignment_message(node);
                // Another node's change or a topology change wakes us too: send only ours.
                if sent.as_ref() != Some(&current) {
                    if tx.send(Ok(current.clone())).await.is_err() {
                        break;
                    }
                    sent = Some(current);
                }
                tokio::select! {
                    changed = assignments.changed() => if changed.is_err() { break },
                    changed = topology.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                    () = stopping(&mut closing) => {
                        let _ = tx.send(Err(Status::unavailable(STOPPING))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_update_state(
        &self,
        request: Request<UpdateStateReport>,
    ) -> Result<Response<ReportUpdateStateResponse>, Status> {
        let node = auth::node(&self.hub, &request)?;
        let r = request.into_inner();
        let report = UpdateReportRecord {
            sequence: r.sequence,
            target: r.target,
            version: r.version,
            state: r.state,
            chunks_done: r.chunks_done,
            chunks_total: r.chunks_total,
            bytes_transferred: r.bytes_transferred,
            bytes_retransferred: r.bytes_retransferred,
            active_version: r.active_version,
            detail: r.detail,
            reported_at: UnixTime::default(),
        };
        if self.hub.report_update(UnixTime::now(), node, report)? {
            tracing::info!(%node, "update state changed");
        }
        Ok(Response::new(ReportUpdateStateResponse {}))
    }
}
