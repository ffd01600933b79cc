//! `kill -9` of a real agent process at many points, then a restart.
//!
//! This binary is both the test and the process under test: run with `child ...`
//! arguments it stages a virtual image from an in-process `FetchServer` through
//! `UpdateAgent` with real files (no network), printing what it does line by line; run
//! without them it is the test, which spawns itself, SIGKILLs the child at seeded random
//! moments and at every named crash point (the child pauses there), restarts it, and
//! checks that the node always ends with exactly one fully verified version active,
//! reports `CHECKPOINT_LOADED` after a restart with progress, and never requests again a
//! chunk that its checkpoint had recorded durable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
// The child is an IO shell: it reads the clock. The parent waits with deadlines.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use bauxite_forge::activate::{self, MarkerState};
use bauxite_forge::agent::{AgentConfig, AgentEvent, Outcome, UpdateAgent, UpdatePlan, Work};
use bauxite_forge::checkpoint::Checkpoint;
use bauxite_forge::chunk::{ChunkIndex, ChunkNo};
use bauxite_forge::crash::{AtomicStep, CrashHook, CrashPoint, NoCrash};
use bauxite_forge::fetch::wire::{self, Datagram};
use bauxite_forge::fetch::{FetchServer, ServerConfig, TransferId};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, FileImage, VirtualImage};
use bauxite_forge::layout::{Layout, Version};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// The two releases every run knows: (version, seed, length).
const V1: (&str, u64, u64) = ("1.0.0", 11, 24 * CHUNK_SIZE as u64 + 100);
const V2: (&str, u64, u64) = ("2.0.0", 22, 192 * CHUNK_SIZE as u64 - 4321);

fn release(r: (&str, u64, u64)) -> (VirtualImage, UpdatePlan) {
    let image = VirtualImage::new(r.1, r.2).unwrap();
    let index = Arc::new(ChunkIndex::build(&image).unwrap());
    let plan = UpdatePlan {
        target: "robot-firmware.img".into(),
        version: Version::parse(r.0).unwrap(),
        index,
    };
    (image, plan)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child(&args[1..]);
        return;
    }
    // Cargo's test runner passes libtest flags; they do not apply to this binary.
    parent();
}

// ---------------------------------------------------------------- the child process

/// Stops at the `skip + 1`-th pass of `point`: says so, then blocks until killed (or
/// until the parent goes away and stdin closes).
struct PauseAt(CrashPoint, u32);

impl CrashHook for PauseAt {
    fn before(&mut self, point: CrashPoint) -> std::io::Result<()> {
        if point == self.0 {
            if self.1 == 0 {
                println!("PAUSED {}", point.name());
                std::io::stdout().flush()?;
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                std::process::exit(3);
            }
            self.1 -= 1;
        }
        Ok(())
    }
}

fn child(args: &[String]) {
    let root = Layout::open(Path::new(&args[0])).unwrap();
    let mode = args[1].as_str();
    let hook: Box<dyn CrashHook> = match args.get(2) {
        Some(p) => Box::new(PauseAt(
            CrashPoint::from_name(p).unwrap(),
            args[3].parse().unwrap(),
        )),
        None => Box::new(NoCrash),
    };
    let rec = activate::recover(&root, &mut NoCrash).unwrap();
    println!("RECOVERED {rec:?}");
    match mode {
        "install" => stage(&root, V1, Box::new(NoCrash)),
        "update" => stage(&root, V2, hook),
        "rollback" => {
            let mut hook = hook;
            let m = activate::read_marker(&root).unwrap().unwrap();
            if m.state != MarkerState::RolledBack {
                let done = activate::rollback(&root, &mut *hook).unwrap();
                println!("ROLLEDBACK {}", done.restored);
            }
            println!("DONE rollback");
        }
        other => panic!("unknown mode {other}"),
    }
}

