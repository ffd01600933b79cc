//! Network namespaces for the kernel tests: created with `ip`, deleted on drop.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Command, Output};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Whether the kernel tests can run (they need root: BPF, namespaces); prints why not.
pub fn can_run() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: kernel classifier tests need root (CI runs them as root)");
        return false;
    }
    true
}

/// Runs `program args`, panicking with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Two namespaces joined by a veth pair: `a` (10.77.0.1) and `b` (10.77.0.2), IPv6 off so
/// neighbour discovery cannot add packets to the counts.
pub struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
    pub dev_a: String,
}

pub const ADDR_B: &str = "10.77.0.2";

impl VethPair {
    pub fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let pair = Self {
            ns_a: format!("bxe-{tag}-{pid}-a"),
            ns_b: format!("bxe-{tag}-{pid}-b"),
            dev_a: "bxa".into(),
        };
        run("ip", &["netns", "add", &pair.ns_a]);
        run("ip", &["netns", "add", &pair.ns_b]);
        for ns in [&pair.ns_a, &pair.ns_b] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
        }
        run(
            "ip",
            &[
                "-n", &pair.ns_a, "link", "add", "bxa", "type", "veth", "peer", "name", "bxb",
                "netns", &pair.ns_b,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &pair.ns_a,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                "bxa",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &pair.ns_b,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                "bxb",
            ],
        );
        run("ip", &["-n", &pair.ns_a, "link", "set", "bxa", "up"]);
        run("ip", &["-n", &pair.ns_b, "link", "set", "bxb", "up"]);
        pair
    }

    /// Moves the calling thread into namespace `a` (each test runs on its own thread).
    pub fn enter_a(&self) {
        let file = File::open(format!("/run/netns/{}", self.ns_a)).unwrap();
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
    }

    /// `tc args` inside namespace `a`, stdout as text.
    pub fn tc_a(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.ns_a.as_str()];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&run("tc", &full).stdout).into_owned()
    }

    /// How many egress filters on `bxa` carry the classifier's name.
    pub fn clsact_filters(&self) -> usize {
        let out = Command::new("tc")
            .args(["-n", &self.ns_a, "filter", "show", "dev", "bxa", "egress"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bauxite_lanes"))
            .count()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and so the pair.
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
