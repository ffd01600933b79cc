//! Real `bauxite` daemons for process tests: identities from `bauxite keygen`, configs
//! on the in-memory device (`device = "memory"`, so no root and no TUN even as root),
//! control-socket queries through the real binary, and waits with deadlines.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BAUXITE: &str = env!("CARGO_BIN_EXE_bauxite");
pub const LIMIT: Duration = Duration::from_secs(30);

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
#[allow(clippy::disallowed_methods)] // a test's deadline is wall time by nature
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `bauxite ARGS --config CONFIG`.
pub fn bauxite(config: &Path, args: &[&str]) -> Output {
    Command::new(BAUXITE)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// stdout and stderr of `out`, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `bauxite ARGS --json` parsed; panics with the output when it fails.
pub fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bauxite(config, &all);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)))
}

/// A node identity made by the real `bauxite keygen`; returns its `[[peers]]` entry
/// without the `virtual_ip` line (the caller adds it).
pub fn keygen(identity: &Path, name: &str) -> String {
    let out = Command::new(BAUXITE)
        .args(["keygen", "--identity"])
        .arg(identity)
        .args(["--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("virtual_ip"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `bauxite run`; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(BAUXITE)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            config: config.to_path_buf(),
            log,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon answers `status`; returns the report.
    pub fn wait_running(&mut self) -> serde_json::Value {
        wait_for(LIMIT, "the daemon to answer status", || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.log());
            }
            let out = bauxite(&self.config, &["status", "--json"]);
            out.status
                .success()
                .then(|| serde_json::from_slice(&out.stdout).unwrap())
        })
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = wait_for(LIMIT, "the daemon to stop", || {
            self.child.try_wait().unwrap()
        });
        assert!(status.success(), "{status}: {}", self.log());
    }

    /// SIGKILL, like a power cut.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[node]` section of a test node on loopback with the in-memory device.
pub fn node_section(identity: &Path, virtual_ip: &str, socket: &Path) -> String {
    format!(
        "[node]\nidentity = \"{}\"\nlisten = \"127.0.0.1:0\"\nvirtual_ip = \"{virtual_ip}\"\n\
         control_socket = \"{}\"\ndevice = \"memory\"\n",
        identity.display(),
        socket.display()
    )
}
