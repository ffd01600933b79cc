//! `bauxite ping`: the daemon sends echo probes to a peer's echo service
//! (`ServicePort::ECHO`) on the Critical lane — the lane a control loop's packets take —
//! and reports sent, received, loss and the round trip's p50/p99/max.
//!
//! Invariant: a ping is bounded in count, rate, size and time (the last probe's replies
//! are awaited at most [`REPLY_GRACE`]), and its socket is unbound when it ends.

use std::time::Duration;

use bauxite_conduit::io::{IncomingBatch, Query, clock};
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::{Lane, VirtualIp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::mesh_service::{self, MeshError};
use crate::probe::{ProbeStats, Prober};
use crate::status;

/// Most probes one ping sends.
pub const MAX_COUNT: u64 = 1_000_000;
/// Highest probe rate.
pub const MAX_RATE_HZ: f64 = 10_000.0;
/// Lowest probe rate.
pub const MIN_RATE_HZ: f64 = 0.1;
/// Largest probe payload (fits one mesh datagram with room to spare).
pub const MAX_SIZE: usize = 1200;
/// How long replies to the last probe are awaited.
pub const REPLY_GRACE: Duration = Duration::from_secs(1);

/// What to ping, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingRequest {
    /// A peer's name or virtual IP.
    pub target: String,
    /// Probes per second.
    pub rate_hz: f64,
    /// Probes to send.
    pub count: u64,
    /// Payload bytes per probe (at least 24).
    pub size: usize,
}

impl PingRequest {
    /// Checks the bounds; the message says which value to change.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_COUNT).contains(&self.count) {
            return Err(format!("--count must be 1 to {MAX_COUNT}"));
        }
        if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&self.rate_hz) {
            return Err(format!("--rate must be {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz"));
        }
        if !(crate::probe::MIN_PAYLOAD..=MAX_SIZE).contains(&self.size) {
            return Err(format!(
                "--size must be {} to {MAX_SIZE} bytes",
                crate::probe::MIN_PAYLOAD
            ));
        }
        Ok(())
    }

    /// An upper bound of how long the ping takes (for the client's read timeout).
    pub fn duration_bound(&self) -> Duration {
        Duration::from_secs_f64(self.count as f64 / self.rate_hz) + REPLY_GRACE
    }
}

/// What a ping measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    /// The target as given.
    pub target: String,
    /// The peer's name, when the node knows it.
    pub name: Option<String>,
    /// The peer's virtual IP.
    pub virtual_ip: String,
    /// The lane the probes and replies took (`critical`).
    pub lane: String,
    /// Probes per second asked for.
    pub rate_hz: f64,
    /// Payload bytes per probe.
    pub size: usize,
    /// Sent, received, loss, round trips.
    #[serde(flatten)]
    pub stats: ProbeStats,
    /// The paths the replies took, in the order first seen, with how many replies took
    /// each (see [`PATH_SAMPLE`]).
    #[serde(default)]
    pub paths: Vec<PathReplies>,
}

/// Replies that came over one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathReplies {
    /// As [`status::path_phrase`] says it: `direct 203.0.113.2:51820 (srflx)`.
    pub path: String,
    /// Replies that arrived while the session was on it.
    pub replies: u64,
}

/// How often the path of arriving replies is read from the node (at most): a reply's
/// path is the session's path when it arrived — the node follows the source address of
/// every authenticated packet, so that is where the reply came from — read at most this
/// often, so a fast ping does not flood the shell with status queries.
pub const PATH_SAMPLE: Duration = Duration::from_millis(100);

/// Counts replies per path, in the order the paths were first seen.
#[derive(Debug, Default)]
struct PathTally {
    paths: Vec<PathReplies>,
}

impl PathTally {
    fn add(&mut self, path: &str, replies: u64) {
        if replies == 0 {
            return;
        }
        match self.paths.iter_mut().find(|p| p.path == path) {
            Some(p) => p.replies += replies,
            None => self.paths.push(PathReplies {
                path: path.to_owned(),
                replies,
            }),
        }
    }
}

