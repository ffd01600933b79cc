//! Proves the per-packet path allocates nothing: a counting global allocator wraps the
//! system one, and after a warm-up the seal/open path of `SecureChannel` and the full
//! node path (TUN packet -> lanes -> sealed datagram -> other node -> decrypted packet)
//! must run thousands of packets with zero heap allocations on this thread.

#![allow(unsafe_code)] // a GlobalAlloc wrapper is unsafe by definition; it only forwards
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use bauxite_conduit::cipher::CipherSuite;
use bauxite_conduit::ip::build;
use bauxite_conduit::node::{NodeConfig, Received, TunVerdict};
use bauxite_conduit::service::{self, ServicePort};
use bauxite_conduit::session::{SecureChannel, TransportKeys};
use bauxite_conduit::sim::{LinkConfig, SimNet};
use bauxite_conduit::wire::{self, DATA_HEADER_LEN, DATA_OVERHEAD, Message};
use bauxite_conduit::{Lane, VirtualIp};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
    assert_eq!(allocations() - before, 1);
    drop(v);
}

#[test]
fn seal_and_open_do_not_allocate() {
    for suite in [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm] {
        let now = Instant::now();
        let keys = |s, r| TransportKeys { send: s, recv: r };
        let mut a = SecureChannel::new(suite, keys([1; 32], [2; 32]), 1, 2, true, now);
        let mut b = SecureChannel::new(suite, keys([2; 32], [1; 32]), 2, 1, false, now);
        let mut buf = vec![0u8; 1350 + DATA_OVERHEAD];
        let before = allocations();
        for i in 0..10_000u32 {
            buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 4].copy_from_slice(&i.to_le_bytes());
            let len = a.seal(&mut buf, 1350).unwrap();
            let Ok(Message::Data(header)) = wire::parse(&buf[..len]) else {
                panic!()
            };
            let range = b.open(header, &mut buf[..len]).unwrap();
            assert_eq!(range.len(), 1350);
        }
        assert_eq!(allocations() - before, 0, "{suite:?}: seal/open allocated");
    }
}

#[test]
fn node_to_node_packet_path_does_not_allocate() {
    let start = Instant::now();
    // The simulator builds two nodes that know each other; we drive them by hand.
    let mut net = SimNet::new(NodeConfig::default(), LinkConfig::default(), 1, start);
    let mut packet = Vec::new();
    build::ipv4_udp(
        net.vips[0].addr(),
        net.vips[1].addr(),
        4000,
        9000,
        &[7u8; 1200],
        &mut packet,
    );
    let mut ping = Vec::new();
    build::ipv4_icmp_echo(
        net.vips[0].addr(),
        net.vips[1].addr(),
        1,
        1,
        &[0; 56],
        &mut ping,
    );
    net.send_from(0, &packet);
    net.run_for(std::time::Duration::from_secs(1));
    assert_eq!(net.delivered[1].len(), 1, "session established");

    let from: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), 51820).into();
    let mut datagram = vec![0u8; NodeConfig::default().datagram_capacity()];
    let now = net.now;
    let [a, b] = &mut net.nodes;
    let mut run = |rounds: u32| {
        let mut delivered = 0;
        for i in 0..rounds {
            let p = if i % 10 == 0 { &ping } else { &packet };
            a.handle_tun_packet(now, p);
            while let Some(t) = a.poll_transmit(now, &mut datagram) {
                if let Received::Deliver(_) = b.handle_datagram(now, from, &mut datagram[..t.len]) {
                    delivered += 1;
                }
            }
            // B's acknowledgements open A's bulk window again.
            while let Some(t) = b.poll_transmit(now, &mut datagram) {
                a.handle_datagram(now, from, &mut datagram[..t.len]);
            }
        }
        delivered
    };
    // Warm-up fills the node's buffer pool and sizes its queues; it sends more bulk
    // packets than the sender keeps for repair, so the kept ring is full too.
    assert_eq!(run(1000), 1000);
    let before = allocations();
    assert_eq!(run(10_000), 10_000);
    assert_eq!(allocations() - before, 0, "node packet path allocated");
}

