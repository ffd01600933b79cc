//! The real `bauxite` binary: every precheck exit code, the tools, and the systemd units.
// Test support helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bauxite");

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    /// A config, a 365-day cert, a key pair, a fake OS and a signed empty manifest.
    fn new() -> Self {
        let n = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        n.write_config(&n.p("state"));
        n.ok(&[
            "cert",
            "self-signed",
            "--days",
            "365",
            "--cert-out",
            &n.s("node.crt"),
            "--key-out",
            &n.s("node.key"),
        ]);
        n.ok(&["keygen", "--raw", "--out-dir", &n.s("keys")]);
        n.set_os("ubuntu", "6.8.0-100-generic");
        n
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    fn write_config(&self, root: &Path) {
        let cfg = format!(
            "[state_root]\nroot = \"{}\"\n\n[transport]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
            root.display(),
            self.s("node.crt"),
            self.s("node.key"),
            self.s("node.crt")
        );
        fs::write(self.p("config.toml"), cfg).unwrap();
    }

    fn set_os(&self, id: &str, kernel: &str) {
        fs::write(self.p("os-release"), format!("ID={id}\n")).unwrap();
        fs::write(self.p("kernel"), kernel).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK", "1")
            .env("BAUXITE_CONFIG", self.p("config.toml"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs precheck on the fake OS; returns (exit code, stderr).
    fn precheck(&self) -> (i32, String) {
        let kernel = fs::read_to_string(self.p("kernel")).unwrap();
        let out = self.cmd(&[
            "precheck",
            "--os-release",
            &self.s("os-release"),
            "--usr-lib-os-release",
            &self.s("absent"),
            "--kernel-release",
            &kernel,
        ]);
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn install_key_and_manifest(&self) {
        fs::create_dir_all(self.p("state/identity")).unwrap();
        fs::create_dir_all(self.p("state/runtime/binaries")).unwrap();
        fs::copy(
            self.p("keys/manifest-verify.pub"),
            self.p("state/identity/manifest-verify.pub"),
        )
        .unwrap();
        fs::write(
            self.p("state/runtime/manifest.json"),
            r#"{"version":"1","binary_path":"edged","operations":[]}"#,
        )
        .unwrap();
        self.ok(&[
            "manifest",
            "sign",
            &self.s("state/runtime/manifest.json"),
            "--key",
            &self.s("keys/manifest-verify.key"),
        ]);
    }

    fn epoch(&self) -> String {
        self.ok(&["fingerprint", "show", "--field", "boot_epoch"])
            .trim()
            .to_owned()
    }
}

#[test]
fn first_run_second_run_and_update_via_binary() {
    let n = Node::new();
    let (code, log) = n.precheck();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("edge.os.fingerprint_initialized"), "{log}");
    assert_eq!(n.epoch(), "0");
    n.install_key_and_manifest();
    let (code, log) = n.precheck();
    assert_eq!(
        (code, log.contains("edge.os")),
        (0, false),
        "second run is silent: {log}"
    );
    n.set_os("debian", "6.8.0-100-generic");
    let (code, log) = n.precheck();
    assert_eq!(code, 0, "{log}");
    for e in [
        "edge.os.update_detected",
        "edge.os.reconstruction_started",
        "edge.os.reconstruction_completed",
    ] {
        assert!(log.contains(e), "{e}: {log}");
    }
    assert_eq!(n.epoch(), "1");
}

#[test]
fn kernel_only_change_via_binary() {
    let n = Node::new();
    n.install_key_and_manifest();
    assert_eq!(n.precheck().0, 0);
    n.set_os("ubuntu", "6.8.0-101-generic");
    let (code, log) = n.precheck();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("kernel_changed=true"), "{log}");
    assert_eq!(n.epoch(), "1");
}

#[test]
fn exit_1_on_bad_config() {
    let n = Node::new();
    fs::write(
        n.p("config.toml"),
        "[state_root]\nroot = \"/x\"\n[transport]\ncert_file = 3\n",
    )
    .unwrap();
    let (code, log) = n.precheck();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("cert_file"), "{log}");
    fs::write(n.p("config.toml"), "not = [toml").unwrap();
    assert_eq!(n.precheck().0, 1);
    fs::remove_file(n.p("config.toml")).unwrap();
    assert_eq!(n.precheck().0, 1);
}

#[test]
fn exit_2_on_state_root_error() {
    let n = Node::new();
    fs::write(n.p("not-a-dir"), b"file").unwrap();
    n.write_config(&n.p("not-a-dir"));
    let (code, log) = n.precheck();
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("must be a directory"), "{log}");
}

#[test]
fn exit_2_on_ephemeral_state_root_without_hatch() {
    // /dev/shm is tmpfs on Linux; skip where it is absent or not tmpfs.
    let shm = Path::new("/dev/shm");
    let is_tmpfs =
        bauxite::sys::fs_magic(shm).ok() == Some(bauxite::precheck::state_root::TMPFS_MAGIC);
    if !is_tmpfs {
        eprintln!("skipping: /dev/shm is not tmpfs here");
        return;
    }
    let n = Node::new();
    let root = tempfile::tempdir_in(shm).unwrap();
    n.write_config(root.path());
    let out = Command::new(BIN)
        .args(["--config", &n.s("config.toml"), "precheck"])
        .env_remove("BAUXITE_STATE_ROOT_SKIP_MOUNT_CHECK")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("tmpfs"), "{log}");
}

