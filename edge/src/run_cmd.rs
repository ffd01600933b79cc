//! `bauxite run`: the daemon — a node with static peers and, with a `[hub]` section, the
//! [`HubConnector`](crate::hub::HubConnector) feeding it peers and policy, on a real UDP
//! socket and TUN device, the echo service every node answers (`ServicePort::ECHO`), the
//! [update agent](crate::update_agent) (with `[hub]` and `[state_root]`), its control
//! socket, the optional metrics listener, the supervised ROS 2 discovery server of
//! `[ros.server]` ([`crate::ros_cmd`]), and clean shutdown on SIGTERM/SIGINT. A node
//! revoked by the hub stops and exits with [`EXIT_REVOKED`] (the systemd unit does not
//! restart it: `RestartPreventExitStatus=`).
//!
//! Warm start: with `[hub]` and `[state_root]`, the peer table saved at the last shutdown
//! (or before the last activation) is loaded before the shell starts, so the node dials
//! its peers before the hub answers; the first topology snapshot replaces it.
//!
//! Start-up refuses, with the reason and the fix, everything no retry would cure: another
//! daemon holding the node's [`RunLock`], a private key others can read (the identity or
//! `node.key`), missing hub credentials, and a TUN device that could be created by this
//! process but not under this name ([`TunCreateError`]).
//!
//! Invariant: everything runs on one thread (a current-thread tokio runtime); the data
//! plane is one task that owns the node, and the control and metrics tasks only read
//! shared atomics or ask that task between batches.

use std::path::{Path, PathBuf};

use bauxite_conduit::BauxiteNode;
use bauxite_conduit::identity::Identity;
use bauxite_conduit::io::service::DEFAULT_RECV_QUEUE;
use bauxite_conduit::io::{DeviceConfig, Shell, ShellConfig, clock, echo};
use bauxite_conduit::node::{DEFAULT_MTU, NodeConfig};
use bauxite_conduit::peers::PeerRegistry;
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::tun::TunConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use bauxite_conduit::error::KeyFileProblem;
use bauxite_conduit::tun::TunCreateError;
use bauxite_dispatch_api::client::NodeCredentials;

use crate::candidates::MeshExclusion;
use crate::config::{DeviceKind, HubConfig, RunConfig};
use crate::control::{self, ControlError};
use crate::error::ConfigError;
use crate::hub_state::HubState;
use crate::metrics_http;
use crate::run_lock::{LockError, RunLock, lock_path};

/// The exit code of a daemon the hub revoked: `edge/systemd/bauxite.service` names it in
/// `RestartPreventExitStatus=`, so a supervisor does not restart it into a refusal loop.
pub const EXIT_REVOKED: u8 = 4;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another daemon runs this node, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The identity file does not exist.
    #[error(
        "node identity {path} does not exist; create it with `bauxite keygen --identity {path}` (or `bauxite join`)"
    )]
    IdentityMissing {
        /// The configured identity path.
        path: PathBuf,
    },
    /// The identity file is unusable.
    #[error("node identity {path}: {error}")]
    Identity {
        /// The configured identity path.
        path: PathBuf,
        /// What went wrong (part of the message, so not repeated as a source).
        error: bauxite_conduit::Error,
    },
    /// A private key file (the identity, `node.key`) is readable by group or others.
    #[error(
        "private key {path} has mode {mode:03o}: a private key must not be readable by others; \
         run `chmod 600 {path}` and start again"
    )]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The hub credentials (`ca.crt`, `node.crt`, `node.key`) cannot be loaded.
    #[error(
        "cannot load the hub credentials in {dir}: {error}; restore them, or re-join with \
         `bauxite join --force`"
    )]
    HubCredentials {
        /// `hub.certs_dir`.
        dir: PathBuf,
        /// What went wrong (part of the message, so not repeated as a source).
        error: bauxite_dispatch_api::Error,
    },
    /// The operator lock's key file (`hub.operator_keys`) is unreadable or holds no valid
    /// key: the node refuses to run unlocked when the operator asked for the lock.
    #[error("operator lock: {0}; fix the file or remove `operator_keys` from [hub]")]
    OperatorKeys(crate::error::ToolError),
    /// The kernel TUN device could not be created for a reason other than privilege.
    #[error(transparent)]
    Tun(Box<TunCreateError>),
    /// The data plane failed (socket, device, peer table).
    #[error("data plane: {0}")]
    DataPlane(#[from] bauxite_conduit::Error),
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A service port (echo) could not be bound.
    #[error("cannot bind a service port: {0}")]
    Service(#[from] bauxite_conduit::ServiceError),
    /// A ROS 2 helper asked for in `[ros]` cannot run (the zenoh bridge is not installed).
    #[error(transparent)]
    Ros(#[from] crate::ros_cmd::RosError),
    /// The runtime, a signal handler or the metrics listener could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The hub revoked this node; it stopped and will not reconnect.
    #[error(
        "this node was revoked by the hub at {url}: {reason}; the daemon stopped and will not \
         reconnect. To bring the robot back: a new token and `bauxite join --force`"
    )]
    Revoked {
        /// The hub URL.
        url: String,
        /// The hub's message.
        reason: String,
    },
}