#[test]
fn service_datagram_path_does_not_allocate() {
    let start = Instant::now();
    let mut net = SimNet::new(NodeConfig::default(), LinkConfig::default(), 2, start);
    let peer = net.nodes[1].peer_id();
    net.nodes[0].connect(net.now, peer).unwrap();
    net.run_for(std::time::Duration::from_secs(1));
    assert!(net.nodes[0].is_connected(peer, net.now));

    let port = ServicePort::new(7400).unwrap();
    let (src, dst): (VirtualIp, VirtualIp) = (net.vips[0], net.vips[1]);
    let from: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), 51820).into();
    let mut datagram = vec![0u8; NodeConfig::default().datagram_capacity()];
    let mut packet = Vec::with_capacity(1350);
    let chunk = [0x5Au8; 1322];
    let now = net.now;
    let [a, b] = &mut net.nodes;
    let mut run = |rounds: u32| {
        let mut received = 0usize;
        for i in 0..rounds {
            let lane = if i % 10 == 0 {
                Lane::Critical
            } else {
                Lane::Bulk
            };
            let len = if lane == Lane::Critical {
                64
            } else {
                chunk.len()
            };
            packet.clear();
            service::encode(src, port, dst, 7400, &chunk[..len], &mut packet).unwrap();
            assert_eq!(
                a.handle_tun_packet_in(now, lane, &packet),
                TunVerdict::Queued(lane)
            );
            while let Some(t) = a.poll_transmit(now, &mut datagram) {
                if let Received::Deliver(range) =
                    b.handle_datagram(now, from, &mut datagram[..t.len])
                {
                    let d = service::parse(&datagram[range], dst, |p| p == port).unwrap();
                    received += d.payload.len();
                }
            }
            while let Some(t) = b.poll_transmit(now, &mut datagram) {
                a.handle_datagram(now, from, &mut datagram[..t.len]);
            }
        }
        received
    };
    // Warm-up past the repair ring's size (see above).
    assert!(run(1000) > 0);
    let before = allocations();
    let received = run(10_000);
    assert_eq!(allocations() - before, 0, "service datagram path allocated");
    assert_eq!(received, 1000 * 64 + 9000 * 1322);
}

#[test]
fn bonded_copies_do_not_allocate() {
    use bauxite_conduit::path::Bonding;
    use bauxite_conduit::sim::TwoPathNet;
    let start = Instant::now();
    let config = NodeConfig {
        bonding: Bonding::All,
        ..NodeConfig::default()
    };
    let imp = bauxite_netem::Impairments {
        delay: std::time::Duration::from_millis(5),
        ..bauxite_netem::Impairments::default()
    };
    let mut net = TwoPathNet::new(config, imp, true, 3, start);
    let peer = net.nodes[1].peer_id();
    net.nodes[0].connect(net.now, peer).unwrap();
    let mut bonded = false;
    for _ in 0..100 {
        net.run_for(std::time::Duration::from_millis(50));
        bonded = net.nodes[0]
            .peer_status(net.now)
            .iter()
            .all(|s| s.secondary.is_some());
        if bonded {
            break;
        }
    }
    assert!(bonded, "a second path within 5 s");
    let mut packet = Vec::new();
    build::ipv4_udp(
        net.vips[0].addr(),
        net.vips[1].addr(),
        4000,
        9000,
        &[7u8; 64],
        &mut packet,
    );
    let mut datagram = vec![0u8; NodeConfig::default().datagram_capacity()];
    let now = net.now;
    let [a, b] = &mut net.nodes;
    let mut run = |rounds: u32| {
        let (mut delivered, mut copies) = (0, 0);
        for _ in 0..rounds {
            a.handle_tun_packet_in(now, Lane::Critical, &packet);
            while let Some(t) = a.poll_transmit(now, &mut datagram) {
                // The copy leaves from A's address on the path it is sent on.
                let path = usize::from(t.dst == TwoPathNet::addr(1, 1));
                let from = TwoPathNet::addr(0, path);
                match b.handle_datagram(now, from, &mut datagram[..t.len]) {
                    Received::Deliver(_) => delivered += 1,
                    Received::Dropped(_) => copies += 1,
                    _ => {}
                }
            }
            while let Some(t) = b.poll_transmit(now, &mut datagram) {
                a.handle_datagram(now, TwoPathNet::addr(1, 0), &mut datagram[..t.len]);
            }
        }
        (delivered, copies)
    };
    assert_eq!(
        run(100),
        (100, 100),
        "warm-up: each packet once, each copy dropped"
    );
    let before = allocations();
    assert_eq!(run(10_000), (10_000, 10_000));
    assert_eq!(allocations() - before, 0, "bonded copies allocated");
}
