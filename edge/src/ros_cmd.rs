//! `bauxite ros env` and `bauxite ros exec`: the environment that points a robot's ROS 2
//! processes at the fleet's discovery servers across the mesh, and the daemon's side of
//! citadel: the supervised discovery server of `[ros.server]` ([`start_server`]).
//!
//! Servers come from `[ros.server]` (this node, on its virtual IP) and `[[ros.servers]]`:
//! by virtual IP, or by peer name — a static peer's, else the running daemon's peer table
//! (which the hub's topology fills), so a fleet names its server node once and no robot
//! carries an address.
//!
//! Invariant: `exec` replaces this process with the command, no shell in between; the
//! command keeps the caller's environment plus exactly the two ROS variables.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use bauxite_citadel::{
    DiscoveryServer, DiscoveryServerConfig, RosEnv, ServerAddr, ServerHandle, SupervisorStatus,
    TokioSpawner,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{RosConfig, RunConfig, ServerTarget};
use crate::control::{self, ControlError};

/// Why the ROS environment cannot be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosError {
    /// The config has no `[ros]` section.
    #[error(
        "the config has no [ros] section; add `[ros.server]` on the node that runs the discovery server, or `[[ros.servers]]` with `peer = \"NAME\"` on the others (see docs/ros2.md)"
    )]
    NotConfigured,
    /// A server named by peer is neither a static peer nor known to the daemon.
    #[error(
        "no peer named {name:?} for [[ros.servers]]: it is not among the static peers and the running daemon does not know it; check the name with `bauxite status`"
    )]
    UnknownPeer {
        /// The name.
        name: String,
    },
    /// The daemon had to be asked for a peer's address and could not be.
    #[error("cannot resolve [[ros.servers]] peer {name:?}: {error}")]
    Daemon {
        /// The name.
        name: String,
        /// Why the daemon did not answer.
        error: ControlError,
    },
    /// The servers or domain are inconsistent.
    #[error(transparent)]
    Citadel(#[from] bauxite_citadel::Error),
    /// The command could not be executed.
    #[error("cannot run {program:?}: {error}; check that it is installed and on the PATH")]
    Exec {
        /// The program.
        program: OsString,
        /// The OS error.
        error: std::io::Error,
    },
    /// `exec` was given no command.
    #[error("no command given; use `bauxite ros exec -- COMMAND [ARGS...]`")]
    NoCommand,
}

/// What the running daemon knows that the config does not: its peers (static or from
/// the hub) and the discovery servers the hub's topology announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonView {
    /// `(name, virtual IP)` of each peer.
    pub peers: Vec<(String, IpAddr)>,
    /// Discovery servers from the hub's topology.
    pub servers: Vec<ServerAddr>,
}

/// The environment for `config`'s node. `daemon` is asked at most once, and only when a
/// `[[ros.servers]]` peer is not a static peer, or when no `[[ros.servers]]` is
/// configured (the servers then come from the hub's topology).
pub fn resolve(
    config: &RunConfig,
    daemon: impl FnOnce() -> Result<DaemonView, ControlError>,
) -> Result<RosEnv, RosError> {
    let ros = config.ros.as_ref().ok_or(RosError::NotConfigured)?;
    let mut servers = Vec::new();
    if let Some(own) = &ros.server {
        servers.push(ServerAddr {
            id: own.id,
            addr: SocketAddr::new(IpAddr::V4(config.virtual_ip), own.port),
        });
    }
    let mut daemon = Some(daemon);
    if ros.servers.is_empty() {
        if let Some(ask) = daemon.take() {
            match ask() {
                Ok(view) => servers.extend(view.servers),
                // This node's own server is enough to go on; without it, say why.
                Err(error) if servers.is_empty() => {
                    return Err(RosError::Daemon {
                        name: "(servers from the hub's topology)".into(),
                        error,
                    });
                }
                Err(error) => {
                    tracing::debug!(%error, "no servers from the hub; using this node's own");
                }
            }
        }
        return Ok(RosEnv::new(servers, u32::from(ros.domain_id))?);
    }
    let mut daemon_peers: Option<Vec<(String, IpAddr)>> = None;
    for r in &ros.servers {
        let ip = match &r.target {
            ServerTarget::Address(ip) => *ip,
            ServerTarget::Peer(name) => {
                let static_ip = config
                    .peers
                    .iter()
                    .find(|p| &p.name == name)
                    .map(|p| IpAddr::V4(p.virtual_ip.addr()));
                match static_ip {
                    Some(ip) => ip,
                    None => {
                        if daemon_peers.is_none() {
                            let ask = daemon
                                .take()
                                .ok_or_else(|| RosError::UnknownPeer { name: name.clone() })?;
                            let view = ask().map_err(|error| RosError::Daemon {
                                name: name.clone(),
                                error,
                            })?;
                            daemon_peers = Some(view.peers);
                        }
                        daemon_peers
                            .iter()
                            .flatten()
                            .find(|(n, _)| n == name)
                            .map(|(_, ip)| *ip)
                            .ok_or_else(|| RosError::UnknownPeer { name: name.clone() })?
                    }
                }
            }
        };
        servers.push(ServerAddr {
            id: r.id,
            addr: SocketAddr::new(ip, r.port),
        });
    }
    Ok(RosEnv::new(servers, u32::from(ros.domain_id))?)
}

