//! The update agent end to end with real files: clean and lossy updates, a crash at
//! every named point of download, checkpoint and activation followed by recovery and a
//! restart, tampering with the staged image, untrusted checkpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stage_common;

use std::fs;
use std::os::unix::fs::FileExt as _;

use bauxite_forge::activate::{self, MarkerState, Recovery};
use bauxite_forge::agent::{AgentEvent, Outcome};
use bauxite_forge::checkpoint::Checkpoint;
use bauxite_forge::chunk::ChunkNo;
use bauxite_forge::chunkset::ChunkSet;
use bauxite_forge::crash::{AtomicStep, CrashAt, CrashHook, CrashPoint, NoCrash};
use bauxite_forge::image::CHUNK_SIZE;
use bauxite_forge::state::UpdateState;
use stage_common::drive::{Release, Root, assert_one_verified_active, fast_link, install, run};
use stage_common::link::LinkParams;

const LEN: u64 = 40 * CHUNK_SIZE as u64 - 1000;

fn v1() -> Release {
    Release::new("1.0.0", 1, LEN - 5 * CHUNK_SIZE as u64)
}

fn v2() -> Release {
    Release::new("2.0.0", 2, LEN)
}

fn durable_on_disk(root: &Root, rel: &Release) -> ChunkSet {
    match fs::read(root.layout.checkpoint_path(rel.version())) {
        Ok(b) => Checkpoint::parse(&b).unwrap().durable,
        Err(_) => ChunkSet::new(rel.plan.index.chunk_count()),
    }
}

#[test]
fn clean_update_activates_and_keeps_the_previous_version() {
    let root = Root::new();
    let (a, b) = (v1(), v2());
    install(&root, &a);
    let r = run(&root, &b, fast_link(), Box::new(NoCrash), 2);
    let Ok(Outcome::Activated(act)) = r.result else {
        panic!("{:?}", r.result)
    };
    assert_eq!(act.previous.as_ref(), Some(a.version()));
    assert_eq!(
        r.states,
        [
            UpdateState::PendingValidation,
            UpdateState::Valid,
            UpdateState::Activated
        ]
    );
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
    assert!(root.layout.image_path(a.version()).exists(), "backup kept");
    let m = activate::read_marker(&root.layout).unwrap().unwrap();
    assert_eq!(
        (m.state, m.previous.as_ref(), &m.candidate),
        (MarkerState::Pending, Some(a.version()), b.version())
    );
    let checkpoints = r
        .events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Checkpointed { .. }))
        .count();
    assert_eq!(checkpoints, 10, "40 chunks in batches of 4");
    let p = r.agent.unwrap().progress();
    assert_eq!((p.chunks_done, p.bytes_done), (40, LEN));
    assert_eq!(p.bytes_transferred, LEN);
    assert_eq!((p.bytes_retransferred, p.verified_bytes_refetched), (0, 0));
}

#[test]
fn lossy_link_update_activates_a_correct_image() {
    let root = Root::new();
    let (a, b) = (v1(), v2());
    install(&root, &a);
    let bad = LinkParams {
        jitter: std::time::Duration::from_millis(2),
        loss: 0.03,
        burst_enter: 0.005,
        burst_exit: 0.3,
        duplicate: 0.02,
        corrupt: 0.005,
        ..fast_link()
    };
    let r = run(&root, &b, bad, Box::new(NoCrash), 9);
    assert!(
        matches!(r.result, Ok(Outcome::Activated(_))),
        "{:?}",
        r.result
    );
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
    let st = r.agent.unwrap().fetch_stats();
    assert!(st.bytes_retransferred() > 0 && st.timeouts > 0);
    assert_eq!(st.bytes_verified, LEN);
}

/// The points a download passes, with how many passes to let through first.
fn download_points() -> Vec<(CrashPoint, u32)> {
    let mut v = Vec::new();
    for skip in [0, 5, 17, 33] {
        v.push((CrashPoint::ChunkWrite, skip));
    }
    for skip in [0, 2, 6] {
        v.push((CrashPoint::ImageSync, skip));
        for s in AtomicStep::ALL {
            v.push((CrashPoint::Checkpoint(s), skip));
        }
    }
    v
}

