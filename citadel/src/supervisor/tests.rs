//! The supervisor's decisions with time as an input, and its driver with the mock
//! spawner on tokio's paused clock.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tokio::sync::watch;

use super::*;
use crate::spawn::{Exit, MockSpawner, SpawnSpec};

#[allow(clippy::disallowed_methods)] // any base instant will do
fn start() -> Instant {
    Instant::now()
}

fn config() -> SupervisorConfig {
    SupervisorConfig {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(2),
        max_crashes: 4,
        crash_window: Duration::from_secs(60),
        stable_after: Duration::from_secs(10),
        stop_grace: Duration::from_secs(3),
    }
}

/// Starts and reports a successful spawn.
fn started(now: Instant) -> Supervisor {
    let mut s = Supervisor::new(config(), 7);
    s.start();
    assert_eq!(s.poll_action(), Some(Action::Spawn));
    assert_eq!(s.poll_action(), None);
    s.handle_spawned(now, 100);
    s
}

/// Crashes the running child at `now` and returns the restart delay.
fn crash(s: &mut Supervisor, now: Instant) -> Duration {
    s.handle_exit(now, Exit::code(1));
    let until = s.poll_timeout().expect("a restart is scheduled");
    assert_eq!(s.poll_action(), None, "nothing before the backoff ends");
    s.handle_timeout(until - Duration::from_nanos(1));
    assert_eq!(s.poll_action(), None, "early timeout does nothing");
    s.handle_timeout(until);
    assert_eq!(s.poll_action(), Some(Action::Spawn));
    s.handle_spawned(until, 101);
    until - now
}

#[test]
fn a_crash_loop_backs_off_doubling_with_jitter_then_gives_up() {
    let t0 = start();
    let mut s = started(t0);
    let mut now = t0;
    let mut ceilings = vec![];
    for n in 0..3u32 {
        now += Duration::from_millis(50); // a short run: not stable
        let delay = crash(&mut s, now);
        let ceiling = Duration::from_millis(100 * (1 << n));
        assert!(
            delay >= ceiling / 2 && delay <= ceiling,
            "crash {n}: {delay:?} not in [{:?}, {ceiling:?}]",
            ceiling / 2
        );
        ceilings.push(ceiling);
        now += delay;
    }
    assert_eq!(s.status().restarts, 3);
    assert_eq!(s.phase().code(), 1);
    // The fourth crash within the window: given up for good.
    s.handle_exit(now + Duration::from_millis(10), Exit::signal(11));
    assert_eq!(*s.phase(), Phase::Failed);
    assert_eq!(s.phase().code(), 3);
    assert!(s.is_finished());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.poll_action(), None);
    let status = s.status();
    let failure = status.failure.unwrap();
    assert!(failure.contains("4 crashes within 60s"), "{failure}");
    assert!(failure.contains("killed by signal 11"), "{failure}");
    // Nothing revives a failed supervisor.
    s.start();
    s.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(s.poll_action(), None);
}

#[test]
fn the_backoff_is_capped() {
    let mut cfg = config();
    cfg.max_crashes = 100;
    cfg.crash_window = Duration::from_secs(1);
    let t0 = start();
    let mut s = Supervisor::new(cfg, 3);
    s.start();
    let _ = s.poll_action();
    s.handle_spawned(t0, 1);
    let mut now = t0;
    for _ in 0..20 {
        now += Duration::from_millis(1);
        let delay = crash(&mut s, now);
        assert!(delay <= Duration::from_secs(2), "{delay:?}");
        now += delay;
    }
    // Crashes spread wider than the window never add up to a give-up.
    assert_eq!(s.phase().name(), "running");
}

#[test]
fn crashes_outside_the_window_are_forgotten() {
    let t0 = start();
    let mut s = started(t0);
    let mut now = t0;
    for _ in 0..10 {
        // Each crash 61 s after the last: never 4 in a minute.
        now += Duration::from_secs(61);
        let delay = crash(&mut s, now);
        // A 61 s run is stable, so each restart waits the base delay again.
        assert!(delay <= Duration::from_millis(100), "{delay:?}");
        now += delay;
    }
    assert_eq!(s.status().restarts, 10);
    assert_ne!(*s.phase(), Phase::Failed);
}

#[test]
fn failing_spawns_count_as_crashes() {
    let t0 = start();
    let mut s = Supervisor::new(config(), 1);
    s.start();
    let mut now = t0;
    for _ in 0..3 {
        assert_eq!(s.poll_action(), Some(Action::Spawn));
        s.handle_spawn_failed(now, "no such file".into());
        let until = s.poll_timeout().unwrap();
        now = until;
        s.handle_timeout(now);
    }
    assert_eq!(s.poll_action(), Some(Action::Spawn));
    s.handle_spawn_failed(now, "no such file".into());
    assert_eq!(*s.phase(), Phase::Failed);
    assert!(s.status().failure.unwrap().contains("no such file"));
}

