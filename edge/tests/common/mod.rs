//! Shared fixtures: a state root in a tempdir, a fake OS, a signing key.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use bauxite::precheck::epoch::{CrashHook, NoCrash};
use bauxite::precheck::events::Event;
use bauxite::precheck::fingerprint::OsInputs;
use bauxite::precheck::state_root::StateRoot;
use bauxite::precheck::{self, FixedClock, Outcome};
use ed25519_dalek::{Signer, SigningKey};
use time::OffsetDateTime;

pub const SEED: [u8; 32] = [42; 32];

pub fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_772_618_400).unwrap()
}

pub fn os(id: &str, kernel: &str) -> OsInputs {
    OsInputs {
        os_release: format!("ID={id}\nVERSION_ID=24.04\n").into_bytes(),
        usr_lib_os_release: None,
        uname_release: kernel.into(),
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: StateRoot,
}

impl Fixture {
    /// A prepared state root with the verify key installed and an empty signed manifest.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::prepare(&dir.path().join("state"), true).unwrap();
        let key = SigningKey::from_bytes(&SEED);
        fs::write(root.verify_key_path(), key.verifying_key().as_bytes()).unwrap();
        let f = Self { dir, root };
        f.write_manifest(r#"{"version":"1","binary_path":"edged","operations":[]}"#);
        f
    }

    /// A prepared state root with no runtime manifest at all (what `bauxite join` leaves).
    pub fn bare() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::prepare(&dir.path().join("state"), true).unwrap();
        Self { dir, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.root().join(rel)
    }

    pub fn write_manifest(&self, json: &str) {
        fs::write(self.root.manifest_path(), json).unwrap();
        self.sign_manifest();
    }

    pub fn sign_manifest(&self) {
        let bytes = fs::read(self.root.manifest_path()).unwrap();
        let sig = SigningKey::from_bytes(&SEED).sign(&bytes).to_bytes();
        fs::write(self.root.manifest_sig_path(), sig).unwrap();
    }

    pub fn run(&self, os: &OsInputs) -> Result<Outcome, bauxite::Error> {
        self.run_with(os, &mut NoCrash).0
    }

    pub fn run_with(
        &self,
        os: &OsInputs,
        hook: &mut dyn CrashHook,
    ) -> (Result<Outcome, bauxite::Error>, Vec<Event>) {
        let mut events = Vec::new();
        let r = precheck::bootstrap(&self.root, os, "", &FixedClock(t0()), hook, &mut |e| {
            events.push(e)
        });
        (r, events)
    }

    pub fn epoch(&self) -> u64 {
        precheck::load_fingerprint(&self.root)
            .unwrap()
            .unwrap()
            .boot_epoch
            .0
    }

    pub fn current_evidence_epoch(&self) -> u64 {
        let bytes = fs::read(self.path("epoch/current/evidence.json")).unwrap();
        bauxite::precheck::epoch::Evidence::parse(&bytes)
            .unwrap()
            .os_fingerprint
            .boot_epoch
            .0
    }
}

pub fn exit_code(r: &Result<Outcome, bauxite::Error>) -> u8 {
    match r {
        Ok(_) => 0,
        Err(e) => bauxite::precheck::exit::exit_status(e).code(),
    }
}

pub fn no_tmp_left(dir: &Path) -> bool {
    fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}
