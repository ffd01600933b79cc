//! Service datagrams between two real shells over loopback UDP: how fast an in-process
//! user (OTA transfer) can push bytes through the encrypted mesh on the Bulk lane, and
//! what a 1 kHz control loop on the Critical lane sees meanwhile.
//!
//! Two nodes, each a `Shell` with no device (the hub's setup; the robot's in-memory
//! device changes nothing on this path) on its own thread with a current-thread tokio
//! runtime, as the daemon runs. On node A a task pushes `--bytes` of payload to node B's
//! port 7400 in full-size datagrams (1322 bytes) through `OutgoingBatch`es on
//! `Lane::Bulk`; on node B a task takes them with `recv_batch` and checks their sequence
//! numbers. Beside it, node A sends a 64-byte datagram every millisecond on
//! `Lane::Critical` to port 7401, which node B echoes, and A records the round trips —
//! first idle, then during the bulk transfer. Prints throughput, the round trips, and
//! both nodes' lane and service counters.
//!
//! `cargo run --release -p bauxite-benches --example service_throughput -- [--bytes N] [--aes] [--unpaced]`
//! (`--unpaced` turns bulk pacing off, to see what LEDBAT costs here).

// An example, not protocol code: a broken fixture should panic, and it measures wall time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bauxite_benches::identity;
use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::io::{DeviceConfig, IncomingBatch, Query, Shell, ShellConfig, clock};
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::peers::{PeerInfo, PeerRegistry};
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::{BauxiteNode, Lane, Metrics, VirtualIp};
use tokio::sync::{mpsc, oneshot};

const BULK_PORT: u16 = 7400;
const CONTROL_PORT: u16 = 7401;
const PAYLOAD: usize = 1322;
const IDLE_PINGS: u32 = 500;

struct Args {
    bytes: u64,
    suite: CipherSuite,
    bulk_target: Option<Duration>,
}

fn args() -> Args {
    let mut args = Args {
        bytes: 3_000_000_000,
        suite: CipherSuite::default(),
        bulk_target: NodeConfig::default().bulk_target,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bytes" => args.bytes = it.next().and_then(|v| v.parse().ok()).expect("--bytes N"),
            "--aes" => args.suite = CipherSuite::Aes256Gcm,
            "--unpaced" => args.bulk_target = None,
            other => panic!("unknown argument {other}; see the file's docs"),
        }
    }
    args
}

fn vip(n: u8) -> VirtualIp {
    VirtualIp::from(Ipv4Addr::new(100, 64, 0, n))
}

fn port(p: u16) -> ServicePort {
    ServicePort::new(p).unwrap()
}

/// What one node's thread reports at the end.
struct Report {
    lanes: [[u64; 3]; 3],
    service: [u64; 5],
    rtts_idle: Vec<Duration>,
    rtts_loaded: Vec<Duration>,
    bulk_elapsed: Option<Duration>,
    /// Datagrams that arrived, and how many of them out of sequence.
    received: Option<(u64, u64)>,
}

fn lanes(m: &Metrics) -> [[u64; 3]; 3] {
    [&m.lane_enqueued, &m.lane_sent, &m.lane_dropped]
        .map(|a| Lane::ALL.map(|lane| Metrics::get(&a[lane.index()])))
}

fn service(m: &Metrics) -> [u64; 5] {
    [
        &m.service_tx_packets,
        &m.service_tx_waits,
        &m.service_rx_packets,
        &m.service_rx_dropped,
        &m.tx_dropped,
    ]
    .map(Metrics::get)
}

