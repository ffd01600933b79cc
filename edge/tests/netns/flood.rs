//! Issue 15's acceptance: Critical packets survive an unresponsive flood. `iperf3 -u -b 0
//! -l 1200` from a to b through the tunnel, 600 pings at 200 Hz beside it, unshaped and
//! on a 20 Mbit/s tbf link, with default scheduling: every ping comes back. The p99
//! against the idle tunnel is printed, not asserted (timing goals belong to the benchmark:
//! docs/benchmarks.md).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::support::{can_run, sh, wait_for};
use super::{Mesh, VIP};

/// Pings per run, and their interval (200 Hz).
const PINGS: u32 = 600;

/// A child process killed (by its own id) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf3_missing() -> bool {
    let missing = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if missing {
        eprintln!("SKIPPED: the flood test needs iperf3 (scripts/setup.sh installs it)");
    }
    missing
}

/// What one ping run saw.
struct Pings {
    received: u32,
    p99_ms: f64,
    output: String,
}

/// `PINGS` pings at 200 Hz from namespace 0 to b's virtual IP.
fn ping_run(mesh: &Mesh) -> Pings {
    let out = Command::new("ip")
        .args(["netns", "exec", &mesh.net.ns[0], "ping", "-n"])
        .args([
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.005",
            "-W",
            "1",
            "-s",
            "56",
        ])
        .arg(VIP[1])
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rtts: Vec<f64> = output
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("time=")?.parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    let p99_ms = rtts
        .get((rtts.len() * 99 / 100).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN);
    let received = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    Pings {
        received,
        p99_ms,
        output,
    }
}

fn bulk_enqueued(mesh: &Mesh) -> Option<u64> {
    mesh.nodes[0].status()?["lanes"]["bulk"]["enqueued"].as_u64()
}

/// The flood beside the pings; returns what the pings saw.
fn under_flood(mesh: &Mesh) -> Pings {
    let _server = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &mesh.net.ns[1], "iperf3", "-s", "-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let before = wait_for(Duration::from_secs(10), "status of a", || {
        bulk_enqueued(mesh)
    });
    // The client retries until the server listens; the flood runs until killed.
    let _flood = wait_for(Duration::from_secs(10), "the flood to start", || {
        let mut client = Command::new("ip")
            .args(["netns", "exec", &mesh.net.ns[0], "iperf3", "-c", VIP[1]])
            .args(["-u", "-b", "0", "-l", "1200", "-t", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Started when a's bulk lane takes in the flood; a client that found no server
        // exits, and the next attempt starts another.
        let flowing = wait_for(Duration::from_secs(5), "flood datagrams", || {
            if client.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            bulk_enqueued(mesh)
                .filter(|n| *n > before + 5_000)
                .map(|_| true)
        });
        flowing.then_some(Reaped(client))
    });
    ping_run(mesh)
}

/// A process's scheduling policy and real-time priority: fields 41 and 40 of
/// `/proc/PID/stat` (`1` is `SCHED_FIFO`), counted after the command's closing parenthesis.
fn policy_of(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    // Fields from the third (state) on: rt_priority is field 40, policy field 41.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().unwrap();
    (field(41), field(40))
}

#[test]
fn pings_survive_an_unresponsive_flood() {
    let Some(_machine) = can_run() else {
        return;
    };
    if iperf3_missing() {
        return;
    }
    let mesh = Mesh::new();
    let status = mesh.nodes[0].status().unwrap();
    let detail = status["offload"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("Critical TUN queue"), "{status}");
    // Started without chrt, the daemon raises its own thread (node.realtime_priority's
    // default), and says so.
    let scheduling = status["scheduling"].as_str().unwrap_or_default();
    assert_eq!(
        scheduling, "SCHED_FIFO 10 (raised by the daemon)",
        "{status}"
    );
    let (policy, priority) = policy_of(mesh.nodes[0].pid());
    assert_eq!((policy, priority), (1, 10), "SCHED_FIFO 10 in /proc");

    let critical_reads = |node: usize| {
        (
            mesh.nodes[node].counter("tun_critical_packets"),
            mesh.nodes[node].counter("udp_critical_datagrams"),
        )
    };
    let (a_tun, _) = critical_reads(0);
    let (_, b_udp) = critical_reads(1);
    for shaped in [false, true] {
        if shaped {
            let veth = &mesh.net.veth[0];
            sh(
                "tc",
                &[
                    "-n",
                    &mesh.net.ns[0],
                    "qdisc",
                    "add",
                    "dev",
                    veth,
                    "root",
                    "tbf",
                    "rate",
                    "20mbit",
                    "burst",
                    "32kbit",
                    "latency",
                    "400ms",
                ],
            );
        }
        let idle = ping_run(&mesh);
        assert_eq!(idle.received, PINGS, "idle\n{}", idle.output);
        let flood = under_flood(&mesh);
        eprintln!(
            "{}: {} of {PINGS} pings under the flood, p99 {:.3} ms (idle p99 {:.3} ms)",
            if shaped { "20 Mbit/s tbf" } else { "unshaped" },
            flood.received,
            flood.p99_ms,
            idle.p99_ms
        );
        assert_eq!(
            flood.received,
            PINGS,
            "pings lost under the flood (shaped: {shaped})\n{}\n{}",
            flood.output,
            mesh.logs()
        );
    }
    // The pings took the Critical paths: a read its requests from the Critical TUN queue,
    // b its datagrams from the Critical socket (idle and flood runs, both links: 4 x 600).
    assert!(critical_reads(0).0 >= a_tun + 4 * u64::from(PINGS));
    assert!(critical_reads(1).1 >= b_udp + 4 * u64::from(PINGS));
}