/// What the running daemon knows, from its status.
pub fn daemon_view(config: &RunConfig) -> Result<DaemonView, ControlError> {
    let status = control::query_status(&config.control_socket)?;
    Ok(DaemonView {
        peers: status
            .peers
            .into_iter()
            .filter_map(|p| Some((p.name, p.virtual_ip.parse().ok()?)))
            .collect(),
        servers: status
            .ros_servers
            .iter()
            .filter_map(|s| {
                Some(ServerAddr {
                    id: s.id,
                    addr: s.address.parse().ok()?,
                })
            })
            .collect(),
    })
}

/// Replaces this process with `command`, its environment extended by `env`. Returns
/// only on failure.
pub fn exec(env: &RosEnv, command: &[OsString]) -> RosError {
    let Some((program, args)) = command.split_first() else {
        return RosError::NoCommand;
    };
    let error = std::process::Command::new(program)
        .args(args)
        .envs(env.vars())
        .exec();
    RosError::Exec {
        program: program.clone(),
        error,
    }
}

/// Where the server keeps its backup database: `[ros.server] backup_dir`, else
/// `citadel/` under the state root, else `citadel/` beside the identity file.
pub fn backup_dir(config: &RunConfig) -> Option<PathBuf> {
    let server = config.ros.as_ref()?.server.as_ref()?;
    server.backup_dir.clone().or_else(|| {
        let base = config
            .state_root
            .clone()
            .or_else(|| config.identity.parent().map(Path::to_path_buf))?;
        Some(base.join("citadel"))
    })
}

/// Starts the supervised discovery server of `[ros.server]` on the node's virtual IP,
/// if the config has one; `seed` drives the restart jitter. Its backup directory is
/// created (0700) first; without one the server runs without a backup and says so.
pub fn start_server(config: &RunConfig, seed: u64) -> Option<ServerHandle> {
    let ros: &RosConfig = config.ros.as_ref()?;
    let server = ros.server.as_ref()?;
    let backup = backup_dir(config).filter(|dir| {
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        if let Err(error) = &made {
            tracing::warn!(dir = %dir.display(), %error, "no backup for the discovery server: clients older than a restart will stop discovering");
        }
        made.is_ok()
    });
    let settings = DiscoveryServerConfig {
        program: server.program.clone(),
        listen: IpAddr::V4(config.virtual_ip),
        port: server.port,
        server_id: server.id,
        backup_dir: backup,
        supervisor: server.supervisor,
    };
    tracing::info!(
        program = %settings.program.display(),
        address = %settings.address().addr,
        id = server.id,
        "starting the ROS 2 discovery server"
    );
    Some(DiscoveryServer::spawn(TokioSpawner, settings, seed))
}