/// Runs node `n` (1 sends, 2 receives) on this thread until its part is done.
fn node(
    n: u8,
    config: NodeConfig,
    datagrams: u64,
    me: std_mpsc::Sender<PeerInfo>,
    other: std_mpsc::Receiver<PeerInfo>,
) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let id = identity(n);
        let public = id.public();
        let node = BauxiteNode::new(
            id,
            PeerRegistry::new(),
            config,
            [n; 32],
            clock::now(),
            clock::unix_nanos(),
        );
        let shell_config = ShellConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            device: DeviceConfig::None { virtual_ip: vip(n) },
        };
        let mut shell = Shell::bind(node, &shell_config).await.unwrap();
        let metrics = shell.metrics();
        let mut bulk = shell.bind_service(port(BULK_PORT), 4096).unwrap();
        let mut control = shell.bind_service(port(CONTROL_PORT), 1024).unwrap();
        let info = PeerInfo::new(
            format!("node-{n}"),
            vip(n),
            public.static_public,
            public.signing_public,
            Some(shell.local_addr().unwrap()),
        );
        let peer_id = info.id;
        me.send(info).unwrap();
        let peer = tokio::task::spawn_blocking(move || other.recv().unwrap())
            .await
            .unwrap();
        let (queries, rx) = mpsc::channel(4);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(shell.run(rx, async move {
            let _ = stopped.await;
        }));
        let them = peer.virtual_ip;
        let peer_mesh_id = peer.id;
        queries.send(Query::ReplacePeers(vec![peer])).await.unwrap();
        // Wait for the session (bounded).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Status(tx)).await.unwrap();
            let status = rx.await.unwrap();
            if status
                .peers
                .iter()
                .any(|p| p.id == peer_mesh_id && p.established)
            {
                break;
            }
            assert!(Instant::now() < deadline, "no session with {peer_mesh_id}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = peer_id;

        let mut report = Report {
            lanes: [[0; 3]; 3],
            service: [0; 5],
            rtts_idle: Vec::new(),
            rtts_loaded: Vec::new(),
            bulk_elapsed: None,
            received: None,
        };
        if n == 1 {
            // Control loop idle first, then beside the bulk transfer.
            report.rtts_idle = ping(&mut control, them, IDLE_PINGS, None).await;
            let sender = bulk.sender();
            let started = Instant::now();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let done_bulk = Arc::clone(&done);
            let push = tokio::spawn(async move {
                let mut batch = sender.batch();
                let mut chunk = vec![0xB5u8; PAYLOAD];
                for seq in 0..datagrams {
                    chunk[..8].copy_from_slice(&seq.to_be_bytes());
                    if batch.is_full() {
                        sender.send_batch(&mut batch).await.unwrap();
                    }
                    batch.push(them, BULK_PORT, Lane::Bulk, &chunk).unwrap();
                }
                sender.send_batch(&mut batch).await.unwrap();
                done_bulk.store(true, std::sync::atomic::Ordering::Release);
            });
            report.rtts_loaded = ping(&mut control, them, u32::MAX, Some(&done)).await;
            push.await.unwrap();
            // The receiver says how many arrived once it has all (or gave up waiting).
            let (_, _, got) = bulk.recv().await.unwrap();
            report.bulk_elapsed = Some(started.elapsed());
            report.received = Some((u64::from_be_bytes(got[..8].try_into().unwrap()), 0));
        } else {
            let echo = tokio::spawn(async move {
                let mut batch = IncomingBatch::new();
                while control.recv_batch(&mut batch).await.is_ok() {
                    for d in batch.iter() {
                        let _ = control
                            .send_to(d.src_ip, d.src_port, Lane::Critical, d.payload)
                            .await;
                    }
                }
            });
            let mut batch = IncomingBatch::new();
            let (mut got, mut next) = (0u64, 0u64);
            let mut out_of_order = 0u64;
            // Datagrams lost on the way (possible without pacing) end the wait after 2 s
            // of silence rather than never.
            while got < datagrams {
                let wait = Duration::from_secs(2);
                let Ok(received) = tokio::time::timeout(wait, bulk.recv_batch(&mut batch)).await
                else {
                    break;
                };
                received.unwrap();
                for d in batch.iter() {
                    let seq = u64::from_be_bytes(d.payload[..8].try_into().unwrap());
                    out_of_order += u64::from(seq != next);
                    next = seq + 1;
                    got += 1;
                }
            }
            report.received = Some((got, out_of_order));
            bulk.send_to(them, BULK_PORT, Lane::Critical, &got.to_be_bytes())
                .await
                .unwrap();
            echo.abort();
        }
        // Let the last acknowledgements and echoes go out before stopping.
        tokio::time::sleep(Duration::from_millis(50)).await;
        report.lanes = lanes(&metrics);
        report.service = service(&metrics);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
        report
    })
}

