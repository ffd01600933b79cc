//! `bauxite join` against a real `bauxite-dispatch serve` on loopback (no root): every
//! refused token — forged, wrong CA fingerprint, expired, reused — fails with the hub's
//! reason and writes nothing; a good token writes the identity (0600), the certificates
//! and a `config.toml` that `run` accepts; a joined state root is kept unless `--force`.
//!
//! Needs `target/<profile>/bauxite-dispatch` next to `bauxite` (`cargo build -p
//! bauxite-dispatch`, or any `cargo test --workspace`); without it the test prints SKIPPED.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BAUXITE: &str = env!("CARGO_BIN_EXE_bauxite");
const LIMIT: Duration = Duration::from_secs(30);

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
#[allow(clippy::disallowed_methods)] // a test's deadline is wall time by nature
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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

struct Hub {
    bin: PathBuf,
    data: PathBuf,
    child: Child,
}

impl Hub {
    fn start(dir: &Path) -> Option<Self> {
        let bin = Path::new(BAUXITE).with_file_name("bauxite-dispatch");
        if !bin.exists() {
            eprintln!(
                "SKIPPED: {} not built; run `cargo build -p bauxite-dispatch` first",
                bin.display()
            );
            return None;
        }
        let data = dir.join("hub-data");
        let child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Self { bin, data, child })
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
    let Some(hub) = Hub::start(dir.path()) else {
        return;
    };
    let url = hub.url();
    let root = dir.path().join("root");
    let refused = |token: &str, expect: &str| {
        let (ok, out) = join(token, &url, &root, &[]);
        assert!(!ok, "accepted: {out}");
        assert!(out.contains(expect), "expected {expect:?} in {out:?}");
        assert!(!root.exists(), "a refused join wrote {}", root.display());
    };

    let good = hub.token(&["--name", "robot"]);
    refused(&with_part(&good, 2, flip_first_hex), "wrong secret");
    refused(&with_part(&good, 3, flip_first_hex), "CA fingerprint");
    refused("bx1.not-a-token", "invalid join token");

    let short = hub.admin(&["token", "create", "--ttl", "1s"]);
    let short_token = String::from_utf8(short.stdout).unwrap().trim().to_string();
    let details = String::from_utf8(short.stderr).unwrap();
    let expires: u64 = details
        .rsplit("(unix ")
        .next()
        .and_then(|s| s.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no expiry in {details:?}"));
    wait_for(LIMIT, "the short token to expire", || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        (now > expires).then_some(())
    });
    refused(&short_token, "expired");

    let (ok, out) = join(&good, &url, &root, &[]);
    assert!(ok, "{out}");
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
    fs::write(dir.path().join("os-release"), "ID=ubuntu\n").unwrap();
    let precheck = Command::new(BAUXITE)
        .args(["precheck", "--config"])
        .arg(&config)
        .arg("--os-release")
        .arg(dir.path().join("os-release"))
        .arg("--usr-lib-os-release")
        .arg(dir.path().join("absent"))
        .args(["--kernel-release", "6.8.0-100-generic"])
        .env("BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        precheck.status.success(),
        "precheck on the joined root: {}",
        String::from_utf8_lossy(&precheck.stderr)
    );

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
