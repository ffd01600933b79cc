//! The hub as a mesh node, end to end: a node joined with the client library runs a real
//! conduit shell (in-memory device, unprivileged, loopback), finds the hub in topology
//! (`hub: true`, no endpoint: it dials the hub URL's host on the gRPC port number over
//! UDP), verifies a virtual package's chunk index with TUF, and fetches every chunk from
//! the hub's mesh node with forge's `FetchClient`. The hub's per-lane counters show the
//! chunks in Bulk only, and its peak RSS stays far under 64 MiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::io::service::DEFAULT_RECV_QUEUE;
use bauxite_conduit::io::{
    DeviceConfig, IncomingBatch, ServiceSender, ServiceSocket, Shell, ShellConfig, clock,
};
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::peers::PeerRegistry;
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::{BauxiteNode, Lane, VirtualIp};
use bauxite_dispatch_api::client::{HubClient, JoinResult, peer_info};
use bauxite_forge::chunk::{ChunkIndex, ChunkNo};
use bauxite_forge::chunkset::ChunkSet;
use bauxite_forge::fetch::wire::RefuseReason;
use bauxite_forge::fetch::{ClientConfig, FetchClient, FetchEvent, FetchStats};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, VirtualImage};
use tokio::sync::{mpsc, oneshot};

use crate::common::{HubProc, full_feed, identity, within};
use crate::tuf_grpc::fetch_firmware;

/// The image: 16 MiB (256 chunks) by default, enough to keep the server's window full
/// for a while in a debug build. `BAUXITE_MESH_TEST_BYTES=3221225472` with `--release`
/// is the measurement in docs/benchmarks.md (the seed's 3 GiB image).
const SIZE: u64 = 16 << 20;
const SEED: u64 = 11;

