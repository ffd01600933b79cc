//! Helpers for in-daemon users of the mesh's service sockets: binding a free port on the
//! running shell, finding a peer by name or virtual IP, taking a warm-start snapshot.
//!
//! Invariant: everything goes through the shell's query channel, so the node is only
//! ever touched by its own task; every wait here is bounded.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bauxite_conduit::io::{Query, ServiceSocket};
use bauxite_conduit::node::PeerStatus;
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::snapshot::StateSnapshot;
use bauxite_conduit::{ServiceError, VirtualIp};
use tokio::sync::{mpsc, oneshot};

/// First port of the range in-daemon clients bind (the IANA dynamic range).
pub const EPHEMERAL_FIRST: u16 = 49_152;
/// Ports tried before giving up.
const BIND_ATTEMPTS: u16 = 64;
/// How long a query to the shell may take.
const QUERY_LIMIT: Duration = Duration::from_secs(5);

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Why a mesh service could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The data plane stopped or did not answer.
    #[error("the data plane is not running (it stopped or did not answer within 5 s)")]
    Shell,
    /// No free port in the range.
    #[error("no free service port after {BIND_ATTEMPTS} tries from {first}")]
    NoPort {
        /// First port tried.
        first: u16,
    },
    /// Binding failed for another reason.
    #[error("cannot bind a service port: {0}")]
    Bind(#[from] ServiceError),
    /// The target names no peer.
    #[error("no peer named or addressed {target:?}; known peers: {known}")]
    UnknownPeer {
        /// What was asked for.
        target: String,
        /// Names and addresses of the peers the node knows.
        known: String,
    },
}

async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: Query,
    rx: oneshot::Receiver<T>,
) -> Result<T, MeshError> {
    queries.send(query).await.map_err(|_| MeshError::Shell)?;
    tokio::time::timeout(QUERY_LIMIT, rx)
        .await
        .map_err(|_| MeshError::Shell)?
        .map_err(|_| MeshError::Shell)
}

/// The node's status of the peer at `ip`, if the shell answers and knows it.
pub async fn peer_status(queries: &mpsc::Sender<Query>, ip: VirtualIp) -> Option<PeerStatus> {
    let (reply, rx) = oneshot::channel();
    let status = ask(queries, Query::Status(reply), rx).await.ok()?;
    status.peers.into_iter().find(|p| p.virtual_ip == ip)
}

/// Binds `port` on the running shell.
pub async fn bind(
    queries: &mpsc::Sender<Query>,
    port: ServicePort,
    recv_queue: usize,
) -> Result<ServiceSocket, MeshError> {
    let (reply, rx) = oneshot::channel();
    let query = Query::BindService {
        port,
        recv_queue,
        reply,
    };
    Ok(ask(queries, query, rx).await??)
}

/// Binds the next free port of the dynamic range (49152-65535) on the running shell.
pub async fn bind_ephemeral(
    queries: &mpsc::Sender<Query>,
    recv_queue: usize,
) -> Result<ServiceSocket, MeshError> {
    let span = u16::MAX - EPHEMERAL_FIRST + 1;
    let first = EPHEMERAL_FIRST + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span;
    for i in 0..BIND_ATTEMPTS {
        let port = EPHEMERAL_FIRST + (first - EPHEMERAL_FIRST).wrapping_add(i) % span;
        let Some(port) = ServicePort::new(port) else {
            continue;
        };
        match bind(queries, port, recv_queue).await {
            Err(MeshError::Bind(ServiceError::PortInUse { .. })) => {
                NEXT_PORT.fetch_add(1, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    Err(MeshError::NoPort { first })
}

/// The name that means the hub's own mesh node when no peer has it.
pub const HUB_ALIAS: &str = "hub";

/// Finds a peer by virtual IP (dotted quad) or by name — `hub` is the hub's mesh node
/// (`hub`, from topology) when no peer is named so; returns its name and address.
pub async fn resolve_peer(
    queries: &mpsc::Sender<Query>,
    target: &str,
    hub: Option<VirtualIp>,
) -> Result<(Option<String>, VirtualIp), MeshError> {
    let (reply, rx) = oneshot::channel();
    let status = ask(queries, Query::Status(reply), rx).await?;
    if let Ok(ip) = target.parse::<Ipv4Addr>() {
        let ip = VirtualIp::from(ip);
        let name = status
            .peers
            .iter()
            .find(|p| p.virtual_ip == ip)
            .map(|p| p.name.clone());
        return Ok((name, ip));
    }
    if let Some(p) = status.peers.iter().find(|p| p.name == target) {
        return Ok((Some(p.name.clone()), p.virtual_ip));
    }
    if target == HUB_ALIAS
        && let Some(ip) = hub
    {
        let name = status.peers.iter().find(|p| p.virtual_ip == ip);
        return Ok((
            Some(name.map_or_else(|| HUB_ALIAS.to_owned(), |p| p.name.clone())),
            ip,
        ));
    }
    let known = status
        .peers
        .iter()
        .map(|p| format!("{} ({})", p.name, p.virtual_ip))
        .collect::<Vec<_>>()
        .join(", ");
    Err(MeshError::UnknownPeer {
        target: target.to_owned(),
        known: if known.is_empty() {
            "none".to_owned()
        } else {
            known
        },
    })
}

/// Captures the running node's peer table.
pub async fn snapshot(
    queries: &mpsc::Sender<Query>,
    unix_seconds: u64,
) -> Result<StateSnapshot, MeshError> {
    let (reply, rx) = oneshot::channel();
    ask(
        queries,
        Query::Snapshot {
            unix_seconds,
            reply,
        },
        rx,
    )
    .await
}
