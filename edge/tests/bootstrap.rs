//! In-process precheck core: the seed's TestOSUpdateSimulation and every decision path,
//! driven with a fake OS, a fixed clock and injected crashes.

// Helpers panic on setup failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use bauxite::error::{Error, FingerprintError, OpRejection, ReconstructionError};
use bauxite::precheck::epoch::{CrashAt, CrashPoint, RotationStep};
use bauxite::precheck::events::Event;
use bauxite::precheck::fingerprint::{self, BootEpoch, CompositeHash, Decision, FingerprintRecord};
use bauxite::precheck::{self, Outcome};
use common::{Fixture, exit_code, no_tmp_left, os, t0};

fn rejection(r: Result<Outcome, Error>) -> OpRejection {
    match r {
        Err(Error::Reconstruction(ReconstructionError::Rejected { rejection, .. })) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn os_update_simulation() {
    // The seed's TestOSUpdateSimulation, step by step.
    let f = Fixture::new();
    for d in bauxite::precheck::state_root::LAYOUT {
        assert!(f.path(d).is_dir(), "layout dir {d}");
    }
    let live = os("ubuntu", "6.8.0-101-generic");
    let stale = FingerprintRecord {
        composite_hash: CompositeHash([0; 32]),
        ..FingerprintRecord::capture(&live, BootEpoch(0), t0())
    };
    precheck::save_fingerprint(&f.root, &stale).unwrap();
    let stored = precheck::load_fingerprint(&f.root).unwrap();
    assert!(matches!(
        fingerprint::decide(stored.as_ref(), &live),
        Decision::UpdateDetected { previous, .. } if previous == CompositeHash([0; 32])
    ));
    assert_eq!(
        f.run(&live).unwrap(),
        Outcome::Reconstructed {
            epoch: BootEpoch(1),
            operations: 0
        }
    );
    let fin = precheck::load_fingerprint(&f.root).unwrap().unwrap();
    assert_eq!(fin.boot_epoch, BootEpoch(stale.boot_epoch.0 + 1));
    assert_eq!(
        fingerprint::decide(Some(&fin), &live),
        Decision::Unchanged {
            epoch: BootEpoch(1)
        }
    );
}

#[test]
fn first_run_initialises_epoch_zero() {
    let f = Fixture::new();
    let (r, events) = f.run_with(&os("ubuntu", "6.8"), &mut bauxite::precheck::epoch::NoCrash);
    assert!(matches!(r.unwrap(), Outcome::Initialised { .. }));
    assert_eq!(f.epoch(), 0);
    assert_eq!(f.current_evidence_epoch(), 0);
    assert!(
        events
            .iter()
            .any(|e| e.name() == "edge.os.fingerprint_initialized")
    );
    let text = fs::read_to_string(f.root.fingerprint_path()).unwrap();
    for field in [
        "composite_hash",
        "os_release",
        "uname_release",
        "boot_epoch",
        "captured_at",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

#[test]
fn second_run_is_idempotent() {
    let f = Fixture::new();
    let live = os("ubuntu", "6.8");
    f.run(&live).unwrap();
    let before = fs::read(f.root.fingerprint_path()).unwrap();
    let (r, events) = f.run_with(&live, &mut bauxite::precheck::epoch::NoCrash);
    assert_eq!(
        r.unwrap(),
        Outcome::Unchanged {
            epoch: BootEpoch(0)
        }
    );
    assert_eq!(fs::read(f.root.fingerprint_path()).unwrap(), before);
    assert!(!f.path("epoch/previous").exists());
    assert_eq!(
        events.iter().map(Event::name).collect::<Vec<_>>(),
        ["edge.os.fingerprint_match"]
    );
}

#[test]
fn os_update_is_detected_and_reconstructed() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    fs::write(f.path("runtime/binaries/edged"), b"edged v2").unwrap();
    let hash = blake3::hash(b"edged v2").to_hex();
    f.write_manifest(&format!(
        r#"{{"version":"1","binary_path":"edged","operations":[
            {{"op":"copy_binary","src":"edged","dst":"runtime/active/edged","expected_hash":"{hash}"}},
            {{"op":"verify_config","src":"edged"}}]}}"#
    ));
    let (r, events) = f.run_with(&os("debian", "6.8"), &mut bauxite::precheck::epoch::NoCrash);
    assert_eq!(
        r.unwrap(),
        Outcome::Reconstructed {
            epoch: BootEpoch(1),
            operations: 2
        }
    );
    assert_eq!(
        fs::read(f.path("runtime/active/edged")).unwrap(),
        b"edged v2"
    );
    assert_eq!(f.epoch(), 1);
    assert_eq!(f.current_evidence_epoch(), 1);
    let ev = fs::read_to_string(f.path("epoch/current/evidence.json")).unwrap();
    assert!(ev.contains(&format!("\"binary_hash\": \"{hash}\"")), "{ev}");
    for key in ["os_fingerprint", "config_hash", "rotated_at"] {
        assert!(ev.contains(key), "{key}");
    }
    let names: Vec<_> = events.iter().map(Event::name).collect();
    for n in [
        "edge.os.update_detected",
        "edge.os.reconstruction_started",
        "edge.os.reconstruction_completed",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
}

#[test]
fn kernel_only_change_is_detected() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8.0-100-generic")).unwrap();
    let (r, events) = f.run_with(
        &os("ubuntu", "6.8.0-101-generic"),
        &mut bauxite::precheck::epoch::NoCrash,
    );
    assert!(matches!(
        r.unwrap(),
        Outcome::Reconstructed {
            epoch: BootEpoch(1),
            ..
        }
    ));
    assert!(events.contains(&Event::UpdateDetected {
        previous_hash: os("ubuntu", "6.8.0-100-generic").composite_hash(),
        current_hash: os("ubuntu", "6.8.0-101-generic").composite_hash(),
        kernel_changed: true,
    }));
}

