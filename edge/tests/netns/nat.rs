//! Nodes behind NAT routers (the [NAT laboratory](crate::natlab)): a hub on the public
//! network, two sites each behind its own NAT that drops unsolicited packets, nodes joined
//! as docs/hub.md shows (no `--advertise`). Each test asserts the path `bauxite status`
//! reports and that pings cross the mesh both ways.
//!
//! The hub binary must sit next to `bauxite` (`cargo build -p bauxite-dispatch`); without
//! it, or without root, the tests print SKIPPED.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::hub::{Hub, dispatch_binary, established_with, join, vip_of};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{Node, PORT, can_run, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const NAMES: [&str; 2] = ["site0", "site1"];

/// A hub on the public network and one joined, running node in each site.
struct NatMesh {
    nodes: [Node; 2],
    hub: Hub,
    lab: NatLab,
    _dir: tempfile::TempDir,
}

impl NatMesh {
    fn start(bin: &Path, nat: [Nat; 2]) -> Self {
        let lab = NatLab::new(nat);
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start(
            bin,
            lab.ns(Host::Public),
            dir.path(),
            &format!("{}:0", NatLab::PUBLIC_IP),
        );
        let url = format!("https://{}", hub.addr());
        let nodes = [0, 1].map(|i| {
            let token = hub.admin(&["token", "create", "--name", NAMES[i]]);
            let root = dir.path().join(NAMES[i]);
            let (ok, out) = join(lab.ns(Host::Site(i)), &token, &url, &root, NAMES[i], None);
            assert!(ok, "join {}: {out}\n--- hub ---\n{}", NAMES[i], hub.log());
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

    fn logs(&self) -> String {
        format!(
            "--- site0 ---\n{}\n--- site1 ---\n{}\n--- hub ---\n{}",
            self.nodes[0].log(),
            self.nodes[1].log(),
            self.hub.log()
        )
    }

    /// Waits until both nodes have a session with each other.
    fn wait_established(&self, limit: Duration) {
        for i in 0..2 {
            let other = NAMES[1 - i];
            wait_for(limit, &format!("{} to reach {other}", NAMES[i]), || {
                established_with(&self.nodes[i], other)
            });
        }
    }

    /// `ping` from site `from` to the other node's virtual IP.
    fn ping(&self, from: usize, count: u32) -> bool {
        self.lab
            .ping(Host::Site(from), &vip_of(&self.nodes[1 - from]), count)
    }

    /// The `path` node `i` reports for the other node.
    fn path_to_other(&self, i: usize) -> Option<String> {
        let status = self.nodes[i].status()?;
        peer_entry(&status, NAMES[1 - i])?["path"]
            .as_str()
            .map(str::to_string)
    }
}

fn peer_entry<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

#[test]
fn cone_nat_on_both_sides_gives_a_direct_path() {
    if !can_run() {
        return;
    }
    let Some(bin) = dispatch_binary() else {
        return;
    };
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
