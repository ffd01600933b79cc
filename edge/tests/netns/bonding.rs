//! Bonding between real daemons: two namespaces joined by two veth pairs (two uplinks on
//! each side, each on its own subnet, so the kernel routes each peer address over its
//! own link), both nodes with `node.bonding = "critical"` and the other's second address
//! as a `candidates` entry. A 200 Hz ping (ICMP rides the Critical lane) runs while one
//! uplink is cut mid-stream; not one echo may be lost, and the session stays up.
//!
//! The cut is an nftables `input` drop on both ends of one link, so it is silent to the
//! sender (as a dead uplink beyond the first hop is) — both directions of that path lose
//! everything. Waits poll `bauxite status --json` with deadlines; nothing sleeps and hopes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Keys, NetPair, Node, PORT, can_run, keygen, nft, sh, wait_for, wait_for_or};

const VIP: [&str; 2] = ["100.64.0.1", "100.64.0.2"];
/// The second link's subnet: 10.78.0.0/24 (the first is `NetPair`'s 10.77.0.0/24).
const SECOND: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 78, 0, 1), Ipv4Addr::new(10, 78, 0, 2)];
const PINGS: u32 = 1200;

/// Adds a second veth pair between the namespaces of `net`, on 10.78.0.0/24.
fn second_link(net: &NetPair) -> [String; 2] {
    let names = [format!("{}2", net.veth[0]), format!("{}2", net.veth[1])];
    // veth names are at most 15 bytes; NetPair's leave room for one more.
    sh(
        "ip",
        &[
            "link", "add", &names[0], "type", "veth", "peer", "name", &names[1],
        ],
    );
    for i in 0..2 {
        sh("ip", &["link", "set", &names[i], "netns", &net.ns[i]]);
        let cidr = format!("{}/24", SECOND[i]);
        sh(
            "ip",
            &["-n", &net.ns[i], "addr", "add", &cidr, "dev", &names[i]],
        );
        sh("ip", &["-n", &net.ns[i], "link", "set", &names[i], "up"]);
    }
    names
}

/// Drops everything arriving in namespace `ns` from `from` (silent to the sender).
fn cut_from(ns: &str, from: Ipv4Addr) {
    nft(
        ns,
        &format!(
            "add table ip bond\nadd chain ip bond input {{ type filter hook input priority -10; }}\nadd rule ip bond input ip saddr {from} drop\n"
        ),
    );
}

/// Lifts [`cut_from`].
fn mend(ns: &str) {
    nft(ns, "delete table ip bond\n");
}

/// Config of a bonding node whose peer is at `endpoint` and `second`.
fn start(
    net: &NetPair,
    dir: &Path,
    i: usize,
    keys: &[Keys; 2],
    endpoint: SocketAddr,
    second: SocketAddr,
) -> Node {
    let name = ["a", "b"][i];
    let config = dir.join(format!("{name}.toml"));
    let peer = keys[1 - i].entry.replace("100.64.0.X", VIP[1 - i]);
    let text = format!(
        "[node]\nidentity = \"{}\"\nlisten = \"0.0.0.0:{PORT}\"\nvirtual_ip = \"{}/10\"\n\
         control_socket = \"{}\"\nkeepalive_secs = 1\nrekey_timeout_secs = 1\nbonding = \"critical\"\n\n\
         {peer}\nendpoint = \"{endpoint}\"\ncandidates = [\"{second}\"]\n",
        keys[i].path.display(),
        VIP[i],
        dir.join(format!("{name}.sock")).display(),
    );
    std::fs::write(&config, text).unwrap();
    Node::from_config(&net.ns[i], config, dir.join(format!("{name}.log")))
}

/// The first peer's `secondary` (bonded second path) in `node`'s status, if any.
fn secondary(node: &Node) -> Option<String> {
    let s = node.status()?;
    s["peers"][0]["secondary"].as_str().map(str::to_string)
}