#[test]
fn three_updates_give_monotonic_epochs() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    let mut epochs = vec![f.epoch()];
    for i in 1..=3 {
        f.run(&os("ubuntu", &format!("6.8.{i}"))).unwrap();
        epochs.push(f.epoch());
        assert_eq!(f.current_evidence_epoch(), f.epoch());
    }
    assert_eq!(epochs, [0, 1, 2, 3]);
    let prev = fs::read(f.path("epoch/previous/evidence.json")).unwrap();
    let prev = bauxite::precheck::epoch::Evidence::parse(&prev).unwrap();
    assert_eq!(prev.os_fingerprint.boot_epoch, BootEpoch(2));
}

#[test]
fn missing_verify_key_fails_with_5() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    fs::remove_file(f.root.verify_key_path()).unwrap();
    let r = f.run(&os("ubuntu", "6.9"));
    assert!(matches!(
        r,
        Err(Error::Reconstruction(
            ReconstructionError::MissingVerifyKey { .. }
        ))
    ));
    assert_eq!(exit_code(&r), 5);
    assert_eq!(f.epoch(), 0, "a failed reconstruction commits nothing");
}

#[test]
fn node_without_a_runtime_manifest_records_an_os_change() {
    let f = Fixture::bare();
    assert!(matches!(
        f.run(&os("ubuntu", "6.8")).unwrap(),
        Outcome::Initialised { .. }
    ));
    let (r, events) = f.run_with(&os("ubuntu", "6.9"), &mut bauxite::precheck::epoch::NoCrash);
    assert_eq!(
        r.unwrap(),
        Outcome::Recorded {
            epoch: BootEpoch(1)
        }
    );
    let names: Vec<_> = events.iter().map(Event::name).collect();
    assert_eq!(
        names,
        [
            "edge.os.update_detected",
            "edge.os.no_runtime_manifest",
            "edge.epoch.rotated"
        ]
    );
    assert_eq!(f.epoch(), 1);
    assert_eq!(f.current_evidence_epoch(), 1);
    assert!(
        !f.path("runtime/manifest.json").exists() && !f.root.verify_key_path().exists(),
        "nothing is invented"
    );
    assert_eq!(
        f.run(&os("ubuntu", "6.9")).unwrap(),
        Outcome::Unchanged {
            epoch: BootEpoch(1)
        }
    );
}