fn image_size() -> u64 {
    std::env::var("BAUXITE_MESH_TEST_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SIZE)
}
const ECHOES: u64 = 5;

/// A value of the hub's Prometheus text, summed over lines matching every `parts`.
fn metric(text: &str, name: &str, parts: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A node of the test: a conduit shell on loopback joined to the hub, with a service
/// socket for echo probes and chunk fetches.
struct MeshNode {
    socket: ServiceSocket,
    sender: ServiceSender,
    hub_vip: VirtualIp,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<BauxiteNode, bauxite_conduit::Error>>,
}

impl MeshNode {
    /// Runs a shell for the node joined as `joined` (identity `seed`) with the hub from
    /// `client`'s topology as its one peer, dialled where a node without an advertised hub
    /// endpoint dials it: the hub URL's host, the gRPC port number, over UDP.
    async fn start(hub: &HubProc, client: &HubClient, joined: &JoinResult, seed: u8) -> Self {
        // The node's own log, shown (captured per test) when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("bauxite_conduit=debug")
            .try_init();
        let snapshot = within(full_feed(client).await.message())
            .await
            .unwrap()
            .unwrap();
        let hub_peer = snapshot.peers.iter().find(|p| p.hub).unwrap();
        assert_eq!(hub_peer.virtual_ip, hub.mesh.0);
        assert!(hub_peer.endpoint.is_empty());
        let grpc: SocketAddr = hub.addr.trim_start_matches("https://").parse().unwrap();
        assert_eq!(
            hub.mesh.1,
            grpc.to_string(),
            "mesh UDP port = gRPC port by default"
        );
        let mut hub_info = peer_info(hub_peer).unwrap();
        hub_info.endpoint = Some(grpc);
        let hub_vip = hub_info.virtual_ip;
        let mut registry = PeerRegistry::new();
        registry.insert(hub_info).unwrap();
        let node = BauxiteNode::new(
            identity(seed),
            registry,
            NodeConfig::default(),
            [seed; 32],
            clock::now(),
            clock::unix_nanos(),
        );
        assert_eq!(node.peer_id(), joined.node_id);
        let config = ShellConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            device: DeviceConfig::Memory {
                virtual_ip: joined.virtual_ip,
            },
        };
        let mut shell = Shell::bind(node, &config).await.unwrap();
        let port = ServicePort::new(40_000).unwrap();
        let socket = shell.bind_service(port, DEFAULT_RECV_QUEUE).unwrap();
        let sender = socket.sender();
        let (stop, stopped) = oneshot::channel::<()>();
        let (_queries, queries_rx) = mpsc::channel(4);
        let task = tokio::spawn(shell.run(queries_rx, async move {
            let _ = stopped.await;
            drop(_queries);
        }));
        Self {
            socket,
            sender,
            hub_vip,
            stop,
            task,
        }
    }

    /// Echo probes to the hub; each reply carries the probe, from the echo port.
    async fn echo(&mut self, probes: u64) {
        for i in 0..probes {
            let probe = i.to_le_bytes();
            self.sender
                .send_to(
                    self.hub_vip,
                    ServicePort::ECHO.get(),
                    Lane::Critical,
                    &probe,
                )
                .await
                .unwrap();
            let reply = within(self.socket.recv()).await.unwrap();
            assert_eq!(
                reply,
                (self.hub_vip, ServicePort::ECHO.get(), probe.to_vec())
            );
        }
    }

    /// Fetches every chunk of `index` from the hub's mesh node, checking each against
    /// `image`; returns the client's counters and how long it took.
    async fn fetch_all(
        &mut self,
        index: Arc<ChunkIndex>,
        image: &VirtualImage,
    ) -> (FetchStats, Duration) {
        let server = (self.hub_vip, ServicePort::FORGE.get());
        let count = index.chunk_count();
        let cfg = ClientConfig {
            max_datagram: self.sender.max_payload(),
            ..ClientConfig::default()
        };
        let mut fetch = FetchClient::new(index, vec![server], ChunkSet::new(count), cfg).unwrap();
        let mut expected = vec![0u8; CHUNK_SIZE];
        let mut seen = ChunkSet::new(count);
        let mut buf = vec![0u8; self.sender.max_payload()];
        let mut batch = IncomingBatch::new();
        // Generous: at least 5 MB/s even on a loaded machine in a debug build.
        let limit = Duration::from_secs(120).max(Duration::from_secs(image.len() / 5_000_000));
        let started = tokio::time::Instant::now();
        let deadline = started + limit;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "transfer did not finish: {:?}",
                fetch.stats()
            );
            let mut finished = false;
            while let Some(event) = fetch.poll_event() {
                match event {
                    FetchEvent::Chunk(chunk) => {
                        let n = image.read_chunk(chunk.no, &mut expected).unwrap();
                        assert_eq!(chunk.bytes, expected[..n], "chunk {}", chunk.no);
                        assert!(seen.insert(chunk.no), "chunk {} twice", chunk.no);
                        fetch.recycle(chunk);
                    }
                    FetchEvent::Finished => finished = true,
                    // The only server timed out a few times in a row (a loaded machine,
                    // or requests sent while the session still came up): with one server
                    // that reorders nothing, and the transfer must still finish verified.
                    FetchEvent::ServerDeprioritised { server } => {
                        eprintln!("server {server:?} deprioritised: {:?}", fetch.stats());
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if finished {
                break;
            }
            // After the events: chunks not yet taken hold the window, so taking them may
            // let new requests out.
            let now = clock::now();
            while let Some(t) = fetch.poll_transmit(now, &mut buf) {
                self.sender
                    .send_to(t.dst.0, t.dst.1, Lane::Bulk, &buf[..t.len])
                    .await
                    .unwrap();
            }
            let wake = fetch
                .poll_timeout()
                .map_or(deadline, tokio::time::Instant::from_std);
            tokio::select! {
                received = self.socket.recv_batch(&mut batch) => {
                    received.unwrap();
                    let now = clock::now();
                    for d in batch.iter() {
                        fetch.handle_datagram(now, &(d.src_ip, d.src_port), d.payload);
                    }
                }
                () = tokio::time::sleep_until(wake) => fetch.handle_timeout(clock::now()),
            }
        }
        assert!(seen.is_full() && seen.contains(ChunkNo(count - 1)));
        (fetch.stats(), started.elapsed())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        within(self.task).await.unwrap().unwrap();
    }
}

/// The package's chunk index, verified with TUF from the root in ProvisionResponse.
async fn verified_index(
    client: &HubClient,
    joined: &JoinResult,
    trust: std::path::PathBuf,
) -> Arc<ChunkIndex> {
    let (fw, index) = fetch_firmware(
        client,
        trust,
        joined.update_root.clone(),
        "firmware/1.0.0.img",
    )
    .await
    .unwrap();
    Arc::new(ChunkIndex::parse(fw.image.length, &index).unwrap())
}

fn create_package(hub: &HubProc, size: u64) {
    hub.admin_ok(&[
        "package",
        "create",
        "--virtual-size",
        &size.to_string(),
        "--seed",
        &SEED.to_string(),
        "--version",
        "1.0.0",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fetches_a_virtual_package_from_the_hub_mesh_node_on_the_bulk_lane() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let image_size = image_size();
    create_package(&hub, image_size);
    let (joined, client) = hub.node(1).await;
    let index = verified_index(&client, &joined, tmp.path().join("tuf")).await;
    let mut node = MeshNode::start(&hub, &client, &joined, 1).await;
    // Echo first: the hub answers on the Critical lane (and the session is up).
    node.echo(ECHOES).await;
    let image = VirtualImage::new(SEED, image_size).unwrap();
    let count = index.chunk_count();
    let (stats, took) = node.fetch_all(index, &image).await;
    assert_eq!(stats.bytes_verified, image_size);
    assert_eq!(stats.chunks_verified, u64::from(count));
    assert_eq!(stats.chunks_rejected, 0);

    // The hub's counters: fragments left on Bulk, only the echo replies on Critical.
    let text = hub.scrape();
    let fragments = metric(&text, "bauxite_dispatch_forge_fragments_sent_total", &[]);
    // Fragments fill the mesh's service datagram less the 30-byte data header.
    let per_chunk = CHUNK_SIZE.div_ceil(node.sender.max_payload() - 30) as u64;
    assert!(fragments >= u64::from(count) * per_chunk, "{fragments}");
    let lane = |l: &str| {
        metric(
            &text,
            "bauxite_lane_enqueued_total",
            &[&format!("lane=\"{l}\"")],
        )
    };
    assert!(
        lane("bulk") >= fragments,
        "bulk {} < {fragments}",
        lane("bulk")
    );
    assert_eq!(lane("critical"), ECHOES, "only echo replies on Critical");
    assert_eq!(lane("telemetry"), 0);
    assert_eq!(metric(&text, "bauxite_lane_dropped_total", &[]), 0);
    assert!(
        metric(
            &text,
            "bauxite_dispatch_forge_payload_bytes_sent_total",
            &[]
        ) >= image_size
    );
    let hwm = vm_hwm_kib(hub.pid());
    eprintln!(
        "{image_size} bytes over the mesh in {:.2} s ({:.0} Mbit/s), {} bytes retransferred; hub peak RSS {hwm} KiB",
        took.as_secs_f64(),
        image_size as f64 * 8.0 / took.as_secs_f64() / 1e6,
        stats.bytes_retransferred()
    );
    assert!(hwm < 64 * 1024, "hub peak RSS {hwm} KiB");
    node.stop().await;
    hub.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_hub_is_the_same_mesh_node_and_serves_its_packages_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = HubProc::start(&dir);
    let size = 2 << 20;
    create_package(&hub, size);
    let mesh = hub.mesh.clone();
    hub.stop();

    let hub = HubProc::start(&dir);
    assert_eq!(hub.mesh.0, mesh.0, "the same virtual IP");
    let nodes = hub.admin_ok(&["nodes", "list"]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" hub ")).count(),
        1,
        "{nodes}"
    );
    let (joined, client) = hub.node(2).await;
    let index = verified_index(&client, &joined, tmp.path().join("tuf")).await;
    let mut node = MeshNode::start(&hub, &client, &joined, 2).await;
    let image = VirtualImage::new(SEED, size).unwrap();
    let (stats, _) = node.fetch_all(index, &image).await;
    assert_eq!(stats.bytes_verified, size);
    // After a revocation, the image is no longer served: the hub refuses the transfer.
    hub.admin_ok(&["package", "revoke", "firmware", "1.0.0"]);
    let index = Arc::new(ChunkIndex::build(&image).unwrap());
    let mut fetch = FetchClient::new(
        index,
        vec![(node.hub_vip, ServicePort::FORGE.get())],
        ChunkSet::new(32),
        ClientConfig {
            max_datagram: node.sender.max_payload(),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let mut buf = vec![0u8; node.sender.max_payload()];
    let t = fetch.poll_transmit(clock::now(), &mut buf).unwrap();
    node.sender
        .send_to(t.dst.0, t.dst.1, Lane::Bulk, &buf[..t.len])
        .await
        .unwrap();
    let (from_ip, from_port, reply) = within(node.socket.recv()).await.unwrap();
    fetch.handle_datagram(clock::now(), &(from_ip, from_port), &reply);
    assert!(matches!(
        fetch.poll_event(),
        Some(FetchEvent::ServerRefused {
            reason: RefuseReason::UnknownTransfer,
            ..
        })
    ));
    node.stop().await;
    hub.stop();
}

/// The hub's mesh port answers STUN Binding requests with the sender's address: a
/// node's shell asked to use it (`Query::Stun`) publishes its own socket address as
/// its server-reflexive address (loopback: no NAT in between), and a raw request from
/// another socket gets that socket's address back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_mesh_port_answers_stun_and_a_shell_learns_its_mapping_there() {
    use bauxite_conduit::io::Query;
    use bauxite_conduit::stun::{BindingClient, BindingTimers};

    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let server: SocketAddr = hub.mesh.1.parse().unwrap();

    let node = BauxiteNode::new(
        identity(9),
        PeerRegistry::new(),
        NodeConfig::default(),
        [9; 32],
        clock::now(),
        clock::unix_nanos(),
    );
    let config = ShellConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        device: DeviceConfig::Memory {
            virtual_ip: VirtualIp::from(std::net::Ipv4Addr::new(100, 64, 0, 9)),
        },
    };
    let shell = Shell::bind(node, &config).await.unwrap();
    let own = shell.local_addr().unwrap();
    let mut reflexive = shell.reflexive();
    let (queries, queries_rx) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shell.run(queries_rx, async move {
        let _ = stopped.await;
    }));
    queries.send(Query::Stun(Some(server))).await.unwrap();
    let learned = within(reflexive.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(learned, own);

    // The same from a bare socket, driving the sans-IO client by hand.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut client = BindingClient::new(BindingTimers::default(), 1);
    client.probe(clock::now(), Some(server));
    let (to, request) = client.poll_transmit(clock::now()).unwrap();
    socket.send_to(&request, to).await.unwrap();
    let mut buf = [0u8; 512];
    let (len, from) = within(socket.recv_from(&mut buf)).await.unwrap();
    let seen = client.handle(clock::now(), from, &buf[..len]).unwrap();
    assert_eq!(seen.reflexive, socket.local_addr().unwrap());

    let _ = stop.send(());
    within(task).await.unwrap().unwrap();
}
