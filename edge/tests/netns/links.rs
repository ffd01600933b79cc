//! Issue 14's acceptance between real daemons: two `bauxite run` nodes, each in its own
//! namespace, joined only through `bauxite-linkemu` (in a third namespace) playing the
//! LTE-like or the Wi-Fi-like profile. A 1 kHz control loop (ICMP echoes: the Critical
//! lane, sent by `bauxite-icmploop` on a fixed schedule: iputils' ping slows to about
//! 170 Hz on these paths) runs on the idle link, then beside one saturating iperf3 TCP flow
//! (CUBIC) through the tunnel (the bulk lane), which starts first and outlasts the loop.
//!
//! What is asserted is what stays true on a shared two-core machine whose emulator writes
//! packets up to ~100 ms late now and then (docs/link-emulator.md): the loop loses no
//! more echoes than the profile's own random loss explains (a bulk queue overflowing the
//! emulator's buffer would drop them), its p99 stays bounded, and bulk flows. The 2 ms
//! p99 figure and bulk's share of the capacity are measured, not asserted:
//! `benches/netns/links.sh` and docs/benchmarks.md. Each test holds the machine alone,
//! and a run that fails while the emulator reports the kernel held up its writes over
//! 1 ms more than `NOISY_WRITES` times measured the machine, not the data plane: it is
//! repeated, up to `ATTEMPTS` runs; a failure on a run the kernel left alone fails.
//!
//! Needs root, iperf3 and the emulator's binaries (`cargo build -p bauxite-netem`); prints
//! SKIPPED without them.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::{BAUXITE, Node, NodeSpec, PORT, can_run_alone, keygen, sh, wait_for};

const VIP: [&str; 2] = ["100.64.0.1", "100.64.0.2"];
const UNDERLAY: [&str; 2] = ["10.77.0.1", "10.77.0.2"];
/// Echoes per loop: 3 s at 1 kHz.
const ECHOES: u32 = 3000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The emulator's binary `name` (`bauxite-linkemu`, `bauxite-icmploop`) beside bauxite's.
fn netem_binary(name: &str) -> Option<PathBuf> {
    let path = std::path::Path::new(BAUXITE).with_file_name(name);
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} not built (`cargo build -p bauxite-netem`)",
            path.display()
        );
        return None;
    }
    Some(path)
}

fn tools_missing() -> bool {
    let missing = ["iperf3"].into_iter().find(|tool| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
    });
    if let Some(tool) = missing {
        eprintln!("SKIPPED: {tool} not installed");
    }
    missing.is_some()
}

/// Namespaces A and B joined by the emulator in M, with a node in A and in B. Everything
/// is killed and deleted on drop.
struct EmulatedMesh {
    ns: [String; 3],
    emulator: Child,
    /// Closing it stops the emulator (it prints its counters).
    stdin: Option<ChildStdin>,
    nodes: Vec<Node>,
    /// The control loop's prober.
    icmploop: PathBuf,
    /// The emulator's stdout: `ready`, then one JSON line of counters per snapshot.
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl EmulatedMesh {
    fn new(linkemu: &std::path::Path, icmploop: PathBuf, profile: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}l{n}", std::process::id() % 1_000_000);
        let ns = ["a", "b", "m"].map(|s| format!("bxl{tag}{s}"));
        for name in &ns {
            sh("ip", &["netns", "add", name]);
            sh("ip", &["-n", name, "link", "set", "lo", "up"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("emulator.out");
        let mut emulator = Command::new("ip")
            .args(["netns", "exec", &ns[2]])
            .arg(linkemu)
            .args(["--netns-a", &ns[0], "--netns-b", &ns[1]])
            .args(["--addr-a", "10.77.0.1/30", "--addr-b", "10.77.0.2/30"])
            .args(["--profile", profile, "--seed", "7"])
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = emulator.stdin.take();
        let mut mesh = Self {
            ns,
            emulator,
            stdin,
            nodes: Vec::new(),
            icmploop,
            out: out.clone(),
            _dir: dir,
        };
        wait_for(Duration::from_secs(10), "the emulator's `ready`", || {
            fs::read_to_string(&out)
                .ok()
                .filter(|s| s.contains("ready"))
        });
        let dir = mesh._dir.path().to_path_buf();
        let keys = [keygen(&dir, "a"), keygen(&dir, "b")];
        for i in 0..2 {
            let endpoint = format!("{}:{PORT}", UNDERLAY[1 - i]).parse().unwrap();
            let spec = NodeSpec {
                dir: &dir,
                name: ["a", "b"][i],
                keys: &keys[i],
                vip: VIP[i],
                peers: vec![(&keys[1 - i], VIP[1 - i], endpoint)],
                metrics: None,
            };
            mesh.nodes.push(Node::start(&mesh.ns[i], &spec));
        }
        for node in &mesh.nodes {
            node.wait_established(Duration::from_secs(30));
        }
        mesh
    }

    /// `ECHOES` echoes at 1 kHz from A to B's virtual IP.
    fn control_loop(&self) -> Loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns[0]])
            .arg(&self.icmploop)
            .args([
                "-c",
                &ECHOES.to_string(),
                "-i",
                "1000",
                "-W",
                "1000",
                "-s",
                "56",
            ])
            .arg(VIP[1])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Loop::parse(&text).unwrap_or_else(|| panic!("no ping summary in {text}"))
    }

