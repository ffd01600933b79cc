//! End-to-end tests of `bauxite run`: two real daemons in two network namespaces joined
//! by a veth pair, real TUN devices (`bauxite0`), real UDP, attacked from the wire.
//!
//! Each test builds its own namespaces (unique names, so tests run in parallel) and
//! removes them and its daemons even when an assertion fails. Waits poll the daemons'
//! `status --json` with a deadline; nothing sleeps and hopes. Without root the tests
//! print SKIPPED and pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bonding;
mod capture;
mod connect_bench;
mod coturn;
mod flood;
mod hub;
mod hub_relay;
mod ice;
mod links;
mod mtu;
mod nat;
mod natlab;
mod offload;
mod operator;
mod path_bench;
// The throwaway PostgreSQL cluster's bounded waits read the clock: a test's IO shell.
#[allow(clippy::disallowed_methods)]
#[path = "../../../dispatch/tests/support/pg_cluster.rs"]
mod pg_cluster;
mod quickstart;
mod relay_replicas;
mod ros;
mod support;
mod turn;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use capture::Capture;
use support::{NetPair, Node, NodeSpec, can_run, keygen, wait_for};

const VIP: [&str; 2] = ["100.64.0.1", "100.64.0.2"];
const HANDSHAKE: Duration = Duration::from_secs(15);

/// Two nodes that know each other, with sessions up.
struct Mesh {
    nodes: [Node; 2],
    net: NetPair,
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new() -> Self {
        let net = NetPair::new();
        let dir = tempfile::tempdir().unwrap();
        let keys = [keygen(dir.path(), "a"), keygen(dir.path(), "b")];
        let spec = |i: usize| NodeSpec {
            dir: dir.path(),
            name: ["a", "b"][i],
            keys: &keys[i],
            vip: VIP[i],
            peers: vec![(&keys[1 - i], VIP[1 - i], net.endpoint(1 - i))],
            metrics: Some("127.0.0.1:9100"),
        };
        let nodes = [
            Node::start(&net.ns[0], &spec(0)),
            Node::start(&net.ns[1], &spec(1)),
        ];
        for node in &nodes {
            node.wait_established(HANDSHAKE);
        }
        Self { nodes, net, dir }
    }

    fn logs(&self) -> String {
        format!(
            "--- a ---\n{}\n--- b ---\n{}",
            self.nodes[0].log(),
            self.nodes[1].log()
        )
    }
}