#[test]
fn exit_3_on_expiring_or_unreadable_cert() {
    let n = Node::new();
    n.ok(&[
        "cert",
        "self-signed",
        "--days",
        "3",
        "--cert-out",
        &n.s("node.crt"),
        "--key-out",
        &n.s("node.key"),
    ]);
    let (code, log) = n.precheck();
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("expires at"), "{log}");
    fs::remove_file(n.p("node.crt")).unwrap();
    let (code, log) = n.precheck();
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("cannot read mTLS file"), "{log}");
    fs::write(n.p("node.crt"), b"garbage").unwrap();
    assert_eq!(n.precheck().0, 3);
}

#[test]
fn os_change_without_a_runtime_manifest_is_recorded_via_binary() {
    let n = Node::new();
    assert_eq!(n.precheck().0, 0);
    n.set_os("ubuntu", "6.8.0-101-generic");
    let (code, log) = n.precheck();
    assert_eq!(code, 0, "{log}");
    for e in ["edge.os.update_detected", "edge.os.no_runtime_manifest"] {
        assert!(log.contains(e), "{e}: {log}");
    }
    assert!(!log.contains("reconstruction_started"), "{log}");
    assert_eq!(n.epoch(), "1");
}

#[test]
fn exit_5_on_missing_key_and_bad_signature() {
    let n = Node::new();
    assert_eq!(n.precheck().0, 0);
    n.set_os("debian", "6.8");
    // A manifest without its verify key: the signed path runs and fails closed.
    n.install_key_and_manifest();
    fs::remove_file(n.p("state/identity/manifest-verify.pub")).unwrap();
    let (code, log) = n.precheck();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("manifest verify key missing on reconstruction path"),
        "{log}"
    );
    assert!(log.contains("edge.os.reconstruction_failed"), "{log}");
    n.install_key_and_manifest();
    fs::write(n.p("state/runtime/manifest.json.sig"), [0u8; 64]).unwrap();
    let (code, log) = n.precheck();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("manifest signature verification failed"),
        "{log}"
    );
    assert_eq!(n.epoch(), "0");
    n.install_key_and_manifest();
    assert_eq!(n.precheck().0, 0);
    assert_eq!(n.epoch(), "1");
}

#[test]
fn tamper_simulates_os_replacement() {
    let n = Node::new();
    n.install_key_and_manifest();
    assert_eq!(n.precheck().0, 0);
    let out = n.ok(&["fingerprint", "tamper"]);
    assert!(out.contains("after:  composite_hash=0000"), "{out}");
    let (code, log) = n.precheck();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("previous_hash=0000000000000000"), "{log}");
    assert_eq!(n.epoch(), "1");
}

#[test]
fn manifest_verify_tool() {
    let n = Node::new();
    fs::write(n.p("m.json"), b"{}").unwrap();
    n.ok(&[
        "manifest",
        "sign",
        &n.s("m.json"),
        "--key",
        &n.s("keys/manifest-verify.key"),
    ]);
    assert_eq!(fs::read(n.p("m.json.sig")).unwrap().len(), 64);
    n.ok(&[
        "manifest",
        "verify",
        &n.s("m.json"),
        "--pub",
        &n.s("keys/manifest-verify.pub"),
    ]);
    fs::write(n.p("m.json"), b"{ }").unwrap();
    assert_eq!(
        n.cmd(&[
            "manifest",
            "verify",
            &n.s("m.json"),
            "--pub",
            &n.s("keys/manifest-verify.pub")
        ])
        .status
        .code(),
        Some(1)
    );
    assert!(
        !n.cmd(&["keygen", "--out-dir", &n.s("k2")]).status.success(),
        "--raw is required"
    );
}

#[test]
fn systemd_units_order_precheck_before_daemon() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let pre = fs::read_to_string(dir.join("bauxite-precheck.service")).unwrap();
    let daemon = fs::read_to_string(dir.join("bauxite.service")).unwrap();
    let has = |unit: &str, line: &str| unit.lines().any(|l| l.trim() == line);
    assert!(has(&pre, "Type=oneshot"));
    assert!(has(&pre, "RemainAfterExit=yes"));
    assert!(has(&pre, "Before=bauxite.service"));
    assert!(has(&pre, "RequiredBy=bauxite.service"));
    assert!(
        pre.contains("ExecStart=/usr/bin/bauxite --config /var/lib/bauxite/config.toml precheck")
    );
    assert!(has(&daemon, "Requires=bauxite-precheck.service"));
    assert!(
        daemon
            .lines()
            .any(|l| l.starts_with("After=bauxite-precheck.service"))
    );
    // A revoked daemon exits with its own code, which systemd must not restart.
    assert!(has(&daemon, "Restart=on-failure"));
    assert!(has(
        &daemon,
        &format!(
            "RestartPreventExitStatus={}",
            bauxite::run_cmd::EXIT_REVOKED
        )
    ));
}