    /// Runs the control loop beside one iperf3 TCP flow A -> B through the tunnel; the
    /// flow starts first (the loop begins once it has carried a second) and must still
    /// run when the loop ends. Returns the loop and the flow's per-second goodputs.
    fn loaded_loop(&self) -> (Loop, Vec<f64>) {
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns[1],
                "iperf3",
                "-s",
                "-1",
                "-B",
                VIP[1],
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _server = Reaped(server);
        wait_for(Duration::from_secs(10), "iperf3 listening", || {
            let out = sh("ip", &["netns", "exec", &self.ns[1], "ss", "-ltn"]);
            out.contains(":5201").then_some(())
        });
        let log = self._dir.path().join("iperf3.txt");
        let client = Command::new("ip")
            .args(["netns", "exec", &self.ns[0], "iperf3", "-c", VIP[1]])
            // Named: the kernel's default is a sysctl (bbr on the test machine).
            .args(["-C", "cubic"])
            // The loop starts after the flow's first second and lasts 3 s plus 1 s of
            // waiting for the last replies.
            .args(["-t", "10", "-i", "1", "--forceflush"])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut client = Reaped(client);
        wait_for(Duration::from_secs(20), "the flow's first second", || {
            fs::read_to_string(&log).ok().filter(|s| s.contains("sec"))
        });
        let looped = self.control_loop();
        assert!(
            client.0.try_wait().unwrap().is_none(),
            "the flow ended before the loop did: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        let rates = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("bits/sec"))
            .filter_map(|l| {
                let mut words = l.split_whitespace().rev();
                let unit = words.find(|w| w.ends_with("bits/sec"))?;
                let value: f64 = words.next()?.parse().ok()?;
                Some(match unit {
                    "Gbits/sec" => value * 1e3,
                    "Kbits/sec" => value / 1e3,
                    "bits/sec" => value / 1e6,
                    _ => value,
                })
            })
            .collect();
        (looped, rates)
    }

    /// The emulator's own timing so far (a snapshot of its counters), printed with the
    /// results so a failure tells the machine's noise from the data plane's.
    fn emulator_timing(&mut self) -> Timing {
        use std::io::Write as _;
        let snapshots = |text: &str| text.lines().filter(|l| l.contains("snapshot")).count();
        let before = snapshots(&fs::read_to_string(&self.out).unwrap_or_default());
        let stdin = self
            .stdin
            .as_mut()
            .expect("the emulator runs until the mesh drops");
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .expect("asking the emulator for a snapshot");
        let text = wait_for(Duration::from_secs(5), "the emulator's snapshot", || {
            fs::read_to_string(&self.out)
                .ok()
                .filter(|t| snapshots(t) > before)
        });
        let last = text.lines().rev().find(|l| l.contains("snapshot"));
        let j: serde_json::Value = serde_json::from_str(last.unwrap_or_default())
            .unwrap_or_else(|e| panic!("the emulator's snapshot: {e}\n{text}"));
        let count = |part: &str| {
            j[part]["over_1ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("no {part}.over_1ms in the emulator's snapshot {j}"))
        };
        Timing {
            late_over_1ms: count("lateness"),
            writes_over_1ms: count("writes"),
            wakeups_over_1ms: count("wakeups"),
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(Node::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for EmulatedMesh {
    fn drop(&mut self) {
        self.nodes.clear();
        self.stdin.take();
        let _ = self.emulator.kill();
        let _ = self.emulator.wait();
        for ns in &self.ns {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A ping run: echoes sent and the replies' round trips, sorted.
#[derive(Debug)]
struct Loop {
    sent: u32,
    rtts_ms: Vec<f64>,
}

impl Loop {
    fn parse(text: &str) -> Option<Self> {
        let counts = text.lines().find(|l| l.contains("packets transmitted"))?;
        let sent = counts.split_whitespace().next()?.parse().ok()?;
        let mut rtts_ms: Vec<f64> = text
            .lines()
            .filter_map(|l| {
                l.split("time=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        rtts_ms.sort_by(f64::total_cmp);
        Some(Self { sent, rtts_ms })
    }

    fn loss(&self) -> f64 {
        1.0 - self.rtts_ms.len() as f64 / f64::from(self.sent.max(1))
    }

    fn p(&self, q: usize) -> f64 {
        let i = (self.rtts_ms.len() * q / 100).min(self.rtts_ms.len().saturating_sub(1));
        self.rtts_ms.get(i).copied().unwrap_or(f64::INFINITY)
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:.1} / p99 {:.1} ms, {:.2} % lost of {}",
            self.p(50),
            self.p(99),
            100.0 * self.loss(),
            self.sent
        )
    }
}

/// How the kernel held up the emulator over a run (`bauxite-linkemu`'s counters).
struct Timing {
    /// Packets written over 1 ms after the model's delivery time.
    late_over_1ms: u64,
    /// TUN writes that took over 1 ms (the receiving stack's softirq work).
    writes_over_1ms: u64,
    /// Wake-ups over 1 ms late after a poll timeout.
    wakeups_over_1ms: u64,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "emulator: {} packets over 1 ms late, from {} TUN writes and {} wake-ups over 1 ms",
            self.late_over_1ms, self.writes_over_1ms, self.wakeups_over_1ms
        )
    }
}

/// `profile`'s random loss, one way (the model loses each direction on its own), and the
/// slack allowed on the loop's p99 beside bulk.
fn run(profile: &str, one_way_loss: f64, p99_slack_ms: f64) {
    let Some(_machine) = can_run_alone() else {
        return;
    };
    if tools_missing() {
        return;
    }
    let (Some(linkemu), Some(icmploop)) = (
        netem_binary("bauxite-linkemu"),
        netem_binary("bauxite-icmploop"),
    ) else {
        return;
    };
    for attempt in 1..=ATTEMPTS {
        let mut mesh = EmulatedMesh::new(&linkemu, icmploop.clone(), profile);
        let (failure, timing) = measure(&mut mesh, profile, one_way_loss, p99_slack_ms);
        let Some(failure) = failure else {
            return;
        };
        if timing.writes_over_1ms <= NOISY_WRITES || attempt == ATTEMPTS {
            panic!("{failure}\n{timing}");
        }
        eprintln!(
            "{profile}: attempt {attempt} void, the machine held up the emulator ({timing}): {failure}"
        );
    }
}

/// TUN writes the kernel held up for over 1 ms (`EmulatedMesh::emulator_timing`) above
/// which a run measured the machine, not the data plane, and is repeated (at most
/// `ATTEMPTS` runs): runs that passed showed 9–221 (LTE, Wi-Fi), the one that failed on a
/// quiet data plane 436, with the Wi-Fi loop's p99 118 ms over idle, twice what a full
/// 150 kB buffer at 20 Mbit/s could add.
const NOISY_WRITES: u64 = 300;
const ATTEMPTS: u32 = 3;

/// One run's idle and loaded loops, and what it failed of the promise (`None`: nothing)
/// with the emulator's timing over the run.
fn measure(
    mesh: &mut EmulatedMesh,
    profile: &str,
    one_way_loss: f64,
    p99_slack_ms: f64,
) -> (Option<String>, Timing) {
    let idle = mesh.control_loop();
    let (loaded, rates) = mesh.loaded_loop();
    let timing = mesh.emulator_timing();
    eprintln!(
        "{profile}: idle {}; beside bulk {}; bulk Mbit/s per second {rates:?}; {timing}",
        idle.summary(),
        loaded.summary()
    );
    // An echo and its reply each cross the lossy link: the profile explains about
    // 2 × one_way_loss; its losses come in bursts, so allow three times that, plus what
    // the idle loop lost beyond it.
    let own = 2.0 * one_way_loss;
    let allowed = idle.loss().max(own) + 2.0 * own;
    let failure = if loaded.loss() > allowed {
        Some(format!(
            "{profile}: the loop lost {:.2} % beside bulk (idle {:.2} %, the profile {:.2} %)\n{}",
            100.0 * loaded.loss(),
            100.0 * idle.loss(),
            100.0 * own,
            mesh.logs()
        ))
    } else if loaded.p(99) > idle.p(99) + p99_slack_ms {
        // Loose: debug-build daemons on a shared two-core machine add tens of
        // milliseconds of scheduling noise (78 ms against 32 ms idle was seen on Wi-Fi).
        Some(format!(
            "{profile}: p99 {} ms beside bulk, {} ms idle",
            loaded.p(99),
            idle.p(99)
        ))
    } else if !rates.iter().any(|&r| r > 0.5) {
        Some(format!("{profile}: bulk did not flow: {rates:?}"))
    } else {
        None
    };
    (failure, timing)
}

#[test]
fn lte_control_loop_beside_bulk_between_real_daemons() {
    // A bulk queue that filled the 150 kB buffer would add 240 ms at 5 Mbit/s (the bare
    // link shows +225 ms at the p99 in docs/benchmarks.md).
    run("lte", 0.01, 100.0);
}

#[test]
fn wifi_control_loop_beside_bulk_between_real_daemons() {
    // 0.5 % loss plus the 100 ms outage every 10 s.
    run("wifi", 0.005 + 0.01, 60.0);
}
