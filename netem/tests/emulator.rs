//! The `bauxite-linkemu` binary with real traffic: three network namespaces per test (side
//! A, side B, and the emulator's own), real ICMP, TCP (iperf3) and UDP. Each bound comes
//! from the model's parameters plus the emulator's own measured lateness (it reports how
//! late it wrote each packet); waits are on conditions with deadlines. Namespaces and the
//! emulator are removed even when an assertion fails. Without root the tests print
//! SKIPPED and pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)] // deadlines on the wall clock, around real processes

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

const A: &str = "10.77.0.1";
const B: &str = "10.77.0.2";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn can_run() -> bool {
    let root = rustix::process::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if !(root && ip) {
        eprintln!("SKIPPED: needs root and iproute2");
    }
    root && ip
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two sides joined by the emulator running in a third namespace.
struct Lab {
    ns: [String; 3],
    emu: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// When the test read `ready`: the profile's clock started at or before this.
    ready: Instant,
}

impl Lab {
    fn new(emu_args: &[&str]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("lem{}n{n}", std::process::id() % 1_000_000);
        let ns = [format!("{tag}a"), format!("{tag}b"), format!("{tag}m")];
        for name in &ns {
            sh("ip", &["netns", "add", name]);
            sh("ip", &["-n", name, "link", "set", "lo", "up"]);
            // No IPv6 chatter (router solicitations, MLD): counts stay exact.
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    name,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
        }
        let mut args: Vec<&str> = vec![
            "netns",
            "exec",
            &ns[2],
            env!("CARGO_BIN_EXE_bauxite-linkemu"),
            "--netns-a",
            &ns[0],
            "--netns-b",
            &ns[1],
            "--addr-a",
            "10.77.0.1/30",
            "--addr-b",
            "10.77.0.2/30",
        ];
        args.extend_from_slice(emu_args);
        let mut emu = Command::new("ip")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = emu.stdin.take();
        let stdout = emu.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lab = Self {
            ns,
            emu: Some(emu),
            stdin,
            lines,
            ready: Instant::now(),
        };
        let first = lab.lines.recv_timeout(Duration::from_secs(20));
        assert_eq!(first.as_deref(), Ok("ready"), "the emulator did not start");
        lab.ready = Instant::now();
        lab
    }

    /// Closes the emulator's stdin and returns its counters.
    fn stop(&mut self) -> serde_json::Value {
        drop(self.stdin.take());
        let line = self.lines.recv_timeout(Duration::from_secs(20)).unwrap();
        if let Some(mut emu) = self.emu.take() {
            assert!(emu.wait().unwrap().success());
        }
        serde_json::from_str(&line).unwrap()
    }

    /// Asks the running emulator for its counters so far (a line on its stdin).
    fn snapshot(&mut self) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("running");
        stdin.write_all(b"\n").and_then(|()| stdin.flush()).unwrap();
        let line = self.lines.recv_timeout(Duration::from_secs(20)).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Runs `f` on a thread inside side `side`'s namespace (sockets it opens stay there).
    fn within<T: Send>(&self, side: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns[side]);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Datagrams side `side`'s kernel dropped because a UDP socket's receive buffer was
    /// full (`RcvbufErrors` in its `/proc/net/snmp`): the host's losses, not the model's.
    fn udp_rcvbuf_errors(&self, side: usize) -> u64 {
        let snmp = sh(
            "ip",
            &["netns", "exec", &self.ns[side], "cat", "/proc/net/snmp"],
        );
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
        let column = names
            .split_whitespace()
            .position(|n| n == "RcvbufErrors")
            .unwrap();
        values
            .split_whitespace()
            .nth(column)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A UDP socket on side `side`'s address, on a free port.
    fn udp(&self, side: usize) -> UdpSocket {
        let ip = [A, B][side];
        self.within(side, || UdpSocket::bind(format!("{ip}:0")).unwrap())
    }

    /// `ping` from side A to B: every reply's RTT, in order.
    fn ping_each(&self, count: u32, interval: &str) -> Vec<Duration> {
        let c = count.to_string();
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns[0],
                "ping",
                "-n",
                "-c",
                &c,
                "-i",
                interval,
                "-W",
                "5",
                B,
            ],
        );
        out.lines()
            .filter_map(|l| l.split_once("time=").map(|(_, t)| t))
            .map(|t| {
                let ms: f64 = t.trim_end_matches(" ms").parse().unwrap();
                Duration::from_secs_f64(ms / 1000.0)
            })
            .collect()
    }

    /// `ping` from side A to B: (min, max) RTT of the replies, which must be at least
    /// `least`.
    fn ping(&self, count: u32, least: u32, interval: &str) -> (Duration, Duration) {
        let c = count.to_string();
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns[0],
                "ping",
                "-q",
                "-n",
                "-c",
                &c,
                "-i",
                interval,
                "-W",
                "5",
                B,
            ],
        );
        let rtt = out
            .lines()
            .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.starts_with("rtt")))
            .unwrap_or_else(|| panic!("no RTT in {out}"))
            .1;
        // `a/b/c/d ms`, with `, pipe N` after it when replies overlapped.
        let ms: Vec<f64> = rtt
            .split(" ms")
            .next()
            .unwrap()
            .split('/')
            .map(|v| v.parse().unwrap())
            .collect();
        let d = |ms: f64| Duration::from_secs_f64(ms / 1000.0);
        let received: u32 = out
            .split(", ")
            .find_map(|p| p.strip_suffix(" received"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no reply count in {out}"));
        assert!(received >= least, "{out}");
        (d(ms[0]), d(ms[2]))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut emu) = self.emu.take() {
            let _ = emu.kill();
            let _ = emu.wait();
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn lateness_max(stats: &serde_json::Value) -> Duration {
    Duration::from_secs_f64(stats["lateness"]["max_us"].as_f64().unwrap() / 1e6)
}

/// The `q` quantile of `rtts`. Upper bounds are checked on a high quantile, not the
/// maximum: the model can only add delay, so the floor holds for every packet, but a
/// ping that the host scheduled late (a loaded machine) says nothing about the model.
fn quantile(rtts: &[Duration], q: f64) -> Duration {
    let mut sorted = rtts.to_vec();
    sorted.sort();
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or_default()
}

/// Allowance for the two kernel stacks and ping itself, beyond the model and the
/// emulator's own lateness.
const STACK: Duration = Duration::from_millis(2);

#[test]
fn configured_delay_and_jitter_show_in_ping_rtts() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&["--delay-ms", "15", "--jitter-ms", "2", "--seed", "3"]);
    let rtts = lab.ping_each(30, "0.05");
    let stats = lab.stop();
    assert_eq!(rtts.len(), 30, "{stats}");
    // Each way takes 15 ± 2 ms in the model, plus however late the emulator wrote it.
    let min = rtts.iter().min().copied().unwrap_or_default();
    assert!(min >= Duration::from_millis(26), "min RTT {min:?}");
    let bound = Duration::from_millis(34) + 2 * lateness_max(&stats) + STACK;
    let p90 = quantile(&rtts, 0.9);
    assert!(
        p90 <= bound,
        "p90 RTT {p90:?} above {bound:?}: {rtts:?} {stats}"
    );
}

