//! Before a transfer: the image sources, the sockets, and a first echo round trip that
//! proves the session with a source is up; during it: the control-loop probe.
//!
//! Invariant: the transfer starts only after a source answered an echo over the mesh. A
//! node holds datagrams for a peer without a session in a small stage that is not
//! back-pressured, so a window of chunk requests sent before the handshake would be
//! dropped there; one small probe first costs one round trip.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bauxite_conduit::io::{IncomingBatch, Query, ServiceSocket, clock};
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::{Lane, VirtualIp};
use bauxite_forge::telemetry::CONTROL_LOOP_TOPIC;
use tokio::sync::{mpsc, watch};

use super::telemetry::Telemetry;
use crate::mesh_service;
use crate::probe::{ProbeStats, Prober};

/// How long the hub's mesh node may take to appear in topology.
pub(super) const SOURCE_WAIT: Duration = Duration::from_secs(30);
/// How long a source may take to answer the first echo.
pub(super) const ECHO_WAIT: Duration = Duration::from_secs(30);
/// Interval of the first echoes.
const ECHO_EVERY: Duration = Duration::from_millis(200);
/// Receive queue of the fetch socket: a 16-chunk window is about 830 fragments.
pub(super) const FETCH_RECV_QUEUE: usize = 8192;
/// Payload of a control-loop probe (a 64-byte IP packet: the seed's control loop).
pub(super) const PROBE_SIZE: usize = 36;

/// A mesh address of an image server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Source {
    /// Its virtual IP.
    pub ip: VirtualIp,
    /// Its service port.
    pub port: u16,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// What the gate hands to the transfer.
#[derive(Debug)]
pub(super) struct Open {
    /// Sources, best first.
    pub sources: Vec<Source>,
    /// The socket the fetch client uses (an ephemeral port).
    pub fetch: ServiceSocket,
    /// The socket the probes use (an ephemeral port).
    pub probe: ServiceSocket,
    /// The source that answered first, and the round trip.
    pub first: (Source, Duration),
}

/// Finds the sources (the assignment's, else the hub's mesh node on the forge port),
/// binds the two sockets and waits for an echo reply from one of them.
pub(super) async fn open(
    queries: &mpsc::Sender<Query>,
    assigned: Vec<Source>,
    mut hub_peer: watch::Receiver<Option<VirtualIp>>,
) -> Result<Open, String> {
    let sources = if assigned.is_empty() {
        let found = tokio::time::timeout(SOURCE_WAIT, hub_peer.wait_for(Option::is_some)).await;
        let ip = match found {
            Ok(Ok(ip)) => *ip,
            _ => None,
        };
        let ip = ip.ok_or_else(|| {
            format!(
                "the assignment names no image source and the hub's mesh node is not in \
                 the topology after {SOURCE_WAIT:?}; check that the hub runs its mesh node"
            )
        })?;
        vec![Source {
            ip,
            port: ServicePort::FORGE.get(),
        }]
    } else {
        assigned
    };
    let fetch = mesh_service::bind_ephemeral(queries, FETCH_RECV_QUEUE)
        .await
        .map_err(|e| e.to_string())?;
    let mut probe = mesh_service::bind_ephemeral(queries, 4096)
        .await
        .map_err(|e| e.to_string())?;
    let sender = probe.sender();
    let mut prober = Prober::new(u64::from(probe.local_port().get()));
    let mut payload = Vec::new();
    let mut batch = IncomingBatch::new();
    let mut every = tokio::time::interval(ECHO_EVERY);
    let deadline = tokio::time::sleep(ECHO_WAIT);
    let mut deadline = std::pin::pin!(deadline);
    // Bounded by ECHO_WAIT.
    loop {
        tokio::select! {
            () = &mut deadline => {
                let list: Vec<String> = sources.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no image source answered an echo over the mesh within {ECHO_WAIT:?} ({}); \
                     check the mesh path to it (`bauxite status`, `bauxite ping`)",
                    list.join(", ")
                ));
            }
            _ = every.tick() => {
                for s in &sources {
                    prober.next_probe(clock::now(), PROBE_SIZE, &mut payload);
                    let _ = sender.try_send_to(s.ip, ServicePort::ECHO.get(), Lane::Critical, &payload);
                }
            }
            received = probe.recv_batch(&mut batch) => {
                received.map_err(|e| e.to_string())?;
                let now = clock::now();
                for d in batch.iter() {
                    if let Some(rtt) = prober.handle_reply(now, d.payload)
                        && let Some(s) = sources.iter().find(|s| s.ip == d.src_ip)
                    {
                        let first = (*s, rtt);
                        return Ok(Open { sources, fetch, probe, first });
                    }
                }
            }
        }
    }
}

/// The control-loop probe's running statistics.
pub(super) type ProbeShared = Arc<Mutex<ProbeStats>>;

/// Reads the probe's statistics.
pub(super) fn probe_stats(shared: &ProbeShared) -> ProbeStats {
    *shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `hz` echo probes per second to `target` on the Critical lane until the task is
/// aborted, recording each round trip to `/control_loop/latency_us` and into `shared`.
pub(super) async fn probe(
    mut socket: ServiceSocket,
    target: VirtualIp,
    hz: u32,
    telemetry: Telemetry,
    shared: ProbeShared,
) {
    let sender = socket.sender();
    let mut prober = Prober::new(u64::from(socket.local_port().get()) << 32 | u64::from(hz));
    let mut payload = Vec::new();
    let mut batch = IncomingBatch::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Ends when the task is aborted (the transfer ended) or the shell stops.
    loop {
        tokio::select! {
            _ = tick.tick() => {
                prober.next_probe(clock::now(), PROBE_SIZE, &mut payload);
                let _ = sender.try_send_to(target, ServicePort::ECHO.get(), Lane::Critical, &payload);
            }
            received = socket.recv_batch(&mut batch) => {
                if received.is_err() {
                    return;
                }
                let now = clock::now();
                let wall = clock::unix_nanos();
                for d in batch.iter() {
                    if d.src_ip != target {
                        continue;
                    }
                    if let Some(rtt) = prober.handle_reply(now, d.payload) {
                        telemetry.series(wall, CONTROL_LOOP_TOPIC, rtt.as_secs_f64() * 1e6);
                    }
                }
                *shared.lock().unwrap_or_else(PoisonError::into_inner) = prober.stats();
            }
        }
    }
}