#[test]
fn a_crash_anywhere_in_the_download_resumes_without_refetching_a_durable_chunk() {
    for (point, skip) in download_points() {
        let root = Root::new();
        let (a, b) = (v1(), v2());
        install(&root, &a);
        let crashed = run(
            &root,
            &b,
            fast_link(),
            Box::new(CrashAt::nth(point, skip)),
            3,
        );
        assert!(crashed.result.is_err(), "{point:?}/{skip}: no crash");
        assert_eq!(root.layout.current().unwrap().as_ref(), Some(a.version()));
        assert!(matches!(
            activate::recover(&root.layout, &mut NoCrash).unwrap(),
            Recovery::Steady { .. }
        ));
        let durable = durable_on_disk(&root, &b);
        let r = run(&root, &b, fast_link(), Box::new(NoCrash), 4);
        assert!(
            matches!(r.result, Ok(Outcome::Activated(_))),
            "{point:?}/{skip}: {:?}",
            r.result
        );
        let refetched: Vec<_> = r
            .requested
            .iter()
            .filter(|c| durable.contains(**c))
            .collect();
        assert!(
            refetched.is_empty(),
            "{point:?}/{skip}: refetched {refetched:?}"
        );
        let agent = r.agent.unwrap();
        assert_eq!(agent.resumed(), &durable);
        assert_eq!(agent.progress().verified_bytes_refetched, 0);
        if durable.count() > 0 {
            assert_eq!(
                r.states[..3],
                [
                    UpdateState::PowerFailureCut,
                    UpdateState::CheckpointLoaded,
                    UpdateState::PendingValidation
                ],
                "{point:?}/{skip}"
            );
        } else {
            assert_eq!(
                r.states[0],
                UpdateState::PendingValidation,
                "{point:?}/{skip}"
            );
        }
        assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
    }
}

#[test]
fn a_crash_between_verification_and_swap_or_during_the_swap_recovers_to_one_version() {
    let points = [
        CrashPoint::Verified,
        CrashPoint::Marker(AtomicStep::CreateTmp),
        CrashPoint::Marker(AtomicStep::Torn),
        CrashPoint::Marker(AtomicStep::SyncTmp),
        CrashPoint::Marker(AtomicStep::Rename),
        CrashPoint::Marker(AtomicStep::SyncDir),
        CrashPoint::LinkCreate,
        CrashPoint::LinkRename,
        CrashPoint::RootSync,
        CrashPoint::Cleanup,
    ];
    for point in points {
        let root = Root::new();
        let (a, b) = (v1(), v2());
        install(&root, &a);
        let crashed = run(&root, &b, fast_link(), Box::new(CrashAt::new(point)), 5);
        assert!(crashed.result.is_err(), "{point:?}");
        let rec = activate::recover(&root.layout, &mut NoCrash).unwrap();
        let active = assert_one_verified_active(&root, &[&a, &b]);
        // The swap is the commit point: before it the old version stays.
        let swapped = point >= CrashPoint::RootSync;
        assert_eq!(
            active,
            if swapped {
                b.version().clone()
            } else {
                a.version().clone()
            },
            "{point:?}"
        );
        match &rec {
            Recovery::AwaitingHealth { version, .. } => assert!(swapped && version == b.version()),
            Recovery::ActivationAborted { current } => {
                assert_eq!(current.as_ref(), Some(a.version()), "{point:?}");
            }
            Recovery::Steady { current } => assert_eq!(current.as_ref(), Some(a.version())),
            other => panic!("{point:?}: {other:?}"),
        }
        // Running the update again ends with the new version, without a new download.
        let again = run(&root, &b, fast_link(), Box::new(NoCrash), 6);
        match again.result {
            Ok(Outcome::Activated(_)) => {
                assert!(again.requested.is_empty(), "{point:?}: nothing to refetch");
                assert_eq!(
                    again.states[..3],
                    [
                        UpdateState::CheckpointLoaded,
                        UpdateState::PendingValidation,
                        UpdateState::Valid
                    ]
                );
            }
            Ok(Outcome::AlreadyActive { .. }) => assert!(swapped),
            other => panic!("{point:?}: {other:?}"),
        }
        assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
    }
}

/// Flips bytes of the staged image as an attacker with disk access would, once the
/// first checkpoint made chunk 0 durable (it is never written again).
struct TamperAfterFirstCheckpoint {
    path: std::path::PathBuf,
    done: bool,
}

impl CrashHook for TamperAfterFirstCheckpoint {
    fn before(&mut self, point: CrashPoint) -> std::io::Result<()> {
        if point == CrashPoint::Checkpoint(AtomicStep::SyncDir) && !self.done {
            self.done = true;
            let f = fs::OpenOptions::new().write(true).open(&self.path)?;
            f.write_all_at(&[0x66; 8], 1000)?;
        }
        Ok(())
    }
}

