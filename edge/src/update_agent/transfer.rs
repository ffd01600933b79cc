//! The transfer: forge's sans-IO [`UpdateAgent`] driven on a thread of its own, over a
//! conduit service socket, every datagram on the Bulk lane.
//!
//! Invariant: the daemon's runtime thread — the one moving the data plane's packets —
//! never does the agent's disk work (pwrite, fdatasync, reading a 3 GiB image back for
//! the final verification): it all happens on this thread, which only exchanges
//! datagrams with the shell through the socket's queues and events with the agent
//! through a channel. With `hold` set, the thread stops after the download, before the
//! final verification, until released, so what is on disk then is what gets verified.
//!
//! Driving (forge's rules): transmit everything due, take every event, then `poll_work`:
//! `Busy` loops at once, `Idle` waits for datagrams, the agent's timer, or a command;
//! `Done` ends the thread.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bauxite_conduit::Lane;
use bauxite_conduit::io::{IncomingBatch, ServiceSocket, clock};
use bauxite_forge::agent::{AgentConfig, AgentEvent, Outcome, UpdateAgent, UpdatePlan, Work};
use bauxite_forge::crash::NoCrash;
use bauxite_forge::fetch::FetchStats;
use bauxite_forge::layout::Layout;
use bauxite_forge::state::{Progress, StateEvent, UpdateState};
use tokio::sync::{mpsc, oneshot, watch};

use super::gate::Source;
use super::status::Phase;

/// The largest fetch datagram: forge's default, which every mesh node's MTU carries.
pub(super) const MAX_DATAGRAM: usize = 1300;
/// How long the thread waits for the agent to save the warm-start snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// Commands to the transfer thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Control {
    /// Go on past the hold point.
    pub release: bool,
    /// Stop at the next step (the staging and its checkpoint stay for a resume).
    pub cancel: bool,
}

/// What the thread reports.
#[derive(Debug)]
pub(super) enum TransferEvent {
    /// A state change.
    State(StateEvent),
    /// The download is complete and durable; waiting for a release.
    Held,
    /// The image verified; save the warm-start snapshot, then answer.
    SaveSnapshot(oneshot::Sender<()>),
    /// The thread ended.
    Finished(Result<Outcome, String>),
}

/// What the agent reads of a running transfer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct View {
    /// Where it stands.
    pub progress: Progress,
    /// The fetch protocol's counters.
    pub fetch: FetchStats,
    /// Chunks the checkpoint held at start.
    pub resumed: u32,
    /// Transferring, held, verifying or activating.
    pub phase: Option<Phase>,
}

/// A view shared with the agent.
pub(super) type SharedView = Arc<Mutex<View>>;

/// Reads the shared view.
pub(super) fn read(view: &SharedView) -> View {
    *view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the thread needs.
#[derive(Debug)]
pub(super) struct Setup {
    /// The state root.
    pub layout: Layout,
    /// What to install.
    pub plan: UpdatePlan,
    /// Image servers, best first.
    pub sources: Vec<Source>,
    /// The fetch socket.
    pub socket: ServiceSocket,
    /// Stop before the final verification until released.
    pub hold: bool,
    /// Recorded in the marker for the watchdog.
    pub health_timeout: Duration,
    /// Events for the agent, tagged with `attempt`.
    pub events: mpsc::Sender<super::Event>,
    /// Which attempt this is.
    pub attempt: u64,
    /// Progress shared with the agent.
    pub view: SharedView,
    /// Commands.
    pub control: watch::Receiver<Control>,
}

/// Starts the thread.
pub(super) fn spawn(setup: Setup) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("forge-transfer".into())
        .spawn(move || {
            let events = setup.events.clone();
            let attempt = setup.attempt;
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                // A panic must still end the attempt, or the agent would wait forever.
                Ok(rt) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    rt.block_on(drive(setup))
                }))
                .unwrap_or_else(|_| Err("the transfer thread panicked (see the log)".into())),
                Err(e) => Err(format!("cannot start the transfer's runtime: {e}")),
            };
            let _ = events.blocking_send(super::Event::Transfer {
                attempt,
                event: TransferEvent::Finished(result),
            });
        })
}

fn unix_ms() -> u64 {
    clock::unix_nanos() / 1_000_000
}

struct Driver {
    events: mpsc::Sender<super::Event>,
    attempt: u64,
    view: SharedView,
}

impl Driver {
    async fn emit(&self, event: TransferEvent) -> Result<(), String> {
        self.events
            .send(super::Event::Transfer {
                attempt: self.attempt,
                event,
            })
            .await
            .map_err(|_| "the update agent stopped".to_owned())
    }

    fn publish(&self, agent: &UpdateAgent<Source>, phase: Phase) {
        let mut v = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        v.progress = agent.progress();
        v.fetch = agent.fetch_stats();
        v.resumed = agent.resumed().count();
        v.phase = Some(phase);
    }

