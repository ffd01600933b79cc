//! The path-type benchmark (ignored: about a minute per path; run it with
//! `cargo build -p bauxite-dispatch && sudo -E cargo test -p bauxite --test netns
//! path_bench -- --ignored --nocapture`): in the NAT laboratory, two joined nodes on
//! each path type — `direct` (cone NAT on both sides), `turn` (symmetric NAT on one side,
//! the lab's coturn), `hub` (site 0's UDP blocked: the hub's data channel) — measure
//! iperf3 TCP throughput from site 0 to site 1 through the tunnel, and ping round trips
//! (100 a second) idle and while that transfer runs. The transfer outlasts the loaded
//! pings (checked: iperf3 is still running when the last ping returns), so every loaded
//! ping ran under load. Prints the figures for docs/benchmarks.md and asserts only the
//! path type and that every measurement ran — timings go to docs, not into assertions.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::coturn::Coturn;
use crate::hub::{dispatch_binary, vip_of};
use crate::nat::{LIMIT, NAMES, NatMesh, peer_entry};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{can_run_alone, wait_for};

/// Pings per measurement, 10 ms apart.
const PINGS: u32 = 500;
/// Seconds the transfer runs: longer than the loaded pings (5 s) plus their start.
const FLOW_SECS: u32 = 12;

/// Nearest-rank percentile `p` (0..=100) of sorted `v`.
fn percentile(v: &[f64], p: usize) -> f64 {
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// Starts `ping -i 0.01 -c PINGS` from site 0 to `dst`.
fn ping(mesh: &NatMesh, dst: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", mesh.lab.ns(Host::Site(0)), "ping", "-n"])
        .args(["-i", "0.01", "-W", "2", "-c", &PINGS.to_string(), dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run ping")
}

/// The sorted round trips (ms) of a finished ping, and how many of `PINGS` it got.
fn round_trips(child: Child) -> Vec<f64> {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    rtts
}

fn path_type(mesh: &NatMesh) -> Option<String> {
    let status = mesh.nodes[0].status()?;
    peer_entry(&status, NAMES[1])?["path_type"]
        .as_str()
        .map(str::to_string)
}

/// One path type's figures.
struct Figures {
    mbit: f64,
    idle: Vec<f64>,
    loaded: Vec<f64>,
}

fn measure(mesh: &NatMesh, want: &str) -> Figures {
    wait_for(LIMIT, &format!("path type {want}"), || {
        (path_type(mesh).as_deref() == Some(want)).then_some(())
    });
    let dst = vip_of(&mesh.nodes[1]);
    let idle = round_trips(ping(mesh, &dst));
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            mesh.lab.ns(Host::Site(1)),
            "iperf3",
            "-s",
            "-1",
        ])
        .args(["-B", &dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run iperf3 (apt-get install iperf3)");
    let site1 = mesh.lab.ns(Host::Site(1)).to_string();
    wait_for(LIMIT, "iperf3 listening", || {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &site1, "ss", "-Hltn", "sport", "=", ":5201",
            ])
            .output()
            .ok()?;
        (!out.stdout.is_empty()).then_some(())
    });
    let client = Command::new("ip")
        .args(["netns", "exec", mesh.lab.ns(Host::Site(0)), "iperf3", "-J"])
        .args(["-c", &dst, "-t", &FLOW_SECS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = mesh.nodes[1].counter("rx_bytes");
    mesh.nodes[1].wait_counter_above("rx_bytes", before + 1_000_000);
    let mut client = client;
    let loaded = round_trips(ping(mesh, &dst));
    let outlasted = client.try_wait().unwrap().is_none();
    assert!(outlasted, "the transfer ended before the loaded pings did");
    let out = client.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3's report: {report}"));
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(path_type(mesh).as_deref(), Some(want), "still on {want}");
    Figures {
        mbit: bps / 1e6,
        idle,
        loaded,
    }
}

fn report(name: &str, f: &Figures) {
    let line = |v: &[f64]| {
        format!(
            "n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            v.len(),
            percentile(v, 50),
            percentile(v, 99),
            v[v.len() - 1]
        )
    };
    eprintln!(
        "{name}: {:.0} Mbit/s; idle ping {}; loaded ping {}",
        f.mbit,
        line(&f.idle),
        line(&f.loaded)
    );
}

fn run(nat: [Nat; 2], block_udp: bool, want: &str) -> Figures {
    let bin = dispatch_binary();
    let lab = NatLab::new(nat);
    if block_udp {
        lab.block_udp(0);
    }
    let coturn = Coturn::start(&lab, NatLab::PUBLIC_IP);
    let mesh = NatMesh::start_with(&bin, lab, coturn.hub_args());
    mesh.wait_established(LIMIT);
    let figures = measure(&mesh, want);
    assert!(
        figures.idle.len() == PINGS as usize && !figures.loaded.is_empty(),
        "pings answered: {} idle, {} loaded\n{}",
        figures.idle.len(),
        figures.loaded.len(),
        mesh.logs()
    );
    figures
}

#[test]
#[ignore = "benchmark: a few minutes; see docs/benchmarks.md"]
fn path_bench() {
    let Some(_machine) = can_run_alone() else {
        return;
    };
    let direct = run([Nat::Cone, Nat::Cone], false, "direct");
    let turn = run([Nat::Symmetric, Nat::Cone], false, "turn");
    let hub = run([Nat::Cone, Nat::Cone], true, "hub");
    report("direct (cone/cone)", &direct);
    report("turn (symmetric/cone, coturn)", &turn);
    report("hub relay (site 0 UDP blocked)", &hub);
}