#[test]
fn ping_both_ways_tcp_stream_and_metrics() {
    let Some(_machine) = can_run() else {
        return;
    };
    let mesh = Mesh::new();
    assert!(mesh.net.ping(0, VIP[1], 3), "a -> b\n{}", mesh.logs());
    assert!(mesh.net.ping(1, VIP[0], 3), "b -> a\n{}", mesh.logs());

    // 4 MiB through the tunnel, echoed back as a length and a checksum.
    let listener = mesh
        .net
        .within(1, || TcpListener::bind((VIP[1], 5001)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut data = Vec::new();
        conn.read_to_end(&mut data).unwrap();
        let sum = data
            .iter()
            .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        conn.write_all(&[(data.len() as u64).to_le_bytes(), sum.to_le_bytes()].concat())
            .unwrap();
    });
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 1351) as u8).collect();
    let mut conn = mesh
        .net
        .within(0, || TcpStream::connect((VIP[1], 5001)).unwrap());
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&data).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    conn.read_exact(&mut answer).unwrap();
    server.join().unwrap();
    let sum = data
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
    assert_eq!(answer[..8], (data.len() as u64).to_le_bytes());
    assert_eq!(
        answer[8..],
        sum.to_le_bytes(),
        "stream corrupted in the tunnel"
    );

    // The stream went through the batched paths: TSO reads and GSO sends at a, GRO
    // receives at b (the kernels here have all three); and b's acknowledgements reached
    // a and matched packets it sent, which is what paces the bulk lane.
    for (node, counter) in [
        (0, "tun_gso_packets"),
        (0, "udp_gso_sends"),
        (1, "udp_gro_datagrams"),
        (1, "acks_sent"),
        (0, "acks_received"),
    ] {
        let value = mesh.nodes[node].counter(counter);
        assert!(value > 0, "{counter} = 0 at node {node}\n{}", mesh.logs());
    }

    let status = mesh.nodes[0].status().unwrap();
    assert_eq!(status["tun"], "kernel bauxite0");
    assert!(status["lanes"]["critical"]["sent"].as_u64().unwrap() >= 3);
    assert!(status["lanes"]["bulk"]["sent"].as_u64().unwrap() > 1000);
    assert_eq!(status["peers"][0]["name"], "b");
    assert_eq!(
        status["peers"][0]["path"],
        format!("direct {}", mesh.net.endpoint(1))
    );

    let scrape = mesh.net.within(0, || {
        let mut s = TcpStream::connect("127.0.0.1:9100").unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(
        scrape.contains("bauxite_rx_packets_total{node="),
        "{scrape}"
    );
}

#[test]
fn node_killed_and_restarted_rejoins_by_itself() {
    let Some(_machine) = can_run() else {
        return;
    };
    let mut mesh = Mesh::new();
    assert!(mesh.net.ping(0, VIP[1], 1), "{}", mesh.logs());
    let before = mesh.nodes[1].counter("handshakes_completed");
    mesh.nodes[0].kill9();
    mesh.nodes[0].restart();
    mesh.nodes[0].wait_established(HANDSHAKE);
    mesh.nodes[1].wait_counter_above("handshakes_completed", before);
    // Both directions work again, the surviving side on the new session too.
    assert!(mesh.net.ping(1, VIP[0], 2), "b -> a\n{}", mesh.logs());
    assert!(mesh.net.ping(0, VIP[1], 2), "a -> b\n{}", mesh.logs());
    assert!(
        mesh.nodes[0].terminate(),
        "clean exit on SIGTERM\n{}",
        mesh.logs()
    );
    assert!(
        mesh.nodes[1].terminate(),
        "clean exit on SIGTERM\n{}",
        mesh.logs()
    );
}

#[test]
fn replayed_tampered_and_garbage_datagrams_are_counted_and_refused() {
    let Some(_machine) = can_run() else {
        return;
    };
    let mesh = Mesh::new();
    let b = &mesh.nodes[1];
    let capture = Capture::start(
        &mesh.net.ns[1],
        &mesh.net.veth[1],
        support::PORT,
        mesh.dir.path().join("wire.pcap"),
    );
    // Ping until the observer has recorded a data packet (tcpdump starts asynchronously).
    let packet = wait_for(Duration::from_secs(15), "a captured data packet", || {
        mesh.net.ping(0, VIP[1], 1);
        capture.data_packet()
    });
    drop(capture);
    let attacker = mesh.net.within(0, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let target = mesh.net.endpoint(1);

    // A recent packet sent again is refused before decryption as a duplicate: its counter
    // is in the replay window (as the second copy over a bonded path is).
    let replayed = b.counter("rx_duplicates");
    attacker.send_to(&packet, target).unwrap();
    b.wait_counter_above("rx_duplicates", replayed);

    // One flipped byte (the counter's seventh byte, so the replay window lets it reach
    // the authentication check).
    let mut tampered = packet.clone();
    tampered[5 + 6] ^= 0x01;
    let forged = b.counter("rx_auth_failed");
    let delivered = b.counter("rx_packets");
    attacker.send_to(&tampered, target).unwrap();
    b.wait_counter_above("rx_auth_failed", forged);

    let malformed = b.counter("rx_malformed");
    attacker.send_to(b"hello, is this a VPN?", target).unwrap();
    attacker.send_to(&[0x83, 1, 2], target).unwrap();
    let now = b.wait_counter_above("rx_malformed", malformed);
    if now < malformed + 2 {
        b.wait_counter_above("rx_malformed", malformed + 1);
    }

    assert_eq!(
        b.counter("rx_packets"),
        delivered,
        "an attack packet was delivered"
    );
    assert!(
        mesh.net.ping(0, VIP[1], 2),
        "mesh still works\n{}",
        mesh.logs()
    );
}

#[test]
fn node_not_in_the_peer_list_cannot_handshake() {
    let Some(_machine) = can_run() else {
        return;
    };
    let net = NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let (known, intruder, b_keys) = (
        keygen(dir.path(), "known"),
        keygen(dir.path(), "intruder"),
        keygen(dir.path(), "b"),
    );
    // b trusts `known` at 100.64.0.1; the intruder claims that address with its own key.
    let b = Node::start(
        &net.ns[1],
        &NodeSpec {
            dir: dir.path(),
            name: "b",
            keys: &b_keys,
            vip: VIP[1],
            peers: vec![(&known, VIP[0], net.endpoint(0))],
            metrics: None,
        },
    );
    let intruder = Node::start(
        &net.ns[0],
        &NodeSpec {
            dir: dir.path(),
            name: "intruder",
            keys: &intruder,
            vip: VIP[0],
            peers: vec![(&b_keys, VIP[1], net.endpoint(1))],
            metrics: None,
        },
    );
    b.wait_counter_above("handshakes_rejected", 0);
    assert!(!net.ping(0, VIP[1], 1), "the intruder reached b");
    let status = intruder.status().unwrap();
    assert_eq!(status["peers"][0]["established"], false, "{status}");
    assert_eq!(b.counter("handshakes_completed"), 0);
    assert_eq!(b.counter("rx_packets"), 0);
}

/// A static config for one node in a namespace, with a TUN name and a port.
fn write_config(
    dir: &std::path::Path,
    name: &str,
    identity: &std::path::Path,
    tun: &str,
    port: u16,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nidentity = \"{}\"\nlisten = \"0.0.0.0:{port}\"\nvirtual_ip = \"100.64.0.1/10\"\ntun_name = \"{tun}\"\ncontrol_socket = \"{}\"\n",
            identity.display(),
            dir.join(format!("{name}.sock")).display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_tun_name_that_is_taken_fails_with_the_reason_instead_of_falling_back() {
    let Some(_machine) = can_run() else {
        return;
    };
    let net = NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = [keygen(dir.path(), "a"), keygen(dir.path(), "b")];
    let ns = &net.ns[0];

    // Another kind of interface already has the name.
    support::sh(
        "ip",
        &[
            "-n", ns, "link", "add", "bxtaken0", "type", "veth", "peer", "name", "bxtaken1",
        ],
    );
    let config = write_config(dir.path(), "veth", &keys[0].path, "bxtaken0", 51820);
    let mut node = Node::from_config(ns, config, dir.path().join("veth.log"));
    assert!(!node.wait_exit(), "ran on a taken name: {}", node.log());
    let log = node.log();
    assert!(log.contains("cannot create TUN device bxtaken0"), "{log}");
    assert!(!log.contains("falling back"), "{log}");

    // Another daemon holds the device (a second node on the same machine, another identity).
    let config = write_config(dir.path(), "holder", &keys[0].path, "bxbusy0", 51820);
    let holder = Node::from_config(ns, config, dir.path().join("holder.log"));
    wait_for(Duration::from_secs(10), "the first daemon", || {
        holder.status()
    });
    assert!(
        holder.log().contains("Kernel(\"bxbusy0\")"),
        "{}",
        holder.log()
    );
    let config = write_config(dir.path(), "second", &keys[1].path, "bxbusy0", 51821);
    let mut second = Node::from_config(ns, config, dir.path().join("second.log"));
    assert!(!second.wait_exit(), "shared a busy TUN: {}", second.log());
    let log = second.log();
    assert!(
        log.contains("cannot create TUN device bxbusy0") && log.contains("busy"),
        "{log}"
    );
    assert!(!log.contains("run as root"), "{log}");
}
