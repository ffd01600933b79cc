//! `bauxite join` and `bauxite run` with a real `bauxite-dispatch` hub: the hub runs in
//! namespace `a` on the veth address (reachable from both namespaces), two nodes join with
//! tokens from the admin CLI, learn each other from the hub and ping over `bauxite0`; a
//! hub policy allowing only TCP drops (and counts) pings until it is replaced; a
//! reused token is refused and writes nothing; the hub is killed and restarted on the same
//! data dir and the nodes reconnect by themselves (both report metrics to the new hub, and
//! a revocation made *after* the restart reaches the other node); the revoked node's
//! daemon exits with status 4.
//!
//! The hub binary must sit next to `bauxite` (`cargo build -p bauxite-dispatch`, or any
//! `cargo test --workspace`); without it the test fails.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::support::{BAUXITE, NetPair, Node, PORT, can_run, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// The hub binary beside `bauxite`; a missing one fails the test rather than skip it, so
/// a build that forgot the hub cannot pass by testing nothing.
pub(crate) fn dispatch_binary() -> PathBuf {
    let path = Path::new(BAUXITE).with_file_name("bauxite-dispatch");
    assert!(
        path.exists(),
        "{} not built; `cargo test --workspace` builds it (or `cargo build -p bauxite-dispatch`)",
        path.display()
    );
    path
}

/// A `bauxite-dispatch serve` process in a namespace. Killed on drop.
pub(crate) struct Hub {
    bin: PathBuf,
    ns: String,
    pub(crate) data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// More `serve` arguments (TURN settings), on every spawn.
    extra: Vec<String>,
}

impl Hub {
    pub(crate) fn start(bin: &Path, ns: &str, dir: &Path, listen: &str) -> Self {
        Self::start_with(bin, ns, dir, listen, Vec::new())
    }

    /// Like [`start`](Self::start), with more `serve` arguments.
    pub(crate) fn start_with(
        bin: &Path,
        ns: &str,
        dir: &Path,
        listen: &str,
        extra: Vec<String>,
    ) -> Self {
        let mut hub = Self {
            bin: bin.to_path_buf(),
            ns: ns.to_string(),
            data: dir.join("hub-data"),
            log: dir.join("hub.log"),
            child: None,
            extra,
        };
        hub.spawn(listen);
        hub
    }

