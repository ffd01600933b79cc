//! The robot's update agent in `bauxite run`: follows the hub's `WatchUpdates`, prepares
//! an assigned update through TUF (`GetMetadata`, `GetTarget`), fetches the image over
//! the mesh on the Bulk lane from the hub's mesh node (or the assignment's sources),
//! stages, verifies and activates it with forge's `UpdateAgent`, runs the health
//! watchdog, reports every state with `ReportUpdateState`, records to MCAP, and answers
//! `bauxite update ...` on the control socket.
//!
//! Invariant: the agent never activates anything forge did not verify whole against
//! TUF-signed metadata; `activate::recover` runs before anything touches the state root;
//! and the daemon's data-plane thread does no disk work for it (the transfer has a thread
//! of its own, TUF runs on blocking threads).
//!
//! Pieces: [`trust`] (the TUF root under the state root, installed by `join`),
//! [`tuf_grpc`] (TUF over gRPC, preparation), `hub_link` (connection, assignments,
//! reports), `gate` (sources, sockets, first echo, control-loop probe), `transfer` (the
//! forge agent's thread), `health` (the watchdog), `telemetry` (MCAP), [`warm_start`]
//! (the peer-table snapshot), [`status`] (what `update status` shows).

mod agent;
mod commands;
mod gate;
mod health;
mod hub_link;
mod prometheus;
mod record;
pub mod status;
mod steps;
mod telemetry;
mod transfer;
pub mod trust;
pub mod tuf_grpc;
pub mod warm_start;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::VirtualIp;
use bauxite_conduit::io::Query;
use bauxite_dispatch_api::client::NodeCredentials;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{HubConfig, UpdatesConfig};
pub use status::{Phase, SharedStatus, UpdateStatus};

/// How long a command may take before the caller gives up (a `check` refreshes TUF).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent gets to stop (the transfer thread finishes its step, the
/// recording is closed).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A command from `bauxite update ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateCommand {
    /// Refresh the metadata and show what is assigned.
    Check,
    /// Start the assigned update now, resume after a failure or a rejection, or go on
    /// past the hold point.
    Apply,
    /// Restore the previous version and block the current one.
    Rollback,
    /// The workload of the new version is healthy.
    Heartbeat,
}

/// Everything that reaches the agent's loop.
#[derive(Debug)]
enum Event {
    Hub(hub_link::HubEvent),
    Prepared {
        attempt: u64,
        result: Result<tuf_grpc::Prepared, tuf_grpc::PrepareError>,
    },
    Gate {
        attempt: u64,
        result: Result<gate::Open, String>,
    },
    Transfer {
        attempt: u64,
        event: transfer::TransferEvent,
    },
}

type Reply = oneshot::Sender<Result<serde_json::Value, String>>;

/// The control socket's and the metrics endpoint's access to the agent.
#[derive(Debug, Clone)]
pub struct UpdateHandle {
    commands: mpsc::Sender<(UpdateCommand, Reply)>,
    status: Arc<SharedStatus>,
}

impl UpdateHandle {
    /// A copy of the agent's status.
    pub fn status(&self) -> UpdateStatus {
        self.status.get()
    }

    /// The shared status (for the metrics endpoint).
    pub fn shared(&self) -> Arc<SharedStatus> {
        Arc::clone(&self.status)
    }

    /// Runs a command; the answer is JSON, or a message saying what to do.
    pub async fn call(&self, command: UpdateCommand) -> Result<serde_json::Value, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((command, tx))
            .await
            .map_err(|_| "the update agent stopped".to_owned())?;
        tokio::time::timeout(COMMAND_TIMEOUT, rx)
            .await
            .map_err(|_| format!("the update agent did not answer within {COMMAND_TIMEOUT:?}"))?
            .map_err(|_| "the update agent stopped".to_owned())?
    }
}

/// What the agent needs from the daemon.
#[derive(Debug)]
pub struct AgentSetup {
    /// `[updates]`.
    pub config: UpdatesConfig,
    /// `[state_root] root`.
    pub state_root: PathBuf,
    /// `[hub]`.
    pub hub: HubConfig,
    /// The node's current mTLS credentials (checked at start; replaced on renewal).
    pub credentials: watch::Receiver<NodeCredentials>,
    /// The shell's query channel (service sockets, snapshots, peers).
    pub queries: mpsc::Sender<Query>,
    /// The hub's mesh node, from topology.
    pub hub_peer: watch::Receiver<Option<VirtualIp>>,
    /// Seed of the reconnect jitter.
    pub seed: u64,
}

/// The running agent.
#[derive(Debug)]
pub struct AgentTask {
    task: tokio::task::JoinHandle<()>,
    link: tokio::task::JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

impl AgentTask {
    /// Stops the agent: the transfer stops at its next step (its checkpoint stays for a
    /// resume) and the recording is closed; bounded by [`STOP_TIMEOUT`].
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!("the update agent did not stop in time");
            task.abort();
        }
        self.link.abort();
    }
}

/// Starts the agent and its hub link; the agent first runs `activate::recover`.
pub fn spawn(setup: AgentSetup) -> (UpdateHandle, AgentTask) {
    let status = Arc::new(SharedStatus::new(UpdateStatus {
        phase: Phase::Idle,
        probe_hz: setup.config.probe_hz,
        recording_dir: setup
            .config
            .recording_dir(&setup.state_root)
            .display()
            .to_string(),
        ..UpdateStatus::disabled("")
    }));
    status.update(|s| s.detail = None);
    let (events_tx, events_rx) = mpsc::channel(256);
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (client_tx, client_rx) = watch::channel(None);
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let reports = Arc::new(hub_link::ReportQueue::default());
    let link = tokio::spawn(
        hub_link::HubLink {
            config: setup.hub.clone(),
            credentials: setup.credentials,
            events: events_tx.clone(),
            client: client_tx,
            reports: Arc::clone(&reports),
            seed: setup.seed,
        }
        .run(),
    );
    let agent = agent::Agent::new(agent::Parts {
        cfg: setup.config,
        state_root: setup.state_root,
        status: Arc::clone(&status),
        events: events_tx,
        hub_client: client_rx,
        reports,
        queries: setup.queries,
        hub_peer: setup.hub_peer,
        seed: setup.seed,
    });
    let task = tokio::spawn(agent.run(events_rx, commands_rx, shutdown_rx));
    (
        UpdateHandle {
            commands: commands_tx,
            status,
        },
        AgentTask {
            task,
            link,
            shutdown: shutdown_tx,
        },
    )
}
