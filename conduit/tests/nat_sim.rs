//! NAT boxes on the simulator: for every pair of boxes (mapping × filtering, or none),
//! two nodes that know each other's server-reflexive addresses and dial at once find a
//! direct path exactly when the oracle (`direct_path_expected`) says they must; the
//! same holds pairwise in a network of more than two nodes; and a node whose box gives
//! it a new mapping (NAT rebinding) is followed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test picks its virtual clock's starting instant

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bauxite_conduit::ip::build;
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::session::Timers;
use bauxite_conduit::sim::{
    Filtering, LinkConfig, Mapping, NatBehaviour, NodeSpec, SimNet, direct_path_expected,
};

/// Long enough for two handshake retries: a path that exists is found by then.
fn patience() -> Duration {
    Timers::default().rekey_timeout * 2 + Duration::from_secs(1)
}

fn udp<const N: usize>(net: &SimNet<N>, from: usize, to: usize, id: u32) -> Vec<u8> {
    let mut payload = [0u8; 200];
    payload[..4].copy_from_slice(&id.to_be_bytes());
    let mut out = Vec::new();
    let (src, dst) = (net.vips[from].addr(), net.vips[to].addr());
    build::ipv4_udp(src, dst, 40000, 9000, &payload, &mut out);
    out
}

fn ids<const N: usize>(net: &SimNet<N>, to: usize) -> Vec<u32> {
    net.delivered[to]
        .iter()
        .map(|d| u32::from_be_bytes(d.packet[28..32].try_into().unwrap()))
        .collect()
}

fn spec(nat: Option<NatBehaviour>) -> NodeSpec {
    nat.map_or_else(NodeSpec::public, NodeSpec::behind)
}

fn connected<const N: usize>(net: &SimNet<N>, a: usize, b: usize) -> bool {
    let (ida, idb) = (net.nodes[a].peer_id(), net.nodes[b].peer_id());
    net.nodes[a].is_connected(idb, net.now) && net.nodes[b].is_connected(ida, net.now)
}

/// Every pair of boxes (and no box), both nodes dialling at once: a direct path exists
/// at the end exactly when the oracle says it must, the packets waiting for it arrive
/// then, and when it does not, the boxes are what refused the handshakes.
#[test]
fn the_oracle_decides_every_pair_of_nat_boxes() {
    let kinds: Vec<Option<NatBehaviour>> = std::iter::once(None)
        .chain(NatBehaviour::all().map(Some))
        .collect();
    let mut disagreements = Vec::new();
    for (n, &a) in kinds.iter().enumerate() {
        for (m, &b) in kinds.iter().enumerate() {
            let seed = (n * kinds.len() + m) as u64;
            let mut net = SimNet::build(
                NodeConfig::default(),
                LinkConfig::default(),
                seed,
                Instant::now(),
                [spec(a), spec(b)],
            );
            let (p, q) = (udp(&net, 0, 1, 1), udp(&net, 1, 0, 2));
            net.send_from(0, &p);
            net.send_from(1, &q);
            net.run_for(patience());
            let expected = direct_path_expected(a, b);
            let got = connected(&net, 0, 1);
            if got != expected {
                disagreements.push(format!("{a:?} / {b:?}: expected {expected}, got {got}"));
                continue;
            }
            if expected {
                assert_eq!(
                    (ids(&net, 1), ids(&net, 0)),
                    (vec![1], vec![2]),
                    "{a:?} / {b:?}"
                );
            } else {
                assert!(net.stats.nat_dropped > 0, "{a:?} / {b:?}: refused by a box");
                assert!(net.delivered.iter().all(Vec::is_empty), "{a:?} / {b:?}");
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// Four nodes — public, full cone, port-restricted cone, symmetric — all dialling each
/// other: every pair the oracle says can connect does, the others do not, and each
/// packet reaches the node it was addressed to.
#[test]
fn four_nodes_behind_mixed_boxes_connect_as_the_oracle_says() {
    let boxes = [
        None,
        Some(NatBehaviour {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::EndpointIndependent,
        }),
        Some(NatBehaviour {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::AddressAndPortDependent,
        }),
        Some(NatBehaviour {
            mapping: Mapping::AddressAndPortDependent,
            filtering: Filtering::AddressAndPortDependent,
        }),
    ];
    let mut net: SimNet<4> = SimNet::build(
        NodeConfig::default(),
        LinkConfig::default(),
        7,
        Instant::now(),
        boxes.map(spec),
    );
    // Packet id = 10 * from + to.
    for from in 0..4 {
        for to in (0..4).filter(|&to| to != from) {
            let p = udp(&net, from, to, (10 * from + to) as u32);
            net.send_from(from, &p);
        }
    }
    net.run_for(patience());
    let mut pairs = 0;
    for a in 0..4 {
        for b in (a + 1)..4 {
            let expected = direct_path_expected(boxes[a], boxes[b]);
            assert_eq!(connected(&net, a, b), expected, "nodes {a} and {b}");
            pairs += usize::from(expected);
        }
    }
    assert_eq!(
        pairs, 5,
        "only port-restricted cone and symmetric cannot meet"
    );
    for to in 0..4 {
        let mut got = ids(&net, to);
        got.sort_unstable();
        let want: Vec<u32> = (0..4)
            .filter(|&from| from != to && direct_path_expected(boxes[from], boxes[to]))
            .map(|from| (10 * from + to) as u32)
            .collect();
        assert_eq!(got, want, "delivered to node {to}");
    }
}

/// A node behind a port-restricted cone whose box gives it a new mapping mid-stream (NAT
/// rebinding): its next packet comes from the new outside port, the public peer follows
/// it there, and traffic resumes both ways.
#[test]
fn a_new_mapping_behind_a_nat_is_followed() {
    let cone = NatBehaviour {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressAndPortDependent,
    };
    let mut net = SimNet::build(
        NodeConfig::default(),
        LinkConfig::default(),
        8,
        Instant::now(),
        [NodeSpec::public(), NodeSpec::behind(cone)],
    );
    let p = udp(&net, 1, 0, 1);
    net.send_from(1, &p);
    net.run_for(Duration::from_millis(50));
    assert!(connected(&net, 0, 1));
    let far = net.nodes[1].peer_id();
    let before = net.nodes[0].paths().direct(far).unwrap().addr;

    // The inside host moves (a DHCP renewal, a new interface): the box maps it anew.
    net.rebind(1, SocketAddr::from((Ipv4Addr::new(10, 0, 2, 3), 51820)));
    let p = udp(&net, 1, 0, 2);
    net.send_from(1, &p);
    net.run_for(Duration::from_millis(50));
    let after = net.nodes[0].paths().direct(far).unwrap().addr;
    assert_ne!(after, before, "a new outside port");
    assert_eq!(after.ip(), before.ip(), "the same box");
    let q = udp(&net, 0, 1, 3);
    net.send_from(0, &q);
    net.run_for(Duration::from_millis(50));
    assert_eq!((ids(&net, 0), ids(&net, 1)), (vec![1, 2], vec![3]));
}
