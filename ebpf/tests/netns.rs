//! The classifier on a real interface: a veth pair between two network namespaces this
//! test creates (and deletes). Real traffic of each class, the per-lane counters, the
//! `prio` qdisc's bands, a stale attachment from a killed loader, and the fallback when the
//! process lacks permission. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};

use bauxite_conduit::Lane;
use bauxite_conduit::offload::OffloadKind;
use bauxite_ebpf::offload::attach_or_fallback;
use bauxite_ebpf::{AttachMode, AttachOptions, LaneClassifier, LinkKind};
use common::{ADDR_B, VethPair, can_run, run};

const CHILD_ENV: &str = "BAUXITE_EBPF_CHILD";

fn options(mode: Option<AttachMode>, prio_qdisc: bool) -> AttachOptions {
    AttachOptions {
        mode,
        link: Some(LinkKind::Ethernet),
        prio_qdisc,
        ..AttachOptions::default()
    }
}

fn send_udp(port: u16, payload_len: usize, count: usize) {
    let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
    let payload = vec![7u8; payload_len];
    for _ in 0..count {
        socket.send_to(&payload, (ADDR_B, port)).unwrap();
    }
}

/// Sends the three classes and checks the counters and the qdisc bands (`mode` None: auto).
fn traffic_is_counted_per_lane(tag: &str, mode: Option<AttachMode>) {
    if !can_run() {
        return;
    }
    let pair = VethPair::new(tag);
    pair.enter_a();
    let classifier = LaneClassifier::attach(&pair.dev_a, &options(mode, true)).unwrap();
    if let Some(mode) = mode {
        assert_eq!(classifier.mode(), mode);
    }
    // Resolve the neighbour first (ARP is small: Critical) and send real ICMP echoes.
    run(
        "ip",
        &[
            "netns", "exec", &pair.ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "2", ADDR_B,
        ],
    );
    let before = classifier.counts().unwrap();
    send_udp(5006, 1000, 5);
    send_udp(9, 1000, 7);
    send_udp(9, 20, 4); // small: Critical whatever its port
    let after = classifier.counts().unwrap();
    let delta = |lane: Lane| {
        let (a, b) = (after[lane.index()], before[lane.index()]);
        (a.packets - b.packets, a.bytes - b.bytes)
    };
    assert!(before[Lane::Critical.index()].packets >= 3, "{before:?}");
    assert_eq!(delta(Lane::Telemetry), (5, 5 * 1028));
    assert_eq!(delta(Lane::Bulk), (7, 7 * 1028));
    assert!(delta(Lane::Critical).0 >= 4, "{after:?}");

    // The qdisc puts the lanes in its bands. `prio` counts per band (1:2 is Telemetry's,
    // 1:3 Bulk's); kernels without sch_prio get pfifo_fast, which keeps no band counts.
    let qdisc = pair.tc_a(&["qdisc", "show", "dev", &pair.dev_a]);
    assert!(
        qdisc.contains(&format!("qdisc {} ", classifier.qdisc().unwrap())),
        "{qdisc}"
    );
    if classifier.qdisc() == Some("prio") {
        assert_prio_bands(&pair);
    }

    // Dropping detaches: nothing of ours is left on the interface.
    drop(classifier);
    assert_eq!(pair.clsact_filters(), 0);
    let qdisc = pair.tc_a(&["qdisc", "show", "dev", &pair.dev_a]);
    assert!(!qdisc.contains("prio"), "{qdisc}");
}

fn assert_prio_bands(pair: &VethPair) {
    let classes = pair.tc_a(&["-s", "class", "show", "dev", &pair.dev_a]);
    let sent = |class: &str| -> u64 {
        let mut lines = classes.lines();
        while let Some(line) = lines.next() {
            if line.contains(&format!("class prio {class} ")) {
                let stats = lines.next().unwrap_or_default();
                let mut words = stats.split_whitespace();
                while let Some(word) = words.next() {
                    if word == "pkt" {
                        break;
                    }
                    if words.clone().next() == Some("pkt") {
                        return word.parse().unwrap();
                    }
                }
            }
        }
        panic!("no class {class} in {classes}");
    };
    assert!(sent("1:1") >= 7, "critical band: {classes}");
    assert_eq!(sent("1:2"), 5, "telemetry band: {classes}");
    assert_eq!(sent("1:3"), 7, "bulk band: {classes}");
}

