//! Two `bauxite-dispatch serve` replicas on one real PostgreSQL (a throwaway cluster), and
//! a real `bauxite run` daemon that lists both (`[hub] urls`): a policy set on the replica
//! the node is not connected to reaches it; killing the node's replica (SIGKILL) moves it
//! to the other within seconds, and everything the dead replica acknowledged (the node's
//! provisioning, the policy, the audit chain) is served by the survivor.
//!
//! Needs `target/<profile>/bauxite-dispatch` next to `bauxite` (`cargo build -p
//! bauxite-dispatch`) and Debian's `postgresql` (scripts/setup.sh); without PostgreSQL the
//! test prints SKIPPED.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../../dispatch/tests/support/pg_cluster.rs"]
mod pg_cluster;

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{BAUXITE, LIMIT, wait_for};

use pg_cluster::PgCluster;

fn dispatch_bin() -> PathBuf {
    let bin = Path::new(BAUXITE).with_file_name("bauxite-dispatch");
    assert!(
        bin.exists(),
        "{} not built; `cargo build -p bauxite-dispatch`",
        bin.display()
    );
    bin
}

/// One replica: `serve --postgres` on its own data dir; killed on drop.
struct Replica {
    data: PathBuf,
    child: Child,
}

impl Replica {
    fn start(data: &Path, postgres: &str) -> Self {
        let log = fs::File::create(data.with_extension("log")).unwrap();
        let child = Command::new(dispatch_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("BAUXITE_DISPATCH_POSTGRES", postgres)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let replica = Self {
            data: data.to_path_buf(),
            child,
        };
        replica.url();
        replica
    }

    fn url(&self) -> String {
        let addr = wait_for(LIMIT, "hub.addr", || {
            let text = fs::read_to_string(self.data.join("hub.addr")).ok()?;
            let text = text.trim().to_string();
            (!text.is_empty()).then_some(text)
        });
        format!("https://{addr}")
    }

    fn admin(&self, args: &[&str]) -> Output {
        let out = Command::new(dispatch_bin())
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8(self.admin(args).stdout).unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys every replica shares: the first replica's data dir, without its runtime files.
fn copy_keys(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _ = fs::remove_file(to.join("hub.addr"));
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's `hub` status once it is connected to `url`.
fn connected_to(config: &Path, url: &str, daemon: &mut Daemon) {
    wait_for(LIMIT, &format!("the node connected to {url}"), || {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("daemon exited with {status}: {}", daemon.log());
        }
        let out = Command::new(BAUXITE)
            .args(["status", "--json", "--config"])
            .arg(config)
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (json["hub"]["state"] == "connected" && json["hub"]["url"] == url).then_some(())
    });
}

/// How many times the daemon logged receiving policy `version`.
fn policy_seen(daemon: &Daemon, version: u64) -> usize {
    daemon
        .log()
        .matches(&format!("policy from the hub version={version} "))
        .count()
}

fn set_policy(replica: &Replica, dir: &Path, port: u16) -> String {
    let file = dir.join(format!("policy-{port}.json"));
    fs::write(
        &file,
        format!(r#"{{"rules": [{{"protocol": "udp", "ports": "{port}"}}]}}"#),
    )
    .unwrap();
    replica.stdout(&["policy", "set", file.to_str().unwrap()])
}

#[test]
fn killing_a_hub_replica_moves_its_node_to_another_and_loses_nothing() {
    let Some(pg) = PgCluster::start() else { return };
    let postgres = pg.create_db("fleet");
    let dir = tempfile::tempdir().unwrap();
    let a_data = dir.path().join("replica-a");
    let a = Replica::start(&a_data, &postgres);
    let b_data = dir.path().join("replica-b");
    copy_keys(&a_data, &b_data);
    let b = Replica::start(&b_data, &postgres);
    let (a_url, b_url) = (a.url(), b.url());

    // Joined through A; B listed as the other replica; the in-memory device, so the
    // daemon reaches the replicas on this namespace's loopback.
    let token =
        String::from_utf8(a.admin(&["token", "create", "--name", "robot-7"]).stdout).unwrap();
    let root = dir.path().join("root");
    let out = Command::new(BAUXITE)
        .args(["join", token.trim(), &a_url, "--state-root"])
        .arg(&root)
        .args(["--listen", "127.0.0.1:0", "--control-socket"])
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config = root.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    let line = format!("url = \"{a_url}\"\n");
    assert!(text.contains(&line), "{text}");
    let text = text
        .replace(&line, &format!("{line}urls = [\"{b_url}\"]\n"))
        .replace("[node]\n", "[node]\ndevice = \"memory\"\n");
    fs::write(&config, text).unwrap();
    assert!(set_policy(&a, dir.path(), 5001).contains("policy version 1 set"));

    let log = dir.path().join("run.log");
    let mut daemon = Daemon {
        child: Command::new(BAUXITE)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    connected_to(&config, &a_url, &mut daemon);
    wait_for(LIMIT, "policy 1 on the node", || {
        (policy_seen(&daemon, 1) > 0).then_some(())
    });

    // A change on B reaches the node connected to A (NOTIFY, then A's own feed).
    assert!(set_policy(&b, dir.path(), 5002).contains("policy version 2 set"));
    wait_for(LIMIT, "policy 2 set on B to reach the node on A", || {
        (policy_seen(&daemon, 2) > 0).then_some(())
    });

    // A dies without a goodbye: the node moves to B, which serves it everything.
    drop(a);
    let killed = Instant::now();
    connected_to(&config, &b_url, &mut daemon);
    let moved = killed.elapsed();
    assert!(moved < Duration::from_secs(10), "moved after {moved:?}");
    wait_for(LIMIT, "policy 2 from B on the new connection", || {
        (policy_seen(&daemon, 2) >= 2).then_some(())
    });
    let nodes = b.stdout(&["nodes", "list"]);
    let robot = nodes
        .lines()
        .find(|l| l.trim_end().ends_with("robot-7"))
        .unwrap_or_else(|| panic!("B lists the node provisioned on A: {nodes}"));
    assert!(robot.contains("active"), "{robot}");
    assert!(b.stdout(&["policy", "show"]).contains("# version 2"));
    let audit = b.stdout(&["audit", "verify"]);
    assert!(audit.contains("audit log OK"), "{audit}");
    let entries = b.stdout(&["audit", "show"]);
    for action in [
        "token.create",
        "node.provision",
        "node.confirm",
        "policy.set",
    ] {
        assert!(entries.contains(action), "{action} in {entries}");
    }
    // And B goes on serving it.
    assert!(set_policy(&b, dir.path(), 5003).contains("policy version 3 set"));
    wait_for(LIMIT, "policy 3 on the node", || {
        (policy_seen(&daemon, 3) > 0).then_some(())
    });
    eprintln!("node moved to the surviving replica in {moved:?}");
}
