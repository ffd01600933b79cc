//! The hub relay in the [NAT laboratory](crate::natlab): site 0's router drops every UDP
//! packet (its node's gRPC to the hub is TCP and still passes). The two nodes' session
//! comes up through the hub's data channel (`status` path type `hub`) and pings cross it;
//! when the block lifts, both nodes move to the direct path by themselves while a ping
//! stream runs, and no ping of it is lost. The hub's own mesh node is reached the same
//! way: site 0 pings it (`bauxite ping hub`) while its UDP is blocked.
//!
//! The hub binary must sit next to `bauxite` (`cargo build -p bauxite-dispatch`); without
//! root the test prints SKIPPED.

use std::process::Command;
use std::time::Duration;

use crate::hub::{dispatch_binary, vip_of};
use crate::nat::{LIMIT, NAMES, NatMesh, peer_entry};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{BAUXITE, can_run, wait_for};

/// The `path_type` node `i` reports for the other node.
fn path_type(mesh: &NatMesh, i: usize) -> Option<String> {
    path_type_to(mesh, i, NAMES[1 - i])
}

/// The `path_type` node `i` reports for the peer named `name`.
fn path_type_to(mesh: &NatMesh, i: usize, name: &str) -> Option<String> {
    let status = mesh.nodes[i].status()?;
    peer_entry(&status, name)?["path_type"]
        .as_str()
        .map(str::to_string)
}

/// `(transmitted, received)` from ping's summary line.
fn ping_summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>());
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

#[test]
fn blocked_udp_goes_through_the_hub_and_upgrades_to_direct_without_losing_a_ping() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let lab = NatLab::new([Nat::Cone, Nat::Cone]);
    lab.block_udp(0);
    let mesh = NatMesh::start_in(&bin, lab);
    mesh.wait_established(LIMIT);
    for (i, name) in NAMES.iter().enumerate() {
        wait_for(LIMIT, &format!("{name} on the hub relay"), || {
            (path_type(&mesh, i).as_deref() == Some("hub")).then_some(())
        });
    }
    let ping = |from: usize, count| {
        mesh.lab
            .ping(Host::Site(from), &vip_of(&mesh.nodes[1 - from]), count)
    };
    assert!(ping(0, 3), "site0 -> site1 over the hub\n{}", mesh.logs());
    assert!(ping(1, 3), "site1 -> site0 over the hub\n{}", mesh.logs());

    // The hub's own mesh node (echo, update images) through its own data channel.
    wait_for(LIMIT, "site0 on the hub relay to the hub's node", || {
        (path_type_to(&mesh, 0, "hub").as_deref() == Some("hub")).then_some(())
    });
    let echo = Command::new(BAUXITE)
        .args(["ping", "hub", "--count", "3", "--rate", "5", "--config"])
        .arg(&mesh.nodes[0].config)
        .output()
        .unwrap();
    assert!(
        echo.status.success(),
        "site0 -> the hub's node over the hub relay: {}{}\n{}",
        String::from_utf8_lossy(&echo.stdout),
        String::from_utf8_lossy(&echo.stderr),
        mesh.logs()
    );

    // A ping stream across the switch: 100 pings, 5 a second, each waited for 2 s.
    let stream = mesh
        .lab
        .ping_stream(Host::Site(0), &vip_of(&mesh.nodes[1]), 100, "0.2", "2");
    mesh.lab.unblock_udp(0);
    #[allow(clippy::disallowed_methods)] // a test's stopwatch, reported, not asserted
    let lifted = std::time::Instant::now();
    for (i, name) in NAMES.iter().enumerate() {
        wait_for(
            Duration::from_secs(20),
            &format!("{name} back on a direct path"),
            || (path_type(&mesh, i).as_deref() == Some("direct")).then_some(()),
        );
    }
    eprintln!(
        "both nodes direct {:?} after the block lifted",
        lifted.elapsed()
    );
    // The stream ends by itself after 100 × 0.2 s (+ the last reply's 2 s at most).
    let out = stream.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = ping_summary(&summary).unwrap_or_default();
    eprintln!("ping stream across the switch: {sent} sent, {received} received");
    assert_eq!(sent, 100, "{summary}");
    assert_eq!(
        received,
        sent,
        "no ping lost across the switch\n{summary}\n{}",
        mesh.logs()
    );
    let log = mesh.nodes[0].log();
    assert!(
        log.contains("relaying through the hub") && log.contains("leaving the hub relay"),
        "{}",
        mesh.logs()
    );
}