impl RunError {
    /// The process exit code: [`EXIT_REVOKED`] for a revoked node, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Revoked { .. } => EXIT_REVOKED,
            _ => 1,
        }
    }
}

impl RunError {
    /// A data-plane error, with a TUN creation failure lifted out so its reason leads.
    fn data_plane(error: bauxite_conduit::Error) -> Self {
        match error {
            bauxite_conduit::Error::Io {
                action,
                path,
                source,
            } if source
                .get_ref()
                .is_some_and(|inner| inner.is::<TunCreateError>()) =>
            {
                let kind = source.kind();
                let inner = source.into_inner().map(|e| e.downcast::<TunCreateError>());
                match inner {
                    Some(Ok(tun)) => Self::Tun(tun),
                    // The guard checked the type, so these only keep the compiler whole.
                    Some(Err(other)) => Self::DataPlane(bauxite_conduit::Error::Io {
                        action,
                        path,
                        source: std::io::Error::new(kind, other),
                    }),
                    None => Self::DataPlane(bauxite_conduit::Error::Io {
                        action,
                        path,
                        source: kind.into(),
                    }),
                }
            }
            other => Self::DataPlane(other),
        }
    }
}

/// Loads the config at `config_path` and runs the node until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), RunError> {
    let config = RunConfig::load(config_path)?;
    // Before the runtime exists: every thread it starts later keeps the default policy.
    let scheduling = crate::realtime::raise(config.realtime_priority);
    match &scheduling {
        crate::realtime::Scheduling::Refused { .. } => {
            tracing::warn!(scheduling = %scheduling, "data plane runs without real-time priority")
        }
        _ => tracing::info!(scheduling = %scheduling, "data plane scheduling"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(serve(config, scheduling))
}

/// Loads the identity, naming the fix for the two mistakes an operator makes most: no
/// file, and a file others can read.
fn load_identity(path: &Path) -> Result<Identity, RunError> {
    Identity::load(path).map_err(|source| match source {
        bauxite_conduit::Error::KeyFile {
            problem: KeyFileProblem::TooOpen { mode },
            ..
        } => RunError::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        },
        bauxite_conduit::Error::Io { source: io, .. }
            if io.kind() == std::io::ErrorKind::NotFound =>
        {
            RunError::IdentityMissing {
                path: path.to_path_buf(),
            }
        }
        error => RunError::Identity {
            path: path.to_path_buf(),
            error,
        },
    })
}

/// Loads `ca.crt`, `node.crt` and `node.key` once, before anything starts: a key others
/// can read, or a missing file, is a local fault no reconnect would cure.
fn load_hub_credentials(hub: &HubConfig) -> Result<NodeCredentials, RunError> {
    NodeCredentials::load(&hub.certs_dir).map_err(|source| match source {
        bauxite_dispatch_api::Error::KeyTooOpen { path, mode } => {
            RunError::KeyTooOpen { path, mode }
        }
        error => RunError::HubCredentials {
            dir: hub.certs_dir.clone(),
            error,
        },
    })
}