fn stage(root: &Layout, rel: (&str, u64, u64), hook: Box<dyn CrashHook>) {
    let (image, plan) = release(rel);
    let cfg = AgentConfig {
        flush_every_chunks: 8,
        flush_interval: Duration::from_millis(20),
        verify_batch: 16,
        ..AgentConfig::default()
    };
    let now = Instant::now();
    let transfer = TransferId::from(plan.index.digest());
    let mut agent = UpdateAgent::new(root, plan, vec![1u8], cfg, hook, now, 0).unwrap();
    let mut server = FetchServer::new(ServerConfig::default());
    server.add_image(transfer, image);
    let mut buf = vec![0u8; 1500];
    // Bounded: a 12 MiB image takes a few thousand rounds of this loop.
    // stdout is locked per line, never across a call into the agent: the hook may pause
    // on the durability thread (holding the hook) and say so on stdout.
    for _ in 0..10_000_000 {
        let now = Instant::now();
        while let Some(t) = agent.poll_transmit(now, &mut buf) {
            if let Ok(Datagram::Request(r)) = wire::parse(&buf[..t.len]) {
                for e in r.entries() {
                    println!("REQ {}", e.chunk);
                }
            }
            server.handle_datagram(now, 0u8, &buf[..t.len]);
        }
        // The in-memory link has room for one chunk's fragments per round.
        for _ in 0..64 {
            let Some(t) = server.poll_transmit(now, &mut buf) else {
                break;
            };
            agent.handle_datagram(now, &1, &buf[..t.len]).unwrap();
        }
        while let Some(e) = agent.poll_event() {
            match e {
                AgentEvent::State(s) => {
                    println!("STATE {} {}", s.state, s.progress.chunks_done);
                }
                AgentEvent::Checkpointed { durable, .. } => {
                    println!("CKPT {durable}");
                }
                _ => {}
            }
        }
        std::io::stdout().flush().unwrap();
        match agent.poll_work(now).unwrap() {
            Work::Done(o) => {
                let p = agent.progress();
                println!("REFETCHED {}", p.verified_bytes_refetched);
                let word = match o {
                    Outcome::Activated(_) => "activated",
                    Outcome::AlreadyActive { .. } => "already_active",
                    Outcome::Rejected { .. } => "rejected",
                    Outcome::Failed => "failed",
                };
                println!("DONE {word}");
                std::io::stdout().flush().unwrap();
                return;
            }
            Work::Busy | Work::Idle => {}
        }
        if agent.poll_timeout().is_some_and(|t| t <= now) {
            agent.handle_timeout(now);
        }
    }
    panic!("child did not finish");
}

// ---------------------------------------------------------------- the test

