//! [`DiscoveryServer`]: the Fast DDS discovery server of a node, supervised.
//!
//! It runs `/usr/bin/fast-discovery-server -i ID -l VIRTUAL_IP -p PORT` (Debian's
//! `fastdds-tools`). The binary is spawned directly: the `fastdds discovery` Python
//! wrapper forks it and leaves it running when the wrapper is killed, so a supervisor
//! could neither see it crash nor stop it.
//!
//! With a [`DiscoveryServerConfig::backup_dir`] the server runs as a Fast DDS *backup*
//! server (`-b`, its database in that directory). That is what makes a restart useful:
//! a restarted server keeps its GUID, so clients that outlived it keep their state about
//! it and drop everything the fresh server sends with sequence numbers they have already
//! seen; endpoint discovery then stays broken until the clients restart. A backup server
//! resumes its history where the crash left it. (Measured with Fast DDS 2.9: without
//! `-b` a subscriber started after a `kill -9` and restart matched the publisher's
//! writer but the writer never learned of the reader; with `-b` samples flowed.)
//!
//! Invariant: at most one server process per handle runs at a time, and after
//! [`ServerHandle::stop`] returns none does.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::env::ServerAddr;
use crate::spawn::{ProcessSpawner, SpawnSpec};
use crate::supervisor::{Phase, SupervisorConfig, SupervisorStatus, supervise};

/// Debian's discovery server binary.
pub const DEFAULT_PROGRAM: &str = "/usr/bin/fast-discovery-server";
/// The discovery server port ROS 2 documents.
pub const DEFAULT_PORT: u16 = 11811;

/// How to run a node's discovery server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryServerConfig {
    /// The server binary.
    pub program: PathBuf,
    /// The address it listens on: the node's virtual IP.
    pub listen: IpAddr,
    /// Its UDP port.
    pub port: u16,
    /// Its server ID (its position in `ROS_DISCOVERY_SERVER`).
    pub server_id: u8,
    /// Where it keeps its backup database (`-b`, the working directory); `None` runs
    /// it without one, and clients older than a restart stop discovering (module docs).
    pub backup_dir: Option<PathBuf>,
    /// Restart and stop tuning.
    pub supervisor: SupervisorConfig,
}

impl DiscoveryServerConfig {
    /// Server 0 on `listen`, port 11811, Debian's binary, default supervision.
    pub fn new(listen: IpAddr) -> Self {
        Self {
            program: PathBuf::from(DEFAULT_PROGRAM),
            listen,
            port: DEFAULT_PORT,
            server_id: 0,
            backup_dir: None,
            supervisor: SupervisorConfig::default(),
        }
    }

    /// Where clients find it.
    pub fn address(&self) -> ServerAddr {
        ServerAddr {
            id: self.server_id,
            addr: SocketAddr::new(self.listen, self.port),
        }
    }

    /// The command line, with an empty environment (Fast DDS would otherwise pick up a
    /// stray `ROS_DISCOVERY_SERVER` or XML profile from the node's environment).
    pub fn spec(&self) -> SpawnSpec {
        let mut args = vec![
            "-i".to_string(),
            self.server_id.to_string(),
            "-l".to_string(),
            self.listen.to_string(),
            "-p".to_string(),
            self.port.to_string(),
        ];
        if self.backup_dir.is_some() {
            args.push("-b".to_string());
        }
        SpawnSpec {
            program: self.program.clone(),
            args: args.into_iter().map(OsString::from).collect(),
            env: BTreeMap::new(),
            cwd: self.backup_dir.clone(),
            package: "fastdds-tools",
        }
    }
}

/// Starts discovery servers.
#[derive(Debug)]
pub struct DiscoveryServer;

impl DiscoveryServer {
    /// Starts the server under supervision on the current tokio runtime; `seed` drives the
    /// restart jitter.
    pub fn spawn<S: ProcessSpawner>(
        spawner: S,
        config: DiscoveryServerConfig,
        seed: u64,
    ) -> ServerHandle {
        spawn_supervised(
            spawner,
            config.spec(),
            config.supervisor,
            seed,
            config.address(),
        )
    }
}