#[test]
fn rate_limit_caps_tcp_goodput() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&[
        "--rate-kbit",
        "8000",
        "--buffer-bytes",
        "60000",
        "--delay-ms",
        "5",
    ]);
    let mut server = Command::new("ip")
        .args(["netns", "exec", &lab.ns[1], "iperf3", "-s", "-1", "-B", B])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The server is up once a client connects; retry until then, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &lab.ns[0], "iperf3", "-c", B, "-t", "4", "-J",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "iperf3 never connected");
        std::thread::yield_now();
    };
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let stats = lab.stop();
    // The rate counts IP bytes; TCP payload is 1448 of each 1500, and slow start and the
    // final drain take a little of the 4 s.
    assert!(bps <= 8_000_000.0, "{bps} bit/s above the rate");
    assert!(bps >= 0.8 * 8_000_000.0, "{bps} bit/s: {stats}");
}

#[test]
fn blackout_drops_everything_during_it() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&["--blackout", "0+2000"]);
    let rx = lab.udp(1);
    let tx = lab.udp(0);
    let to: SocketAddr = rx.local_addr().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Within the first second after `ready`: inside the blackout, whatever the delay
    // between the emulator starting its clock and this process reading `ready`.
    for i in 0..100u32 {
        tx.send_to(&i.to_be_bytes(), to).unwrap();
    }
    assert!(lab.ready.elapsed() < Duration::from_secs(1));
    // The blackout ends 2 s after the clock started, at the latest 2 s after `ready`.
    let after = lab.ready + Duration::from_millis(2100);
    std::thread::sleep(after.saturating_duration_since(Instant::now()));
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    for i in 100..200u32 {
        tx.send_to(&i.to_be_bytes(), to).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        got.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
    }
    assert_eq!(got, (100..200).collect::<Vec<_>>());
    let stats = lab.stop();
    assert_eq!(stats["a_to_b"]["blackout"], 100, "{stats}");
    assert_eq!(stats["a_to_b"]["written"], 100, "{stats}");
    // Each delivery is timed once, by its direction's thread: the write's own duration
    // and its lateness; the top-level distributions are both directions'.
    let delivered = |d: &str| {
        stats[d]["written"].as_u64().unwrap() + stats[d]["write_errors"].as_u64().unwrap()
    };
    for d in ["a_to_b", "b_to_a"] {
        assert_eq!(stats[d]["writes"]["packets"], delivered(d), "{stats}");
        assert_eq!(stats[d]["lateness"]["packets"], delivered(d), "{stats}");
    }
    let both = delivered("a_to_b") + delivered("b_to_a");
    assert_eq!(stats["writes"]["packets"], both, "{stats}");
    assert_eq!(stats["lateness"]["packets"], both, "{stats}");
}