impl PingReport {
    /// Human-readable form.
    pub fn render_text(&self) -> String {
        let s = &self.stats;
        let who = match &self.name {
            Some(n) => format!("{n} ({})", self.virtual_ip),
            None => self.virtual_ip.clone(),
        };
        let ms = |us: u64| us as f64 / 1e3;
        let mut out = format!(
            "PING {who} over the mesh, {} lane: {} probes of {} bytes at {} Hz\n",
            self.lane, s.sent, self.size, self.rate_hz,
        );
        for p in &self.paths {
            out.push_str(&format!("{} replies via {}\n", p.replies, p.path));
        }
        out.push_str(&format!(
            "{} sent, {} received, {:.1}% loss\n\
             rtt min/p50/p99/max = {:.3}/{:.3}/{:.3}/{:.3} ms\n",
            s.sent,
            s.received,
            s.loss_percent,
            ms(s.min_us),
            ms(s.p50_us),
            ms(s.p99_us),
            ms(s.max_us),
        ));
        out
    }
}

/// Runs one ping through the running shell; `hub` is the hub's mesh node, if known
/// (the target `hub` names it).
pub async fn run(
    queries: &mpsc::Sender<Query>,
    req: &PingRequest,
    hub: Option<VirtualIp>,
) -> Result<PingReport, String> {
    req.check()?;
    let (name, ip) = mesh_service::resolve_peer(queries, &req.target, hub)
        .await
        .map_err(|e| e.to_string())?;
    let mut socket = mesh_service::bind_ephemeral(queries, 4096)
        .await
        .map_err(|e: MeshError| e.to_string())?;
    let sender = socket.sender();
    let nonce = u64::from_le_bytes(
        clock::os_seed().map_err(|e| e.to_string())?[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let mut prober = Prober::new(nonce);
    let mut payload = Vec::with_capacity(req.size);
    let mut batch = IncomingBatch::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / req.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut grace_until = None;
    let mut tally = PathTally::default();
    let mut path: Option<(std::time::Instant, String)> = None;
    // Bounded: each turn sends one of `count` probes or handles replies, and the
    // grace period ends the loop once the last probe is out.
    loop {
        if prober.sent() >= req.count {
            if prober.all_answered() {
                break;
            }
            grace_until.get_or_insert(tokio::time::Instant::now() + REPLY_GRACE);
        }
        let grace = async {
            match grace_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick(), if prober.sent() < req.count => {
                prober.next_probe(clock::now(), req.size, &mut payload);
                // A full send queue means the Critical lane is backed up: a late probe
                // is a lost probe, so it is not queued behind the others.
                let _ = sender.try_send_to(ip, ServicePort::ECHO.get(), Lane::Critical, &payload);
            }
            received = socket.recv_batch(&mut batch) => {
                received.map_err(|e| e.to_string())?;
                let now = clock::now();
                let mut replies = 0;
                for d in batch.iter() {
                    if d.src_ip == ip
                        && d.src_port == ServicePort::ECHO.get()
                        && prober.handle_reply(now, d.payload).is_some()
                    {
                        replies += 1;
                    }
                }
                if replies > 0 && path.as_ref().is_none_or(|(at, _)| now >= *at + PATH_SAMPLE) {
                    let phrase = mesh_service::peer_status(queries, ip)
                        .await
                        .map_or_else(|| "unknown".to_owned(), |p| status::path_phrase(&p));
                    path = Some((now, phrase));
                }
                if let Some((_, phrase)) = &path {
                    tally.add(phrase, replies);
                }
            }
            () = grace => break,
        }
    }
    Ok(PingReport {
        target: req.target.clone(),
        name,
        virtual_ip: ip.to_string(),
        lane: Lane::Critical.name().to_owned(),
        rate_hz: req.rate_hz,
        size: req.size,
        stats: prober.stats(),
        paths: tally.paths,
    })
}