/// Starts the supervised zenoh bridge when `[ros] zenoh_bridge = true`; an error when no
/// bridge is on the `PATH` (`bauxite run` refuses to start: the operator asked for it).
#[cfg(feature = "zenoh")]
pub fn start_zenoh(config: &RunConfig, seed: u64) -> Result<Option<ServerHandle>, RosError> {
    let Some(ros) = config.ros.as_ref().filter(|r| r.zenoh_bridge) else {
        return Ok(None);
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let handle = bauxite_citadel::zenoh::spawn_bridge(
        TokioSpawner,
        &path,
        ros.domain_id,
        IpAddr::V4(config.virtual_ip),
        bauxite_citadel::SupervisorConfig::default(),
        seed,
    )?;
    tracing::info!(address = %handle.address().addr, "zenoh bridge started");
    Ok(Some(handle))
}

/// Without the `zenoh` feature the config parser refuses `zenoh_bridge = true`.
#[cfg(not(feature = "zenoh"))]
pub fn start_zenoh(_config: &RunConfig, _seed: u64) -> Result<Option<ServerHandle>, RosError> {
    Ok(None)
}

/// The discovery server's state as the node reports it: Prometheus gauges,
/// `ReportMetrics`, and `bauxite status`.
#[derive(Debug, Clone)]
pub struct RosGauges {
    /// The server's UDP port.
    pub port: u16,
    /// Its server ID.
    pub server_id: u8,
    /// The supervisor's status.
    pub status: watch::Receiver<SupervisorStatus>,
}

impl RosGauges {
    /// The gauges of a started server.
    pub fn of(handle: &ServerHandle) -> Self {
        Self {
            port: handle.address().addr.port(),
            server_id: handle.address().id,
            status: handle.watch(),
        }
    }

    /// `ros_discovery_port`, `ros_discovery_status`, `ros_discovery_server_id` and
    /// `ros_discovery_restarts` for `ReportMetrics` (the hub publishes the role from them).
    pub fn metrics(&self) -> [(&'static str, f64); 4] {
        let status = self.status.borrow();
        [
            ("ros_discovery_port", f64::from(self.port)),
            ("ros_discovery_status", f64::from(status.phase.code())),
            ("ros_discovery_server_id", f64::from(self.server_id)),
            ("ros_discovery_restarts", f64::from(status.restarts)),
        ]
    }

    /// The discovery servers a topology snapshot announces.
    pub fn servers_in(
        snapshot: &bauxite_dispatch_api::proto::node::TopologySnapshot,
    ) -> Vec<ServerAddr> {
        snapshot
            .peers
            .iter()
            .filter_map(|p| {
                let port = u16::try_from(p.ros_discovery_port)
                    .ok()
                    .filter(|p| *p > 0)?;
                Some(ServerAddr {
                    id: u8::try_from(p.ros_discovery_server_id).ok()?,
                    addr: SocketAddr::new(p.virtual_ip.parse().ok()?, port),
                })
            })
            .collect()
    }

    /// The Prometheus text, labelled with `node`.
    pub fn render_prometheus(&self, node: &str) -> String {
        bauxite_citadel::render_prometheus(node, self.port, &self.status.borrow())
    }

    /// The `ros` part of `bauxite status`.
    pub fn report(&self) -> RosReport {
        let status = self.status.borrow();
        RosReport {
            port: self.port,
            state: status.phase.name().to_string(),
            pid: match status.phase {
                bauxite_citadel::Phase::Running { pid, .. } => Some(pid),
                _ => None,
            },
            restarts: status.restarts,
            last_exit: status.last_exit.clone(),
            failure: status.failure.clone(),
        }
    }
}

/// A discovery server the hub's topology announces, in `bauxite status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosServerEntry {
    /// Its server ID.
    pub id: u8,
    /// `virtual-ip:port`.
    pub address: String,
}

/// The discovery server in `bauxite status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosReport {
    /// Its UDP port.
    pub port: u16,
    /// `running`, `starting`, `restarting`, `failed`, `stopping` or `stopped`.
    pub state: String,
    /// Its process ID while it runs.
    pub pid: Option<u32>,
    /// Restarts after a crash.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<String>,
    /// Why it was given up, once it was.
    pub failure: Option<String>,
}

