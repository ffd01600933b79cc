//! Citadel's acceptance test: ROS 2 discovery across the mesh with the real Fast DDS
//! discovery server.
//!
//! Three nodes in three namespaces on one underlay bridge: `s` runs the discovery server
//! (`[ros.server]`, supervised by `bauxite run` on its virtual IP), `p` and `q` name it by
//! peer (`[[ros.servers]] peer = "s"`). A publisher in `p` and a subscriber in `q` (a small
//! Fast DDS program, built here with g++ against libfastrtps-dev) start through
//! `bauxite ros exec`, so their only configuration is what Bauxite injects. Each namespace
//! drops every underlay packet that is not mesh UDP (nftables), and the participants use
//! UDP on their virtual IP only, so discovery and samples can only cross the mesh.
//! The publisher's node maps domain 42's RTPS ports to the telemetry lane (`[[lanes]]`).
//! Then the server is killed with SIGKILL: citadel restarts it, and a new subscriber
//! finds the still-running publisher. Stopping `s`'s daemon stops its server.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::support::{BAUXITE, Keys, Node, PORT, can_run, keygen, nft, sh, wait_for};

const NAMES: [&str; 3] = ["s", "p", "q"];
const VIPS: [&str; 3] = ["100.64.0.1", "100.64.0.2", "100.64.0.3"];
const LIMIT: Duration = Duration::from_secs(60);
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Compiles the test participant into `dir` (about 3 s; the test's temporary directory,
/// so nothing outlives the run).
fn build_participant(dir: &Path) -> PathBuf {
    let out = dir.join("participant");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netns/ros/participant.cpp");
    let header = Path::new("/usr/include/fastdds/dds/domain/DomainParticipantFactory.hpp");
    assert!(
        header.exists(),
        "libfastrtps-dev is not installed; run scripts/setup.sh"
    );
    sh(
        "g++",
        &[
            "-std=c++17",
            "-O1",
            "-o",
            out.to_str().unwrap(),
            source.to_str().unwrap(),
            "-lfastrtps",
            "-lfastcdr",
        ],
    );
    out
}

/// Three namespaces on a bridge in a fourth, each filtering its underlay to mesh UDP.
struct Trio {
    ns: [String; 3],
    lan: String,
}

impl Trio {
    fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}r{n}", std::process::id() % 1_000_000);
        let trio = Self {
            ns: NAMES.map(|name| format!("bxr{tag}{name}")),
            lan: format!("bxr{tag}l"),
        };
        for ns in trio.ns.iter().chain([&trio.lan]) {
            sh("ip", &["netns", "add", ns]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        sh(
            "ip",
            &["-n", &trio.lan, "link", "add", "br0", "type", "bridge"],
        );
        sh("ip", &["-n", &trio.lan, "link", "set", "br0", "up"]);
        for (i, ns) in trio.ns.iter().enumerate() {
            // Created inside the node's namespace, so a failed step leaves nothing in root.
            let port = format!("port{i}");
            sh(
                "ip",
                &[
                    "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                ],
            );
            sh("ip", &["-n", ns, "link", "set", &port, "netns", &trio.lan]);
            sh(
                "ip",
                &["-n", &trio.lan, "link", "set", &port, "master", "br0"],
            );
            sh("ip", &["-n", &trio.lan, "link", "set", &port, "up"]);
            let cidr = format!("{}/24", Self::underlay(i));
            sh("ip", &["-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
            sh("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            trio.only_mesh_udp(i);
        }
        trio
    }

    fn underlay(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 79, 0, 1 + u8::try_from(i).unwrap())
    }

    /// The underlay carries the mesh's UDP port and nothing else (ARP is not IP).
    fn only_mesh_udp(&self, i: usize) {
        let script = format!(
            "table inet bxros {{\n  chain out {{ type filter hook output priority 0; policy accept;\n    oifname \"eth0\" udp sport {PORT} accept\n    oifname \"eth0\" counter drop\n  }}\n  chain in {{ type filter hook input priority 0; policy accept;\n    iifname \"eth0\" udp dport {PORT} accept\n    iifname \"eth0\" counter drop\n  }}\n}}\n"
        );
        nft(&self.ns[i], &script);
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        for ns in self.ns.iter().chain([&self.lan]) {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Some(pid) = pid.parse().ok().and_then(Pid::from_raw) {
                        let _ = kill_process(pid, Signal::KILL);
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Node `i`'s config: the other two as static peers, and its `[ros]` part.
fn config(dir: &Path, keys: &[Keys; 3], i: usize, ros: &str) -> PathBuf {
    let name = NAMES[i];
    let mut text = format!(
        "[node]\nidentity = \"{}\"\nlisten = \"0.0.0.0:{PORT}\"\nvirtual_ip = \"{}/10\"\ncontrol_socket = \"{}\"\nkeepalive_secs = 1\nrekey_timeout_secs = 1\n\n{ros}\n",
        keys[i].path.display(),
        VIPS[i],
        dir.join(format!("{name}.sock")).display(),
    );
    for j in (0..3).filter(|&j| j != i) {
        let entry = keys[j].entry.replace("100.64.0.X", VIPS[j]);
        text.push_str(&format!(
            "\n{entry}\nendpoint = \"{}:{PORT}\"\n",
            Trio::underlay(j)
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).unwrap();
    path
}

/// A participant started with `bauxite ros exec` in a namespace, output to a file.
struct Participant {
    child: Child,
    out: PathBuf,
}

impl Participant {
    fn start(program: &Path, ns: &str, config: &Path, out: PathBuf, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BAUXITE, "--config"])
            .arg(config)
            .args(["ros", "exec", "--"])
            .arg(program)
            .args(args)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (bounded) for the subscriber to exit after its samples; true if it exited
    /// with success in time.
    #[allow(clippy::disallowed_methods)] // a test's deadline is wall time by nature
    fn finished(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ros` part of a node's status, once the daemon answers.
fn ros_status(node: &Node) -> Option<Value> {
    let status = node.status()?;
    (!status["ros"].is_null()).then(|| status["ros"].clone())
}

fn all_established(node: &Node) -> Option<()> {
    let status = node.status()?;
    let peers = status["peers"].as_array()?;
    (peers.len() == 2 && peers.iter().all(|p| p["established"] == true)).then_some(())
}

/// Whether a UDP socket is bound to `port` in `pid`'s network namespace.
fn listening(pid: u64, port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    fs::read_to_string(format!("/proc/{pid}/net/udp")).is_ok_and(|table| {
        table.lines().any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&suffix))
        })
    })
}

fn alive(pid: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn ros_participants_discover_each_other_through_the_citadel_server_across_the_mesh() {
    let Some(_machine) = can_run() else {
        return;
    };
    let trio = Trio::new();
    let dir = tempfile::tempdir().unwrap();
    let program = build_participant(dir.path());
    let keys = NAMES.map(|n| keygen(dir.path(), n));
    let client = "[[ros.servers]]\npeer = \"s\"\n";
    // The publisher's node puts domain 42's RTPS ports (17900-18149) on the telemetry
    // lane, which nothing else here uses.
    let publisher_node = format!(
        "{client}\n[[lanes]]\nprotocol = \"udp\"\nports = \"17900-18149\"\nlane = \"telemetry\"\n"
    );
    let configs = [
        config(dir.path(), &keys, 0, "[ros.server]\nid = 0\n"),
        config(dir.path(), &keys, 1, &publisher_node),
        config(dir.path(), &keys, 2, client),
    ];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::from_config(
                &trio.ns[i],
                configs[i].clone(),
                dir.path().join(format!("{}.log", NAMES[i])),
            )
        })
        .collect();
    let logs = |nodes: &[Node]| {
        nodes
            .iter()
            .zip(NAMES)
            .map(|(n, name)| format!("--- {name} ---\n{}", n.log()))
            .collect::<String>()
    };
    for node in &nodes {
        wait_for(LIMIT, "sessions with both peers", || all_established(node));
    }
    let server = wait_for(LIMIT, "the discovery server to run", || {
        let ros = ros_status(&nodes[0])?;
        (ros["state"] == "running").then_some(ros)
    });
    assert_eq!(server["port"], 11811, "{server}");
    let first_pid = server["pid"].as_u64().unwrap();
    wait_for(LIMIT, "the server's socket on port 11811", || {
        listening(first_pid, 11811).then_some(())
    });

    // The environment a robot gets, resolved by peer name.
    let env = sh(
        BAUXITE,
        &["--config", configs[1].to_str().unwrap(), "ros", "env"],
    );
    assert_eq!(
        env,
        "export ROS_DISCOVERY_SERVER='100.64.0.1:11811'\nexport ROS_DOMAIN_ID='42'\n"
    );

    let publisher = Participant::start(
        &program,
        &trio.ns[1],
        &configs[1],
        dir.path().join("pub.out"),
        &["pub", "chatter", VIPS[1]],
    );
    let mut subscriber = Participant::start(
        &program,
        &trio.ns[2],
        &configs[2],
        dir.path().join("sub1.out"),
        &["sub", "chatter", VIPS[2], "5"],
    );
    let diagnose = |what: &str, sub: &Participant, publisher: &Participant, nodes: &[Node]| {
        // The drop counters show whether anything tried to bypass the mesh.
        let nft: String = trio
            .ns
            .iter()
            .map(|ns| sh("ip", &["netns", "exec", ns, "nft", "list", "ruleset"]))
            .collect();
        panic!(
            "{what}: {}\npublisher: {}\n{nft}\n{}",
            sub.output(),
            publisher.output(),
            logs(nodes)
        );
    };
    if !subscriber.finished(LIMIT) {
        diagnose("first subscriber", &subscriber, &publisher, &nodes);
    }
    let got = subscriber.output();
    assert!(got.contains("subscribed to chatter in domain 42"), "{got}");
    assert_eq!(got.matches("received sample ").count(), 5, "{got}");
    // The samples crossed the mesh, and the publisher's RTPS traffic took the lane its
    // node's [[lanes]] rule names.
    assert!(nodes[2].counter("rx_packets") > 0);
    let lanes = nodes[1].status().unwrap()["lanes"].clone();
    assert!(
        lanes["telemetry"]["enqueued"].as_u64().unwrap() > 0,
        "{lanes}"
    );
    let lanes = nodes[2].status().unwrap()["lanes"].clone();
    assert_eq!(lanes["telemetry"]["enqueued"], 0, "q has no rule: {lanes}");

    // The server dies; citadel brings it back under a new PID.
    #[allow(clippy::disallowed_methods)] // measured for docs/benchmarks.md, not asserted
    let killed = std::time::Instant::now();
    kill_process(
        Pid::from_raw(i32::try_from(first_pid).unwrap()).unwrap(),
        Signal::KILL,
    )
    .unwrap();
    let restarted = wait_for(LIMIT, "the discovery server to be restarted", || {
        let ros = ros_status(&nodes[0])?;
        (ros["state"] == "running" && ros["restarts"] == 1).then_some(ros)
    });
    let second_pid = restarted["pid"].as_u64().unwrap();
    assert_ne!(second_pid, first_pid);
    assert_eq!(restarted["last_exit"], "killed by SIGKILL", "{restarted}");
    wait_for(LIMIT, "the restarted server's socket", || {
        listening(second_pid, 11811).then_some(())
    });
    let back = killed.elapsed();

    // A new subscriber finds the publisher that outlived the old server.
    let mut late = Participant::start(
        &program,
        &trio.ns[2],
        &configs[2],
        dir.path().join("sub2.out"),
        &["sub", "chatter", VIPS[2], "3"],
    );
    if !late.finished(LIMIT) {
        diagnose("subscriber after the restart", &late, &publisher, &nodes);
    }
    eprintln!(
        "measured: server listening again {back:?} after kill -9; new subscriber had 3 samples {:?} after kill -9",
        killed.elapsed()
    );
    assert_eq!(late.output().matches("received sample ").count(), 3);

    // The server stops with its node.
    assert!(nodes[0].terminate(), "{}", logs(&nodes));
    assert!(
        !alive(second_pid),
        "the discovery server outlived bauxite run"
    );
    nodes.clear();
}

/// With a hub, a robot needs no `[[ros.servers]]`: the node running the server reports it
/// with its metrics, the hub puts it in the topology, and `bauxite ros env` on another
/// robot names it at its position.
#[test]
fn the_hub_tells_robots_where_the_discovery_server_runs() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = crate::hub::dispatch_binary();
    let net = crate::support::NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = crate::hub::Hub::start(&bin, &net.ns[0], dir.path(), &format!("{}:0", net.addr[0]));
    let url = format!("https://{}", hub.addr());
    let names = ["base", "robot"];
    // `join` writes [hub] last, so a line appended lands in it.
    let extra = [
        "report_secs = 1\n\n[ros.server]\nid = 2\n",
        "report_secs = 1\n\n[ros]\n",
    ];
    let mut nodes = Vec::new();
    for i in 0..2 {
        let token = hub.admin(&["token", "create", "--name", names[i]]);
        let root = dir.path().join(names[i]);
        let advertise = net.endpoint(i).to_string();
        let (ok, out) =
            crate::hub::join(&net.ns[i], &token, &url, &root, names[i], Some(&advertise));
        assert!(ok, "join {}: {out}\n--- hub ---\n{}", names[i], hub.log());
        let config = root.join("config.toml");
        let mut text = fs::read_to_string(&config).unwrap();
        text.push_str(extra[i]);
        fs::write(&config, text).unwrap();
        nodes.push(Node::from_config(
            &net.ns[i],
            config,
            dir.path().join(format!("{}.log", names[i])),
        ));
    }
    let base_vip = crate::hub::vip_of(&nodes[0]);
    let want = format!("{base_vip}:11811");
    let servers = wait_for(LIMIT, "the hub's topology to name base's server", || {
        let status = nodes[1].status()?;
        let servers = status["ros_servers"].as_array()?.clone();
        (servers.len() == 1 && servers[0]["address"] == want.as_str()).then_some(servers)
    });
    assert_eq!(servers[0]["id"], 2);
    let env = sh(
        BAUXITE,
        &["--config", nodes[1].config.to_str().unwrap(), "ros", "env"],
    );
    assert_eq!(
        env,
        format!("export ROS_DISCOVERY_SERVER=';;{want}'\nexport ROS_DOMAIN_ID='42'\n"),
        "{}",
        nodes[1].log()
    );
}
