//! After activation: the watchdog's verdicts carried out on real files, rollback with a
//! crash at every point, the reboot-loop guard, commit, and operator rollback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stage_common;

use std::time::Duration;

use bauxite_forge::Error;
use bauxite_forge::activate::{self, MarkerState, Recovery};
use bauxite_forge::agent::{Outcome, UpdateAgent};
use bauxite_forge::crash::{AtomicStep, CrashAt, CrashPoint, NoCrash};
use bauxite_forge::image::CHUNK_SIZE;
use bauxite_forge::watchdog::{RollbackReason, Watchdog, WatchdogAction, WatchdogConfig};
use stage_common::drive::{
    Release, Root, assert_one_verified_active, cfg, fast_link, install, run,
};
use stage_common::link::origin;

fn releases() -> (Release, Release) {
    (
        Release::new("1.0.0", 1, 9 * CHUNK_SIZE as u64 + 5),
        Release::new("2.0.0", 2, 12 * CHUNK_SIZE as u64 - 9),
    )
}

/// v1 active, v2 just activated and pending the watchdog.
fn updated() -> (Root, Release, Release) {
    let root = Root::new();
    let (a, b) = releases();
    install(&root, &a);
    let r = run(&root, &b, fast_link(), Box::new(NoCrash), 2);
    assert!(matches!(r.result, Ok(Outcome::Activated(_))));
    (root, a, b)
}

fn wcfg() -> WatchdogConfig {
    WatchdogConfig {
        health_timeout: Duration::from_secs(30),
        max_starts: 3,
    }
}

/// Carries out the watchdog's actions; returns the final one.
fn carry_out(root: &Root, w: &mut Watchdog) -> Option<WatchdogAction> {
    let mut last = None;
    while let Some(a) = w.poll_action() {
        match a {
            WatchdogAction::Start { attempt } => {
                assert_eq!(
                    activate::record_start(&root.layout, &mut NoCrash).unwrap(),
                    attempt
                );
            }
            WatchdogAction::Commit => {
                activate::commit(&root.layout, &mut NoCrash).unwrap();
            }
            WatchdogAction::RollBack(_) => {
                activate::rollback(&root.layout, &mut NoCrash).unwrap();
            }
        }
        last = Some(a);
    }
    last
}

#[test]
fn a_healthy_version_is_committed() {
    let (root, a, b) = updated();
    let t = origin();
    let mut w = Watchdog::new(wcfg(), 0, t);
    carry_out(&root, &mut w);
    w.handle_heartbeat(t + Duration::from_secs(3));
    assert_eq!(carry_out(&root, &mut w), Some(WatchdogAction::Commit));
    let m = activate::read_marker(&root.layout).unwrap().unwrap();
    assert_eq!((m.state, m.boot_attempts), (MarkerState::Committed, 1));
    assert_eq!(
        activate::recover(&root.layout, &mut NoCrash).unwrap(),
        Recovery::Steady {
            current: Some(b.version().clone())
        }
    );
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
}

#[test]
fn a_silent_version_is_rolled_back_and_never_reactivated() {
    let (root, a, b) = updated();
    let t = origin();
    let mut w = Watchdog::new(wcfg(), 0, t);
    carry_out(&root, &mut w);
    w.handle_timeout(w.poll_timeout().unwrap());
    assert!(matches!(
        carry_out(&root, &mut w),
        Some(WatchdogAction::RollBack(RollbackReason::Unhealthy { .. }))
    ));
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *a.version());
    let m = activate::read_marker(&root.layout).unwrap().unwrap();
    assert_eq!(m.state, MarkerState::RolledBack);
    assert_eq!(m.blocked, [b.version().clone()]);
    assert!(root.layout.image_path(b.version()).exists());
    // The reboot-loop guard: the agent refuses the rolled-back version.
    let again = UpdateAgent::<u32>::new(
        &root.layout,
        b.plan.clone(),
        vec![1],
        cfg(),
        Box::new(NoCrash),
        origin(),
        0,
    );
    assert!(matches!(again, Err(Error::VersionBlocked { version }) if version == "2.0.0"));
}

