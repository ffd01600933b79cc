//! `bauxite ros env` and `bauxite ros exec`: the environment that points a robot's ROS 2
//! processes at the fleet's discovery servers across the mesh, and (in `daemon.rs`) the
//! daemon's side of citadel: the supervised discovery server of `[ros.server]`
//! ([`start_server`]) and its gauges ([`RosGauges`]).
//!
//! Servers come from `[ros.server]` (this node, on its virtual IP) and `[[ros.servers]]`:
//! by virtual IP, or by peer name — a static peer's, else the running daemon's peer table
//! (which the hub's topology fills), so a fleet names its server node once and no robot
//! carries an address.
//!
//! Invariant: `exec` replaces this process with the command, no shell in between; the
//! command keeps the caller's environment plus exactly the two ROS variables.

mod daemon;
#[cfg(test)]
mod tests;

pub use daemon::{RosGauges, RosReport, RosServerEntry, backup_dir, start_server, start_zenoh};

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;

use bauxite_citadel::{RosEnv, ServerAddr};

use crate::config::{RunConfig, ServerTarget};
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
