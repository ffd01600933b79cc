//! The daemon's local control endpoint: a Unix socket where `bauxite status` asks and the
//! daemon answers, one JSON line each way.
//!
//! Invariant: the endpoint only reads state. A request is answered between two batches
//! of the data-plane loop (through [`Query`]), so it never touches the node concurrently
//! and never blocks packet forwarding for longer than building the report.

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

use crate::hub_state::HubState;
use crate::status::StatusReport;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;

/// A request on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The node's status.
    Status,
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

/// Answers connections until the data-plane loop stops taking queries; `hub` is the
/// hub connector's published state (`None` forever for a node without a hub).
pub async fn serve(
    listener: UnixListener,
    queries: mpsc::Sender<Query>,
    metrics: Arc<Metrics>,
    hub: watch::Receiver<Option<HubState>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                continue;
            }
        };
        let (queries, metrics) = (queries.clone(), Arc::clone(&metrics));
        let hub = hub.borrow().clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &queries, &metrics, hub).await {
                tracing::debug!(%error, "control request failed");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    queries: &mpsc::Sender<Query>,
    metrics: &Metrics,
    hub: Option<HubState>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(tokio::io::BufReader::new(read), MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Status) => {
            let (tx, rx) = oneshot::channel();
            queries
                .send(Query::Status(tx))
                .await
                .map_err(|_| std::io::Error::other("data plane stopped"))?;
            let status = rx
                .await
                .map_err(|_| std::io::Error::other("data plane stopped"))?;
            serde_json::to_string(&StatusReport::new(&status, metrics, hub))
        }
        Err(e) => serde_json::to_string(&serde_json::json!({ "error": e.to_string() })),
    }
    .map_err(std::io::Error::other)?;
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Asks the daemon at `path` for its status (blocking; for the `status` command).
pub fn query_status(path: &Path) -> Result<StatusReport, ControlError> {
    let connect = |error| ControlError::Connect {
        path: path.to_path_buf(),
        error,
    };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(connect)?;
    let request = serde_json::to_string(&Request::Status).map_err(|e| ControlError::Answer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(connect)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(connect)?;
    serde_json::from_str(&line).map_err(|e| ControlError::Answer {
        path: path.to_path_buf(),
        reason: format!("{e}: {}", line.trim()),
    })
}
