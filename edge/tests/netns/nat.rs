//! Nodes behind NAT routers (the [NAT laboratory](crate::natlab)): a hub on the public
//! network, two sites each behind its own NAT that drops unsolicited packets, nodes joined
//! as docs/hub.md shows (no `--advertise`). Each test asserts the path `bauxite status`
//! reports and that pings cross the mesh both ways.
//!
//! The hub binary must sit next to `bauxite` (`cargo build -p bauxite-dispatch`); without
//! it they fail; without root they print SKIPPED.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::hub::{Hub, dispatch_binary, established_with, join, vip_of};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{Node, PORT, can_run, wait_for};

pub(crate) const LIMIT: Duration = Duration::from_secs(30);

/// Whether the nodes run ICE (`node.ice`, on by default): set `BAUXITE_NATLAB_ICE=0` to
/// run every laboratory test with the sequential direct-then-TURN dialling instead of ICE
/// sessions through the hub.
pub(crate) fn ice_on() -> bool {
    std::env::var("BAUXITE_NATLAB_ICE").map_or(true, |v| v != "0")
}

/// Sets `node.ice` in a joined node's config (`bauxite join` writes `[node]` first).
fn set_ice(config: &Path, on: bool) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains("[node]\n"), "{text}");
    std::fs::write(
        config,
        text.replacen("[node]\n", &format!("[node]\nice = {on}\n"), 1),
    )
    .unwrap();
}
pub(crate) const NAMES: [&str; 2] = ["site0", "site1"];

/// A hub on the public network and one joined, running node in each site.
pub(crate) struct NatMesh {
    pub(crate) nodes: [Node; 2],
    pub(crate) hub: Hub,
    pub(crate) lab: NatLab,
    _dir: tempfile::TempDir,
}

impl NatMesh {
    fn start(bin: &Path, nat: [Nat; 2]) -> Self {
        Self::start_in(bin, NatLab::new(nat))
    }

    /// Starts the hub and the nodes in a laboratory the caller prepared.
    pub(crate) fn start_in(bin: &Path, lab: NatLab) -> Self {
        Self::start_with(bin, lab, Vec::new())
    }

    /// Like [`start_in`](Self::start_in), with more arguments for the hub's `serve`.
    pub(crate) fn start_with(bin: &Path, lab: NatLab, hub_args: Vec<String>) -> Self {
        Self::start_ice(bin, lab, hub_args, ice_on())
    }

    /// Like [`start_with`](Self::start_with), with ICE on or off whatever the environment says.
    pub(crate) fn start_ice(bin: &Path, lab: NatLab, hub_args: Vec<String>, ice: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start_with(
            bin,
            lab.ns(Host::Public),
            dir.path(),
            &format!("{}:0", NatLab::PUBLIC_IP),
            hub_args,
        );
        let url = format!("https://{}", hub.addr());
        let nodes = [0, 1].map(|i| {
            let token = hub.admin(&["token", "create", "--name", NAMES[i]]);
            let root = dir.path().join(NAMES[i]);
            let (ok, out) = join(lab.ns(Host::Site(i)), &token, &url, &root, NAMES[i], None);
            assert!(ok, "join {}: {out}\n--- hub ---\n{}", NAMES[i], hub.log());
            set_ice(&root.join("config.toml"), ice);
            Node::from_config(
                lab.ns(Host::Site(i)),
                root.join("config.toml"),
                dir.path().join(format!("{}.log", NAMES[i])),
            )
        });
        Self {
            nodes,
            hub,
            lab,
            _dir: dir,
        }
    }

    pub(crate) fn logs(&self) -> String {
        format!(
            "--- site0 ---\n{}\n--- site1 ---\n{}\n--- hub ---\n{}",
            self.nodes[0].log(),
            self.nodes[1].log(),
            self.hub.log()
        )
    }

    /// Waits until both nodes have a session with each other.
    pub(crate) fn wait_established(&self, limit: Duration) {
        #[allow(clippy::disallowed_methods)] // a test's stopwatch, reported, not asserted
        let start = std::time::Instant::now();
        for i in 0..2 {
            let other = NAMES[1 - i];
            wait_for(limit, &format!("{} to reach {other}", NAMES[i]), || {
                established_with(&self.nodes[i], other)
            });
        }
        eprintln!(
            "sessions up {:?} after the daemons started",
            start.elapsed()
        );
    }

    /// `ping` from site `from` to the other node's virtual IP.
    pub(crate) fn ping(&self, from: usize, count: u32) -> bool {
        self.lab
            .ping(Host::Site(from), &vip_of(&self.nodes[1 - from]), count)
    }

    /// The `path` node `i` reports for the other node.
    pub(crate) fn path_to_other(&self, i: usize) -> Option<String> {
        let status = self.nodes[i].status()?;
        peer_entry(&status, NAMES[1 - i])?["path"]
            .as_str()
            .map(str::to_string)
    }
}

pub(crate) fn peer_entry<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

