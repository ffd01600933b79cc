//! The documented path as a test: the quick start of docs/hub.md (and the hub block of
//! README.md, whose every command must be one of the quick start's) run *as written* — a
//! hub in one network namespace, two robots in two others on one bridge, each command
//! read from the documents and run by bash on the host its `# on ...` comment names.
//!
//! Only what differs between a lab and this machine is substituted: the paths (each host
//! sees its own directories at `/var/lib` and `/run` through bind mounts in a private
//! mount namespace, so `/var/lib/bauxite` and `/run/bauxite/control.sock` are used as
//! written), the addresses (`hub.example`, the example virtual IPs) and the token. No
//! flag is added: the robots reach each other with no `--advertise`, from the addresses
//! they report to the hub. `serve` and `run` are started in the background; every other
//! command must succeed. Then: status shows the hub connected, pings cross `bauxite0`
//! both ways, and the revocation stops robot-2's daemon with exit status 4 while robot-1
//! drops it. Without root the test prints SKIPPED; without the hub binary it fails.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::support::{BAUXITE, can_run, sh, wait_for};

const LIMIT: Duration = Duration::from_secs(40);
const BEGIN: &str = "<!-- quickstart: begin -->";
const END: &str = "<!-- quickstart: end -->";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One documented command and where it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    host: String,
    line: String,
}

/// The commands of every ```sh block in `text`, each with the host named by the last
/// `# on <host>` comment before it ("the hub" is `hub`).
fn steps(text: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut host = String::new();
    let mut in_sh = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && lang == "sh";
            continue;
        }
        if !in_sh || trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(rest) = comment.trim().strip_prefix("on ") {
                let name = rest.split([',', ':']).next().unwrap_or(rest).trim();
                host = name.trim_start_matches("the ").to_string();
            }
            continue;
        }
        assert!(!host.is_empty(), "a command before any `# on ...`: {line}");
        out.push(Step {
            host: host.clone(),
            line: trimmed.to_string(),
        });
    }
    out
}

/// The quick start section of docs/hub.md.
fn quickstart(hub_md: &str) -> &str {
    let start = hub_md.find(BEGIN).expect("docs/hub.md has a quick start") + BEGIN.len();
    let len = hub_md[start..].find(END).expect("the quick start ends");
    &hub_md[start..start + len]
}

/// The ```sh block of README.md that runs the hub: the first block with a line that
/// starts `bauxite-dispatch serve` (prose elsewhere may name the command too).
fn readme_hub_block(readme: &str) -> Vec<Step> {
    let at = readme
        .find("\nbauxite-dispatch serve ")
        .expect("README.md shows the hub");
    let start = readme[..at].rfind("```sh").expect("inside a sh block");
    let len = readme[start + 5..].find("```").expect("the block ends") + 5 + 3;
    steps(&readme[start..start + len])
}

