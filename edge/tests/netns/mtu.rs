//! A path with a 1200-byte MTU (an LTE or hotel uplink) in the [NAT laboratory](crate::natlab):
//! site 0's router reaches the public network over a 1200-byte link, which drops larger
//! packets — the router refuses DF packets (the mesh sets DF on everything), and the
//! public bridge drops oversized frames toward it without a word. Both nodes must
//! discover 1200 by themselves, show it in `status --json`, and carry a large TCP
//! transfer both ways with plain sockets. A data packet lost to the MTU would be
//! retransmitted at the same size and lost again, stalling the stream; the router's own
//! count of DF packets it refused must not exceed the probes the node sent too large.
//!
//! Needs root and the hub binary (`cargo build -p bauxite-dispatch`), like the other NAT
//! tests.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};

use crate::hub::{dispatch_binary, vip_of};
use crate::nat::{LIMIT, NAMES, NatMesh, peer_entry};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{can_run, wait_for};

const PATH_MTU: u16 = 1200;
/// Bytes through the tunnel each way.
const TRANSFER: usize = 4 << 20;

fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// `TRANSFER` bytes from site `from` to a listener in the other site, over the mesh;
/// the receiver answers with the length and checksum it got.
fn transfer(mesh: &NatMesh, from: usize, port: u16) {
    let to = 1 - from;
    let vip = vip_of(&mesh.nodes[to]);
    let listener = mesh.lab.within(Host::Site(to), || {
        TcpListener::bind((vip.as_str(), port)).unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(LIMIT)).unwrap();
        let mut data = Vec::new();
        conn.read_to_end(&mut data).unwrap();
        let answer = [
            (data.len() as u64).to_le_bytes(),
            checksum(&data).to_le_bytes(),
        ];
        conn.write_all(&answer.concat()).unwrap();
    });
    let data: Vec<u8> = (0..TRANSFER as u32)
        .map(|i| (i * 7 + i / 1201) as u8)
        .collect();
    let mut conn = mesh.lab.within(Host::Site(from), || {
        TcpStream::connect((vip.as_str(), port)).unwrap()
    });
    // A black-holed segment would stall the stream until this fires.
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    conn.set_write_timeout(Some(LIMIT)).unwrap();
    conn.write_all(&data).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    conn.read_exact(&mut answer).unwrap();
    server.join().unwrap();
    assert_eq!(
        answer[..8],
        (data.len() as u64).to_le_bytes(),
        "{}",
        mesh.logs()
    );
    assert_eq!(
        answer[8..],
        checksum(&data).to_le_bytes(),
        "stream corrupted"
    );
}

#[test]
fn a_1200_byte_path_is_discovered_and_a_large_tcp_transfer_completes() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let lab = NatLab::new([Nat::Cone, Nat::Cone]);
    lab.set_wan_mtu(0, PATH_MTU);
    let mesh = NatMesh::start_in(&bin, lab);
    mesh.wait_established(LIMIT);
    #[allow(clippy::disallowed_methods)] // a test's stopwatch, reported, not asserted
    let start = std::time::Instant::now();

    // Each node finds the size by itself: its probes above 1200 are lost, the rest
    // acknowledged.
    for i in 0..2 {
        let other = NAMES[1 - i];
        let entry = wait_for(
            LIMIT,
            &format!("{} to discover the path MTU", NAMES[i]),
            || {
                let status = mesh.nodes[i].status()?;
                let entry = peer_entry(&status, other)?.clone();
                (entry["pmtu"] == "complete").then_some(entry)
            },
        );
        assert_eq!(
            entry["path_mtu"],
            u64::from(PATH_MTU),
            "{entry}\n{}",
            mesh.logs()
        );
        assert_eq!(entry["path_type"], "direct", "{entry}");
    }
    let discovered = start.elapsed();
    let refused_before = mesh.lab.snmp(Host::Router(0), "Ip", "FragFails");

    #[allow(clippy::disallowed_methods)] // a test's stopwatch, reported, not asserted
    let start = std::time::Instant::now();
    transfer(&mesh, 0, 5001);
    let up = start.elapsed();
    transfer(&mesh, 1, 5002);
    let down = start.elapsed() - up;

    // The SYNs were clamped to the path (1200 - 28 - 29 - 40), so the hosts never sent
    // more than fits.
    for (node, name) in mesh.nodes.iter().zip(NAMES) {
        let clamped = node.counter("mss_clamped");
        assert!(clamped >= 1, "{name} clamped no SYN\n{}", mesh.logs());
    }
    // Nothing but probes ever left site 0 too large for its uplink: the router refused
    // (FragFails) no more packets than the node's lost probes (it probes its path to the
    // hub, a mesh node too, as well as to site 1), and none during the
    // transfers (discovery was complete; a probe of the raise timer is 10 min away).
    let refused = mesh.lab.snmp(Host::Router(0), "Ip", "FragFails");
    let lost_probes =
        mesh.nodes[0].counter("pmtu_probes_sent") - mesh.nodes[0].counter("pmtu_probes_acked");
    assert!(
        refused <= lost_probes,
        "router refused {refused}, probes lost {lost_probes}"
    );
    assert_eq!(
        refused,
        refused_before,
        "a data packet hit the MTU\n{}",
        mesh.logs()
    );
    eprintln!(
        "path MTU {PATH_MTU} found by both {discovered:?} after the sessions; {} MiB site0->site1 in {up:?}, site1->site0 in {down:?}; probes lost at site0 (to site1 and to the hub, a mesh node too): {lost_probes}, refused by its router: {refused}",
        TRANSFER >> 20
    );
}
