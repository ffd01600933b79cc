//! The daemon's side of citadel: the supervised discovery server of `[ros.server]` (and
//! the zenoh bridge), and its state for metrics, `ReportMetrics` and `bauxite status`.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use bauxite_citadel::{
    DiscoveryServer, DiscoveryServerConfig, ServerAddr, ServerHandle, SupervisorStatus,
    TokioSpawner,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::RosError;
use crate::config::{RosConfig, RunConfig};

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
    use bauxite_citadel::Phase;

    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // any instant will do for a backoff deadline
    fn gauges_and_the_status_line_follow_the_supervisor() {
        let (tx, status) = watch::channel(SupervisorStatus {
            phase: Phase::Idle,
            restarts: 0,
            last_exit: None,
            failure: None,
        });
        let gauges = RosGauges {
            port: 11811,
            server_id: 3,
            status,
        };
        tx.send_replace(SupervisorStatus {
            phase: Phase::Backoff {
                until: std::time::Instant::now(),
            },
            restarts: 2,
            last_exit: Some("killed by SIGKILL".into()),
            failure: None,
        });
        assert_eq!(
            gauges.metrics(),
            [
                ("ros_discovery_port", 11811.0),
                ("ros_discovery_status", 2.0),
                ("ros_discovery_server_id", 3.0),
                ("ros_discovery_restarts", 2.0),
            ]
        );
        assert_eq!(
            gauges.report().render(),
            "discovery server restarting on port 11811, 2 restarts, last exit: killed by SIGKILL"
        );
        tx.send_replace(SupervisorStatus {
            phase: Phase::Failed,
            restarts: 4,
            last_exit: Some("exit code 1".into()),
            failure: Some("5 crashes within 60s".into()),
        });
        let report = gauges.report();
        assert_eq!(report.state, "failed");
        assert!(report.render().ends_with("; gave up: 5 crashes within 60s"));
    }
}