    pub(crate) fn spawn(&mut self, listen: &str) {
        assert!(self.child.is_none(), "hub already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .args([
                "serve",
                "--listen",
                listen,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&self.data)
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(fs::File::create(self.out()).unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The hub's stdout (this run's only).
    pub(crate) fn out(&self) -> PathBuf {
        self.data.with_file_name("hub.out")
    }

    /// `GET /metrics` from the hub (inside its namespace), once it serves it.
    fn scrape(&self, net: &NetPair) -> Option<String> {
        let out = fs::read_to_string(self.out()).ok()?;
        let addr = out
            .lines()
            .find_map(|l| l.strip_prefix("metrics on http://"))?
            .trim_end_matches("/metrics")
            .to_string();
        net.within(0, || {
            let mut s = TcpStream::connect(&addr).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        })
    }

    /// The address in `hub.addr` once the hub has written it.
    pub(crate) fn addr(&self) -> String {
        wait_for(LIMIT, "hub.addr", || {
            let text = fs::read_to_string(self.data.join("hub.addr")).ok()?;
            let text = text.trim().to_string();
            (!text.is_empty()).then_some(text)
        })
    }

    /// An admin command (retried until the hub answers); its stdout.
    pub(crate) fn admin(&self, args: &[&str]) -> String {
        wait_for(LIMIT, &format!("hub admin {args:?}"), || {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.ns])
                .arg(&self.bin)
                .arg("--data-dir")
                .arg(&self.data)
                .args(args)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `bauxite join` in namespace `ns` (with `--advertise` when given); the command's output
/// and success.
pub(crate) fn join(
    ns: &str,
    token: &str,
    url: &str,
    root: &Path,
    name: &str,
    advertise: Option<&str>,
) -> (bool, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            BAUXITE,
            "join",
            token,
            url,
            "--state-root",
        ])
        .arg(root)
        .args(["--name", name, "--listen", &format!("0.0.0.0:{PORT}")])
        .args(advertise.map(|a| ["--advertise", a]).into_iter().flatten())
        .arg("--control-socket")
        .arg(root.join("control.sock"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The node ID from `joined as <id> with ...`.
pub(crate) fn node_id(join_output: &str) -> String {
    join_output
        .split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .unwrap_or_else(|| panic!("no node id in {join_output:?}"))
        .to_string()
}

fn peer_names(status: &Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn established_with(node: &Node, name: &str) -> Option<()> {
    let status = node.status()?;
    status["peers"]
        .as_array()?
        .iter()
        .any(|p| p["name"] == name && p["established"] == true)
        .then_some(())
}

#[test]
fn nodes_join_learn_each_other_survive_a_hub_restart_and_revocation() {
    let Some(_machine) = can_run() else {
        return;
    };
    let bin = dispatch_binary();
    let net = NetPair::new();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(&bin, &net.ns[0], dir.path(), &format!("{}:0", net.addr[0]));
    let hub_addr = hub.addr();
    let url = format!("https://{hub_addr}");

    let names = ["a", "b"];
    let roots = names.map(|n| dir.path().join(n));
    let mut ids = Vec::new();
    for i in 0..2 {
        let token = hub.admin(&["token", "create", "--name", names[i]]);
        let advertise = net.endpoint(i).to_string();
        let (ok, out) = join(
            &net.ns[i],
            &token,
            &url,
            &roots[i],
            names[i],
            Some(&advertise),
        );
        assert!(ok, "join {}: {out}\n--- hub ---\n{}", names[i], hub.log());
        ids.push(node_id(&out));
        if i == 0 {
            // The token is single-use: a second join is refused and writes nothing.
            let spare = dir.path().join("reused");
            let (ok, out) = join(&net.ns[1], &token, &url, &spare, "reused", Some(&advertise));
            assert!(!ok, "a reused token was accepted: {out}");
            assert!(out.contains("already used"), "{out}");
            assert!(!spare.exists(), "a refused join wrote {}", spare.display());
            // And a joined state root is not overwritten without --force.
            let (ok, out) = join(&net.ns[0], &token, &url, &roots[0], "a", Some(&advertise));
            assert!(!ok && out.contains("--force"), "{out}");
        }
        let mode = fs::metadata(roots[i].join("identity/node.identity"))
            .unwrap()
            .permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
    }

    let mut nodes = [0, 1].map(|i| {
        Node::from_config(
            &net.ns[i],
            roots[i].join("config.toml"),
            dir.path().join(format!("{}.log", names[i])),
        )
    });
    let logs = |hub: &Hub| {
        format!(
            "--- a ---\n{}\n--- b ---\n{}\n--- hub ---\n{}",
            nodes[0].log(),
            nodes[1].log(),
            hub.log()
        )
    };
    for i in 0..2 {
        let other = names[1 - i];
        wait_for(
            LIMIT,
            &format!("{} to reach {other} through the hub", names[i]),
            || established_with(&nodes[i], other),
        );
    }
    assert!(net.ping(1, &vip_of(&nodes[0]), 2), "b -> a\n{}", logs(&hub));
    assert!(net.ping(0, &vip_of(&nodes[1]), 2), "a -> b\n{}", logs(&hub));

    // A hub policy allowing only TCP reaches the nodes: pings are dropped and counted.
    let policy = dir.path().join("tcp-only.json");
    fs::write(&policy, r#"{"rules": [{"protocol": "tcp"}]}"#).unwrap();
    hub.admin(&["policy", "set", policy.to_str().unwrap()]);
    wait_for(LIMIT, "the TCP-only policy to drop pings", || {
        let before = nodes[0].counter("policy_denied");
        (!net.ping(0, &vip_of(&nodes[1]), 1) && nodes[0].counter("policy_denied") > before)
            .then_some(())
    });
    fs::write(&policy, r#"{"default": "allow"}"#).unwrap();
    hub.admin(&["policy", "set", policy.to_str().unwrap()]);
    wait_for(LIMIT, "the allow-all policy to let pings through", || {
        net.ping(0, &vip_of(&nodes[1]), 1).then_some(())
    });

    // The hub dies and comes back on the same data dir and port.
    hub.kill9();
    hub.spawn(&hub_addr);
    let listed = hub.admin(&["nodes", "list"]);
    assert!(
        listed.contains(&ids[0]) && listed.contains(&ids[1]),
        "{listed}"
    );

    // Both nodes report their counters to the new hub (its counters start from zero).
    wait_for(
        LIMIT,
        "both nodes' ReportMetrics at the restarted hub",
        || {
            let text = hub.scrape(&net)?;
            ids.iter()
                .all(|id| text.contains(&format!("bauxite_node_metric{{node=\"{id}\"")))
                .then_some(())
        },
    );

    // A revocation made after the restart reaches `a`: its topology stream is back.
    hub.admin(&["nodes", "revoke", &ids[1]]);
    wait_for(LIMIT, "a to drop the revoked b", || {
        let status = nodes[0].status()?;
        (!peer_names(&status).contains(&"b".to_string())).then_some(())
    });
    // The revoked node is refused, says so once, and its daemon stops with exit status 4
    // (which bauxite.service does not restart).
    let status = nodes[1].wait_exit_status();
    let log = nodes[1].log();
    assert_eq!(
        status.code(),
        Some(i32::from(bauxite::run_cmd::EXIT_REVOKED)),
        "{log}\n--- hub ---\n{}",
        hub.log()
    );
    assert!(log.contains("revoked by the hub"), "{log}");
    assert_eq!(
        log.matches("error: this node was revoked").count(),
        1,
        "one clear message: {log}"
    );
    assert!(
        !net.ping(0, &vip_of(&nodes[1]), 1),
        "a still reaches the revoked b"
    );
}

/// A node's virtual IP, from the config `join` wrote.
pub(crate) fn vip_of(node: &Node) -> String {
    let text = fs::read_to_string(&node.config).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("virtual_ip = \""))
        .and_then(|v| v.split('/').next())
        .unwrap()
        .to_string()
}
