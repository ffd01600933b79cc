//! Test fixtures: a pair of network namespaces joined by a veth pair, `bauxite run`
//! daemons inside them, and helpers to open sockets in a namespace and to wait on a
//! daemon's status with a deadline.
//!
//! Every fixture is an RAII guard: daemons are killed and namespaces deleted in `Drop`,
//! so a failing assertion (a panic) cleans up too. Names carry the process ID and a
//! counter, so tests run in parallel and a crashed earlier run cannot collide.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use serde_json::Value;

/// The daemon under test.
pub(crate) const BAUXITE: &str = env!("CARGO_BIN_EXE_bauxite");
/// The UDP port every node listens on.
pub(crate) const PORT: u16 = 51820;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The machine, shared by the tests that only check behaviour and held alone by those
/// that measure time: a debug-build mesh beside another test's daemons on a two-core
/// machine lags by tens of milliseconds (CI saw the LTE loop's p99 at +230 ms while the
/// Wi-Fi test ran beside it), which is the machine, not the data plane.
static MACHINE: RwLock<()> = RwLock::new(());

/// A test's claim on the machine, shared or alone, released when dropped.
pub(crate) enum Claim {
    Shared {
        _guard: RwLockReadGuard<'static, ()>,
    },
    Alone {
        _guard: RwLockWriteGuard<'static, ()>,
    },
}

fn is_root() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: network-namespace tests need root (CI runs them as root)");
        return false;
    }
    true
}

/// Whether these tests can run (prints why not); the claim, shared with other tests, is
/// held for the test's length.
pub(crate) fn can_run() -> Option<Claim> {
    // A panicking test poisons nothing that needs repair: the lock guards no data.
    is_root().then(|| Claim::Shared {
        _guard: MACHINE.read().unwrap_or_else(PoisonError::into_inner),
    })
}

/// As [`can_run`], for a test that measures latency: it waits until no other test runs
/// and keeps the machine to itself.
pub(crate) fn can_run_alone() -> Option<Claim> {
    is_root().then(|| Claim::Alone {
        _guard: MACHINE.write().unwrap_or_else(PoisonError::into_inner),
    })
}

