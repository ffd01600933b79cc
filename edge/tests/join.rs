//! `bauxite join` against a real `bauxite-dispatch serve` on loopback (no root): every
//! refused token — forged, wrong CA fingerprint, expired, reused — fails with the hub's
//! reason and writes nothing; a good token writes the identity (0600), the certificates
//! and a `config.toml` that `run` accepts; a joined state root is kept unless `--force`.
//!
//! Needs `target/<profile>/bauxite-dispatch` next to `bauxite` (`cargo build -p
//! bauxite-dispatch`, or any `cargo test --workspace`); without it the tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use support::{BAUXITE, LIMIT, wait_for};

struct Hub {
    bin: PathBuf,
    data: PathBuf,
    child: Child,
}

impl Hub {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`start`](Self::start) with more `serve` options.
    fn start_with(dir: &Path, extra: &[&str]) -> Self {
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
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { bin, data, child }
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
        wait_for(LIMIT, &format!("admin {args:?}"), || {
            let out = Command::new(&self.bin)
                .arg("--data-dir")
                .arg(&self.data)
                .args(args)
                .output()
                .ok()?;
            out.status.success().then_some(out)
        })
    }

    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        String::from_utf8(self.admin(&all).stdout)
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn join(token: &str, url: &str, root: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BAUXITE)
        .args(["join", token, url, "--state-root"])
        .arg(root)
        .args(["--name", "robot", "--listen", "127.0.0.1:0"])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `bauxite precheck` on a fake OS (os-release in `dir`) with this kernel release;