/// A line on stdin prints the counters so far, marked as a snapshot, and the emulator
/// goes on; the bytes written between two snapshots are the IP packets that crossed
/// (a UDP payload plus 28 bytes of headers), which is how `benches/netns/links.sh`
/// measures a flow's share of the link.
#[test]
fn snapshots_count_the_bytes_that_crossed_between_two_moments() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&[]);
    let rx = lab.udp(1);
    let tx = lab.udp(0);
    let to: SocketAddr = rx.local_addr().unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let mut send = |count: usize, size: usize| {
        for _ in 0..count {
            tx.send_to(&vec![7u8; size], to).unwrap();
            assert_eq!(rx.recv(&mut buf).unwrap(), size, "delivered whole");
        }
    };
    send(50, 100);
    let first = lab.snapshot();
    send(30, 200);
    let second = lab.snapshot();
    let last = lab.stop();
    let a_to_b = |v: &serde_json::Value, key: &str| v["a_to_b"][key].as_u64().unwrap();
    assert_eq!(first["snapshot"], true, "{first}");
    assert_eq!(
        (a_to_b(&first, "written"), a_to_b(&first, "written_bytes")),
        (50, 50 * 128),
        "{first}"
    );
    assert_eq!(
        (
            a_to_b(&second, "written") - a_to_b(&first, "written"),
            a_to_b(&second, "written_bytes") - a_to_b(&first, "written_bytes")
        ),
        (30, 30 * 228),
        "{second}"
    );
    assert!(
        last.get("snapshot").is_none(),
        "the final report is not one: {last}"
    );
    assert_eq!(a_to_b(&last, "written_bytes"), 50 * 128 + 30 * 228);
    let at = |v: &serde_json::Value| v["at_us"].as_u64().unwrap();
    assert!(at(&first) <= at(&second) && at(&second) <= at(&last));
    assert!(
        last["capacity_bits"].is_null(),
        "an unlimited link has no capacity"
    );
}

/// A snapshot's capacity is the profile's rate integrated since its clock started: on
/// an 8 Mbit/s link, `at_us` × 8 bits.
#[test]
fn snapshots_carry_the_capacity_so_far() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&["--rate-kbit", "8000"]);
    let snap = lab.snapshot();
    let at = snap["at_us"].as_u64().unwrap() as f64;
    let bits = snap["capacity_bits"].as_f64().unwrap();
    assert!((bits - at * 8.0).abs() < 8.0, "{snap}");
    lab.stop();
}

#[test]
fn gilbert_elliott_loss_gives_its_mean_in_bursts() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&["--loss", "0.05", "--loss-burst", "4", "--seed", "11"]);
    let rx = lab.udp(1);
    let tx = lab.udp(0);
    let to = rx.local_addr().unwrap();
    let n = 10_000u32;
    let host_drops_before = lab.udp_rcvbuf_errors(1);
    let received = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            rx.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut seqs = Vec::new();
            let mut buf = [0u8; 16];
            // Until the sender's last datagram is through or nothing more comes.
            while let Ok(len) = rx.recv(&mut buf) {
                let seq = u32::from_be_bytes(buf[..len].try_into().unwrap());
                seqs.push(seq);
                if seq == n - 1 {
                    break;
                }
            }
            seqs
        });
        for i in 0..n {
            tx.send_to(&i.to_be_bytes(), to).unwrap();
            if i % 16 == 0 {
                // Paced so neither the TUN queue nor the receiver's socket overflows.
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        reader.join().unwrap()
    });
    let host_drops = lab.udp_rcvbuf_errors(1) - host_drops_before;
    let stats = lab.stop();
    let lost = stats["a_to_b"]["lost"].as_u64().unwrap();
    assert_eq!(stats["a_to_b"]["received"], u64::from(n), "{stats}");
    // What reached the socket is exactly what the model let through, if the last one did,
    // less what the receiving kernel dropped with the socket's buffer full (a late
    // emulator writes a burst: seen once, 34 of 9543).
    if received.last() == Some(&(n - 1)) {
        assert_eq!(
            received.len() as u64 + host_drops,
            u64::from(n) - lost,
            "{stats}, {host_drops} dropped by the receiving kernel"
        );
    }
    // Bursty losses are correlated (rho = 1 - 1/4 - 0.013): the standard error of the
    // mean over 10 000 packets is about 0.0056; 4 sigma.
    let mean = lost as f64 / f64::from(n);
    assert!((mean - 0.05).abs() < 0.0224, "mean loss {mean}");
    // Bursts, from the gaps in the sequence numbers (in order: no reordering).
    let (mut bursts, mut prev) = (0u32, None);
    for &seq in &received {
        let expect = prev.map_or(0, |p: u32| p + 1);
        bursts += u32::from(seq > expect);
        prev = Some(seq);
    }
    let burst = lost as f64 / f64::from(bursts.max(1));
    assert!((2.5..6.0).contains(&burst), "mean burst {burst}");
}