/// Sends `count` critical pings (or until `until` is set) one per millisecond and
/// returns their round trips.
async fn ping(
    control: &mut bauxite_conduit::io::ServiceSocket,
    to: VirtualIp,
    count: u32,
    until: Option<&std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut rtts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for seq in 0..count {
        if until.is_some_and(|u| u.load(std::sync::atomic::Ordering::Acquire)) {
            break;
        }
        tick.tick().await;
        let mut payload = [0u8; 64];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        let sent = Instant::now();
        control
            .send_to(to, CONTROL_PORT, Lane::Critical, &payload)
            .await
            .unwrap();
        // An echo lost on the way counts as a 100 ms round trip rather than a hang.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), control.recv()).await {
                Ok(Ok((_, _, echo))) if echo[..4] == seq.to_be_bytes() => {
                    rtts.push(sent.elapsed());
                    break;
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => {
                    rtts.push(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
    rtts
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn summary(rtts: &mut [Duration]) -> String {
    rtts.sort();
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} pings)",
        percentile(rtts, 50).as_secs_f64() * 1e3,
        percentile(rtts, 99).as_secs_f64() * 1e3,
        rtts.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        rtts.len()
    )
}

fn main() {
    let args = args();
    let datagrams = args.bytes.div_ceil(PAYLOAD as u64);
    let (a_tx, a_rx) = std_mpsc::channel();
    let (b_tx, b_rx) = std_mpsc::channel();
    let suite = args.suite;
    let config = NodeConfig {
        suite,
        bulk_target: args.bulk_target,
        ..NodeConfig::default()
    };
    let config_b = config.clone();
    let a = std::thread::spawn(move || node(1, config, datagrams, a_tx, b_rx));
    let b = std::thread::spawn(move || node(2, config_b, datagrams, b_tx, a_rx));
    let (mut a, b) = (a.join().unwrap(), b.join().unwrap());
    let elapsed = a.bulk_elapsed.unwrap();
    let (received, out_of_order) = b.received.unwrap();
    // Only what arrived counts; the 2 s wait for a lost tail is not transfer time.
    let elapsed = if received < datagrams {
        elapsed.saturating_sub(Duration::from_secs(2))
    } else {
        elapsed
    };
    let bytes = received * PAYLOAD as u64;
    println!(
        "{suite:?}, bulk target {:?}: {:.2} GB of payload in {:.2} s: {:.0} MB/s ({:.2} Gbit/s)",
        args.bulk_target,
        bytes as f64 / 1e9,
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        bytes as f64 * 8.0 / 1e9 / elapsed.as_secs_f64(),
    );
    println!(
        "received {received} of {datagrams} datagrams ({} lost), {out_of_order} out of sequence",
        datagrams - received
    );
    println!("control loop idle:        {}", summary(&mut a.rtts_idle));
    println!("control loop during bulk: {}", summary(&mut a.rtts_loaded));
    for (name, r) in [("A (sender)", &a), ("B (receiver)", &b)] {
        let [enq, sent, dropped] = r.lanes;
        println!(
            "{name}: lane enqueued critical/telemetry/bulk {enq:?}, sent {sent:?}, dropped {dropped:?}"
        );
        let [tx, waits, rx, rx_dropped, tx_dropped] = r.service;
        println!(
            "{name}: service_tx_packets {tx}, service_tx_waits {waits}, service_rx_packets {rx}, service_rx_dropped {rx_dropped}, tx_dropped {tx_dropped}"
        );
    }
}