/// returns whether it exited 0, and its log.
/// `join` as docs/hub.md shows it (no `--name`: the token names the node), with a
/// control socket of the test's own; panics with the output unless it succeeds.
fn join_as_documented(token: &str, url: &str, root: &Path, socket: &Path) {
    let out = Command::new(BAUXITE)
        .args(["join", token, url, "--state-root"])
        .arg(root)
        .args(["--listen", "127.0.0.1:0", "--control-socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn precheck(config: &Path, dir: &Path, kernel: &str) -> (bool, String) {
    fs::write(dir.join("os-release"), "ID=ubuntu\n").unwrap();
    let out = Command::new(BAUXITE)
        .args(["precheck", "--config"])
        .arg(config)
        .arg("--os-release")
        .arg(dir.join("os-release"))
        .arg("--usr-lib-os-release")
        .arg(dir.join("absent"))
        .args(["--kernel-release", kernel])
        .env("BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bauxite run` on `config`. As root it runs in a network namespace of its own
/// (`unshare --net`), so its TUN device cannot collide with the host's; unprivileged it
/// uses the in-memory device. Killed on drop.
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

    /// `bauxite run` in the test's own network namespace (for the in-memory device).
    fn start_here(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(BAUXITE)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Waits until `bauxite status` answers through the control socket.
    fn wait_status(&mut self, config: &Path) -> String {
        wait_for(LIMIT, "the daemon to answer status", || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.log());
            }
            let out = Command::new(BAUXITE)
                .args(["status", "--json", "--config"])
                .arg(config)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
    }

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

/// Replaces the `i`th dot-separated part of a token.
fn with_part(token: &str, i: usize, f: impl Fn(&str) -> String) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[i] = f(&parts[i]);
    parts.join(".")
}

fn flip_first_hex(part: &str) -> String {
    let first = if part.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &part[1..])
}

#[test]
#[allow(clippy::disallowed_methods)] // compares with the hub's wall-clock expiry
fn refused_tokens_write_nothing_and_a_good_one_writes_a_runnable_state_root() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let url = hub.url();
    let root = dir.path().join("root");
    let refused_at = |token: &str, url: &str, expect: &str| {
        let (ok, out) = join(token, url, &root, &[]);
        assert!(!ok, "accepted: {out}");
        assert!(out.contains(expect), "expected {expect:?} in {out:?}");
        // One clear message: one line, the hub's reason once (no repeated causes).
        assert_eq!(out.trim().lines().count(), 1, "{out}");
        assert_eq!(out.matches(expect).count(), 1, "{out}");
        assert!(
            !out.contains("status:") && !out.contains("transport error"),
            "{out}"
        );
        assert!(!root.exists(), "a refused join wrote {}", root.display());
    };
    let refused = |token: &str, expect: &str| refused_at(token, &url, expect);

    let good = hub.token(&["--name", "robot"]);
    refused(
        &with_part(&good, 2, flip_first_hex),
        "no join token with this ID and secret",
    );
    refused(&with_part(&good, 3, flip_first_hex), "CA fingerprint");
    refused("bx1.not-a-token", "invalid join token");
    // The hub speaks only TLS: `http://` and scheme-less URLs are refused with the fix,
    // before the hub is contacted (the token is not spent: it joins below).
    let addr = url.trim_start_matches("https://");
    let fix = format!("use https://{addr}");
    refused_at(&good, &format!("http://{addr}"), &fix);
    refused_at(&good, addr, &fix);

    let short = hub.admin(&["token", "create", "--ttl", "1s"]);
    let short_token = String::from_utf8(short.stdout).unwrap().trim().to_string();
    let details = String::from_utf8(short.stderr).unwrap();
    let date = details.rsplit("expires ").next().unwrap_or_default().trim();
    let expires: u64 =
        time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| t.unix_timestamp().try_into().ok())
            .unwrap_or_else(|| panic!("no RFC 3339 expiry in {details:?}"));
    wait_for(LIMIT, "the short token to expire", || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        (now > expires).then_some(())
    });
    refused(&short_token, "expired at 20");

    // A file where the state root should be: refused before the hub is contacted, so
    // the hub registers nothing and the token is not spent (it joins below).
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, "not a directory").unwrap();
    for bad_root in [blocker.clone(), blocker.join("root")] {
        let (ok, out) = join(&good, &url, &bad_root, &[]);
        assert!(!ok && out.contains("is a file, not a directory"), "{out}");
    }
    let nodes = String::from_utf8(hub.admin(&["nodes", "list"]).stdout).unwrap();
    // The header and the hub's own mesh node: no robot.
    let robots = nodes.lines().skip(1).filter(|l| !l.contains(" hub "));
    assert_eq!(robots.count(), 0, "no robot registered: {nodes}");

    let (ok, out) = join(&good, &url, &root, &[]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("warning"),
        "join confirmed the registration: {out}"
    );
    let nodes = String::from_utf8(hub.admin(&["nodes", "list"]).stdout).unwrap();
    assert!(
        nodes.lines().any(|l| l.contains(" active ")),
        "confirmed by join: {nodes}"
    );
    let identity = root.join("identity/node.identity");
    let key = root.join("certs/node.key");
    for secret in [&identity, &key] {
        let mode = fs::metadata(secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", secret.display());
    }
    assert!(root.join("certs/ca.crt").exists() && root.join("certs/node.crt").exists());
    let config = root.join("config.toml");
    let run = bauxite::config::RunConfig::load(&config).unwrap();
    assert_eq!(run.identity, identity);
    assert_eq!(run.prefix, 10, "mesh prefix from the hub's 100.64.0.0/10");
    assert_eq!(run.hub.unwrap().certs_dir, root.join("certs"));
    let transport = bauxite::config::Config::load(&config).unwrap().transport;
    assert_eq!(transport.key_file, key);
    // `precheck` accepts the joined state root as it is (fake OS; no mount point in /tmp).
    let (ok, log) = precheck(&config, dir.path(), "6.8.0-100-generic");
    assert!(ok, "precheck on the joined root: {log}");

    // Reused token: refused, the joined state root untouched.
    let before = fs::read(&identity).unwrap();
    let (ok, out) = join(&good, &url, &root, &["--force"]);
    assert!(!ok && out.contains("already used"), "{out}");
    assert_eq!(fs::read(&identity).unwrap(), before);
    // A fresh token without --force: refused before contacting the hub.
    let fresh = hub.token(&[]);
    let (ok, out) = join(&fresh, &url, &root, &[]);
    assert!(!ok && out.contains("--force"), "{out}");
    assert_eq!(fs::read(&identity).unwrap(), before);
    // With --force: a new identity.
    let (ok, out) = join(&fresh, &url, &root, &["--force"]);
    assert!(ok, "{out}");
    assert_ne!(fs::read(&identity).unwrap(), before);
}

#[test]
fn a_joined_node_survives_a_kernel_change_and_its_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let url = hub.url();
    let root = dir.path().join("root");
    // As a new user does it: a named token, and `join` without `--name`.
    let token = hub.token(&["--name", "robot-9"]);
    join_as_documented(&token, &url, &root, &dir.path().join("control.sock"));
    let nodes = String::from_utf8(hub.admin(&["nodes", "list"]).stdout).unwrap();
    assert!(
        nodes.lines().any(|l| l.trim_end().ends_with("robot-9")),
        "the node takes the token's name: {nodes}"
    );
    let config = root.join("config.toml");

    let (ok, log) = precheck(&config, dir.path(), "6.8.0-100-generic");
    assert!(
        ok && log.contains("edge.os.fingerprint_initialized"),
        "{log}"
    );
    // The kernel is replaced: join installed no runtime manifest, so there is nothing to
    // reconstruct; precheck records the new OS and lets the daemon start.
    let (ok, log) = precheck(&config, dir.path(), "6.8.0-101-generic");
    assert!(ok, "precheck after a kernel change: {log}");
    assert!(
        log.contains("edge.os.update_detected") && log.contains("kernel_changed=true"),
        "{log}"
    );
    assert!(log.contains("edge.os.no_runtime_manifest"), "{log}");
    let epoch = Command::new(BAUXITE)
        .args(["fingerprint", "show", "--field", "boot_epoch", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&epoch.stdout).trim(), "1");

    let mut daemon = Daemon::start(&config, dir.path().join("run.log"));
    let status = daemon.wait_status(&config);
    assert!(status.contains("\"peers\""), "{status}");
    assert!(daemon.log().contains("bauxite running"), "{}", daemon.log());
}