    /// Forwards the agent's events; on `VALID`, has the warm-start snapshot saved
    /// before the next step (the swap) runs.
    async fn drain(&self, agent: &mut UpdateAgent<Source>) -> Result<(), String> {
        while let Some(e) = agent.poll_event() {
            match e {
                AgentEvent::State(s) => {
                    let valid = s.state == UpdateState::Valid;
                    self.emit(TransferEvent::State(s)).await?;
                    if valid {
                        let (tx, rx) = oneshot::channel();
                        self.emit(TransferEvent::SaveSnapshot(tx)).await?;
                        let _ = tokio::time::timeout(SNAPSHOT_WAIT, rx).await;
                    }
                }
                AgentEvent::ChunkRejected { chunk, server } => {
                    tracing::warn!(chunk = chunk.0, %server, "a chunk failed verification on arrival; fetching it again");
                }
                AgentEvent::ServerDeprioritised { server } => {
                    tracing::warn!(%server, "image source failing repeatedly; used last");
                }
                AgentEvent::ServerRefused { server, reason } => {
                    tracing::warn!(%server, ?reason, "image source refused a request");
                }
                AgentEvent::Checkpointed { durable, .. } => {
                    tracing::debug!(durable, "checkpoint written");
                }
            }
        }
        Ok(())
    }
}

fn all_durable(agent: &UpdateAgent<Source>) -> bool {
    let p = agent.progress();
    p.chunk_count > 0 && p.chunks_durable == p.chunk_count
}

async fn drive(setup: Setup) -> Result<Outcome, String> {
    let Setup {
        layout,
        plan,
        sources,
        mut socket,
        hold,
        health_timeout,
        events,
        attempt,
        view,
        mut control,
    } = setup;
    let d = Driver {
        events,
        attempt,
        view,
    };
    let max = MAX_DATAGRAM.min(socket.max_payload());
    let mut cfg = AgentConfig {
        health_timeout,
        ..AgentConfig::default()
    };
    cfg.fetch.max_datagram = max;
    let built = UpdateAgent::new(
        &layout,
        plan,
        sources,
        cfg,
        Box::new(NoCrash),
        clock::now(),
        unix_ms(),
    );
    let mut agent = match built {
        Ok(a) => a,
        Err(e) => return Err(e.to_string()),
    };
    let sender = socket.sender();
    let mut buf = vec![0u8; max];
    let mut batch = IncomingBatch::new();
    let mut held = false;
    // Ends on `Done`, an error, or a cancel; each turn makes progress or waits.
    loop {
        if control.borrow().cancel {
            return Err("cancelled".into());
        }
        let now = clock::now();
        while let Some(t) = agent.poll_transmit(now, &mut buf) {
            sender
                .send_to(t.dst.ip, t.dst.port, Lane::Bulk, &buf[..t.len])
                .await
                .map_err(|e| e.to_string())?;
        }
        d.drain(&mut agent).await?;
        if hold && !control.borrow().release && all_durable(&agent) {
            if !held {
                held = true;
                d.publish(&agent, Phase::Held);
                tracing::info!(version = %agent.version(), "update downloaded and held before activation; run `bauxite update apply` to verify and activate it");
                d.emit(TransferEvent::Held).await?;
            }
            if control.changed().await.is_err() {
                return Err("the update agent stopped".into());
            }
            continue;
        }
        let work = agent.poll_work(now);
        let phase = if all_durable(&agent) {
            Phase::Verifying
        } else {
            Phase::Transferring
        };
        d.publish(&agent, phase);
        match work {
            Err(e) => {
                d.drain(&mut agent).await?;
                return Err(e.to_string());
            }
            Ok(Work::Done(o)) => {
                d.drain(&mut agent).await?;
                d.publish(&agent, Phase::Activating);
                return Ok(o);
            }
            Ok(Work::Busy) => tokio::task::yield_now().await,
            Ok(Work::Idle) => {
                let timer = agent.poll_timeout().map(tokio::time::Instant::from_std);
                let sleep = async {
                    match timer {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                // Datagrams already queued are taken before timers fire: after a slow
                // disk step, their chunks' timers have expired although the fragments
                // arrived, and firing first would re-request them (duplicates).
                tokio::select! {
                    biased;
                    changed = control.changed() => {
                        if changed.is_err() {
                            return Err("the update agent stopped".into());
                        }
                    }
                    received = socket.recv_batch(&mut batch) => {
                        received.map_err(|e| e.to_string())?;
                        for dg in batch.iter() {
                            let from = Source { ip: dg.src_ip, port: dg.src_port };
                            if let Err(e) = agent.handle_datagram(clock::now(), &from, dg.payload) {
                                // The agent reported FAILED; pass that on first.
                                d.drain(&mut agent).await?;
                                return Err(e.to_string());
                            }
                        }
                        let now = clock::now();
                        if agent.poll_timeout().is_some_and(|t| t <= now) {
                            agent.handle_timeout(now);
                        }
                    }
                    () = sleep => agent.handle_timeout(clock::now()),
                }
            }
        }
    }
}
