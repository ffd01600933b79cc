//! ICE in the [NAT laboratory](crate::natlab): both nodes run `node.ice = true`, so each
//! session's candidates and credentials travel through the hub's `ExchangeCandidates`
//! (signed by the nodes), a webrtc-ice agent per peer checks the pairs on the mesh port,
//! and the node takes the pair it finds. Each test asserts what `bauxite status --json`
//! reports of the ICE session and that pings cross both ways. A cut of the direct path
//! between the sites under a selected pair restarts ICE (the session meanwhile on TURN),
//! and the restarted session's pair takes the session back to direct once the cut heals.

use crate::coturn::Coturn;
use crate::hub::{dispatch_binary, vip_of};
use crate::nat::{LIMIT, NAMES, NatMesh, peer_entry};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{can_run, wait_for, wait_for_or};

/// Waits until node `i`'s view of the other has an ICE session in `phase`; returns the
/// peer's status entry.
fn ice_entry(mesh: &NatMesh, i: usize, phase: &str) -> serde_json::Value {
    wait_for(LIMIT, &format!("{} ICE {phase}", NAMES[i]), || {
        let status = mesh.nodes[i].status()?;
        let entry = peer_entry(&status, NAMES[1 - i])?.clone();
        (entry["ice"]["phase"] == phase && entry["established"] == true).then_some(entry)
    })
}

#[test]
fn ice_through_the_hub_finds_the_server_reflexive_pair_behind_port_changing_cone_nats() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    // Neither NAT keeps the node's port, so only the reflexive candidate (or the peer-
    // reflexive one the checks discover) reaches the other side.
    let lab = NatLab::new([Nat::ConePorts(30000, 30099), Nat::ConePorts(40000, 40099)]);
    let mesh = NatMesh::start_ice(&bin, lab, Vec::new(), true);
    mesh.wait_established(LIMIT);
    for i in 0..2 {
        let entry = ice_entry(&mesh, i, "connected");
        let ice = &entry["ice"];
        // The lower peer ID invited; the pair ends at the other's router, on the path.
        let me = mesh.nodes[i].status().unwrap()["peer_id"]
            .as_str()
            .unwrap()
            .to_string();
        let other = entry["id"].as_str().unwrap().to_string();
        assert_eq!(ice["controlling"], me < other, "{entry}");
        let pair = ice["pair"].as_str().unwrap();
        let remote = pair.split(" -> ").nth(1).unwrap();
        assert!(
            remote.starts_with(&format!("{}:", mesh.lab.router_ip(1 - i))),
            "{entry}\n{}",
            mesh.logs()
        );
        assert!(
            ["srflx", "prflx"].contains(&ice["remote_kind"].as_str().unwrap()),
            "{entry}"
        );
        assert_eq!(entry["path"], format!("direct {remote}"), "{entry}");
        assert!(ice["checks_us"].is_u64(), "{entry}");
        // The handshake and total stages are there unless the session was up before this
        // side's ICE session began (the hub's candidates answered first: the invited side
        // often handshakes before the INVITE reaches it).
        assert_eq!(
            ice["total_us"].is_u64(),
            ice["handshake_us"].is_u64(),
            "{entry}"
        );
    }
    assert!(mesh.ping(0, 3), "site0 -> site1\n{}", mesh.logs());
    assert!(mesh.ping(1, 3), "site1 -> site0\n{}", mesh.logs());
}

#[test]
fn with_ice_a_symmetric_nat_runs_on_turn_while_no_pair_works() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let lab = NatLab::new([Nat::Symmetric, Nat::Cone]);
    let coturn = Coturn::start(&lab, NatLab::PUBLIC_IP);
    let mesh = NatMesh::start_ice(&bin, lab, coturn.hub_args(), true);
    mesh.wait_established(LIMIT);
    for i in 0..2 {
        // The session may start on the hub relay (the peer's first packets came that way,
        // before either TURN allocation was ready); the ladder then moves it up to TURN
        // and keeps it there while the ICE session runs (its checks cannot succeed across
        // this pair).
        wait_for_or(
            LIMIT,
            "on TURN while ICE runs",
            || {
                let status = mesh.nodes[i].status()?;
                let entry = peer_entry(&status, NAMES[1 - i])?.clone();
                (entry["ice"]["phase"].is_string() && entry["path_type"] == "turn").then_some(())
            },
            || mesh.logs(),
        );
    }
    assert!(mesh.ping(0, 3), "site0 -> site1\n{}", mesh.logs());
    assert!(mesh.ping(1, 3), "site1 -> site0\n{}", mesh.logs());
}

#[test]
fn a_cut_under_the_selected_pair_restarts_ice_and_a_new_pair_takes_the_session_back() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let lab = NatLab::new([Nat::Cone, Nat::Cone]);
    let coturn = Coturn::start(&lab, NatLab::PUBLIC_IP);
    let mesh = NatMesh::start_ice(&bin, lab, coturn.hub_args(), true);
    mesh.wait_established(LIMIT);
    let path_is = |i: usize, want: &str| {
        let status = mesh.nodes[i].status()?;
        let entry = peer_entry(&status, NAMES[1 - i])?.clone();
        (entry["path_type"] == want).then_some(entry)
    };
    for i in 0..2 {
        ice_entry(&mesh, i, "connected");
        wait_for(LIMIT, "direct", || path_is(i, "direct"));
    }
    // Traffic that expects answers (every data packet is acknowledged) across the cut.
    let mut stream = mesh
        .lab
        .ping_stream(Host::Site(0), &vip_of(&mesh.nodes[1]), 300, "0.1", "1");
    let restarted = |i: usize| mesh.nodes[i].log().contains("restarting ICE");
    assert!(!restarted(0) && !restarted(1), "{}", mesh.logs());
    mesh.lab.block_udp_with(0, mesh.lab.router_ip(1));
    // The relay ladder moves the silent pair's traffic onto TURN and the node restarts
    // ICE instead of staying on the dead pair.
    for (i, name) in NAMES.iter().enumerate() {
        wait_for(LIMIT, &format!("{name} on TURN"), || path_is(i, "turn"));
    }
    wait_for(LIMIT, "an ICE restart", || {
        (restarted(0) || restarted(1)).then_some(())
    });
    // The cut heals: the restarted session finds a pair and the session goes direct.
    mesh.lab.unblock_udp(0);
    for i in 0..2 {
        wait_for(LIMIT, "direct again", || path_is(i, "direct"));
        let entry = ice_entry(&mesh, i, "connected");
        assert_eq!(entry["path_type"], "direct", "{entry}\n{}", mesh.logs());
    }
    assert!(mesh.ping(0, 3), "site0 -> site1\n{}", mesh.logs());
    assert!(mesh.ping(1, 3), "site1 -> site0\n{}", mesh.logs());
    // Our own ping child: stop it (it would run 30 s more).
    let _ = stream.kill();
    let _ = stream.wait();
}
