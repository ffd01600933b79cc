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
use bauxite_conduit::io::{DeviceConfig, IncomingBatch, Shell, ShellConfig, clock};
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::peers::PeerRegistry;
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::{BauxiteNode, Lane};
use bauxite_dispatch_api::client::peer_info;
use bauxite_dispatch_api::proto::node::TopologyRequest;
use bauxite_forge::chunk::{ChunkIndex, ChunkNo};
use bauxite_forge::chunkset::ChunkSet;
use bauxite_forge::fetch::{ClientConfig, FetchClient, FetchEvent};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, VirtualImage};
use tokio::sync::{mpsc, oneshot};

use crate::common::{HubProc, identity, within};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fetches_a_virtual_package_from_the_hub_mesh_node_on_the_bulk_lane() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let image_size = image_size();
    let size = image_size.to_string();
    let seed = SEED.to_string();
    hub.admin_ok(&[
        "package",
        "create",
        "--virtual-size",
        &size,
        "--seed",
        &seed,
        "--version",
        "1.0.0",
    ]);
    let (joined, client) = hub.node(1).await;

    // The hub in topology: flagged, no endpoint listed, so dial the hub URL's host on the
    // gRPC port number over UDP (the hub's default mesh port).
    let snapshot = within(
        client
            .topology()
            .stream_topology(TopologyRequest {})
            .await
            .unwrap()
            .into_inner()
            .message(),
    )
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

    // The chunk index, verified with TUF from the root in ProvisionResponse.
    let (fw, index) = fetch_firmware(
        &client,
        tmp.path().join("tuf"),
        joined.update_root.clone(),
        "firmware/1.0.0.img",
    )
    .await
    .unwrap();
    let index = Arc::new(ChunkIndex::parse(fw.image.length, &index).unwrap());

    // A real node: the joined identity, a conduit shell on loopback, in-memory device.
    let mut registry = PeerRegistry::new();
    registry.insert(hub_info).unwrap();
    let node = BauxiteNode::new(
        identity(1),
        registry,
        NodeConfig::default(),
        [1; 32],
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
    let mut socket = shell.bind_service(port, DEFAULT_RECV_QUEUE).unwrap();
    let sender = socket.sender();
    let (_queries, queries_rx) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shell.run(queries_rx, async move {
        let _ = stopped.await;
    }));

    // Echo first: the hub answers on the Critical lane (and the session is up).
    let mut batch = IncomingBatch::new();
    for i in 0..ECHOES {
        let probe = i.to_le_bytes();
        sender
            .send_to(hub_vip, ServicePort::ECHO.get(), Lane::Critical, &probe)
            .await
            .unwrap();
        let reply = within(socket.recv()).await.unwrap();
        assert_eq!(reply, (hub_vip, ServicePort::ECHO.get(), probe.to_vec()));
    }

    // Every chunk, fetched from the hub's mesh node and verified by the client.
    let server = (hub_vip, ServicePort::FORGE.get());
    let count = index.chunk_count();
    let cfg = ClientConfig {
        max_datagram: sender.max_payload(),
        ..ClientConfig::default()
    };
    let mut fetch =
        FetchClient::new(index.clone(), vec![server], ChunkSet::new(count), cfg).unwrap();
    let image = VirtualImage::new(SEED, image_size).unwrap();
    let mut expected = vec![0u8; CHUNK_SIZE];
    let mut seen = ChunkSet::new(count);
    let mut buf = vec![0u8; sender.max_payload()];
    // Generous: at least 5 MB/s even on a loaded machine in a debug build.
    let limit = Duration::from_secs(120).max(Duration::from_secs(image_size / 5_000_000));
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    let mut finished = false;
    while !finished {
        assert!(
            tokio::time::Instant::now() < deadline,
            "transfer did not finish: {:?}",
            fetch.stats()
        );
        while let Some(event) = fetch.poll_event() {
            match event {
                FetchEvent::Chunk(chunk) => {
                    let n = image.read_chunk(chunk.no, &mut expected).unwrap();
                    assert_eq!(chunk.bytes, expected[..n], "chunk {}", chunk.no);
                    assert!(seen.insert(chunk.no), "chunk {} twice", chunk.no);
                    fetch.recycle(chunk);
                }
                FetchEvent::Finished => finished = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        if finished {
            break;
        }
        // After the events: chunks not yet taken hold the window, so taking them may let
        // new requests out.
        let now = clock::now();
        while let Some(t) = fetch.poll_transmit(now, &mut buf) {
            sender
                .send_to(t.dst.0, t.dst.1, Lane::Bulk, &buf[..t.len])
                .await
                .unwrap();
        }
        let wake = fetch
            .poll_timeout()
            .map_or(deadline, tokio::time::Instant::from_std);
        tokio::select! {
            received = socket.recv_batch(&mut batch) => {
                received.unwrap();
                let now = clock::now();
                for d in batch.iter() {
                    fetch.handle_datagram(now, &(d.src_ip, d.src_port), d.payload);
                }
            }
            () = tokio::time::sleep_until(wake) => fetch.handle_timeout(clock::now()),
        }
    }
    let took = started.elapsed();
    let stats = fetch.stats();
    assert!(seen.is_full());
    assert_eq!(stats.bytes_verified, image_size);
    assert_eq!(stats.chunks_verified, u64::from(count));
    assert_eq!(stats.chunks_rejected, 0);
    assert!(seen.contains(ChunkNo(count - 1)));

    // The hub's counters: fragments left on Bulk, only the echo replies on Critical.
    let text = hub.scrape();
    let fragments = metric(&text, "bauxite_dispatch_forge_fragments_sent_total", &[]);
    // Fragments fill the mesh's service datagram less the 30-byte data header.
    let per_chunk = CHUNK_SIZE.div_ceil(sender.max_payload() - 30) as u64;
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

    let _ = stop.send(());
    within(task).await.unwrap().unwrap();
    hub.stop();
}
