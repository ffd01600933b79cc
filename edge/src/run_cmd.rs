//! `bauxite run`: the daemon — a node with static peers and, with a `[hub]` section, the
//! [`HubConnector`](crate::hub::HubConnector) feeding it peers and policy, on a real UDP
//! socket and TUN device, its control socket, the optional metrics listener, and clean
//! shutdown on SIGTERM/SIGINT. A node revoked by the hub keeps running with no peers.
//!
//! Invariant: everything runs on one thread (a current-thread tokio runtime); the data
//! plane is one task that owns the node, and the control and metrics tasks only read
//! shared atomics or ask that task between batches.

use std::path::{Path, PathBuf};

use bauxite_conduit::BauxiteNode;
use bauxite_conduit::identity::Identity;
use bauxite_conduit::io::{DeviceConfig, Shell, ShellConfig, clock};
use bauxite_conduit::node::{DEFAULT_MTU, NodeConfig};
use bauxite_conduit::peers::PeerRegistry;
use bauxite_conduit::tun::TunConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::RunConfig;
use crate::control::{self, ControlError};
use crate::error::ConfigError;
use crate::metrics_http;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity file is missing or unusable.
    #[error("node identity {path}: {source}; create it with `bauxite keygen --identity {path}`")]
    Identity {
        /// The configured identity path.
        path: PathBuf,
        /// What went wrong.
        source: bauxite_conduit::Error,
    },
    /// The data plane failed (socket, device, peer table).
    #[error("data plane: {0}")]
    DataPlane(#[from] bauxite_conduit::Error),
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The runtime, a signal handler or the metrics listener could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Loads the config at `config_path` and runs the node until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), RunError> {
    let config = RunConfig::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(serve(config))
}

fn build_node(config: &RunConfig) -> Result<BauxiteNode, RunError> {
    let identity = Identity::load(&config.identity).map_err(|source| RunError::Identity {
        path: config.identity.clone(),
        source,
    })?;
    let mut registry = PeerRegistry::new();
    for peer in &config.peers {
        registry.insert(peer.clone())?;
    }
    let node_config = NodeConfig {
        suite: config.cipher,
        timers: config.timers,
        mtu: DEFAULT_MTU,
        bulk_target: config.bulk_target,
    };
    Ok(BauxiteNode::new(
        identity,
        registry,
        node_config,
        clock::os_seed()?,
        clock::now(),
        clock::unix_nanos(),
    ))
}

async fn serve(config: RunConfig) -> Result<(), RunError> {
    let node = build_node(&config)?;
    let peer_id = node.peer_id();
    let shell_config = ShellConfig {
        listen: config.listen,
        device: DeviceConfig::TunOrMemory(TunConfig {
            name: config.tun_name.clone(),
            mtu: u16::try_from(DEFAULT_MTU).unwrap_or(u16::MAX),
            address: config.virtual_ip,
            prefix: config.prefix,
        }),
    };
    let shell = Shell::bind(node, &shell_config).await?;
    let metrics = shell.metrics();
    let (queries_tx, queries_rx) = mpsc::channel(16);
    let hub_task = config.hub.clone().map(|hub| {
        let seed = clock::os_seed().map(|s| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&s[..8]);
            u64::from_le_bytes(bytes)
        });
        tokio::spawn(
            crate::hub::HubConnector {
                config: hub,
                me: peer_id,
                metrics: std::sync::Arc::clone(&metrics),
                queries: queries_tx.clone(),
                seed: seed.unwrap_or(u64::from(std::process::id())),
            }
            .run(),
        )
    });
    let listener = control::bind(&config.control_socket)?;
    let control_task = tokio::spawn(control::serve(
        listener,
        queries_tx,
        std::sync::Arc::clone(&metrics),
    ));
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let listener = metrics_http::bind(addr).await?;
            Some(tokio::spawn(metrics_http::serve(
                listener,
                std::sync::Arc::clone(&metrics),
                peer_id.to_string(),
            )))
        }
        None => None,
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stopping"),
        }
    };
    tracing::info!(
        peer = %peer_id,
        listen = %shell.local_addr()?,
        tun = ?shell.tun_kind(),
        peers = config.peers.len(),
        hub = config.hub.as_ref().map_or("none", |h| h.url.as_str()),
        control = %config.control_socket.display(),
        "bauxite running"
    );
    let result = shell.run(queries_rx, shutdown).await;
    control_task.abort();
    if let Some(task) = hub_task {
        task.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    // A leftover socket file would only mislead `status`; a failure to remove it is harmless.
    let _ = std::fs::remove_file(&config.control_socket);
    result.map(|_node| ()).map_err(RunError::from)
}