/// Three namespaces: the hub on a bridge (10.79.0.1) and two robots (.2, .3) on it.
struct Lab {
    ns: [String; 3],
    addr: [Ipv4Addr; 3],
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}q{n}", std::process::id() % 1_000_000);
        let ns = [
            format!("bxq{tag}h"),
            format!("bxq{tag}1"),
            format!("bxq{tag}2"),
        ];
        let lab = Self {
            addr: [1, 2, 3].map(|h| Ipv4Addr::new(10, 79, 0, h)),
            ns,
            dir: tempfile::tempdir().unwrap(),
        };
        for ns in &lab.ns {
            sh("ip", &["netns", "add", ns]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let hub = &lab.ns[0];
        sh("ip", &["-n", hub, "link", "add", "br0", "type", "bridge"]);
        sh(
            "ip",
            &[
                "-n",
                hub,
                "addr",
                "add",
                &format!("{}/24", lab.addr[0]),
                "dev",
                "br0",
            ],
        );
        sh("ip", &["-n", hub, "link", "set", "br0", "up"]);
        for i in 1..3 {
            let (robot, port) = (format!("bxq{tag}v{i}"), format!("bxq{tag}p{i}"));
            sh(
                "ip",
                &["link", "add", &robot, "type", "veth", "peer", "name", &port],
            );
            sh("ip", &["link", "set", &robot, "netns", &lab.ns[i]]);
            sh("ip", &["link", "set", &port, "netns", hub]);
            sh(
                "ip",
                &["-n", hub, "link", "set", &port, "master", "br0", "up"],
            );
            let cidr = format!("{}/24", lab.addr[i]);
            sh(
                "ip",
                &["-n", &lab.ns[i], "addr", "add", &cidr, "dev", &robot],
            );
            sh("ip", &["-n", &lab.ns[i], "link", "set", &robot, "up"]);
        }
        for host in ["hub", "robot-1", "robot-2"] {
            for sub in ["var-lib", "run"] {
                fs::create_dir_all(lab.host_dir(host).join(sub)).unwrap();
            }
        }
        lab
    }

    fn index(host: &str) -> usize {
        match host {
            "hub" => 0,
            "robot-1" => 1,
            "robot-2" => 2,
            other => panic!("the docs name an unknown host {other:?}"),
        }
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    /// `bash -c line` on `host`: in its namespace, with its own `/var/lib` and `/run`,
    /// and the freshly built `bauxite` and `bauxite-dispatch` first on `PATH`.
    fn command(&self, host: &str, line: &str) -> Command {
        let dir = self.host_dir(host);
        let bin = Path::new(BAUXITE).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[Self::index(host)]])
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /var/lib && mount --bind "$2" /run && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(dir.join("var-lib"))
            .arg(dir.join("run"))
            .args(["bash", "-c", line])
            .env("PATH", path)
            .env_remove("BAUXITE_CONFIG")
            .env_remove("BAUXITE_DISPATCH_DATA_DIR")
            .env("RUST_LOG", "info");
        c
    }

    /// Runs a command to completion (bounded), panicking with its output on failure.
    fn run(&self, host: &str, line: &str) -> String {
        let out = self.output(host, line);
        assert!(
            out.status.success(),
            "`{line}` on {host} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn output(&self, host: &str, line: &str) -> Output {
        let mut child = self
            .command(host, line)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Outputs are a few lines: the pipes never fill while we wait.
        wait_for(LIMIT, &format!("`{line}` on {host} to finish"), || {
            child.try_wait().unwrap()
        });
        child.wait_with_output().unwrap()
    }

    /// Starts a long-running command, its output appended to `<host>.log`.
    fn spawn(&self, host: &str, line: &str) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(host))
            .unwrap();
        self.command(host, line)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log_path(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.log"))
    }

    fn logs(&self) -> String {
        ["hub", "robot-1", "robot-2"]
            .iter()
            .map(|h| {
                let log = fs::read_to_string(self.log_path(h)).unwrap_or_default();
                format!("--- {h} ---\n{log}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `bauxite status --json` on a robot (README.md shows `--json`), once it answers.
    fn status(&self, host: &str) -> Option<Value> {
        let out = self.output(host, "bauxite status --json");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.ns {
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

fn established_with(status: &Value, name: &str) -> bool {
    status["peers"].as_array().is_some_and(|peers| {
        peers
            .iter()
            .any(|p| p["name"] == name && p["established"] == true)
    })
}

fn lists(status: &Value, name: &str) -> bool {
    status["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().any(|p| p["name"] == name))
}

#[test]
fn the_documented_hub_path_runs_as_written() {
    let Some(_machine) = can_run() else {
        return;
    };
    // The docs call `bauxite-dispatch` by name (from PATH): it must have been built.
    crate::hub::dispatch_binary();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let hub_md = fs::read_to_string(docs.join("docs/hub.md")).unwrap();
    let readme = fs::read_to_string(docs.join("README.md")).unwrap();
    let plan = steps(quickstart(&hub_md));
    assert!(plan.len() >= 12, "the quick start lost commands: {plan:?}");
    // README.md's hub block is part of the quick start, command for command.
    for step in readme_hub_block(&readme) {
        assert!(
            plan.contains(&step),
            "README.md runs `{}` on {}, which docs/hub.md's quick start does not",
            step.line,
            step.host
        );
    }

    let lab = Lab::new();
    let hub_ip = lab.addr[0].to_string();
    let mut token = String::new();
    let mut daemons: Vec<(String, Child)> = Vec::new();
    let mut virtual_ips: Vec<(String, String)> = Vec::new();
    let mut revoked = String::new();
    for step in &plan {
        let mut line = step.line.replace("hub.example", &hub_ip);
        line = line.replace("<token>", &token);
        // The example virtual IPs stand for the ones `join` printed, in join order
        // (robot-1 is 100.64.0.2: the hub's own mesh node has 100.64.0.1). Two passes, so
        // an address put in never matches another example.
        for i in 0..virtual_ips.len() {
            line = line.replace(&format!("100.64.0.{}", i + 2), &format!("\0vip{i}\0"));
        }
        for (i, (_, vip)) in virtual_ips.iter().enumerate() {
            line = line.replace(&format!("\0vip{i}\0"), vip);
        }
        if line.contains("<node-id>") {
            // The quick start retires robot-2: its ID from `nodes list`.
            let listed = lab.run("hub", "bauxite-dispatch nodes list");
            revoked = listed
                .lines()
                .find(|l| l.trim_end().ends_with("robot-2"))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_else(|| panic!("robot-2 not in {listed}"))
                .to_string();
            line = line.replace("<node-id>", &revoked);
        }
        let host = step.host.as_str();
        if line.starts_with("bauxite-dispatch serve") || line == "bauxite run" {
            daemons.push((host.to_string(), lab.spawn(host, &line)));
            if line.starts_with("bauxite-dispatch serve") {
                wait_for(LIMIT, "hub.addr", || {
                    lab.host_dir("hub")
                        .join("var-lib/bauxite-dispatch/hub.addr")
                        .exists()
                        .then_some(())
                });
            }
            continue;
        }
        if line.starts_with("bauxite status") || line.starts_with("ping") {
            // Both robots run: wait (bounded) for their sessions before looking.
            for (robot, other) in [("robot-1", "robot-2"), ("robot-2", "robot-1")] {
                wait_for(LIMIT, &format!("{robot} to reach {other}"), || {
                    lab.status(robot)
                        .filter(|s| established_with(s, other))
                        .map(|_| ())
                });
            }
        }
        let out = lab.run(host, &line);
        if line.starts_with("bauxite-dispatch token create") {
            token = out.trim().to_string();
        }
        if line.starts_with("bauxite join") {
            let vip = out
                .split("with virtual IP ")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_else(|| panic!("no virtual IP in {out}"));
            virtual_ips.push((host.to_string(), vip.to_string()));
            // Nothing but what the docs show: no advertise in what join wrote.
            let config =
                fs::read_to_string(lab.host_dir(host).join("var-lib/bauxite/config.toml")).unwrap();
            assert!(!config.contains("advertise"), "{config}");
        }
        if line == "bauxite status" {
            assert!(out.contains("hub  connected to https://"), "{out}");
            assert!(out.contains("established"), "{out}");
            // Found through the addresses the robots reported, no advertise anywhere:
            // robot-1 is dialled at its bridge address, and reaches robot-2 directly.
            let i = Lab::index(host);
            let own = format!("{}:51820", lab.addr[i]);
            let json = lab.status(host).unwrap();
            let candidates = json["hub"]["candidates"].as_array().unwrap();
            assert!(candidates.iter().any(|c| c == &own), "{json}");
            let other = format!("direct {}:51820", lab.addr[3 - i]);
            assert!(
                json["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["path"] == other),
                "{json}"
            );
        }
    }
    assert!(!revoked.is_empty(), "the quick start revokes a robot");
    assert_eq!(virtual_ips.len(), 2);

    // robot-2's daemon stops on its own with exit status 4, saying why once.
    let (_, robot_2) = daemons
        .iter_mut()
        .find(|(h, _)| h == "robot-2")
        .expect("robot-2 ran");
    let status = wait_for(LIMIT, "robot-2's daemon to stop", || {
        robot_2.try_wait().unwrap()
    });
    let log = fs::read_to_string(lab.log_path("robot-2")).unwrap();
    assert_eq!(
        status.code(),
        Some(i32::from(bauxite::run_cmd::EXIT_REVOKED)),
        "{}",
        lab.logs()
    );
    assert_eq!(
        log.matches("error: this node was revoked").count(),
        1,
        "{log}"
    );
    // robot-1 drops it, and keeps its hub.
    wait_for(LIMIT, "robot-1 to drop robot-2", || {
        let status = lab.status("robot-1")?;
        (!lists(&status, "robot-2") && status["hub"]["state"] == "connected").then_some(())
    });
    let listed = lab.run("hub", "bauxite-dispatch nodes list");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&revoked) && l.contains("revoked")),
        "{listed}"
    );
    drop(daemons);
}

#[test]
fn steps_follow_the_host_comments() {
    let text = "```sh\n# on the hub\nbauxite-dispatch serve\n# on robot-1, with the token\nbauxite join <token> x\n\n```\n```text\nignored\n```\n```sh\n# on robot-2: why\nping -c 3 y\n```";
    let got = steps(text);
    let want = [
        ("hub", "bauxite-dispatch serve"),
        ("robot-1", "bauxite join <token> x"),
        ("robot-2", "ping -c 3 y"),
    ]
    .map(|(host, line)| Step {
        host: host.into(),
        line: line.into(),
    });
    assert_eq!(got, want);
}