#[test]
fn any_one_manifest_file_requires_the_signed_path() {
    // Key alone, manifest alone, signature alone: each means "a manifest is expected",
    // so deleting part of a manifest can never turn reconstruction into a no-op.
    let key = |f: &Fixture| f.root.verify_key_path();
    let manifest = |f: &Fixture| f.root.manifest_path();
    let sig = |f: &Fixture| f.root.manifest_sig_path();
    for keep in [key, manifest, sig] {
        let f = Fixture::new();
        f.run(&os("ubuntu", "6.8")).unwrap();
        let kept = keep(&f);
        for path in [key(&f), manifest(&f), sig(&f)] {
            if path != kept {
                fs::remove_file(path).unwrap();
            }
        }
        let r = f.run(&os("ubuntu", "6.9"));
        assert_eq!(exit_code(&r), 5, "only {} left: {r:?}", kept.display());
        assert_eq!(f.epoch(), 0, "a failed reconstruction commits nothing");
    }
}

#[test]
fn crash_while_recording_an_os_change_recovers() {
    let mut points: Vec<CrashPoint> = RotationStep::ALL
        .iter()
        .map(|s| CrashPoint::Rotation(*s))
        .collect();
    points.push(CrashPoint::CommitFingerprint);
    for point in points {
        let f = Fixture::bare();
        f.run(&os("ubuntu", "6.8")).unwrap();
        let (r, _) = f.run_with(&os("ubuntu", "6.9"), &mut CrashAt(point));
        assert!(r.is_err(), "{point:?}");
        assert_eq!(f.epoch(), 0, "{point:?}: nothing committed");
        assert_eq!(
            f.run(&os("ubuntu", "6.9")).unwrap(),
            Outcome::Recorded {
                epoch: BootEpoch(1)
            },
            "{point:?}"
        );
        assert_eq!(f.current_evidence_epoch(), 1, "{point:?}");
        assert!(no_tmp_left(&f.path("epoch")), "{point:?}");
    }
}

#[test]
fn oversized_manifest_or_fingerprint_is_refused_without_being_read() {
    let grow = |path: std::path::PathBuf| {
        // Sparse: no disk used, but reading it whole would take 64 MiB.
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
    };
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    grow(f.root.manifest_path());
    let r = f.run(&os("ubuntu", "6.9"));
    assert_eq!(exit_code(&r), 5, "{r:?}");
    assert!(format!("{:?}", r).contains("limit"), "{r:?}");
    grow(f.root.fingerprint_path());
    let r = f.run(&os("ubuntu", "6.9"));
    assert_eq!(exit_code(&r), 2, "{r:?}");
}

#[test]
fn bad_signature_fails_with_5() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    fs::write(f.root.manifest_sig_path(), [0u8; 64]).unwrap();
    let r = f.run(&os("ubuntu", "6.9"));
    assert!(matches!(
        r,
        Err(Error::Reconstruction(
            ReconstructionError::BadSignature { .. }
        ))
    ));
    assert_eq!(exit_code(&r), 5);
    fs::write(f.root.manifest_sig_path(), [0u8; 10]).unwrap();
    let r = f.run(&os("ubuntu", "6.9"));
    assert!(matches!(
        r,
        Err(Error::Reconstruction(
            ReconstructionError::SignatureLength { len: 10, .. }
        ))
    ));
    f.sign_manifest();
    assert!(f.run(&os("ubuntu", "6.9")).is_ok());
}

#[test]
fn bad_verify_key_fails_with_5() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    fs::write(f.root.verify_key_path(), b"short").unwrap();
    let r = f.run(&os("ubuntu", "6.9"));
    assert!(matches!(
        r,
        Err(Error::Reconstruction(
            ReconstructionError::BadVerifyKey { .. }
        ))
    ));
    assert_eq!(exit_code(&r), 5);
}

