//! Real shells on loopback: two `Shell`s, each with its own UDP socket on 127.0.0.1 and
//! an in-memory device or none, run as tasks and talk over the encrypted mesh.
//! Nothing needs privileges, and every wait is for a condition with a bounded deadline.

#![cfg(feature = "tun")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::identity::Identity;
use bauxite_conduit::io::{DeviceConfig, Query, Shell, ShellConfig, ShellStatus, clock};
use bauxite_conduit::ip::build;
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::peers::{PeerInfo, PeerRegistry};
use bauxite_conduit::tun::TunKind;
use bauxite_conduit::{BauxiteNode, Error, Metrics, VirtualIp};
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long any condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A shell running as a task, and what the test needs to talk to it.
struct Running {
    info: PeerInfo,
    queries: mpsc::Sender<Query>,
    app: Option<UnixDatagram>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<BauxiteNode, Error>>>,
}

impl Running {
    async fn status(&self) -> ShellStatus {
        let (tx, rx) = oneshot::channel();
        self.queries.send(Query::Status(tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// Polls the shell's status until `done` holds, or fails after [`DEADLINE`].
    async fn wait_status(&self, what: &str, done: impl Fn(&ShellStatus) -> bool) -> ShellStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shut_down(mut self) -> BauxiteNode {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap()
    }
}

/// The device choice for node `n` (1-based) with virtual IP `vip`.
type Device = fn(VirtualIp) -> DeviceConfig;

fn memory(virtual_ip: VirtualIp) -> DeviceConfig {
    DeviceConfig::Memory { virtual_ip }
}

fn no_device(virtual_ip: VirtualIp) -> DeviceConfig {
    DeviceConfig::None { virtual_ip }
}

/// Binds a shell for node `n` on 127.0.0.1 (a free port) and starts it; it knows no
/// peers yet (see [`introduce`]).
async fn start(n: u8, device: Device, config: NodeConfig) -> (Running, Shell) {
    let identity = Identity::from_secrets([n; 32], [n.wrapping_add(100); 32]);
    let public = identity.public();
    let vip = VirtualIp::from(Ipv4Addr::new(100, 64, 0, n));
    let node = BauxiteNode::new(
        identity,
        PeerRegistry::new(),
        config,
        [n; 32],
        clock::now(),
        clock::unix_nanos(),
    );
    let shell_config = ShellConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        device: device(vip),
    };
    let mut shell = Shell::bind(node, &shell_config).await.unwrap();
    let addr = shell.local_addr().unwrap();
    let info = PeerInfo::new(
        format!("node-{n}"),
        vip,
        public.static_public,
        public.signing_public,
        Some(addr),
    );
    let (queries, _) = mpsc::channel(1);
    let running = Running {
        info,
        queries,
        app: shell.take_app_end(),
        metrics: shell.metrics(),
        stop: None,
        task: None,
    };
    (running, shell)
}

/// Runs `shell` as a task for `running`.
fn spawn(running: &mut Running, shell: Shell) {
    let (queries, rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    running.queries = queries;
    running.stop = Some(stop);
    running.task = Some(tokio::spawn(shell.run(rx, async move {
        let _ = stopped.await;
    })));
}

/// Tells each shell about the other, which starts the handshake.
async fn introduce(a: &Running, b: &Running) {
    a.queries
        .send(Query::ReplacePeers(vec![b.info.clone()]))
        .await
        .unwrap();
    b.queries
        .send(Query::ReplacePeers(vec![a.info.clone()]))
        .await
        .unwrap();
    for (x, y) in [(a, b), (b, a)] {
        let id = y.info.id;
        x.wait_status("handshake", |s| {
            s.peers.iter().any(|p| p.id == id && p.established)
        })
        .await;
    }
}

/// Two started shells that know each other, with `devices` as their IP sides.
async fn pair(devices: [Device; 2], config: NodeConfig) -> (Running, Running) {
    let (mut a, shell_a) = start(1, devices[0], config.clone()).await;
    let (mut b, shell_b) = start(2, devices[1], config).await;
    spawn(&mut a, shell_a);
    spawn(&mut b, shell_b);
    introduce(&a, &b).await;
    (a, b)
}

fn udp_packet(from: &Running, to: &Running, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    build::ipv4_udp(
        from.info.virtual_ip.addr(),
        to.info.virtual_ip.addr(),
        40000,
        dst_port,
        payload,
        &mut packet,
    );
    packet
}

#[tokio::test(flavor = "current_thread")]
async fn in_memory_devices_carry_packets_between_two_shells() {
    let (a, b) = pair([memory, memory], NodeConfig::default()).await;
    assert!(matches!(a.status().await.tun, TunKind::Memory(_)));
    let packet = udp_packet(&a, &b, 9000, &[0xAB; 300]);
    a.app.as_ref().unwrap().send(&packet).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let len = tokio::time::timeout(DEADLINE, b.app.as_ref().unwrap().recv(&mut buf))
        .await
        .expect("packet delivered to b's device")
        .unwrap();
    assert_eq!(&buf[..len], &packet[..]);
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_shell_without_a_device_drops_and_counts_what_no_service_takes() {
    let (a, b) = pair([memory, no_device], NodeConfig::default()).await;
    assert_eq!(b.status().await.tun, TunKind::None);
    assert!(b.app.is_none(), "no device, no application end");
    for i in 0..3u8 {
        let packet = udp_packet(&a, &b, 9000, &[i; 200]);
        a.app.as_ref().unwrap().send(&packet).await.unwrap();
    }
    let status = b
        .wait_status("three drops", |s| s.counters.no_device_dropped == 3)
        .await;
    assert_eq!(status.counters.tun_write_dropped, 0);
    // The node delivered them (authenticated, allowed); only the missing device dropped them.
    assert!(Metrics::get(&b.metrics.rx_packets) >= 3);
    a.shut_down().await;
    b.shut_down().await;
}