#[test]
fn a_daemon_cut_off_from_its_hub_says_so_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let url = hub.url();
    let root = dir.path().join("root");
    let token = hub.token(&["--name", "robot-5"]);
    join_as_documented(&token, &url, &root, &dir.path().join("control.sock"));
    // The hub goes away before the daemon starts: it keeps trying, and status says since
    // when and why, in one line.
    drop(hub);
    let config = root.join("config.toml");
    let mut daemon = Daemon::start(&config, dir.path().join("run.log"));
    daemon.wait_status(&config);
    let hub_state = wait_for(LIMIT, "the hub state to be reconnecting", || {
        let out = Command::new(BAUXITE)
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (json["hub"]["state"] == "reconnecting").then(|| json["hub"].clone())
    });
    assert_eq!(hub_state["url"], url.as_str());
    let since = hub_state["since"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.contains('T'), "{since}");
    let error = hub_state["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("connect: could not connect to the hub"),
        "{error}"
    );
    assert!(
        !error.contains("transport error") && !error.contains('\n'),
        "{error}"
    );
    let text = Command::new(BAUXITE)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("hub  reconnecting to {url} since {since}"))),
        "{text}"
    );
}

#[test]
fn a_daemon_renews_a_certificate_inside_the_renewal_window_on_connect() {
    use bauxite_dispatch_api::pki::LeafFacts;
    let dir = tempfile::tempdir().unwrap();
    // Ten-minute certificates: a fresh one is already inside the renewal window (a third of
    // its validity, at least half of it for short ones), so the daemon renews at once.
    let hub = Hub::start_with(dir.path(), &["--node-cert-validity", "10m"]);
    let url = hub.url();
    let root = dir.path().join("root");
    let token = hub.token(&["--name", "robot-r"]);
    join_as_documented(&token, &url, &root, &dir.path().join("control.sock"));
    let config = root.join("config.toml");
    let certs = root.join("certs");
    let cert_path = certs.join("node.crt");
    let key_path = certs.join("node.key");
    let old_pem = fs::read_to_string(&cert_path).unwrap();
    let key_before = fs::read(&key_path).unwrap();
    let old = LeafFacts::from_pem(&old_pem).unwrap();

    // The in-memory device, in this network namespace: the daemon must reach the hub on
    // loopback (as root, `Daemon::start` would move it into a namespace of its own).
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("[node]\n", "[node]\ndevice = \"memory\"\n");
    fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start_here(&config, dir.path().join("run.log"));
    daemon.wait_status(&config);
    let new_pem = wait_for(LIMIT, "node.crt to be renewed on disk", || {
        let now = fs::read_to_string(&cert_path).ok()?;
        (now != old_pem).then_some(now)
    });
    let new = LeafFacts::from_pem(&new_pem).unwrap();
    assert!(new.not_after > old.not_after, "{new:?} vs {old:?}");
    assert_eq!(new.public_key, old.public_key, "same TLS key");
    assert_eq!(
        fs::read(&key_path).unwrap(),
        key_before,
        "node.key untouched"
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cert_path), 0o644);
    assert_eq!(mode(&key_path), 0o600);
    assert!(
        !cert_path.with_extension("tmp").exists(),
        "no temp file left"
    );
    // The hub audited it, and the daemon reconnected with the new certificate (the hub
    // refuses the old one for everything but renewal).
    let audit = String::from_utf8(hub.admin(&["audit", "show"]).stdout).unwrap();
    assert!(audit.contains("node.cert_renewed"), "{audit}");
    wait_for(LIMIT, "a connection after the renewal", || {
        let log = daemon.log();
        let renewed = log.find("hub certificate renewed")?;
        log.rfind("connected to the hub")
            .filter(|at| *at > renewed)
            .map(|_| ())
    });
    // `status` shows the certificate's expiry (whichever renewal is current by then).
    let expires = wait_for(LIMIT, "status to show the certificate", || {
        let out = Command::new(BAUXITE)
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let current = LeafFacts::from_pem(&fs::read_to_string(&cert_path).ok()?).ok()?;
        let expires = json["certificate"]["expires"].as_str()?.to_owned();
        let shown =
            time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
                .ok()?;
        (u64::try_from(shown.unix_timestamp()).ok()? == current.not_after).then_some(expires)
    });
    let text = Command::new(BAUXITE)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("cert valid until {expires}"))),
        "{text}"
    );
}
