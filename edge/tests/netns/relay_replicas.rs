//! The hub relay across two PostgreSQL replicas in the [NAT laboratory](crate::natlab):
//! both sites' routers drop every UDP packet, site 0 joins through replica one and site 1
//! through replica two (each `bauxite run` connected to its own replica). Their session
//! can only come up through the hub's data channel, and no frame crosses between
//! replicas: it works because the higher peer ID opens a visit stream on the lower one's
//! replica (`Peer.relay_hub`, docs/hub.md "The relay across replicas").
//!
//! Needs root, the hub binary next to `bauxite` and Debian's `postgresql`; without them
//! the test prints SKIPPED.

use std::process::Command;

use crate::hub::{Hub, dispatch_binary, join, vip_of};
use crate::nat::{LIMIT, NAMES, peer_entry};
use crate::natlab::{Host, Nat, NatLab};
use crate::pg_cluster::PgCluster;
use crate::support::{Node, can_run, wait_for};

#[test]
fn relay_only_sites_on_two_replicas_reach_each_other_through_the_hub() {
    let Some(_machine) = can_run() else {
        return;
    };
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let postgres = pg.create_db("relay_netns");
    let bin = dispatch_binary();
    let lab = NatLab::new([Nat::Cone, Nat::Cone]);
    lab.block_udp(0);
    lab.block_udp(1);
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("{}:0", NatLab::PUBLIC_IP);
    let args = vec!["--postgres".to_string(), postgres];
    let public = lab.ns(Host::Public);
    std::fs::create_dir_all(dir.path().join("one")).unwrap();
    let one = Hub::start_with(&bin, public, &dir.path().join("one"), &listen, args.clone());
    let one_url = format!("https://{}", one.addr());
    // Every replica shares the first one's keys (docs/hub.md, "PostgreSQL and replicas").
    let two_data = dir.path().join("two").join("hub-data");
    std::fs::create_dir_all(&two_data).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", one.data.display()))
        .arg(&two_data)
        .status()
        .unwrap();
    assert!(copied.success());
    let _ = std::fs::remove_file(two_data.join("hub.addr"));
    let two = Hub::start_with(&bin, public, &dir.path().join("two"), &listen, args);
    let two_url = format!("https://{}", two.addr());
    let urls = [&one_url, &two_url];
    let nodes = [0, 1].map(|i| {
        let token = one.admin(&["token", "create", "--name", NAMES[i]]);
        let root = dir.path().join(NAMES[i]);
        let (ok, out) = join(
            lab.ns(Host::Site(i)),
            &token,
            urls[i],
            &root,
            NAMES[i],
            None,
        );
        assert!(ok, "join {} through {}: {out}", NAMES[i], urls[i]);
        Node::from_config(
            lab.ns(Host::Site(i)),
            root.join("config.toml"),
            dir.path().join(format!("{}.log", NAMES[i])),
        )
    });
    let logs = || {
        format!(
            "--- site0 ---\n{}\n--- site1 ---\n{}\n--- one ---\n{}\n--- two ---\n{}",
            nodes[0].log(),
            nodes[1].log(),
            one.log(),
            two.log()
        )
    };
    for (i, name) in NAMES.iter().enumerate() {
        wait_for(LIMIT, &format!("{name} on the hub relay"), || {
            let status = nodes[i].status()?;
            let path = peer_entry(&status, NAMES[1 - i])?["path_type"]
                .as_str()?
                .to_owned();
            (path == "hub").then_some(())
        });
    }
    for from in 0..2 {
        assert!(
            lab.ping(Host::Site(from), &vip_of(&nodes[1 - from]), 3),
            "{} -> {} over the hub relay across replicas\n{}",
            NAMES[from],
            NAMES[1 - from],
            logs()
        );
    }
    // One of the two met the other on its replica: the visit stream is in its log.
    assert!(
        nodes
            .iter()
            .any(|n| n.log().contains("relay visit stream open")),
        "{}",
        logs()
    );
}