fn build_node(config: &RunConfig) -> Result<BauxiteNode, RunError> {
    let identity = load_identity(&config.identity)?;
    let mut registry = PeerRegistry::new();
    for peer in &config.peers {
        registry.insert(peer.clone())?;
    }
    if let (Some(_), Some(root)) = (&config.hub, &config.state_root) {
        crate::update_agent::warm_start::load_into(root, identity.peer_id(), &mut registry);
    }
    let node_config = NodeConfig {
        suite: config.cipher,
        timers: config.timers,
        mtu: DEFAULT_MTU,
        bulk_target: config.bulk_target,
        bulk_controller: config.bulk_controller,
        // With a hub, its data channel carries a peer's packets when UDP does not.
        hub_relay_after: config
            .hub
            .is_some()
            .then_some(bauxite_conduit::node::DEFAULT_HUB_RELAY_AFTER),
        // TURN is chosen only for peers that publish a relay candidate (or reach us
        // through our allocation): harmless without TURN servers.
        turn_after: Some(bauxite_conduit::node::DEFAULT_TURN_AFTER),
        bonding: config.bonding,
        // Not a setting yet: off until it wins (docs/congestion.md, section 6).
        rate_drop_feedback: false,
        bulk_repair: config.bulk_repair,
    };
    let mut node = BauxiteNode::new(
        identity,
        registry,
        node_config,
        clock::os_seed()?,
        clock::now(),
        clock::unix_nanos(),
    );
    node.set_lane_rules(config.lane_rules.clone());
    Ok(node)
}

fn jitter_seed() -> u64 {
    clock::os_seed()
        .map(|s| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&s[..8]);
            u64::from_le_bytes(bytes)
        })
        .unwrap_or(u64::from(std::process::id()))
}

/// Why the update agent does not run, or `None` when it does.
fn updates_off(config: &RunConfig) -> Option<&'static str> {
    if config.hub.is_none() {
        Some("this node has no [hub] (a static mesh gets no updates)")
    } else if config.state_root.is_none() {
        Some("the config has no [state_root]: updates are staged under it")
    } else if !config.updates.enabled {
        Some("[updates] enabled = false")
    } else {
        None
    }
}