#[test]
fn tampering_with_the_staged_image_is_rejected_and_current_is_unchanged() {
    let root = Root::new();
    let (a, b) = (v1(), v2());
    install(&root, &a);
    let hook = TamperAfterFirstCheckpoint {
        path: root.layout.image_path(b.version()),
        done: false,
    };
    let r = run(&root, &b, fast_link(), Box::new(hook), 7);
    assert_eq!(
        r.result.unwrap(),
        Outcome::Rejected {
            chunk: ChunkNo(0),
            current: Some(a.version().clone())
        }
    );
    assert_eq!(
        r.states,
        [
            UpdateState::PendingValidation,
            UpdateState::InvalidSignatureRejected,
            UpdateState::AtomicRolledBack
        ]
    );
    assert!(
        !root.layout.version_dir(b.version()).exists(),
        "staging purged"
    );
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *a.version());
    // The download can be tried again from scratch and succeeds.
    let again = run(&root, &b, fast_link(), Box::new(NoCrash), 8);
    assert!(matches!(again.result, Ok(Outcome::Activated(_))));
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
}

#[test]
fn tampering_after_an_interrupted_verification_is_caught_on_restart() {
    let root = Root::new();
    let (a, b) = (v1(), v2());
    install(&root, &a);
    // Cut after the image was fully staged and verified, before the swap.
    let r = run(
        &root,
        &b,
        fast_link(),
        Box::new(CrashAt::new(CrashPoint::Verified)),
        3,
    );
    assert!(r.states.contains(&UpdateState::Valid) && r.result.is_err());
    activate::recover(&root.layout, &mut NoCrash).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(root.layout.image_path(b.version()))
        .unwrap();
    f.write_all_at(&[0xAA; 8], 25 * CHUNK_SIZE as u64 + 77)
        .unwrap();
    let r = run(&root, &b, fast_link(), Box::new(NoCrash), 3);
    assert_eq!(
        r.result.unwrap(),
        Outcome::Rejected {
            chunk: ChunkNo(25),
            current: Some(a.version().clone())
        }
    );
    assert!(r.states.ends_with(&[
        UpdateState::InvalidSignatureRejected,
        UpdateState::AtomicRolledBack
    ]));
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *a.version());
}

#[test]
fn corrupt_or_foreign_checkpoints_mean_a_fresh_start() {
    for case in ["flip", "truncate", "foreign"] {
        let root = Root::new();
        let (a, b) = (v1(), v2());
        install(&root, &a);
        let cut = CrashAt::nth(CrashPoint::ChunkWrite, 20);
        assert!(
            run(&root, &b, fast_link(), Box::new(cut), 3)
                .result
                .is_err()
        );
        let path = root.layout.checkpoint_path(b.version());
        let mut bytes = fs::read(&path).unwrap();
        let plan = match case {
            "flip" => {
                bytes[40] ^= 1;
                b.clone()
            }
            "truncate" => {
                bytes.truncate(bytes.len() - 3);
                b.clone()
            }
            // Same version string, another image: the binding differs.
            _ => Release::new("2.0.0", 77, LEN),
        };
        fs::write(&path, &bytes).unwrap();
        let r = run(&root, &plan, fast_link(), Box::new(NoCrash), 4);
        assert!(matches!(r.result, Ok(Outcome::Activated(_))), "{case}");
        assert_eq!(r.states[0], UpdateState::CheckpointDiscarded, "{case}");
        let mut asked = ChunkSet::new(40);
        for c in &r.requested {
            asked.insert(*c);
        }
        assert!(asked.is_full(), "{case}: a fresh start fetches everything");
        assert_eq!(
            assert_one_verified_active(&root, &[&a, &plan]),
            *plan.version()
        );
    }
}

#[test]
fn the_active_version_is_never_staged_over() {
    let root = Root::new();
    let a = v1();
    install(&root, &a);
    let r = run(&root, &a, fast_link(), Box::new(NoCrash), 3);
    assert_eq!(
        r.result.unwrap(),
        Outcome::AlreadyActive {
            version: a.version().clone()
        }
    );
    assert!(r.requested.is_empty());
    assert_eq!(assert_one_verified_active(&root, &[&a]), *a.version());
}