/// Runs a command, panicking with its output if it fails.
pub(crate) fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (run scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads nftables script `script` in namespace `ns` (`nft -f -`), panicking with nft's
/// complaint and the script if it is refused.
pub(crate) fn nft(ns: &str, script: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run nft (run scripts/setup.sh)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {ns}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
pub(crate) fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(limit, what, f, String::new)
}

/// [`wait_for`], and on timeout the panic message adds `explain()` (logs read then).
#[allow(clippy::disallowed_methods)] // a test's deadline is wall time by nature
pub(crate) fn wait_for_or<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two namespaces, `a` (10.N.0.1) and `b` (10.N.0.2), joined by a veth pair.
pub(crate) struct NetPair {
    /// Namespace names.
    pub(crate) ns: [String; 2],
    /// veth interface names inside each namespace.
    pub(crate) veth: [String; 2],
    /// Underlay addresses.
    pub(crate) addr: [Ipv4Addr; 2],
}

impl NetPair {
    /// Creates the namespaces and the link.
    pub(crate) fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 1_000_000);
        let pair = Self {
            ns: [format!("bxt{tag}a"), format!("bxt{tag}b")],
            veth: [format!("bxv{tag}a"), format!("bxv{tag}b")],
            addr: [Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)],
        };
        for ns in &pair.ns {
            sh("ip", &["netns", "add", ns]);
        }
        let [va, vb] = &pair.veth;
        sh(
            "ip",
            &["link", "add", va, "type", "veth", "peer", "name", vb],
        );
        for i in 0..2 {
            let (ns, veth) = (&pair.ns[i], &pair.veth[i]);
            sh("ip", &["link", "set", veth, "netns", ns]);
            let cidr = format!("{}/24", pair.addr[i]);
            sh("ip", &["-n", ns, "addr", "add", &cidr, "dev", veth]);
            sh("ip", &["-n", ns, "link", "set", veth, "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// The UDP endpoint of the node in namespace `i`.
    pub(crate) fn endpoint(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.addr[i], PORT))
    }

    /// Runs `f` on a thread inside namespace `i` (sockets it opens stay in it).
    pub(crate) fn within<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns[i]);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = fs::File::open(&path).unwrap();
                move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// `ping` from namespace `i` to `dst`: true if `count` replies came back.
    pub(crate) fn ping(&self, i: usize, dst: &str, count: u32) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns[i], "ping", "-n", "-q"])
            .args(["-c", &count.to_string(), "-i", "0.2", "-W", "2", dst])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in &self.ns {
            // Anything still running inside (a daemon a panicking test left) goes first.
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

/// A node's keys as printed by `bauxite keygen`.
#[derive(Clone)]
pub(crate) struct Keys {
    /// The identity file.
    pub(crate) path: PathBuf,
    /// The `[[peers]]` entry, with `virtual_ip` still to fill in.
    pub(crate) entry: String,
}

/// Creates an identity with the real `bauxite keygen` and keeps its printed entry.
pub(crate) fn keygen(dir: &Path, name: &str) -> Keys {
    let path = dir.join(format!("{name}.key"));
    let out = sh(
        BAUXITE,
        &[
            "keygen",
            "--identity",
            path.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    let entry = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" #").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    Keys { path, entry }
}

/// One `bauxite run` daemon in a namespace. Killed on drop.
pub(crate) struct Node {
    /// Namespace it runs in.
    pub(crate) ns: String,
    /// Its config file.
    pub(crate) config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// What a node's config needs beyond its keys.
pub(crate) struct NodeSpec<'a> {
    /// Directory for config, socket and log.
    pub(crate) dir: &'a Path,
    /// A name for files.
    pub(crate) name: &'a str,
    /// Its identity.
    pub(crate) keys: &'a Keys,
    /// Its virtual IP.
    pub(crate) vip: &'a str,
    /// Peers: their keys, virtual IP and endpoint.
    pub(crate) peers: Vec<(&'a Keys, &'a str, SocketAddr)>,
    /// Optional `metrics_listen`.
    pub(crate) metrics: Option<&'a str>,
}

impl Node {
    /// Writes the config and starts the daemon in namespace `ns`.
    pub(crate) fn start(ns: &str, spec: &NodeSpec<'_>) -> Self {
        let config = spec.dir.join(format!("{}.toml", spec.name));
        let mut text = format!(
            "[node]\nidentity = \"{}\"\nlisten = \"0.0.0.0:{PORT}\"\nvirtual_ip = \"{}/10\"\ncontrol_socket = \"{}\"\nkeepalive_secs = 1\nrekey_timeout_secs = 1\n",
            spec.keys.path.display(),
            spec.vip,
            spec.dir.join(format!("{}.sock", spec.name)).display(),
        );
        if let Some(m) = spec.metrics {
            text.push_str(&format!("metrics_listen = \"{m}\"\n"));
        }
        for (keys, vip, endpoint) in &spec.peers {
            let entry = keys.entry.replace("100.64.0.X", vip);
            text.push_str(&format!("\n{entry}\nendpoint = \"{endpoint}\"\n"));
        }
        fs::write(&config, text).unwrap();
        let mut node = Self {
            ns: ns.to_string(),
            config,
            log: spec.dir.join(format!("{}.log", spec.name)),
            child: None,
        };
        node.restart();
        node
    }

    /// Starts a daemon from an existing config (one `bauxite join` wrote), logging to `log`.
    pub(crate) fn from_config(ns: &str, config: PathBuf, log: PathBuf) -> Self {
        let mut node = Self {
            ns: ns.to_string(),
            config,
            log,
            child: None,
        };
        node.restart();
        node
    }

    /// Starts (again) the daemon with the same config and identity.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, BAUXITE, "run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The daemon's process ID (`ip netns exec` execs it in place).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// `bauxite status --json`, or `None` while the daemon is not answering.
    pub(crate) fn status(&self) -> Option<Value> {
        let out = Command::new(BAUXITE)
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// A counter from the status report (panics if the daemon does not answer).
    pub(crate) fn counter(&self, name: &str) -> u64 {
        let status = wait_for(Duration::from_secs(10), "status", || self.status());
        status["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {status}"))
    }

    /// Waits until the daemon reports a session with its first peer.
    pub(crate) fn wait_established(&self, limit: Duration) {
        wait_for(limit, &format!("a session on {}", self.ns), || {
            let s = self.status()?;
            s["peers"][0]["established"].as_bool()?.then_some(())
        });
    }

    /// Waits until `counter` exceeds `above`.
    pub(crate) fn wait_counter_above(&self, counter: &str, above: u64) -> u64 {
        wait_for(Duration::from_secs(10), counter, || {
            let v = self.counter(counter);
            (v > above).then_some(v)
        })
    }

    /// SIGKILL, no cleanup by the daemon.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with success.
    pub(crate) fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = Pid::from_child(&child);
        kill_process(pid, Signal::TERM).unwrap();
        let status = wait_for(Duration::from_secs(10), "exit after SIGTERM", || {
            child.try_wait().unwrap()
        });
        status.success()
    }

    /// Waits (bounded) for the daemon to exit on its own; returns whether it succeeded.
    pub(crate) fn wait_exit(&mut self) -> bool {
        self.wait_exit_status().success()
    }

    /// Waits (bounded) for the daemon to exit on its own; returns its exit status.
    pub(crate) fn wait_exit_status(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node not running");
        wait_for(Duration::from_secs(20), "the daemon to exit", || {
            child.try_wait().unwrap()
        })
    }

    /// The daemon's log so far (for failure messages).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