impl RosReport {
    /// One status line.
    pub fn render(&self) -> String {
        let mut line = format!("discovery server {} on port {}", self.state, self.port);
        if let Some(pid) = self.pid {
            line.push_str(&format!(" (pid {pid})"));
        }
        line.push_str(&format!(", {} restarts", self.restarts));
        if let Some(exit) = &self.last_exit {
            line.push_str(&format!(", last exit: {exit}"));
        }
        if let Some(failure) = &self.failure {
            line.push_str(&format!("; gave up: {failure}"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[node]
identity = "/var/lib/bauxite/identity/node.identity"
listen = "0.0.0.0:51820"
virtual_ip = "100.64.0.2/10"
"#;

    const PEER: &str = r#"
[[peers]]
name = "base"
static_public = "1111111111111111111111111111111111111111111111111111111111111111"
signing_public = "2222222222222222222222222222222222222222222222222222222222222222"
virtual_ip = "100.64.0.1"
"#;

    fn config(extra: &str) -> RunConfig {
        RunConfig::parse(&format!("{BASE}{extra}"), Path::new("c.toml")).unwrap()
    }

    fn no_daemon() -> Result<DaemonView, ControlError> {
        panic!("the daemon must not be asked")
    }

    #[test]
    fn own_server_and_static_peer_by_name() {
        let c = config(&format!(
            "[ros.server]\nid = 1\n[[ros.servers]]\npeer = \"base\"\n{PEER}"
        ));
        let env = resolve(&c, no_daemon).unwrap();
        assert_eq!(env.discovery_server(), "100.64.0.1:11811;100.64.0.2:11811");
        assert_eq!(env.domain_id(), 42);
    }

    #[test]
    fn a_peer_from_the_hub_is_asked_of_the_daemon_once() {
        let c = config(
            "[ros]\ndomain_id = 3\n[[ros.servers]]\npeer = \"hub-base\"\n[[ros.servers]]\npeer = \"other\"\nid = 1\n",
        );
        let mut asked = 0;
        let env = resolve(&c, || {
            asked += 1;
            Ok(DaemonView {
                peers: vec![
                    ("hub-base".into(), "100.64.0.5".parse().unwrap()),
                    ("other".into(), "100.64.0.6".parse().unwrap()),
                ],
                servers: vec![],
            })
        })
        .unwrap();
        assert_eq!(asked, 1);
        assert_eq!(env.discovery_server(), "100.64.0.5:11811;100.64.0.6:11811");
        assert_eq!(env.domain_id(), 3);
        let e = resolve(&c, || Ok(DaemonView::default())).unwrap_err();
        assert!(
            matches!(e, RosError::UnknownPeer { ref name } if name == "hub-base"),
            "{e}"
        );
    }

    #[test]
    fn the_backup_lives_under_the_state_root_else_beside_the_identity() {
        let c = config("[ros.server]\n");
        assert_eq!(
            backup_dir(&c),
            Some(PathBuf::from("/var/lib/bauxite/identity/citadel"))
        );
        let c = config("[state_root]\nroot = \"/srv/bx\"\n[ros.server]\n");
        assert_eq!(backup_dir(&c), Some(PathBuf::from("/srv/bx/citadel")));
        let c = config("[ros.server]\nbackup_dir = \"/x\"\n");
        assert_eq!(backup_dir(&c), Some(PathBuf::from("/x")));
        assert_eq!(backup_dir(&config("")), None);
    }

    #[test]
    fn without_server_entries_the_hubs_topology_names_the_servers() {
        let hub_servers = || {
            Ok(DaemonView {
                peers: vec![],
                servers: vec![ServerAddr {
                    id: 0,
                    addr: "100.64.0.7:11811".parse().unwrap(),
                }],
            })
        };
        let env = resolve(&config("[ros]\n"), hub_servers).unwrap();
        assert_eq!(env.discovery_server(), "100.64.0.7:11811");
        // The server node itself: its own entry and the hub's agree on position 0.
        let own = config("[ros.server]\n");
        let env = resolve(&own, || {
            Ok(DaemonView {
                peers: vec![],
                servers: vec![ServerAddr {
                    id: 0,
                    addr: "100.64.0.2:11811".parse().unwrap(),
                }],
            })
        })
        .unwrap();
        assert_eq!(env.discovery_server(), "100.64.0.2:11811");
        // No daemon: its own server is enough; with none, the error says why.
        let down = || {
            Err(ControlError::Refused {
                message: "down".into(),
            })
        };
        assert_eq!(
            resolve(&own, down).unwrap().discovery_server(),
            "100.64.0.2:11811"
        );
        let e = resolve(&config("[ros]\n"), down).unwrap_err();
        assert!(e.to_string().contains("hub's topology"), "{e}");
        let e = resolve(&config("[ros]\n"), || Ok(DaemonView::default())).unwrap_err();
        assert!(e.to_string().contains("no ROS discovery server"), "{e}");
    }

    #[test]
    fn no_ros_section_says_what_to_add() {
        let e = resolve(&config(""), no_daemon).unwrap_err();
        assert!(e.to_string().contains("[ros.server]"), "{e}");
    }

    #[test]
    fn exec_without_a_command_or_with_a_missing_one_fails_clearly() {
        let env = resolve(
            &config("[ros]\n[[ros.servers]]\naddress = \"100.64.0.1\"\n"),
            no_daemon,
        )
        .unwrap();
        assert!(matches!(exec(&env, &[]), RosError::NoCommand));
        let e = exec(&env, &["/nonexistent/talker".into()]);
        assert!(e.to_string().contains("/nonexistent/talker"), "{e}");
    }
}