#[test]
fn garbage_and_truncated_manifests_fail_with_5() {
    let f = Fixture::new();
    f.run(&os("ubuntu", "6.8")).unwrap();
    // Garbage under a valid signature: parsed only after verification, still rejected.
    for bad in [
        "\u{0}\u{1}garbage",
        r#"{"version":"1","operations":["#,
        r#"{"version":"2","operations":[]}"#,
    ] {
        f.write_manifest(bad);
        let r = f.run(&os("ubuntu", "6.9"));
        assert!(
            matches!(
                r,
                Err(Error::Reconstruction(
                    ReconstructionError::ManifestMalformed { .. }
                ))
            ),
            "{bad}: {r:?}"
        );
        assert_eq!(exit_code(&r), 5);
    }
    // Truncated after signing: the signature no longer matches.
    f.write_manifest(r#"{"version":"1","operations":[]}"#);
    let m = fs::read(f.root.manifest_path()).unwrap();
    fs::write(f.root.manifest_path(), &m[..m.len() / 2]).unwrap();
    let r = f.run(&os("ubuntu", "6.9"));
    assert!(matches!(
        r,
        Err(Error::Reconstruction(
            ReconstructionError::BadSignature { .. }
        ))
    ));
    fs::remove_file(f.root.manifest_path()).unwrap();
    let r = f.run(&os("ubuntu", "6.9"));
    assert!(matches!(
        r,
        Err(Error::Reconstruction(
            ReconstructionError::MissingManifest { .. }
        ))
    ));
}

#[test]
fn garbage_or_truncated_fingerprint_fails_with_2() {
    let f = Fixture::new();
    let live = os("ubuntu", "6.8");
    f.run(&live).unwrap();
    let good = fs::read(f.root.fingerprint_path()).unwrap();
    for bad in [&good[..good.len() / 2], b"\xff\xfe garbage", b"", b"{}"] {
        fs::write(f.root.fingerprint_path(), bad).unwrap();
        let r = f.run(&live);
        assert!(
            matches!(r, Err(Error::Fingerprint(FingerprintError::Corrupt { .. }))),
            "{r:?}"
        );
        assert_eq!(exit_code(&r), 2);
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("os_fingerprint.json is corrupt")
        );
    }
}

fn copy_op(src: &str, dst: &str) -> String {
    format!(
        r#"{{"version":"1","operations":[{{"op":"copy_binary","src":"{src}","dst":"{dst}"}}]}}"#
    )
}

/// Runs an update with `manifest` and asserts it was rejected before anything ran.
fn rejected_update(f: &Fixture, manifest: &str) -> OpRejection {
    f.run(&os("ubuntu", "6.8")).unwrap();
    f.write_manifest(manifest);
    let r = f.run(&os("ubuntu", "6.9"));
    assert_eq!(exit_code(&r), 5);
    assert_eq!(f.epoch(), 0);
    rejection(r)
}

#[test]
fn src_outside_binaries_is_rejected() {
    let f = Fixture::new();
    let r = rejected_update(&f, &copy_op("/etc/passwd", "runtime/active/passwd"));
    assert!(
        matches!(r, OpRejection::OutsideRoot { field: "src", .. }),
        "{r}"
    );
    assert!(!f.path("runtime/active").exists());
    // A symlink inside binaries/ that points out of it is caught on disk.
    let outside = f.dir.path().join("outside");
    fs::write(&outside, b"x").unwrap();
    std::os::unix::fs::symlink(&outside, f.path("runtime/binaries/link")).unwrap();
    f.write_manifest(&copy_op("link", "runtime/active/link"));
    let r = rejection(f.run(&os("ubuntu", "6.9")));
    assert!(
        matches!(r, OpRejection::SymlinkEscape { field: "src", .. }),
        "{r}"
    );
}

#[test]
fn dst_outside_state_root_is_rejected() {
    let f = Fixture::new();
    fs::write(f.path("runtime/binaries/edged"), b"x").unwrap();
    let target = f.dir.path().join("escaped");
    let r = rejected_update(&f, &copy_op("edged", &target.display().to_string()));
    assert!(
        matches!(r, OpRejection::OutsideRoot { field: "dst", .. }),
        "{r}"
    );
    assert!(!target.exists());
    let r = rejection({
        f.write_manifest(&copy_op("edged", "../escaped"));
        f.run(&os("ubuntu", "6.9"))
    });
    assert!(matches!(r, OpRejection::ParentDir { .. }), "{r}");
    // A directory symlink inside the root that leads out of it.
    let out_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(out_dir.path(), f.path("runtime/escape")).unwrap();
    f.write_manifest(&copy_op("edged", "runtime/escape/edged"));
    let r = rejection(f.run(&os("ubuntu", "6.9")));
    assert!(
        matches!(r, OpRejection::SymlinkEscape { field: "dst", .. }),
        "{r}"
    );
    assert!(!out_dir.path().join("edged").exists());
}

