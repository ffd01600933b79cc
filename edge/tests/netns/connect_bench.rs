//! The connect-time benchmark (ignored: it takes a few minutes; run it with
//! `cargo test -p bauxite --test netns connect_bench -- --ignored --nocapture`): in the
//! NAT laboratory with coturn and a hub configured for it, both daemons are killed and
//! started again, and the time from their start to the first ping reply across the mesh
//! is taken, [`TRIALS`] times over a direct path (cone NAT on both sides) and over TURN
//! (symmetric NAT on one side). It prints the median and p99 of each (nearest rank), and
//! asserts only that every trial connected on the expected path type — timings go to
//! docs/benchmarks.md, not into assertions. The nodes run ICE (`node.ice`, on by
//! default; `BAUXITE_NATLAB_ICE=0` turns it off), where a session may come up on TURN
//! while the checks run: the first reply may then cross TURN, so a trial also takes the
//! time until site 0 reports the expected path type (polled through `bauxite status`),
//! and prints both.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::coturn::Coturn;
use crate::hub::{dispatch_binary, vip_of};
use crate::nat::{LIMIT, NAMES, NatMesh, peer_entry};
use crate::natlab::{Host, Nat, NatLab};
use crate::support::{can_run_alone, wait_for};

/// Trials per path type.
const TRIALS: usize = 20;

/// Nearest-rank percentile `p` (0..=100) of sorted `v`.
fn percentile(v: &[Duration], p: usize) -> Duration {
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// Kills and restarts both daemons; returns the time from the restart to the first
/// ping reply from site 0 to site 1, the path type site 0 reports then, and the time
/// until site 0 reports `want` (at most [`LIMIT`]).
fn trial(mesh: &mut NatMesh, want: &str) -> (Duration, String, Duration) {
    for node in &mut mesh.nodes {
        node.kill9();
    }
    let dst = vip_of(&mesh.nodes[1]);
    #[allow(clippy::disallowed_methods)] // a benchmark's stopwatch
    let start = std::time::Instant::now();
    for node in &mut mesh.nodes {
        node.restart();
    }
    // One reply ends a ping that sends every 10 ms; a ping that fails at once (no
    // route: the daemon has not set up bauxite0 yet) is tried again 5 ms later.
    let ns = mesh.lab.ns(Host::Site(0)).to_string();
    let mut ok = false;
    while !ok && start.elapsed() < LIMIT {
        let left = (LIMIT.saturating_sub(start.elapsed()))
            .as_secs()
            .max(1)
            .to_string();
        ok = Command::new("ip")
            .args(["netns", "exec", &ns, "ping", "-n", "-q"])
            .args(["-c", "1", "-i", "0.01", "-w", &left, &dst])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let took = start.elapsed();
    assert!(ok, "no ping reply within {LIMIT:?}\n{}", mesh.logs());
    let path_type = || {
        let status = mesh.nodes[0].status()?;
        peer_entry(&status, NAMES[1])?["path_type"]
            .as_str()
            .map(str::to_string)
    };
    let path = wait_for(LIMIT, "status", path_type);
    wait_for(LIMIT, &format!("path type {want}"), || {
        path_type().filter(|p| p == want)
    });
    (took, path, start.elapsed())
}

fn run(nat: [Nat; 2], want: &str) -> (Vec<Duration>, Vec<Duration>) {
    let bin = dispatch_binary();
    let lab = NatLab::new(nat);
    let coturn = Coturn::start(&lab, NatLab::PUBLIC_IP);
    let mut mesh = NatMesh::start_with(&bin, lab, coturn.hub_args());
    mesh.wait_established(LIMIT);
    let mut times = Vec::with_capacity(TRIALS);
    let mut on_path = Vec::with_capacity(TRIALS);
    for i in 0..TRIALS {
        let (took, path, settled) = trial(&mut mesh, want);
        // Without ICE the first reply crosses the expected path; with it, a reply may
        // come over TURN first (the trial then waited for the expected path).
        if !crate::nat::ice_on() {
            assert_eq!(path, want, "trial {i}\n{}", mesh.logs());
        }
        times.push(took);
        on_path.push(settled);
    }
    times.sort();
    on_path.sort();
    (times, on_path)
}

fn report(name: &str, v: &[Duration]) {
    eprintln!(
        "{name}: n={} median={:?} p99={:?} min={:?} max={:?}",
        v.len(),
        percentile(v, 50),
        percentile(v, 99),
        v[0],
        v[v.len() - 1]
    );
}

#[test]
#[ignore = "benchmark: minutes of restarts; see docs/benchmarks.md"]
fn connect_bench() {
    let Some(_machine) = can_run_alone() else {
        return;
    };
    let ice = if crate::nat::ice_on() { ", ICE" } else { "" };
    let direct = run([Nat::Cone, Nat::Cone], "direct");
    let turn = run([Nat::Symmetric, Nat::Cone], "turn");
    report(&format!("cone/cone{ice}, first reply"), &direct.0);
    report(&format!("cone/cone{ice}, path direct"), &direct.1);
    report(&format!("symmetric/cone{ice}, first reply"), &turn.0);
    report(&format!("symmetric/cone{ice}, path turn"), &turn.1);
}
