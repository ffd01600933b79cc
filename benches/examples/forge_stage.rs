//! Forge's own end-to-end ceiling: the seed's virtual image (3 GiB by default) staged by
//! an `UpdateAgent` from an in-process `FetchServer`, datagrams handed over in memory (no
//! network, no lanes), with real files in a temporary state root: fetch, per-chunk
//! verification, pwrite, fdatasync and checkpoint every 256 chunks, re-verification of
//! the whole image from disk, activation. Prints the time of each phase and the peak RSS.
//! The mesh and its bulk-lane pacing come on top of this in the daemon.
//!
//! `cargo run --release -p bauxite-benches --example forge_stage -- [MiB] [state-dir]`

// An example, not protocol code: a broken fixture should panic, and it reads the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use bauxite_forge::agent::{AgentConfig, AgentEvent, Outcome, UpdateAgent, UpdatePlan, Work};
use bauxite_forge::chunk::ChunkIndex;
use bauxite_forge::crash::NoCrash;
use bauxite_forge::fetch::{FetchServer, ServerConfig, TransferId};
use bauxite_forge::image::{ChunkSource, VirtualImage};
use bauxite_forge::layout::{Layout, Version};
use bauxite_forge::state::UpdateState;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(3072, |a| a.parse().unwrap());
    let base = args.next().map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let layout = Layout::open(dir.path()).unwrap();

    let t = Instant::now();
    let image = VirtualImage::new(2026, mib << 20).unwrap();
    let index = Arc::new(ChunkIndex::build(&image).unwrap());
    let t_index = t.elapsed();
    let plan = UpdatePlan {
        target: "robot-firmware.img".into(),
        version: Version::parse("2.0.0").unwrap(),
        index: index.clone(),
    };
    let start = Instant::now();
    let mut agent = UpdateAgent::new(
        &layout,
        plan,
        vec![1u8],
        AgentConfig::default(),
        Box::new(NoCrash),
        start,
        0,
    )
    .unwrap();
    let mut server = FetchServer::new(ServerConfig::default());
    server.add_image(TransferId::from(index.digest()), image);
    let mut buf = vec![0u8; 1500];
    let mut valid_at = None;
    let mut downloaded_at = None;
    let outcome = loop {
        let now = Instant::now();
        while let Some(t) = agent.poll_transmit(now, &mut buf) {
            server.handle_datagram(now, 0u8, &buf[..t.len]);
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            agent.handle_datagram(now, &1, &buf[..t.len]).unwrap();
        }
        while let Some(e) = agent.poll_event() {
            if let AgentEvent::State(s) = e
                && s.state == UpdateState::Valid
            {
                valid_at = Some(start.elapsed());
            }
        }
        match agent.poll_work(now).unwrap() {
            Work::Done(o) => break o,
            Work::Busy => {
                if downloaded_at.is_none() && agent.progress().chunks_done == index.chunk_count() {
                    downloaded_at = Some(start.elapsed());
                }
            }
            Work::Idle => {}
        }
        if agent.poll_timeout().is_some_and(|t| t <= now) {
            agent.handle_timeout(now);
        }
    };
    let total = start.elapsed();
    assert!(matches!(outcome, Outcome::Activated(_)), "{outcome:?}");
    let p = agent.progress();
    let gb = image.len() as f64 / 1e9;
    let dl = downloaded_at.unwrap_or(total);
    println!(
        "image {} MiB ({} chunks), index built in {:.2?}",
        mib,
        index.chunk_count(),
        t_index
    );
    println!(
        "fetched + verified + staged (durable) in {:.2?}: {:.2} GB/s",
        dl,
        gb / dl.as_secs_f64()
    );
    if let Some(v) = valid_at {
        println!(
            "re-verified from disk in {:.2?}: {:.2} GB/s",
            v - dl,
            gb / (v - dl).as_secs_f64()
        );
    }
    println!(
        "activated after {:.2?} in total: {:.2} GB/s end to end; retransferred {} B; peak RSS {} MiB",
        total,
        gb / total.as_secs_f64(),
        p.bytes_retransferred,
        peak_rss_kib() / 1024
    );
}
