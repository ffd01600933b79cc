//! `bauxite run` start-up refusals, through the real binary (no hub, no root needed):
//! a second daemon on the same node is refused while the first runs, naming its PID; a
//! private key others can read is refused at start with `chmod 600 PATH` instead of a
//! reconnect loop; an unwritable control-socket directory is reported as such.
//!
//! As root every daemon runs in a network namespace of its own (`unshare --net`), so a TUN
//! device it creates cannot collide with the host's or another test's; unprivileged the
//! daemons use the in-memory device. Waits poll with a deadline; nothing sleeps and hopes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use support::{BAUXITE, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// A static-mesh node: an identity from the real `bauxite keygen` and a config.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(extra: &str) -> Self {
        let setup = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let identity = setup.p("identity/node.identity");
        let out = Command::new(BAUXITE)
            .args(["keygen", "--identity"])
            .arg(&identity)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let config = format!(
            "[node]\nidentity = \"{}\"\nlisten = \"127.0.0.1:0\"\nvirtual_ip = \"100.64.0.1/10\"\ncontrol_socket = \"{}\"\n{extra}",
            identity.display(),
            setup.p("control.sock").display()
        );
        fs::write(setup.p("config.toml"), config).unwrap();
        setup
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.p("config.toml")
    }

    fn start(&self, log: &str) -> Daemon {
        Daemon::start(&self.config(), self.p(log))
    }
}

/// One `bauxite run`; killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: PathBuf) -> Self {
        let mut command = if rustix::process::geteuid().is_root() {
            let mut c = Command::new("unshare");
            c.args(["--net", BAUXITE]);
            c
        } else {
            Command::new(BAUXITE)
        };
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon answers `status` on `config`'s control socket.
    fn wait_running(&mut self, config: &Path) {
        wait_for(LIMIT, "the daemon to answer status", || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.log());
            }
            Command::new(BAUXITE)
                .args(["status", "--config"])
                .arg(config)
                .output()
                .ok()?
                .status
                .success()
                .then_some(())
        });
    }

    /// Waits for the daemon to exit on its own; returns its status and log.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        let status = wait_for(LIMIT, "the daemon to exit", || {
            self.child.try_wait().unwrap()
        });
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_second_daemon_on_the_same_node_is_refused_while_the_first_runs() {
    for state_root in [false, true] {
        let setup = Setup::new("");
        if state_root {
            // With `[state_root]` the lock lives there (as for a joined node).
            fs::create_dir(setup.p("state")).unwrap();
            let mut text = fs::read_to_string(setup.config()).unwrap();
            text.push_str(&format!(
                "\n[state_root]\nroot = \"{}\"\n",
                setup.p("state").display()
            ));
            fs::write(setup.config(), text).unwrap();
        }
        let lock = if state_root {
            setup.p("state/run.lock")
        } else {
            setup.p("identity/node.identity.lock")
        };
        let mut first = setup.start("first.log");
        first.wait_running(&setup.config());
        let log = first.log();
        assert!(log.contains("bauxite running"), "{log}");
        assert!(!log.contains('\x1b'), "colour codes in a log file: {log:?}");

        let mut second = setup.start("second.log");
        let (status, log) = second.wait_exit();
        assert!(!status.success(), "second daemon ran: {log}");
        assert!(
            log.contains("already running this node")
                && log.contains(&format!("pid {}", first.pid()))
                && log.contains(&lock.display().to_string()),
            "refusal names the holder and the lock: {log}"
        );
        // The refused daemon did not take over the control socket.
        first.wait_running(&setup.config());

        // The kernel drops the lock with its holder, even on SIGKILL.
        drop(first);
        let mut third = setup.start("third.log");
        third.wait_running(&setup.config());
    }
}

#[test]
fn an_identity_readable_by_others_is_refused_at_start() {
    let setup = Setup::new("");
    let identity = setup.p("identity/node.identity");
    fs::set_permissions(&identity, fs::Permissions::from_mode(0o644)).unwrap();
    let (status, log) = setup.start("run.log").wait_exit();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("chmod 600 {}", identity.display())) && log.contains("644"),
        "{log}"
    );
}

#[test]
fn a_node_key_readable_by_others_is_refused_at_start_not_retried() {
    let setup = Setup::new("");
    let certs = setup.p("certs");
    fs::create_dir(&certs).unwrap();
    fs::write(certs.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    fs::write(certs.join("node.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let key = certs.join("node.key");
    fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let mut text = fs::read_to_string(setup.config()).unwrap();
    // An unreachable hub: before, the daemon looped "hub connection lost; reconnecting".
    text.push_str(&format!(
        "\n[hub]\nurl = \"https://127.0.0.1:9\"\ncerts_dir = \"{}\"\n",
        certs.display()
    ));
    fs::write(setup.config(), text).unwrap();
    let (status, log) = setup.start("run.log").wait_exit();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("chmod 600 {}", key.display())),
        "{log}"
    );
    assert!(!log.contains("reconnecting"), "{log}");
}

#[test]
fn an_unwritable_default_control_socket_names_the_real_reason() {
    // Unprivileged, as a new user runs it: no `control_socket`, so the default under
    // /run/bauxite, which this user may not create. As root the daemon is started as
    // `nobody` (setpriv), with the node's files handed to that user.
    let setup = Setup::new("");
    let text = fs::read_to_string(setup.config())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("control_socket"))
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(setup.config(), text).unwrap();
    let log = setup.p("run.log");
    let mut command = if rustix::process::geteuid().is_root() {
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(setup.dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let mut c = Command::new("unshare");
        c.args([
            "--net",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BAUXITE,
        ]);
        c
    } else {
        Command::new(BAUXITE)
    };
    let child = command
        .args(["run", "--config"])
        .arg(setup.config())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (status, log) = Daemon { child, log }.wait_exit();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("/run/bauxite")
            && log.contains("Permission denied")
            && log.contains("node.control_socket")
            && log.contains("run as root"),
        "{log}"
    );
    assert!(!log.contains("stale"), "{log}");
}