struct Agent {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    fn spawn(root: &Path, mode: &str, pause: Option<(CrashPoint, u32)>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg("child").arg(root).arg(mode);
        if let Some((p, skip)) = pause {
            cmd.arg(p.name()).arg(skip.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `stop` (returns true) or the child's output ends
    /// (returns false); panics after `limit`.
    fn read_until(&mut self, limit: Duration, mut stop: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = stop(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("child silent for {limit:?}; output: {:?}", self.seen);
                }
            }
        }
    }

    fn kill9(mut self) -> Vec<String> {
        // Child::kill sends SIGKILL on Unix.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.seen
    }

    fn finish(mut self) -> Vec<String> {
        self.read_until(Duration::from_secs(120), |_| false);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {:?}", self.seen);
        self.seen
    }
}

fn durable(root: &Path) -> BTreeSet<u32> {
    let layout = Layout::open(root).unwrap();
    let path = layout.checkpoint_path(&Version::parse(V2.0).unwrap());
    match std::fs::read(path) {
        Ok(b) => Checkpoint::parse(&b)
            .unwrap()
            .durable
            .iter()
            .map(|c| c.0)
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn requested(lines: &[String]) -> BTreeSet<u32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("REQ "))
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Exactly one version active, and its image verifies whole against its own index.
fn one_verified_active(root: &Path) -> String {
    let layout = Layout::open(root).unwrap();
    let current = layout.current().unwrap().expect("a version is active");
    let rel = [V1, V2]
        .into_iter()
        .find(|r| r.0 == current.as_str())
        .unwrap();
    let (_, plan) = release(rel);
    let file = FileImage::open_expecting(&layout.image_path(&current), rel.2).unwrap();
    let mut buf = vec![0u8; CHUNK_SIZE];
    for i in 0..plan.index.chunk_count() {
        let n = file.read_chunk(ChunkNo(i), &mut buf).unwrap();
        assert!(
            plan.index.verify(ChunkNo(i), &buf[..n]),
            "chunk {i} of {current}"
        );
    }
    current.to_string()
}

/// Restarts the update after a kill: checks the resume against what was durable.
fn restart_and_check(root: &Path, killed_at: &str) -> Vec<String> {
    let before = durable(root);
    let lines = Agent::spawn(root, "update", None).finish();
    let again = requested(&lines);
    let overlap: Vec<_> = again.intersection(&before).collect();
    assert!(
        overlap.is_empty(),
        "{killed_at}: durable chunks requested again: {overlap:?}"
    );
    assert!(lines.contains(&"REFETCHED 0".to_owned()), "{killed_at}");
    let count = release(V2).1.index.chunk_count() as usize;
    if !before.is_empty() && before.len() < count {
        let loaded = lines
            .iter()
            .position(|l| l.starts_with("STATE CHECKPOINT_LOADED"));
        let cut = lines
            .iter()
            .position(|l| l.starts_with("STATE POWER_FAILURE_CUT"));
        assert!(cut.is_some() && loaded > cut, "{killed_at}: {lines:?}");
        let n = before.len().to_string();
        assert!(
            lines[loaded.unwrap()].ends_with(&n),
            "{killed_at}: progress {n}"
        );
    }
    let done = lines.last().unwrap();
    assert!(
        done == "DONE activated" || done == "DONE already_active",
        "{killed_at}: {done}"
    );
    lines
}

fn fresh_root() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    Agent::spawn(&root, "install", None).finish();
    assert_eq!(one_verified_active(&root), V1.0);
    (d, root)
}

fn random_kills(seed: u64, trials: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut loaded_seen = 0;
    for trial in 0..trials {
        let (_d, root) = fresh_root();
        // Up to three kills in a row, each after a random number of output lines.
        let kills = 1 + rng.next_u32() % 3;
        for k in 0..kills {
            let before = durable(&root);
            let wait_for = 1 + rng.next_u64() % 260;
            let mut agent = Agent::spawn(&root, "update", None);
            let mut n = 0;
            let alive = agent.read_until(Duration::from_secs(60), |_| {
                n += 1;
                n >= wait_for
            });
            let lines = if alive { agent.kill9() } else { agent.finish() };
            let overlap: Vec<_> = requested(&lines).intersection(&before).copied().collect();
            assert!(overlap.is_empty(), "trial {trial} kill {k}: {overlap:?}");
            if lines
                .iter()
                .any(|l| l.starts_with("STATE CHECKPOINT_LOADED"))
            {
                loaded_seen += 1;
            }
            let active = one_verified_active(&root);
            assert!(active == V1.0 || active == V2.0);
        }
        let lines = restart_and_check(&root, &format!("trial {trial}"));
        if lines
            .iter()
            .any(|l| l.starts_with("STATE CHECKPOINT_LOADED"))
        {
            loaded_seen += 1;
        }
        assert_eq!(one_verified_active(&root), V2.0, "trial {trial}");
    }
    assert!(loaded_seen > 0, "no kill landed after a checkpoint");
    println!("random kills: {trials} trials, CHECKPOINT_LOADED seen {loaded_seen} times");
}

fn named_points() {
    let mut points: Vec<(CrashPoint, u32)> = vec![
        (CrashPoint::ChunkWrite, 0),
        (CrashPoint::ChunkWrite, 77),
        (CrashPoint::ImageSync, 5),
    ];
    for s in AtomicStep::ALL {
        points.push((CrashPoint::Checkpoint(s), 9));
    }
    points.push((CrashPoint::Verified, 0));
    for s in AtomicStep::ALL {
        points.push((CrashPoint::Marker(s), 0));
    }
    for p in [
        CrashPoint::LinkCreate,
        CrashPoint::LinkRename,
        CrashPoint::RootSync,
        CrashPoint::Cleanup,
    ] {
        points.push((p, 0));
    }
    for (point, skip) in points {
        let (_d, root) = fresh_root();
        let mut agent = Agent::spawn(&root, "update", Some((point, skip)));
        let paused = agent.read_until(Duration::from_secs(60), |l| l.starts_with("PAUSED"));
        assert!(paused, "{point:?}/{skip} never reached");
        agent.kill9();
        let active = one_verified_active(&root);
        assert!(active == V1.0 || active == V2.0);
        restart_and_check(&root, &point.name());
        assert_eq!(one_verified_active(&root), V2.0, "{point:?}");
    }
    println!("named points: download, checkpoint, verification and swap: all recovered");
}

fn rollback_points() {
    let mut points: Vec<(CrashPoint, u32)> = Vec::new();
    for skip in [0, 1] {
        for s in AtomicStep::ALL {
            points.push((CrashPoint::Marker(s), skip));
        }
    }
    for p in [
        CrashPoint::LinkCreate,
        CrashPoint::LinkRename,
        CrashPoint::RootSync,
    ] {
        points.push((p, 0));
    }
    for (point, skip) in points {
        let (_d, root) = fresh_root();
        let lines = Agent::spawn(&root, "update", None).finish();
        assert_eq!(lines.last().unwrap(), "DONE activated");
        let mut agent = Agent::spawn(&root, "rollback", Some((point, skip)));
        assert!(agent.read_until(Duration::from_secs(60), |l| l.starts_with("PAUSED")));
        agent.kill9();
        let active = one_verified_active(&root);
        assert!(active == V1.0 || active == V2.0);
        let lines = Agent::spawn(&root, "rollback", None).finish();
        assert_eq!(lines.last().unwrap(), "DONE rollback");
        assert_eq!(one_verified_active(&root), V1.0, "{point:?}/{skip}");
        let layout = Layout::open(&root).unwrap();
        let m = activate::read_marker(&layout).unwrap().unwrap();
        assert_eq!(m.state, MarkerState::RolledBack);
        assert_eq!(m.blocked, [Version::parse(V2.0).unwrap()]);
    }
    println!("named points: rollback: all recovered");
}

fn parent() {
    let started = Instant::now();
    named_points();
    rollback_points();
    random_kills(0x6b69_6c6c, 16);
    println!("kill9: ok in {:.1?}", started.elapsed());
}