#[test]
fn cone_nat_on_both_sides_gives_a_direct_path() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let mesh = NatMesh::start(&bin, [Nat::Cone, Nat::Cone]);
    mesh.wait_established(LIMIT);
    assert!(mesh.ping(0, 3), "site0 -> site1\n{}", mesh.logs());
    assert!(mesh.ping(1, 3), "site1 -> site0\n{}", mesh.logs());
    // Each node talks to the other's public mapping directly (plain masquerade keeps the
    // port): a server-reflexive pair, through both NATs, no relay.
    for i in 0..2 {
        let want = format!("direct {}:{PORT}", mesh.lab.router_ip(1 - i));
        assert_eq!(
            mesh.path_to_other(i).as_deref(),
            Some(want.as_str()),
            "{}",
            mesh.logs()
        );
    }
}

/// The port of a `direct IP:PORT` path to site `site`'s router, if it is one.
fn direct_port(path: &str, lab: &NatLab, site: usize) -> Option<u16> {
    let addr: std::net::SocketAddr = path.strip_prefix("direct ")?.parse().ok()?;
    (addr.ip() == lab.router_ip(site)).then_some(addr.port())
}

#[test]
fn cone_nats_that_change_the_port_are_crossed_with_the_hubs_stun() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    // Neither NAT keeps the node's port: the hub's guess (the IP it saw the gRPC call
    // come from, with the listen port) is wrong, only the STUN answer is right.
    let ranges = [(30000, 30099), (40000, 40099)];
    let mesh = NatMesh::start(&bin, ranges.map(|(low, high)| Nat::ConePorts(low, high)));
    mesh.wait_established(LIMIT);
    assert!(mesh.ping(0, 3), "site0 -> site1\n{}", mesh.logs());
    assert!(mesh.ping(1, 3), "site1 -> site0\n{}", mesh.logs());
    for (i, &(low, high)) in ranges.iter().enumerate() {
        // What the node tells the hub first is its NAT's mapping, learned over STUN.
        let status = mesh.nodes[i].status().unwrap();
        let first = status["hub"]["candidates"][0].as_str().unwrap_or_default();
        assert!(
            direct_port(&format!("direct {first}"), &mesh.lab, i)
                .is_some_and(|p| (low..=high).contains(&p)),
            "site{i} reports {first} first\n{status}\n{}",
            mesh.logs()
        );
        // And the other node reaches it there, directly, and says it is the mapping the
        // hub's STUN showed (a server-reflexive candidate).
        let path = mesh.path_to_other(1 - i).unwrap_or_default();
        assert_eq!(path, format!("direct {first}"), "{}", mesh.logs());
        let other = mesh.nodes[1 - i].status().unwrap();
        let entry = peer_entry(&other, NAMES[i]).unwrap();
        assert_eq!(entry["path_type"], "direct", "{other}");
        assert_eq!(entry["endpoint"], first, "{other}");
        assert_eq!(entry["endpoint_kind"], "srflx", "{other}");
        assert!(entry["rtt_us"].is_u64(), "{other}");
    }
}

#[test]
fn traffic_resumes_after_a_nat_rebinding() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let mesh = NatMesh::start(&bin, [Nat::ConePorts(30000, 30099), Nat::Cone]);
    mesh.wait_established(LIMIT);
    assert!(mesh.ping(0, 2), "site0 -> site1\n{}", mesh.logs());
    assert!(mesh.ping(1, 2), "site1 -> site0\n{}", mesh.logs());
    let before = mesh.path_to_other(1).unwrap_or_default();
    assert!(
        direct_port(&before, &mesh.lab, 0).is_some_and(|p| (30000..=30099).contains(&p)),
        "{before}\n{}",
        mesh.logs()
    );

    // Site 0's router forgets every mapping and hands out ports from another range:
    // packets to the old mapping die at the router, and site 1's router drops what comes
    // from the new one until site 1 sends there.
    mesh.lab.set_nat(0, Nat::ConePorts(31000, 31099));
    mesh.lab.flush_mappings(0);

    // Site 0's pings go unanswered: after a second of silence it asks the hub's STUN at
    // once (not at the next 15 s refresh), learns its new mapping, reports it; site 1
    // moves there and sends a keepalive that opens its own NAT: both directions work
    // again. (About 2 s here, of which the first ping's 2 s timeout is most; 16.5 s when
    // only the refresh noticed.)
    let resumed = Duration::from_secs(45);
    #[allow(clippy::disallowed_methods)] // a test's stopwatch, reported, not asserted
    let start = std::time::Instant::now();
    wait_for(resumed, "traffic both ways after the rebinding", || {
        (mesh.ping(0, 1) && mesh.ping(1, 1)).then_some(())
    });
    eprintln!("traffic resumed {:?} after the rebinding", start.elapsed());
    let after = mesh.path_to_other(1).unwrap_or_default();
    assert!(
        direct_port(&after, &mesh.lab, 0).is_some_and(|p| (31000..=31099).contains(&p)),
        "site1 reaches site0 at {after}\n{}",
        mesh.logs()
    );
    let log = mesh.nodes[0].log();
    assert!(
        log.contains("path quiet; asking STUN again")
            && log.contains("server-reflexive address learned over STUN"),
        "{}",
        mesh.logs()
    );
}
