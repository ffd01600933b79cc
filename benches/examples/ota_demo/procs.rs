//! The demonstration's real processes: the hub (`bauxite-dispatch serve`), the robot's
//! daemon (`bauxite run` after `bauxite join`), and the commands that drive them. Every
//! child is killed when its owner is dropped and its pid is appended to `pids` in the
//! work directory, so `run.sh`'s trap can end it even if this process is killed first.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Wall-clock milliseconds since the epoch: the clock the daemon's history uses.
#[allow(clippy::disallowed_methods)] // the orchestrator is an IO shell
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Calls `f` every `every` until it gives `Some`, or fails after `limit`.
#[allow(clippy::disallowed_methods)] // a deadline is wall time by nature
pub(crate) fn wait_for<T>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// stdout and stderr of `out`, for error messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Peak resident set (`VmHWM`) of a live process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Binaries and directories every process shares.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) bauxite: PathBuf,
    pub(crate) dispatch: PathBuf,
    pub(crate) work: PathBuf,
    /// Where the hub listens (`127.0.0.1:0`, or an address in a namespace).
    pub(crate) hub_listen: String,
    /// Where the robot's daemon listens (`127.0.0.1:0` on loopback).
    pub(crate) robot_listen: String,
    /// A program and arguments every hub-side command runs under (e.g. `ip netns exec
    /// hubns`, which execs in place, so pids and `/proc` stay the real process's).
    pub(crate) hub_wrap: Vec<String>,
    /// The same for robot-side commands that use the network (`join`, `run`).
    pub(crate) robot_wrap: Vec<String>,
}

/// `program` under `wrap` (nothing when empty).
pub(crate) fn wrapped(wrap: &[String], program: &Path) -> Command {
    match wrap.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

impl Env {
    fn spawn(&self, cmd: &mut Command, log: &Path) -> Result<Child> {
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut pids = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("pids"))?;
        writeln!(pids, "{}", child.id())?;
        Ok(child)
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log's tail when the process has exited.
    pub(crate) fn check_alive(&mut self, what: &str) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{what} exited with {status}; last log lines ({}):\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// `kill -9`: the power cut.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (the daemon shuts down cleanly), then waits for the exit.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(20),
            "the daemon to stop",
            || Ok(self.child.try_wait()?),
        )?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hub: `bauxite-dispatch serve` on loopback, data dir in the work directory.
#[derive(Debug)]
pub(crate) struct Hub {
    env: Env,
    data: PathBuf,
    pub(crate) proc: Proc,
    pub(crate) url: String,
}

impl Hub {
    pub(crate) fn start(env: &Env) -> Result<Self> {
        let data = env.work.join("hub");
        let log = env.work.join("hub.log");
        let child = env.spawn(
            wrapped(&env.hub_wrap, &env.dispatch)
                .args(["serve", "--listen", &env.hub_listen, "--data-dir"])
                .arg(&data),
            &log,
        )?;
        let mut proc = Proc { child, log };
        let addr = wait_for(
            Duration::from_secs(60),
            Duration::from_millis(50),
            "the hub to write hub.addr",
            || {
                proc.check_alive("the hub")?;
                let t = fs::read_to_string(data.join("hub.addr")).unwrap_or_default();
                let t = t.trim();
                Ok((!t.is_empty()).then(|| t.to_owned()))
            },
        )?;
        Ok(Self {
            env: env.clone(),
            data,
            proc,
            url: format!("https://{addr}"),
        })
    }

    /// Runs an admin command; returns its stdout.
    pub(crate) fn admin(&self, args: &[&str]) -> Result<String> {
        let out = wrapped(&self.env.hub_wrap, &self.env.dispatch)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("bauxite-dispatch {}: {}", args.join(" "), text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The robot: a state root joined to the hub, and its daemon when running.
#[derive(Debug)]
pub(crate) struct Robot {
    env: Env,
    pub(crate) root: PathBuf,
    pub(crate) config: PathBuf,
    base_config: String,
    pub(crate) daemon: Option<Proc>,
    starts: u32,
}

impl Robot {
    /// `bauxite join` with a fresh token; the config is switched to the in-memory device.
    pub(crate) fn join(env: &Env, hub: &Hub, name: &str) -> Result<Self> {
        let token = hub.admin(&["token", "create", "--name", name])?;
        let root = env.work.join(name);
        let out = wrapped(&env.robot_wrap, &env.bauxite)
            .args(["join", token.trim(), &hub.url, "--state-root"])
            .arg(&root)
            .args(["--listen", &env.robot_listen, "--control-socket"])
            .arg(root.join("control.sock"))
            .output()?;
        if !out.status.success() {
            bail!("bauxite join: {}", text(&out));
        }
        let config = root.join("config.toml");
        let base_config =
            fs::read_to_string(&config)?.replacen("[node]\n", "[node]\ndevice = \"memory\"\n", 1);
        Ok(Self {
            env: env.clone(),
            root,
            config,
            base_config,
            daemon: None,
            starts: 0,
        })
    }

    /// Starts `bauxite run` with `updates` as its `[updates]` section, and waits until
    /// its update agent is connected to the hub.
    pub(crate) fn start(&mut self, updates: &str) -> Result<()> {
        fs::write(
            &self.config,
            format!("{}\n[updates]\n{updates}\n", self.base_config),
        )?;
        self.starts += 1;
        let log = self.root.join(format!("run-{}.log", self.starts));
        let child = self.env.spawn(
            wrapped(&self.env.robot_wrap, &self.env.bauxite)
                .args(["run", "--config"])
                .arg(&self.config),
            &log,
        )?;
        self.daemon = Some(Proc { child, log });
        wait_for(
            Duration::from_secs(60),
            Duration::from_millis(50),
            "the robot's update agent to reach the hub",
            || {
                self.check_alive()?;
                Ok(self
                    .try_json(&["update", "status"])
                    .filter(|s| s["hub_connected"] == true)
                    .map(|_| ()))
            },
        )
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.daemon.as_mut() {
            Some(d) => d.check_alive("the robot's daemon"),
            None => bail!("the robot's daemon is not running"),
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Proc::pid)
    }

    pub(crate) fn stop(&mut self) -> Result<()> {
        if let Some(mut d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill9();
        }
    }

    /// Runs `bauxite ARGS --config C`.
    pub(crate) fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(&self.env.bauxite)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()?)
    }

    /// `bauxite ARGS --json`, parsed; `None` while the daemon does not answer.
    pub(crate) fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all).ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `bauxite ARGS --json`, parsed; an error with the output when it fails.
    pub(crate) fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all)?;
        if !out.status.success() {
            bail!("bauxite {}: {}", all.join(" "), text(&out));
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("bauxite {}: {}", all.join(" "), text(&out)))
    }

    /// The version `current` points to.
    pub(crate) fn current(&self) -> Option<String> {
        fs::read_link(self.root.join("current"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The agent's recordings so far.
    pub(crate) fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.root.join("forge/recordings"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for Robot {
    fn drop(&mut self) {
        // The daemon first (its Proc kills it), then its state root: 3 GiB images each.
        self.daemon = None;
        let _ = fs::remove_dir_all(&self.root);
    }
}