#[test]
fn a_version_that_keeps_failing_is_rolled_back_across_reboots() {
    let (root, a, b) = updated();
    let t = origin();
    // Each "boot" builds the watchdog from the persisted count; the version takes the
    // machine down before reporting healthy, so the watchdog never sees an exit.
    for boot in 0..3 {
        assert!(matches!(
            activate::recover(&root.layout, &mut NoCrash).unwrap(),
            Recovery::AwaitingHealth { boot_attempts, .. } if boot_attempts == boot
        ));
        let m = activate::read_marker(&root.layout).unwrap().unwrap();
        let mut w = Watchdog::new(wcfg(), m.boot_attempts, t);
        assert_eq!(
            carry_out(&root, &mut w),
            Some(WatchdogAction::Start { attempt: boot + 1 })
        );
    }
    let m = activate::read_marker(&root.layout).unwrap().unwrap();
    let mut w = Watchdog::new(wcfg(), m.boot_attempts, t);
    assert_eq!(
        carry_out(&root, &mut w),
        Some(WatchdogAction::RollBack(RollbackReason::FailedStarts {
            starts: 3
        }))
    );
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *a.version());
    assert_eq!(
        activate::recover(&root.layout, &mut NoCrash).unwrap(),
        Recovery::Steady {
            current: Some(a.version().clone())
        }
    );
}

#[test]
fn a_crash_at_every_point_of_a_rollback_still_ends_rolled_back() {
    let points = [
        CrashPoint::Marker(AtomicStep::CreateTmp),
        CrashPoint::Marker(AtomicStep::Torn),
        CrashPoint::Marker(AtomicStep::SyncTmp),
        CrashPoint::Marker(AtomicStep::Rename),
        CrashPoint::Marker(AtomicStep::SyncDir),
        CrashPoint::LinkCreate,
        CrashPoint::LinkRename,
        CrashPoint::RootSync,
    ];
    for point in points {
        // Skip 0 crashes in the first marker write (rolling_back), skip 1 in the second
        // (rolled_back); the link points happen once.
        for skip in [0, 1] {
            let (root, a, b) = updated();
            let r = activate::rollback(&root.layout, &mut CrashAt::nth(point, skip));
            let is_marker = matches!(point, CrashPoint::Marker(_));
            if !is_marker && skip == 1 {
                assert!(r.is_ok());
                continue;
            }
            assert!(r.is_err(), "{point:?}/{skip}");
            let rec = activate::recover(&root.layout, &mut NoCrash).unwrap();
            let active = assert_one_verified_active(&root, &[&a, &b]);
            let m = activate::read_marker(&root.layout).unwrap().unwrap();
            match rec {
                // The rollback had not recorded its start: the activation is still
                // pending and the watchdog, run again, rolls back again.
                Recovery::AwaitingHealth { .. } => {
                    assert_eq!(active, *b.version(), "{point:?}/{skip}");
                    assert_eq!(m.state, MarkerState::Pending);
                    activate::rollback(&root.layout, &mut NoCrash).unwrap();
                }
                Recovery::RollbackCompleted(done) => {
                    assert_eq!(&done.restored, a.version());
                }
                Recovery::Steady { .. } => assert_eq!(m.state, MarkerState::RolledBack),
                other => panic!("{point:?}/{skip}: {other:?}"),
            }
            assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *a.version());
            let m = activate::read_marker(&root.layout).unwrap().unwrap();
            assert_eq!(m.state, MarkerState::RolledBack, "{point:?}/{skip}");
            assert!(m.blocked.contains(b.version()));
        }
    }
}

#[test]
fn an_operator_can_roll_back_a_committed_version() {
    let (root, a, b) = updated();
    activate::commit(&root.layout, &mut NoCrash).unwrap();
    let done = activate::rollback(&root.layout, &mut NoCrash).unwrap();
    assert_eq!((&done.restored, &done.rejected), (a.version(), b.version()));
    assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *a.version());
    assert!(activate::is_blocked(&root.layout, b.version()).unwrap());
}

#[test]
fn the_first_install_has_nothing_to_roll_back_to() {
    let root = Root::new();
    let (a, _) = releases();
    install(&root, &a);
    let m = activate::read_marker(&root.layout).unwrap().unwrap();
    assert_eq!((m.state, m.previous), (MarkerState::Committed, None));
    assert!(matches!(
        activate::rollback(&root.layout, &mut NoCrash),
        Err(Error::NoPreviousVersion)
    ));
    assert_eq!(assert_one_verified_active(&root, &[&a]), *a.version());
}

#[test]
fn a_blocked_version_is_kept_blocked_across_later_updates() {
    let (root, a, b) = updated();
    activate::rollback(&root.layout, &mut NoCrash).unwrap();
    let c = Release::new("3.0.0", 3, 7 * CHUNK_SIZE as u64);
    let r = run(&root, &c, fast_link(), Box::new(NoCrash), 5);
    assert!(matches!(r.result, Ok(Outcome::Activated(_))));
    assert_eq!(
        assert_one_verified_active(&root, &[&a, &b, &c]),
        *c.version()
    );
    assert!(activate::is_blocked(&root.layout, b.version()).unwrap());
}