/// Runs `spec` under [`supervise`] on the current runtime, behind a [`ServerHandle`].
pub(crate) fn spawn_supervised<S: ProcessSpawner>(
    spawner: S,
    spec: SpawnSpec,
    supervisor: SupervisorConfig,
    seed: u64,
    address: ServerAddr,
) -> ServerHandle {
    {
        let (status_tx, status) = watch::channel(SupervisorStatus {
            phase: Phase::Idle,
            restarts: 0,
            last_exit: None,
            failure: None,
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            spawner, spec, supervisor, seed, status_tx, stop_rx,
        ));
        ServerHandle {
            address,
            status,
            stop,
            task,
        }
    }
}

/// A running, supervised discovery server.
#[derive(Debug)]
pub struct ServerHandle {
    address: ServerAddr,
    status: watch::Receiver<SupervisorStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<SupervisorStatus>,
}

impl ServerHandle {
    /// Where clients find it.
    pub fn address(&self) -> ServerAddr {
        self.address
    }

    /// The supervisor's current status.
    pub fn status(&self) -> SupervisorStatus {
        self.status.borrow().clone()
    }

    /// A receiver of every status change (for metrics and status readers).
    pub fn watch(&self) -> watch::Receiver<SupervisorStatus> {
        self.status.clone()
    }

    /// Stops the server (`SIGTERM`, then `SIGKILL` after the grace time) and waits for it.
    pub async fn stop(self) -> SupervisorStatus {
        self.stop.send_replace(true);
        let last = self.status.borrow().clone();
        self.task.await.unwrap_or(last)
    }
}

/// The Prometheus gauges for a server: `ros_discovery_port`, `ros_discovery_status`
/// (see [`Phase::code`]) and `ros_discovery_restarts_total`, labelled with `node`.
pub fn render_prometheus(node: &str, port: u16, status: &SupervisorStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ros_discovery_port UDP port of this node's ROS 2 discovery server.\n# TYPE ros_discovery_port gauge\nros_discovery_port{{node=\"{node}\"}} {port}"
    );
    let _ = writeln!(
        out,
        "# HELP ros_discovery_status ROS 2 discovery server: 1 running, 0 stopped, 2 restarting, 3 failed.\n# TYPE ros_discovery_status gauge\nros_discovery_status{{node=\"{node}\",phase=\"{}\"}} {}",
        status.phase.name(),
        status.phase.code()
    );
    let _ = writeln!(
        out,
        "# HELP ros_discovery_restarts_total Restarts of the discovery server after a crash.\n# TYPE ros_discovery_restarts_total counter\nros_discovery_restarts_total{{node=\"{node}\"}} {}",
        status.restarts
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_id_address_and_port_and_nothing_else() {
        let mut config = DiscoveryServerConfig::new("100.64.0.7".parse().unwrap());
        config.server_id = 3;
        config.port = 11900;
        let spec = config.spec();
        assert_eq!(
            spec.program,
            PathBuf::from("/usr/bin/fast-discovery-server")
        );
        let args: Vec<_> = spec.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["-i", "3", "-l", "100.64.0.7", "-p", "11900"]);
        assert!(spec.env.is_empty());
        assert_eq!(spec.cwd, None);
        config.backup_dir = Some("/var/lib/bauxite/citadel".into());
        let spec = config.spec();
        assert_eq!(spec.args.last().unwrap(), "-b");
        assert_eq!(spec.cwd, config.backup_dir);
        assert_eq!(config.address().addr.to_string(), "100.64.0.7:11900");
        assert_eq!(config.address().id, 3);
    }

    #[test]
    fn gauges_carry_port_and_phase_code() {
        let status = SupervisorStatus {
            phase: Phase::Failed,
            restarts: 4,
            last_exit: None,
            failure: Some("x".into()),
        };
        let text = render_prometheus("n1", 11811, &status);
        assert!(
            text.contains("ros_discovery_port{node=\"n1\"} 11811\n"),
            "{text}"
        );
        assert!(
            text.contains("ros_discovery_status{node=\"n1\",phase=\"failed\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ros_discovery_restarts_total{node=\"n1\"} 4\n"),
            "{text}"
        );
    }
}