#[test]
fn hash_mismatch_is_rejected() {
    let f = Fixture::new();
    fs::write(f.path("runtime/binaries/edged"), b"tampered").unwrap();
    let wrong = blake3::hash(b"original").to_hex();
    let r = rejected_update(
        &f,
        &format!(
            r#"{{"version":"1","operations":[{{"op":"copy_binary","src":"edged","dst":"runtime/active/edged","expected_hash":"{wrong}"}}]}}"#
        ),
    );
    assert!(matches!(r, OpRejection::HashMismatch { .. }), "{r}");
    assert!(!f.path("runtime/active/edged").exists());
}

#[test]
fn unsupported_op_is_rejected_before_anything_runs() {
    let f = Fixture::new();
    fs::write(f.path("runtime/binaries/edged"), b"x").unwrap();
    // A valid op first: it must not run because a later op is rejected.
    let r = rejected_update(
        &f,
        r#"{"version":"1","operations":[
            {"op":"copy_binary","src":"edged","dst":"runtime/active/edged"},
            {"op":"exec_shell","src":"/bin/sh","dst":"/tmp/x"}]}"#,
    );
    assert_eq!(r, OpRejection::UnsupportedOp("exec_shell".into()));
    assert!(!f.path("runtime/active/edged").exists());
    f.write_manifest(&copy_op("edged", "runtime/x;rm -rf"));
    assert!(matches!(
        rejection(f.run(&os("ubuntu", "6.9"))),
        OpRejection::ShellMetachar { .. }
    ));
}

#[test]
fn crash_at_each_step_recovers_on_next_run() {
    let mut points: Vec<CrashPoint> = RotationStep::ALL
        .iter()
        .map(|s| CrashPoint::Rotation(*s))
        .collect();
    points.push(CrashPoint::CommitFingerprint);
    for point in points {
        let f = Fixture::new();
        f.run(&os("ubuntu", "6.8")).unwrap();
        f.run(&os("ubuntu", "6.9")).unwrap();
        assert_eq!(f.epoch(), 1);
        let (r, _) = f.run_with(&os("ubuntu", "6.10"), &mut CrashAt(point));
        assert_eq!(exit_code(&r), 5, "{point:?}");
        assert_eq!(f.epoch(), 1, "{point:?}: nothing committed");
        // Next boot: recovers, re-detects the update, completes it.
        let (r, events) = f.run_with(
            &os("ubuntu", "6.10"),
            &mut bauxite::precheck::epoch::NoCrash,
        );
        assert_eq!(
            r.unwrap(),
            Outcome::Reconstructed {
                epoch: BootEpoch(2),
                operations: 0
            },
            "{point:?}"
        );
        assert!(no_tmp_left(&f.path("epoch")), "{point:?}");
        assert!(no_tmp_left(&f.path("bootstrap")), "{point:?}");
        assert_eq!(f.current_evidence_epoch(), 2, "{point:?}");
        if matches!(
            point,
            CrashPoint::Rotation(RotationStep::RenameTmpToCurrent)
        ) {
            assert!(
                events
                    .iter()
                    .any(|e| e.name() == "edge.epoch.current_restored")
            );
        }
        // And the run after that is clean.
        assert_eq!(
            f.run(&os("ubuntu", "6.10")).unwrap(),
            Outcome::Unchanged {
                epoch: BootEpoch(2)
            }
        );
    }
}

#[test]
fn crash_during_first_run_recovers() {
    for step in RotationStep::ALL {
        let f = Fixture::new();
        let (r, _) = f.run_with(
            &os("ubuntu", "6.8"),
            &mut CrashAt(CrashPoint::Rotation(step)),
        );
        assert!(r.is_err());
        assert!(precheck::load_fingerprint(&f.root).unwrap().is_none());
        assert!(matches!(
            f.run(&os("ubuntu", "6.8")).unwrap(),
            Outcome::Initialised { .. }
        ));
        assert_eq!(f.current_evidence_epoch(), 0);
        assert!(no_tmp_left(&f.path("epoch")));
    }
}