async fn serve(config: RunConfig, scheduling: crate::realtime::Scheduling) -> Result<(), RunError> {
    // First, so a second daemon on this node is told so before it touches anything.
    let lock = RunLock::acquire(&lock_path(config.state_root.as_deref(), &config.identity))?;
    let node = build_node(&config)?;
    let credentials = config.hub.as_ref().map(load_hub_credentials).transpose()?;
    let operator_lock = config
        .hub
        .as_ref()
        .and_then(|hub| hub.operator_keys.as_deref())
        .map(|path| {
            crate::operator_cmd::read_pinned_keys(path, config.state_root.as_deref())
                .map(bauxite_dispatch_api::operator::OperatorLock::new)
                .map_err(RunError::OperatorKeys)
        })
        .transpose()?;
    let peer_id = node.peer_id();
    let virtual_ip = bauxite_conduit::VirtualIp::from(config.virtual_ip);
    let device = match config.device {
        DeviceKind::Auto => DeviceConfig::TunOrMemory(TunConfig {
            name: config.tun_name.clone(),
            mtu: u16::try_from(DEFAULT_MTU).unwrap_or(u16::MAX),
            address: config.virtual_ip,
            prefix: config.prefix,
        }),
        DeviceKind::Memory => DeviceConfig::Memory { virtual_ip },
        DeviceKind::None => DeviceConfig::None { virtual_ip },
    };
    let shell_config = ShellConfig {
        listen: config.listen,
        device,
    };
    let mut shell = Shell::bind(node, &shell_config)
        .await
        .map_err(RunError::data_plane)?;
    let echo_task = tokio::spawn(echo::serve(
        shell.bind_service(ServicePort::ECHO, DEFAULT_RECV_QUEUE)?,
    ));
    // After the shell: the server listens on the virtual IP, which the TUN device carries.
    let ros_server = crate::ros_cmd::start_server(&config, jitter_seed());
    let ros_gauges = ros_server.as_ref().map(crate::ros_cmd::RosGauges::of);
    let zenoh_bridge = crate::ros_cmd::start_zenoh(&config, jitter_seed())?;
    let metrics = shell.metrics();
    // Kernel lane classification on the TUN device, or one log line saying why not; it is
    // detached when `offload` is dropped at the end of `serve`.
    let offload = if config.kernel_offload {
        // A second TUN queue for Critical packets, kept only if the steering program that
        // fills it attaches (without it the kernel would spread flows over both by hash).
        shell.open_critical_tun_queue();
        let (offload, steered) = crate::offload::start(
            shell.tun_kind(),
            &config.lane_rules,
            shell.tun_steering_fd(),
        );
        if !steered {
            shell.close_critical_tun_queue();
        }
        offload
    } else {
        shell.single_socket();
        crate::offload::off()
    };
    let listen = shell.local_addr()?;
    let reflexive = shell.reflexive();
    let relay = config
        .hub
        .is_some()
        .then(|| crate::hub_relay::RelayLink::new(shell.hub_relay()));
    // ICE signals travel through the hub, so ICE needs one.
    let signals = match (&config.hub, config.ice) {
        (Some(_), true) => Some(crate::hub_signal::SignalLink::new(
            shell
                .enable_ice(bauxite_conduit::io::IceConfig {
                    include_loopback: false,
                    // Never a candidate on the mesh itself (checks would cross the tunnel).
                    exclude_interface: Some(config.tun_name.clone()),
                    exclude_net: Some((config.virtual_ip, config.prefix)),
                })
                .map_err(RunError::data_plane)?,
        )),
        _ => None,
    };
    // Peers learn a relayed address only through the hub, so TURN needs one.
    let turn = match config.hub {
        Some(_) => {
            let configured = crate::turn::configured(&config.turn).await;
            Some(crate::turn::start(shell.turn_relay(), configured))
        }
        None => None,
    };
    let (queries_tx, queries_rx) = mpsc::channel(16);
    let (hub_state, hub_watch) = watch::channel(None);
    let (cert_tx, cert_rx) = watch::channel(None);
    let (lock_tx, lock_rx) = watch::channel(None);
    // The connector renews the certificate and replaces the credentials here; the update
    // agent reads them on every connect.
    let credentials = credentials.map(watch::channel);
    // The identity signs renewal proofs (the node holds its own copy).
    let renew_identity = match &credentials {
        Some(_) => Some(std::sync::Arc::new(load_identity(&config.identity)?)),
        None => None,
    };
    let (hub_peer_tx, hub_peer_rx) = watch::channel(None);
    let (ros_servers_tx, ros_servers_rx) = watch::channel(Vec::new());
    let agent = match (
        &config.hub,
        &credentials,
        &config.state_root,
        updates_off(&config),
    ) {
        (Some(hub), Some(credentials), Some(root), None) => Some(crate::update_agent::spawn(
            crate::update_agent::AgentSetup {
                config: config.updates.clone(),
                state_root: root.clone(),
                hub: hub.clone(),
                credentials: credentials.1.clone(),
                queries: queries_tx.clone(),
                hub_peer: hub_peer_rx.clone(),
                seed: jitter_seed(),
            },
        )),
        _ => None,
    };
    let hub_task = config
        .hub
        .clone()
        .zip(credentials.map(|(tx, _)| tx))
        .zip(renew_identity)
        .map(|((hub, credentials), identity)| {
            let lock = operator_lock.map(|lock| {
                tracing::info!(
                    keys = lock.keys().len(),
                    "operator lock on: peers need an operator-signed key record"
                );
                lock_tx.send_replace(Some(crate::operator_lock::LockReport::new(&lock)));
                crate::operator_lock::LockSetup {
                    lock,
                    me: crate::operator_lock::own_facts(&identity.public(), config.virtual_ip),
                    report: lock_tx,
                }
            });
            tokio::spawn(
                crate::hub::HubConnector {
                    config: hub,
                    credentials,
                    identity,
                    cert: cert_tx,
                    me: peer_id,
                    metrics: std::sync::Arc::clone(&metrics),
                    queries: queries_tx.clone(),
                    seed: jitter_seed(),
                    listen,
                    mesh: MeshExclusion {
                        tun_name: config.tun_name.clone(),
                        virtual_ip: config.virtual_ip,
                        prefix: config.prefix,
                    },
                    state: hub_state,
                    hub_peer: hub_peer_tx,
                    reflexive,
                    ros: ros_gauges.clone(),
                    ros_servers: ros_servers_tx,
                    lock,
                    relay,
                    signals,
                    turn,
                }
                .run(),
            )
        });
    let listener = control::bind(&config.control_socket)?;
    let control_task = tokio::spawn(control::serve(
        listener,
        control::Context {
            queries: queries_tx,
            metrics: std::sync::Arc::clone(&metrics),
            updates: agent.as_ref().map(|(handle, _)| handle.clone()),
            updates_off: updates_off(&config).unwrap_or_default().to_owned(),
            hub_peer: hub_peer_rx,
            hub: hub_watch.clone(),
            cert: cert_rx,
            ros: ros_gauges.clone(),
            ros_servers: ros_servers_rx,
            operator_lock: lock_rx.clone(),
            offload: std::sync::Arc::clone(&offload),
            scheduling: scheduling.to_string(),
        },
    ));
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let listener = metrics_http::bind(addr).await?;
            Some(tokio::spawn(metrics_http::serve(
                listener,
                std::sync::Arc::clone(&metrics),
                peer_id.to_string(),
                metrics_http::Sources {
                    updates: agent.as_ref().map(|(handle, _)| handle.shared()),
                    ros: ros_gauges,
                    offload: Some(std::sync::Arc::clone(&offload)),
                    operator_lock: Some(lock_rx),
                },
            )))
        }
        None => None,
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut revoked = hub_watch.clone();
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stopping"),
            // A node without a hub never gets here: its sender lives as long as `serve`.
            Ok(_) = revoked.wait_for(|s| s.as_ref().is_some_and(HubState::is_revoked)) => {
                tracing::error!("stopping: this node was revoked by the hub");
            }
        }
    };
    tracing::info!(
        peer = %peer_id,
        listen = %shell.local_addr()?,
        tun = ?shell.tun_kind(),
        peers = config.peers.len(),
        hub = config.hub.as_ref().map_or("none", |h| h.url.as_str()),
        updates = updates_off(&config).unwrap_or("on"),
        classifier = offload.kind().name(),
        control = %config.control_socket.display(),
        lock = %lock.path().display(),
        "bauxite running"
    );
    let result = shell.run(queries_rx, shutdown).await;
    control_task.abort();
    echo_task.abort();
    if let Some(server) = ros_server {
        let last = server.stop().await;
        tracing::info!(state = last.phase.name(), "ROS 2 discovery server stopped");
    }
    if let Some(bridge) = zenoh_bridge {
        bridge.stop().await;
    }
    if let Some((_, task)) = agent {
        task.stop().await;
    }
    if let Some(task) = hub_task {
        task.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    // Detach the kernel classifier now (the control task that shared it is stopped).
    drop(offload);
    // A leftover socket file would only mislead `status`; a failure to remove it is harmless.
    let _ = std::fs::remove_file(&config.control_socket);
    let node = result?;
    if let (Some(_), Some(root)) = (&config.hub, &config.state_root) {
        let snapshot = node.snapshot(clock::unix_nanos() / 1_000_000_000);
        if let Err(error) = crate::update_agent::warm_start::save(root, &snapshot) {
            tracing::warn!(%error, "warm-start snapshot not saved");
        }
    }
    drop(lock);
    match hub_watch.borrow().clone() {
        Some(HubState::Revoked { url, reason, .. }) => Err(RunError::Revoked { url, reason }),
        _ => Ok(()),
    }
}
