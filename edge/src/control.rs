//! The daemon's local control endpoint: a Unix socket where `bauxite status`, `bauxite
//! ping` and `bauxite update ...` ask and the daemon answers, one JSON line each way.
//!
//! Requests (`{"request": ...}`): `status`; `ping` with `target`, `rate_hz`, `count`,
//! `size`; `update` with `command` = `status` | `check` | `apply` | `rollback` |
//! `heartbeat`. A refused request is answered `{"error": "..."}`.
//!
//! Invariant: the node is only reached through [`Query`], answered between two batches
//! of the data-plane loop, so a request never touches the node concurrently and never
//! blocks packet forwarding for longer than building the answer.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::Metrics;
use bauxite_conduit::io::Query;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::hub_state::{CertState, HubState};
use crate::ping::{PingReport, PingRequest};
use crate::status::StatusReport;
use crate::update_agent::{UpdateCommand, UpdateHandle, UpdateStatus};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// How long a client waits for an answer to anything but a ping.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The node's status.
    Status,
    /// Echo probes to a peer on the Critical lane.
    Ping(PingRequest),
    /// The update agent.
    Update {
        /// What to do; `status` reads the agent's status.
        command: UpdateRequest,
    },
}

/// `bauxite update ...` on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRequest {
    /// The agent's status ([`UpdateStatus`]).
    Status,
    /// Refresh the metadata and show what is assigned.
    Check,
    /// Start now, resume, or go on past the hold point.
    Apply,
    /// Restore the previous version.
    Rollback,
    /// The new version's workload is healthy.
    Heartbeat,
}

/// What the control socket serves from.
#[derive(Debug, Clone)]
pub struct Context {
    /// The shell's query channel.
    pub queries: mpsc::Sender<Query>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// The update agent, when it runs.
    pub updates: Option<UpdateHandle>,
    /// Why it does not run (shown by `update status`).
    pub updates_off: String,
    /// The hub's mesh node, from topology (`bauxite ping hub`).
    pub hub_peer: watch::Receiver<Option<bauxite_conduit::VirtualIp>>,
    /// The hub connector's published state (`None` forever for a node without a hub),
    /// shown by `bauxite status`.
    pub hub: watch::Receiver<Option<HubState>>,
    /// The hub certificate's expiry and renewal (`None` without a hub), for `status`.
    pub cert: watch::Receiver<Option<CertState>>,
    /// The ROS 2 discovery server (`None` without `[ros.server]`), for `status`.
    pub ros: Option<crate::ros_cmd::RosGauges>,
    /// The discovery servers the hub's topology announces, for `status` and `ros env`.
    pub ros_servers: watch::Receiver<Vec<bauxite_citadel::ServerAddr>>,
    /// The operator lock's report (`None` while the lock is off), for `status`.
    pub operator_lock: watch::Receiver<Option<crate::operator_lock::LockReport>>,
    /// The lane classifier in effect (kernel or userspace), for `status`.
    pub offload: Arc<dyn bauxite_conduit::offload::DataPlaneOffload>,
    /// The data plane's CPU scheduling ([`crate::realtime`]), for `status`.
    pub scheduling: String,
}

/// Control-socket failures, naming the socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket's directory could not be created.
    #[error(
        "cannot create {dir} for the control socket {path}: {error}; {}",
        fix(error)
    )]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The socket path.
        path: PathBuf,
        /// The OS error (part of the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// The socket could not be created.
    #[error("cannot listen on control socket {path}: {error}; {}", fix(error))]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The OS error (part of the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// No daemon answered.
    #[error(
        "cannot reach the daemon at {path}: {error}; is `bauxite run` running with this config?"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error (part of the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// The daemon's answer could not be read.
    #[error("bad answer from the daemon at {path}: {reason}")]
    Answer {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The daemon refused the request.
    #[error("{message}")]
    Refused {
        /// The daemon's reason, saying what to do.
        message: String,
    },
}

/// What to do about a control socket that cannot be created.
fn fix(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            "this user may not write there: set `node.control_socket` in the config to a \
             path it can write (e.g. under the state root), or run as root"
        }
        std::io::ErrorKind::AddrInUse => "stop the other daemon, or set `node.control_socket`",
        _ => "set `node.control_socket` in the config to a usable path",
    }
}

/// Creates the socket (and its directory), replacing a stale socket file left by a
/// killed daemon. The file is mode 0600: status is for the node's operator.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let fail = |error| ControlError::Listen {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| ControlError::Directory {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            error,
        })?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another daemon is answering there",
        )));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}

/// Answers connections until the data-plane loop stops taking queries.
pub async fn serve(listener: UnixListener, context: Context) {
    let context = Arc::new(context);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                continue;
            }
        };
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &context).await {
                tracing::debug!(%error, "control request failed");
            }
        });
    }
}