fn endpoint(node: &Node) -> Option<String> {
    let s = node.status()?;
    s["peers"][0]["endpoint"].as_str().map(str::to_string)
}

/// `ping -c PINGS -i 0.005` from namespace `ns` to `dst` in the background; its output
/// is read when it ends.
fn ping_stream(ns: &str, dst: &str) -> std::process::Child {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-q", "-i", "0.005", "-W", "2",
        ])
        .args(["-c", &PINGS.to_string(), dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run ping")
}

/// Counts `N received` in ping's summary.
fn received(summary: &str) -> Option<u32> {
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))?;
    let part = line.split(',').find(|p| p.contains("received"))?;
    part.split_whitespace().next()?.parse().ok()
}

#[test]
fn two_uplinks_bonded_one_cut_mid_stream_loses_no_critical_packet() {
    let Some(_machine) = can_run() else {
        return;
    };
    let net = NetPair::new();
    second_link(&net);
    let dir = tempfile::tempdir().unwrap();
    let keys = [keygen(dir.path(), "a"), keygen(dir.path(), "b")];
    let second = |i: usize| SocketAddr::from((SECOND[i], PORT));
    let nodes = [0, 1].map(|i| {
        start(
            &net,
            dir.path(),
            i,
            &keys,
            net.endpoint(1 - i),
            second(1 - i),
        )
    });
    let logs = || {
        format!(
            "--- a ---\n{}\n--- b ---\n{}",
            nodes[0].log(),
            nodes[1].log()
        )
    };
    for node in &nodes {
        node.wait_established(Duration::from_secs(15));
    }
    // `bauxite status` shows both paths: the primary and the bonded second one.
    for (i, node) in nodes.iter().enumerate() {
        let other = [net.endpoint(1 - i).to_string(), second(1 - i).to_string()];
        wait_for_or(
            Duration::from_secs(10),
            "both paths in status",
            || {
                let (p, s) = (endpoint(node)?, secondary(node)?);
                (other.contains(&p) && other.contains(&s) && p != s).then_some(())
            },
            logs,
        );
    }
    let handshakes = nodes[0].counter("handshakes_completed");
    let duplicates = nodes[1].counter("rx_duplicates");

    // Cut the link node a sends on now, once a few hundred echoes have gone through.
    let primary = endpoint(&nodes[0]).unwrap();
    let cut = usize::from(primary != net.endpoint(1).to_string());
    // The two ends of the link to cut: [a's address, b's address] on it.
    let link = if cut == 0 { net.addr } else { SECOND };
    let mut ping = ping_stream(&net.ns[0], VIP[1]);
    let echoes = nodes[1].counter("rx_packets");
    wait_for(Duration::from_secs(10), "300 echoes before the cut", || {
        (nodes[1].counter("rx_packets") >= echoes + 300).then_some(())
    });
    cut_from(&net.ns[0], link[1]);
    cut_from(&net.ns[1], link[0]);
    wait_for(Duration::from_secs(30), "the ping stream to end", || {
        ping.try_wait().unwrap()
    });
    let output = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    mend(&net.ns[0]);
    mend(&net.ns[1]);
    assert_eq!(
        received(&summary),
        Some(PINGS),
        "every echo of the 200 Hz stream came back across the cut\n{summary}\n{}",
        logs()
    );
    assert!(
        nodes[1].counter("rx_duplicates") > duplicates + 200,
        "the second copies were dropped as duplicates"
    );
    assert_eq!(
        nodes[0].counter("rx_replayed"),
        0,
        "no copy counted as a replay"
    );
    assert_eq!(
        nodes[0].counter("handshakes_completed"),
        handshakes,
        "the session was kept: no new handshake"
    );
    // The surviving link is the primary now.
    let survivor = if cut == 0 { second(1) } else { net.endpoint(1) };
    wait_for_or(
        Duration::from_secs(10),
        "the surviving path as primary",
        || (endpoint(&nodes[0])? == survivor.to_string()).then_some(()),
        logs,
    );
}
