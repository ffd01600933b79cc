//! The real spawner and the real discovery server: a `fast-discovery-server` on loopback
//! is killed with SIGKILL and comes back under a new PID, stops with the handle, and runs
//! in its own process group with only the environment it was given; a child dies with the
//! thread that spawned it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use bauxite_citadel::{
    ChildProcess, DiscoveryServer, DiscoveryServerConfig, Phase, ProcessSpawner, SpawnSpec,
    SupervisorConfig, SupervisorStatus, TokioSpawner,
};
use rustix::process::{Pid, Signal, kill_process};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(20);

/// A UDP port free right now (the server binds it a moment later).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

async fn wait_status(
    rx: &mut watch::Receiver<SupervisorStatus>,
    what: &str,
    f: impl Fn(&SupervisorStatus) -> bool,
) -> SupervisorStatus {
    tokio::time::timeout(LIMIT, rx.wait_for(|s| f(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
        .clone()
}

fn pid_of(s: &SupervisorStatus) -> Option<u32> {
    match s.phase {
        Phase::Running { pid, .. } => Some(pid),
        _ => None,
    }
}

#[tokio::test]
async fn the_real_server_comes_back_after_kill_9_and_stops_with_the_handle() {
    let program = Path::new(bauxite_citadel::DEFAULT_PROGRAM);
    assert!(
        program.exists(),
        "{} missing: run scripts/setup.sh (Debian fastdds-tools)",
        program.display()
    );
    let mut config = DiscoveryServerConfig::new("127.0.0.1".parse().unwrap());
    config.port = free_udp_port();
    config.server_id = 1;
    let backup = tempfile::tempdir().unwrap();
    config.backup_dir = Some(backup.path().to_path_buf());
    config.supervisor = SupervisorConfig {
        backoff_base: Duration::from_millis(50),
        ..SupervisorConfig::default()
    };
    let handle = DiscoveryServer::spawn(TokioSpawner, config.clone(), 1);
    let mut status = handle.watch();
    let first = wait_status(&mut status, "the server to run", |s| pid_of(s).is_some()).await;
    let pid = pid_of(&first).unwrap();
    // It listens on its port (the kernel's socket table, not a log line; Fast DDS binds
    // the wildcard address and keeps to its locator itself).
    let port_hex = format!(":{:04X}", config.port);
    let bound = || {
        std::fs::read_to_string("/proc/net/udp")
            .unwrap()
            .lines()
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&port_hex))
            })
    };
    tokio::time::timeout(LIMIT, async {
        while !bound() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server binds 127.0.0.1 on its port");
    let group = rustix::process::getpgid(Pid::from_raw(pid as i32)).unwrap();
    assert_eq!(
        group.as_raw_nonzero().get() as u32,
        pid,
        "its own process group"
    );

    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
    let second = wait_status(&mut status, "a restart", |s| {
        s.restarts == 1 && pid_of(s).is_some()
    })
    .await;
    let new_pid = pid_of(&second).unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(second.last_exit.as_deref(), Some("killed by SIGKILL"));
    assert!(alive(new_pid));

    let last = tokio::time::timeout(LIMIT, handle.stop()).await.unwrap();
    assert_eq!(last.phase, Phase::Stopped);
    assert!(!alive(new_pid), "the server outlived its handle");
}

#[tokio::test]
async fn a_child_gets_exactly_the_given_environment() {
    let spec = SpawnSpec {
        program: "/usr/bin/sleep".into(),
        args: vec!["60".into()],
        env: BTreeMap::from([("ROS_DOMAIN_ID".into(), "42".into())]),
        cwd: None,
        package: "coreutils",
    };
    let mut child = TokioSpawner.spawn(&spec).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", child.pid())).unwrap();
    assert_eq!(environ, b"ROS_DOMAIN_ID=42\0");
    child.signal(bauxite_citadel::Signal::Terminate).unwrap();
    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.signal, Some(15));

    let missing = SpawnSpec {
        program: "/nonexistent/fast-discovery-server".into(),
        ..spec
    };
    let e = TokioSpawner.spawn(&missing).unwrap_err();
    assert!(e.to_string().contains("apt-get install coreutils"), "{e}");
}

#[test]
#[allow(clippy::disallowed_methods)] // a test's deadline is wall time by nature
fn a_child_dies_with_the_thread_that_spawned_it() {
    let spec = SpawnSpec {
        program: "/usr/bin/sleep".into(),
        args: vec!["600".into()],
        env: BTreeMap::new(),
        cwd: None,
        package: "coreutils",
    };
    // The node's thread goes away without dropping the handle (as under `kill -9`).
    let pid = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let child = TokioSpawner.spawn(&spec).unwrap();
        let pid = child.pid();
        std::mem::forget(child);
        pid
    })
    .join()
    .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "child {pid} outlived its parent thread"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