#[test]
fn traffic_is_counted_per_lane_with_tcx() {
    traffic_is_counted_per_lane("tcx", Some(AttachMode::Tcx));
}

#[test]
fn traffic_is_counted_per_lane_with_clsact() {
    traffic_is_counted_per_lane("cls", Some(AttachMode::Clsact));
}

/// Starts this test binary's `child_attach_and_wait` in `ns`, waits until it attached.
fn spawn_attached_child(ns: &str, mode: &str) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_attach_and_wait",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{ns}:{mode}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Bounded: the child prints ATTACHED or exits (EOF) when attaching fails.
    let attached = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "ATTACHED");
    assert!(attached, "child did not attach");
    child
}

#[test]
fn a_stale_clsact_attachment_is_replaced_not_stacked() {
    if !can_run() {
        return;
    }
    let pair = VethPair::new("stale");
    let mut child = spawn_attached_child(&pair.ns_a, "clsact");
    assert_eq!(pair.clsact_filters(), 1);
    // SIGKILL: no destructor runs, the filter stays behind.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        pair.clsact_filters(),
        1,
        "a killed loader leaves its clsact filter"
    );

    pair.enter_a();
    let classifier =
        LaneClassifier::attach(&pair.dev_a, &options(Some(AttachMode::Clsact), false)).unwrap();
    assert!(classifier.stale_removed());
    assert_eq!(pair.clsact_filters(), 1, "replaced, not stacked");
    drop(classifier);
    assert_eq!(pair.clsact_filters(), 0);
}

#[test]
fn a_killed_loaders_tcx_link_goes_with_it() {
    if !can_run() {
        return;
    }
    let pair = VethPair::new("tcxk");
    let mut child = spawn_attached_child(&pair.ns_a, "tcx");
    child.kill().unwrap();
    child.wait().unwrap();
    pair.enter_a();
    let classifier = LaneClassifier::attach(&pair.dev_a, &options(None, false)).unwrap();
    assert_eq!(classifier.mode(), AttachMode::Tcx);
    assert!(!classifier.stale_removed());
    let (_, programs) =
        aya::programs::SchedClassifier::query_tcx(&pair.dev_a, aya::programs::TcAttachType::Egress)
            .unwrap();
    let ours = programs
        .iter()
        .filter(|p| p.name_as_str() == Some("bauxite_lanes"))
        .count();
    assert_eq!(ours, 1, "exactly one TCX program: ours");
}

/// Helper process for the tests above (not a test of its own): enters the namespace named
/// in `BAUXITE_EBPF_CHILD`, attaches, says ATTACHED and waits to be killed.
#[test]
#[ignore = "helper process started by other tests"]
fn child_attach_and_wait() {
    let spec = std::env::var(CHILD_ENV).unwrap();
    let (ns, mode) = spec.split_once(':').unwrap();
    let mode = if mode == "tcx" {
        AttachMode::Tcx
    } else {
        AttachMode::Clsact
    };
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap();
    let _classifier = LaneClassifier::attach("bxa", &options(Some(mode), false)).unwrap();
    println!("ATTACHED");
    // Blocks until the parent kills us (its end of stdin stays open until then).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Helper process: attaches to `lo` as whatever user it was started as and prints the
/// offload's kind and detail.
#[test]
#[ignore = "helper process started by other tests"]
fn child_fallback() {
    let offload = attach_or_fallback("lo", &options(None, false), None).offload;
    println!("KIND {}", offload.kind().name());
    println!("DETAIL {}", offload.detail());
}

#[test]
fn without_permission_the_userspace_classifier_takes_over() {
    if !can_run() {
        return;
    }
    // `nobody` without capabilities: the kernel refuses the BPF load.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_fallback", "--nocapture"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.lines().any(|l| l == "KIND userspace"), "{stdout}");
    assert!(stdout.contains("DETAIL the kernel refused"), "{stdout}");
}

#[test]
fn an_interface_that_is_not_there_falls_back() {
    // The TUN device failed to come up, or is named wrongly: the daemon keeps running.
    let offload =
        attach_or_fallback("tunl-does-not-exist", &AttachOptions::default(), None).offload;
    assert_eq!(offload.kind(), OffloadKind::Userspace);
    assert!(
        offload.detail().contains("tunl-does-not-exist"),
        "{}",
        offload.detail()
    );
    assert_eq!(offload.lane_counts(), None);
}
