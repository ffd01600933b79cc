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

/// A real `bauxite-dispatch serve` on loopback (its mesh node on the same port over
/// UDP). A hub binary that was not built fails the test.
pub struct Hub {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub child: Child,
    pub url: String,
}

impl Hub {
    pub fn start(dir: &Path) -> Self {
        let bin = Path::new(BAUXITE).with_file_name("bauxite-dispatch");
        assert!(
            bin.exists(),
            "{} not built; `cargo test --workspace` builds it (or `cargo build -p bauxite-dispatch`)",
            bin.display()
        );
        let data = dir.join("hub-data");
        let child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("hub.log")).unwrap())
            .spawn()
            .unwrap();
        let addr = wait_for(LIMIT, "hub.addr", || {
            let text = fs::read_to_string(data.join("hub.addr")).ok()?;
            let text = text.trim().to_string();
            (!text.is_empty()).then_some(text)
        });
        Self {
            bin,
            data,
            child,
            url: format!("https://{addr}"),
        }
    }

    /// Runs an admin command (retried until the hub answers); returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = wait_for(LIMIT, &format!("admin {args:?}"), || {
            let out = Command::new(&self.bin)
                .arg("--data-dir")
                .arg(&self.data)
                .args(args)
                .output()
                .ok()?;
            if out.status.success() {
                return Some(out);
            }
            let t = text(&out);
            // Only a hub that is not up yet is worth another try.
            assert!(
                t.contains("connect") || t.contains("hub.addr"),
                "admin {args:?}: {t}"
            );
            None
        });
        String::from_utf8(out.stdout).unwrap()
    }

    /// A join token for `name`.
    pub fn token(&self, name: &str) -> String {
        self.admin(&["token", "create", "--name", name])
            .trim()
            .to_string()
    }

    /// The repository's current `root.json` as published.
    pub fn root_json(&self) -> Vec<u8> {
        fs::read(self.data.join("updates/repo/metadata/root.json")).unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bauxite join` into `root` (loopback, control socket inside); returns the output.
pub fn join(hub: &Hub, token: &str, root: &Path, extra: &[&str]) -> Output {
    Command::new(BAUXITE)
        .args(["join", token, &hub.url, "--state-root"])
        .arg(root)
        .args(["--listen", "127.0.0.1:0", "--control-socket"])
        .arg(root.join("control.sock"))
        .args(extra)
        .output()
        .unwrap()
}

/// A joined robot: `join`, then the config switched to the in-memory device with
/// `updates` (TOML lines) as its `[updates]` section.
pub struct Robot {
    pub root: PathBuf,
    pub config: PathBuf,
    pub daemon: Option<Daemon>,
    starts: u32,
}

impl Robot {
    pub fn join(hub: &Hub, dir: &Path, name: &str, updates: &str) -> Self {
        let root = dir.join(name);
        let out = join(hub, &hub.token(name), &root, &[]);
        assert!(out.status.success(), "{}", text(&out));
        let config = root.join("config.toml");
        let text = fs::read_to_string(&config)
            .unwrap()
            .replace("[node]\n", "[node]\ndevice = \"memory\"\n");
        fs::write(&config, format!("{text}\n[updates]\n{updates}\n")).unwrap();
        Self {
            root,
            config,
            daemon: None,
            starts: 0,
        }
    }

    /// Starts the daemon and waits until its agent is connected to the hub.
    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.root.join(format!("run-{}.log", self.starts));
        let mut d = Daemon::start(&self.config, log);
        d.wait_running();
        self.daemon = Some(d);
        self.wait_status("the agent to reach the hub", |s| {
            s["hub_connected"].as_bool() == Some(true)
        });
    }

    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().unwrap()
    }

    pub fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    pub fn peer_id(&self) -> String {
        json(&self.config, &["status"])["peer_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn status(&self) -> serde_json::Value {
        json(&self.config, &["update", "status"])
    }

    /// Waits (bounded) until the update status satisfies `f`; returns it.
    pub fn wait_status(
        &mut self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let limit = Duration::from_secs(120);
        let mut last = serde_json::Value::Null;
        let config = self.config.clone();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(limit, what, || {
                if let Some(d) = self.daemon.as_mut()
                    && let Some(st) = d.child.try_wait().unwrap()
                {
                    panic!("daemon exited with {st}: {}", d.log());
                }
                let out = bauxite(&config, &["update", "status", "--json"]);
                if !out.status.success() {
                    return None;
                }
                last = serde_json::from_slice(&out.stdout).unwrap();
                f(&last).then(|| last.clone())
            })
        }));
        match found {
            Ok(v) => v,
            Err(_) => panic!(
                "waiting for {what}; last status {last:#}\nlog:\n{}",
                self.log()
            ),
        }
    }

    /// Waits until the history has `state` for `version`.
    pub fn wait_state(&mut self, state: &str, version: &str) -> serde_json::Value {
        self.wait_status(&format!("{state} of {version}"), |s| saw(s, state, version))
    }

    /// The version `current` points to.
    pub fn current(&self) -> Option<String> {
        fs::read_link(self.root.join("current"))
            .ok()
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
    }
}

/// Whether the status history has `state` for `version`.
pub fn saw(s: &serde_json::Value, state: &str, version: &str) -> bool {
    s["history"].as_array().is_some_and(|h| {
        h.iter()
            .any(|e| e["state"] == state && e["version"] == version)
    })
}

/// The states of `version` in the history, in order.
pub fn states(s: &serde_json::Value, version: &str) -> Vec<String> {
    s["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| e["version"] == version)
                .map(|e| e["state"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
