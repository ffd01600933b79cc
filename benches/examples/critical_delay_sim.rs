//! A critical packet's one-way delay while the bulk lane is full, on the simulator's
//! virtual clock (deterministic: the same figures on every machine).
//!
//! Two nodes, a 20 Mbit/s link with 5 ms one-way latency and no loss. Node 0's bulk lane
//! is filled with 4096 full-size (1350-byte) packets and the link is busy sending the first
//! one; then one 84-byte ICMP echo is sent. With lanes it rides the critical lane; in the
//! FIFO run it is forced into the bulk lane behind 4095 packets (the queue again holds
//! 4096). Prints the ICMP packet's one-way delay and the last bulk packet's.
//!
//! `cargo run --release -p bauxite-benches --example critical_delay_sim`

// An example, not protocol code: a broken fixture should panic, and it takes one real
// instant as the origin of the virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bauxite_benches::{PACKET_LEN, bulk_udp, icmp_echo};
use bauxite_conduit::Lane;
use bauxite_conduit::ip::PROTO_ICMP;
use bauxite_conduit::node::{NodeConfig, TunVerdict};
use bauxite_conduit::scheduler::BULK_CAPACITY;
use bauxite_conduit::sim::{LinkConfig, SimNet};

const LINK_BPS: u64 = 20_000_000;
const SEED: u64 = 2026;

/// One-way delays seen in one run.
struct Delays {
    critical: Duration,
    last_bulk: Duration,
    bulk_delivered: usize,
}

/// A bulk packet carrying `id` in the first payload bytes (after the 28 header bytes).
fn tagged_bulk(id: u32) -> Vec<u8> {
    let mut packet = bulk_udp(PACKET_LEN);
    packet[28..32].copy_from_slice(&id.to_be_bytes());
    packet
}

fn run(fifo: bool, start: Instant) -> Delays {
    let link = LinkConfig {
        latency: Duration::from_millis(5),
        rate_bps: Some(LINK_BPS),
        ..LinkConfig::default()
    };
    let mut net = SimNet::new(NodeConfig::default(), link, SEED, start);
    // Handshake (the first packet waits for it), then an idle link.
    net.send_from(0, &icmp_echo(84, 0));
    net.run_for(Duration::from_millis(200));
    let peer = net.nodes[1].peer_id();
    assert!(net.nodes[0].is_connected(peer, net.now), "no session");
    net.delivered[1].clear();

    let mut sent_at = Vec::new();
    let mut enqueue_bulk = |net: &mut SimNet| {
        let id = sent_at.len() as u32;
        let verdict = net.send_from(0, &tagged_bulk(id));
        if verdict == TunVerdict::Queued(Lane::Bulk) {
            sent_at.push(net.now);
            true
        } else {
            false
        }
    };
    for _ in 0..BULK_CAPACITY {
        assert!(enqueue_bulk(&mut net));
    }
    // Put the first bulk packet on the wire, then top the lane up again.
    net.run_for(Duration::from_micros(100));
    let room = if fifo { 1 } else { 0 };
    while net.nodes[0].scheduler().len(Lane::Bulk) < BULK_CAPACITY - room {
        assert!(enqueue_bulk(&mut net));
    }
    let icmp = icmp_echo(84, 1);
    let critical_sent = net.now;
    let lane = if fifo { Lane::Bulk } else { Lane::Critical };
    let verdict = net.nodes[0].handle_tun_packet_in(net.now, lane, &icmp);
    assert_eq!(verdict, TunVerdict::Queued(lane));
    net.run_for(Duration::from_secs(10));

    let mut critical = None;
    let mut last_bulk = Duration::ZERO;
    let mut bulk_delivered = 0;
    for d in &net.delivered[1] {
        if d.packet[9] == PROTO_ICMP {
            critical = Some(d.at - critical_sent);
        } else {
            let id = u32::from_be_bytes([d.packet[28], d.packet[29], d.packet[30], d.packet[31]]);
            bulk_delivered += 1;
            last_bulk = last_bulk.max(d.at - sent_at[id as usize]);
        }
    }
    assert_eq!(bulk_delivered, sent_at.len(), "lossless link delivers all");
    Delays {
        critical: critical.expect("ICMP packet delivered"),
        last_bulk,
        bulk_delivered,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let start = Instant::now();
    let per_packet =
        (PACKET_LEN + bauxite_conduit::wire::DATA_OVERHEAD) as f64 * 8.0 / LINK_BPS as f64 * 1e3;
    println!(
        "link {} Mbit/s, 5 ms one-way; bulk lane {} x {}-byte packets ({:.3} ms each on the wire)",
        LINK_BPS / 1_000_000,
        BULK_CAPACITY,
        PACKET_LEN,
        per_packet
    );
    println!(
        "| queue | ICMP one-way delay | last bulk packet one-way delay | bulk packets delivered |"
    );
    println!("|---|---|---|---|");
    for (name, fifo) in [("lanes (ICMP in critical)", false), ("single FIFO", true)] {
        let d = run(fifo, start);
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {} |",
            ms(d.critical),
            ms(d.last_bulk),
            d.bulk_delivered
        );
    }
}