fn refusal(message: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({ "error": message.to_string() })
}

async fn reply_to(request: Request, context: &Context) -> std::io::Result<serde_json::Value> {
    let to_json =
        |v: Result<serde_json::Value, serde_json::Error>| v.map_err(std::io::Error::other);
    match request {
        Request::Status => {
            let (tx, rx) = oneshot::channel();
            context
                .queries
                .send(Query::Status(tx))
                .await
                .map_err(|_| std::io::Error::other("data plane stopped"))?;
            let status = rx
                .await
                .map_err(|_| std::io::Error::other("data plane stopped"))?;
            let hub = context.hub.borrow().clone();
            let cert = context.cert.borrow().clone();
            let lock = context.operator_lock.borrow().clone();
            let mut report = StatusReport::new(&status, &context.metrics, hub, cert)
                .with_operator_lock(lock)
                .with_offload(context.offload.as_ref());
            report.scheduling = Some(context.scheduling.clone());
            report.ros = context.ros.as_ref().map(crate::ros_cmd::RosGauges::report);
            report.ros_servers = context
                .ros_servers
                .borrow()
                .iter()
                .map(|s| crate::ros_cmd::RosServerEntry {
                    id: s.id,
                    address: s.addr.to_string(),
                })
                .collect();
            to_json(serde_json::to_value(report))
        }
        Request::Ping(ping) => {
            let hub = *context.hub_peer.borrow();
            match crate::ping::run(&context.queries, &ping, hub).await {
                Ok(report) => to_json(serde_json::to_value(report)),
                Err(e) => Ok(refusal(e)),
            }
        }
        Request::Update { command } => {
            let Some(updates) = &context.updates else {
                if command == UpdateRequest::Status {
                    let off = UpdateStatus::disabled(&context.updates_off);
                    return to_json(serde_json::to_value(off));
                }
                return Ok(refusal(format!(
                    "the update agent is not running: {}",
                    context.updates_off
                )));
            };
            let command = match command {
                UpdateRequest::Status => return to_json(serde_json::to_value(updates.status())),
                UpdateRequest::Check => UpdateCommand::Check,
                UpdateRequest::Apply => UpdateCommand::Apply,
                UpdateRequest::Rollback => UpdateCommand::Rollback,
                UpdateRequest::Heartbeat => UpdateCommand::Heartbeat,
            };
            Ok(updates.call(command).await.unwrap_or_else(refusal))
        }
    }
}

async fn answer(stream: UnixStream, context: &Context) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(tokio::io::BufReader::new(read), MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => reply_to(request, context).await?,
        Err(e) => refusal(e),
    };
    let reply = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Sends `request` to the daemon at `path` and reads its answer, waiting at most
/// `timeout` (blocking; for the commands).
pub fn query<T: serde::de::DeserializeOwned>(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ControlError> {
    let connect = |error| ControlError::Connect {
        path: path.to_path_buf(),
        error,
    };
    let bad = |reason: String| ControlError::Answer {
        path: path.to_path_buf(),
        reason,
    };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(connect)?;
    stream.set_read_timeout(Some(timeout)).map_err(connect)?;
    let request = serde_json::to_string(request).map_err(|e| bad(e.to_string()))?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(connect)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(connect)?;
    let value: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| bad(format!("{e}: {}", line.trim())))?;
    if let Some(message) = value.get("error").and_then(|m| m.as_str()) {
        return Err(ControlError::Refused {
            message: message.to_owned(),
        });
    }
    serde_json::from_value(value).map_err(|e| bad(format!("{e}: {}", line.trim())))
}

/// Asks the daemon for a ping's report.
pub fn query_ping(path: &Path, ping: &PingRequest) -> Result<PingReport, ControlError> {
    let timeout = ping.duration_bound() + ANSWER_TIMEOUT;
    query(path, &Request::Ping(ping.clone()), timeout)
}

/// Asks the update agent: its status.
pub fn query_update_status(path: &Path) -> Result<UpdateStatus, ControlError> {
    query(
        path,
        &Request::Update {
            command: UpdateRequest::Status,
        },
        ANSWER_TIMEOUT,
    )
}

/// Runs an update command; the answer is JSON.
pub fn query_update(
    path: &Path,
    command: UpdateRequest,
) -> Result<serde_json::Value, ControlError> {
    query(
        path,
        &Request::Update { command },
        crate::update_agent::COMMAND_TIMEOUT + ANSWER_TIMEOUT,
    )
}

/// Asks the daemon at `path` for its status (blocking; for the `status` command).
pub fn query_status(path: &Path) -> Result<StatusReport, ControlError> {
    query(path, &Request::Status, ANSWER_TIMEOUT)
}