#[test]
fn a_clean_stop_terminates_then_kills_after_the_grace_time() {
    let t0 = start();
    let mut s = started(t0);
    s.stop(t0);
    assert_eq!(s.poll_action(), Some(Action::Signal(Signal::Terminate)));
    assert_eq!(s.phase().name(), "stopping");
    let kill_at = s.poll_timeout().unwrap();
    assert_eq!(kill_at, t0 + Duration::from_secs(3));
    s.handle_timeout(kill_at);
    assert_eq!(s.poll_action(), Some(Action::Signal(Signal::Kill)));
    assert_eq!(s.poll_timeout(), None, "SIGKILL is sent once");
    s.handle_exit(kill_at, Exit::signal(9));
    assert_eq!(*s.phase(), Phase::Stopped);
    assert!(s.is_finished());
    // An exit asked for is not a crash.
    assert_eq!(s.status().restarts, 0);
    assert_eq!(s.status().failure, None);

    // Stopping during a backoff starts nothing more.
    let mut s = started(t0);
    s.handle_exit(t0, Exit::code(1));
    s.stop(t0);
    assert_eq!(*s.phase(), Phase::Stopped);
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(s.poll_action(), None);
}

proptest! {
    /// Whatever happens in whatever order, the supervisor never asks for a spawn while a
    /// child runs, never after a stop, and never after giving up.
    #[test]
    fn never_two_children_and_nothing_after_the_end(
        seed in any::<u64>(),
        events in proptest::collection::vec((0u8..4, 0u64..5_000), 1..60),
    ) {
        let t0 = start();
        let mut s = Supervisor::new(config(), seed);
        s.start();
        let mut now = t0;
        let mut running = false;
        let mut ended = false;
        for (event, ms) in events {
            now += Duration::from_millis(ms);
            while let Some(action) = s.poll_action() {
                if action == Action::Spawn {
                    prop_assert!(!running && !ended);
                    running = true;
                    s.handle_spawned(now, 1);
                }
            }
            match event {
                0 if running => { running = false; s.handle_exit(now, Exit::code(1)); }
                1 => if let Some(t) = s.poll_timeout() { now = now.max(t); s.handle_timeout(now); },
                2 => { s.stop(now); ended = true; }
                _ => {}
            }
            if ended && running && matches!(s.phase(), Phase::Stopping { .. }) {
                running = false;
                s.handle_exit(now, Exit::signal(15));
            }
            let restarts = s.status().restarts;
            prop_assert!(restarts < 100);
        }
    }
}

fn spec() -> SpawnSpec {
    SpawnSpec {
        program: "/usr/bin/fast-discovery-server".into(),
        args: vec![],
        env: Default::default(),
        cwd: None,
        package: "fastdds-tools",
    }
}

/// Waits (virtual time) until `status` satisfies `f`.
async fn until(
    status: &mut watch::Receiver<SupervisorStatus>,
    f: impl Fn(&SupervisorStatus) -> bool,
) -> SupervisorStatus {
    tokio::time::timeout(Duration::from_secs(600), status.wait_for(|s| f(s)))
        .await
        .expect("condition within 600 virtual seconds")
        .expect("supervisor alive")
        .clone()
}

#[tokio::test(start_paused = true)]
async fn the_driver_restarts_a_crashed_child_and_stops_cleanly() {
    let mock = MockSpawner::new();
    let (status_tx, mut status) = watch::channel(Supervisor::new(config(), 0).status());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(supervise(
        mock.clone(),
        spec(),
        config(),
        9,
        status_tx,
        stop_rx,
    ));
    until(&mut status, |s| s.phase.code() == 1).await;
    assert_eq!(mock.children(), 1);
    assert!(mock.end(0, Exit::signal(9)));
    let s = until(&mut status, |s| s.restarts == 1 && s.phase.code() == 1).await;
    assert_eq!(s.last_exit.as_deref(), Some("killed by SIGKILL"));
    assert_eq!(mock.children(), 2);
    assert_eq!(mock.specs()[1], spec());
    stop.send_replace(true);
    let last = task.await.unwrap();
    assert_eq!(last.phase, Phase::Stopped);
    assert_eq!(mock.signals(1), [Signal::Terminate]);
    assert!(mock.signals(0).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_driver_kills_a_child_that_ignores_sigterm() {
    let mock = MockSpawner::new();
    mock.ignore_terminate();
    let (status_tx, mut status) = watch::channel(Supervisor::new(config(), 0).status());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(supervise(
        mock.clone(),
        spec(),
        config(),
        9,
        status_tx,
        stop_rx,
    ));
    until(&mut status, |s| s.phase.code() == 1).await;
    let t = tokio::time::Instant::now();
    drop(stop); // a dropped stop sender (the node going away) also stops
    let last = task.await.unwrap();
    assert_eq!(last.phase, Phase::Stopped);
    assert_eq!(mock.signals(0), [Signal::Terminate, Signal::Kill]);
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(start_paused = true)]
async fn the_driver_gives_up_on_a_missing_program() {
    let mock = MockSpawner::new();
    mock.fail_next_spawns(u32::MAX);
    let (status_tx, _status) = watch::channel(Supervisor::new(config(), 0).status());
    let (_stop, stop_rx) = watch::channel(false);
    let last = supervise(mock.clone(), spec(), config(), 9, status_tx, stop_rx).await;
    assert_eq!(last.phase, Phase::Failed);
    assert_eq!(mock.specs().len(), 4);
    assert_eq!(mock.children(), 0);
    let failure = last.failure.unwrap();
    assert!(
        failure.contains("apt-get install fastdds-tools"),
        "{failure}"
    );
}