#[test]
fn buffer_depth_bounds_the_queueing_delay() {
    if !can_run() {
        return;
    }
    // 25 000 bytes at 2 Mbit/s: at most 100 ms of queue.
    let mut lab = Lab::new(&[
        "--rate-kbit",
        "2000",
        "--buffer-bytes",
        "25000",
        "--delay-ms",
        "5",
    ]);
    let rx = lab.udp(1);
    let tx = lab.udp(0);
    let to = rx.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let (started_tx, started) = mpsc::channel();
    let (min, max) = std::thread::scope(|s| {
        s.spawn(|| {
            // About 9.6 Mbit/s of 1200-byte datagrams, nearly 5x the rate, until the
            // pings are done; the queue stays full.
            let payload = [0u8; 1172];
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) && sent < 20_000 {
                let _ = tx.send_to(&payload, to);
                sent += 1;
                if sent == 200 {
                    let _ = started_tx.send(());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // The flood stops when this scope ends, even if an assertion fails in it.
        let _stop = StopOnDrop(&stop);
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        // Drop-tail: a ping that meets a full buffer is lost like the flood's datagrams.
        lab.ping(40, 5, "0.05")
    });
    let stats = lab.stop();
    assert!(stats["a_to_b"]["buffer"].as_u64().unwrap() > 0, "{stats}");
    // The queue shows: a ping waits behind a nearly full buffer (at least 95 ms of it).
    assert!(min >= Duration::from_millis(80), "min RTT {min:?}: {stats}");
    // And is bounded by it: 2 x 5 ms, 100 ms of buffer, the ping's own serialisation.
    let bound = Duration::from_millis(111) + 2 * lateness_max(&stats) + STACK;
    assert!(max <= bound, "max RTT {max:?} above {bound:?}: {stats}");
    // The flood's receiver lived to here, so B never answered it with ICMP errors.
    drop(rx);
}

#[test]
fn trace_file_steps_the_delay() {
    if !can_run() {
        return;
    }
    // 1 s at 5 ms each way, 1 s at 30 ms, repeating.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steps.trace");
    std::fs::write(
        &path,
        "# time_ms rate_kbit delay_ms\n0 100000 5\n1000 100000 30\nperiod 2000\n",
    )
    .unwrap();
    let mut lab = Lab::new(&["--trace", path.to_str().unwrap()]);
    let rtts = lab.ping_each(150, "0.02");
    let stats = lab.stop();
    let slack = 2 * lateness_max(&stats) + STACK;
    assert!(rtts.len() >= 145, "{} replies: {stats}", rtts.len());
    // Every RTT is one of the two steps' (or a mix at a step boundary): within
    // [2 x 5 ms, 2 x 30 ms + slack]; and both steps show.
    for rtt in &rtts {
        assert!(*rtt >= Duration::from_millis(10), "{rtt:?}");
    }
    let p90 = quantile(&rtts, 0.9);
    assert!(
        p90 <= Duration::from_millis(60) + slack,
        "p90 {p90:?}: {rtts:?} {stats}"
    );
    let low = rtts
        .iter()
        .filter(|r| **r <= Duration::from_millis(10) + slack)
        .count();
    let high = rtts
        .iter()
        .filter(|r| **r >= Duration::from_millis(60))
        .count();
    assert!(
        low >= 20 && high >= 20,
        "{low} at 10 ms, {high} at 60 ms: {rtts:?}"
    );
}

#[test]
fn lte_profile_keeps_rtts_within_its_delay_range() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(&["--profile", "lte", "--seed", "5"]);
    let rtts = lab.ping_each(100, "0.02");
    let stats = lab.stop();
    assert!(rtts.len() >= 90, "{} replies: {stats}", rtts.len());
    // One way: 20-40 ms base, ±5 ms jitter, an idle buffer (84-byte pings).
    let min = rtts.iter().min().copied().unwrap_or_default();
    assert!(min >= Duration::from_millis(30), "min RTT {min:?}");
    let bound = Duration::from_millis(90) + 2 * lateness_max(&stats) + STACK;
    let p90 = quantile(&rtts, 0.9);
    assert!(
        p90 <= bound,
        "p90 RTT {p90:?} above {bound:?}: {rtts:?} {stats}"
    );
}
