//! A real `Shell` on 127.0.0.1 run as a task, and what a test needs to talk to it; shared
//! by the loopback shell tests (`shell.rs`, `ice.rs`). Every wait is for a condition with
//! a bounded deadline.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::identity::Identity;
use bauxite_conduit::io::{DeviceConfig, Query, Shell, ShellConfig, ShellStatus, clock};
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::path::MakeStrategy;
use bauxite_conduit::peers::{PeerInfo, PeerRegistry};
use bauxite_conduit::{BauxiteNode, Error, Metrics, VirtualIp};
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long any condition may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The device of a node with virtual IP `vip`.
pub(crate) type Device = fn(VirtualIp) -> DeviceConfig;

/// An in-memory device (the test holds the application's end).
pub(crate) fn memory(virtual_ip: VirtualIp) -> DeviceConfig {
    DeviceConfig::Memory { virtual_ip }
}

/// No device: a node that only carries services.
pub(crate) fn no_device(virtual_ip: VirtualIp) -> DeviceConfig {
    DeviceConfig::None { virtual_ip }
}

/// How a test node is built: its device, its configuration, a bulk controller to use
/// instead of the configured one, and whether peers learn its address.
pub(crate) struct Spec {
    pub(crate) device: Device,
    pub(crate) config: NodeConfig,
    pub(crate) congestion: Option<MakeStrategy>,
    pub(crate) advertise: bool,
}

impl Spec {
    /// `device` with the default configuration, its address advertised.
    pub(crate) fn new(device: Device) -> Self {
        Self {
            device,
            config: NodeConfig::default(),
            congestion: None,
            advertise: true,
        }
    }
}

/// A shell (bound, or running as a task once [`Running::spawn`]ed) and its handles.
pub(crate) struct Running {
    pub(crate) info: PeerInfo,
    /// Where the shell's UDP socket listens.
    pub(crate) addr: SocketAddr,
    pub(crate) queries: mpsc::Sender<Query>,
    pub(crate) app: Option<UnixDatagram>,
    pub(crate) metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<BauxiteNode, Error>>>,
}

impl Running {
    /// Binds a shell for node `n` (virtual IP 100.64.0.n) on a free port of 127.0.0.1,
    /// not yet running, knowing no peers.
    pub(crate) async fn bind(n: u8, spec: Spec) -> (Running, Shell) {
        let identity = Identity::from_secrets([n; 32], [n.wrapping_add(100); 32]);
        let public = identity.public();
        let vip = VirtualIp::from(Ipv4Addr::new(100, 64, 0, n));
        let mut node = BauxiteNode::new(
            identity,
            PeerRegistry::new(),
            spec.config,
            [n; 32],
            clock::now(),
            clock::unix_nanos(),
        );
        if let Some(strategy) = spec.congestion {
            node.set_congestion(strategy);
        }
        let shell_config = ShellConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            device: (spec.device)(vip),
        };
        let mut shell = Shell::bind(node, &shell_config).await.unwrap();
        let addr = shell.local_addr().unwrap();
        let info = PeerInfo::new(
            format!("node-{n}"),
            vip,
            public.static_public,
            public.signing_public,
            spec.advertise.then_some(addr),
        );
        let (queries, _) = mpsc::channel(1);
        let running = Running {
            info,
            addr,
            queries,
            app: shell.take_app_end(),
            metrics: shell.metrics(),
            stop: None,
            task: None,
        };
        (running, shell)
    }

    /// Runs `shell` as this node's task.
    pub(crate) fn spawn(&mut self, shell: Shell) {
        let (queries, rx) = mpsc::channel(16);
        let (stop, stopped) = oneshot::channel::<()>();
        self.queries = queries;
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(shell.run(rx, async move {
            let _ = stopped.await;
        })));
    }

    /// The running shell's status.
    pub(crate) async fn status(&self) -> ShellStatus {
        let (tx, rx) = oneshot::channel();
        self.queries.send(Query::Status(tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// Polls the shell's status until `done` holds, or fails after [`DEADLINE`].
    pub(crate) async fn wait_status(
        &self,
        what: &str,
        done: impl Fn(&ShellStatus) -> bool,
    ) -> ShellStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the task and returns its node.
    pub(crate) async fn shut_down(mut self) -> BauxiteNode {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap()
    }
}
