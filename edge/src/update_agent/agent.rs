//! The agent's loop: assignments from the hub, the steps of one update (prepare, gate,
//! transfer), commands, a one-second tick for progress, and the retry timer.
//!
//! Invariant: one update runs at a time, tagged with an `attempt` number; an event of an
//! older attempt (superseded or cancelled) never changes the status. Every state change
//! goes to the log, the status history, the MCAP recording and the hub, in that order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::VirtualIp;
use bauxite_conduit::io::{Query, clock};
use bauxite_dispatch_api::proto::node::UpdateAssignment;
use bauxite_dispatch_api::proto::node::update_service_client::UpdateServiceClient;
use bauxite_forge::activate::{self, MarkerState, Recovery};
use bauxite_forge::crash::NoCrash;
use bauxite_forge::layout::{Layout, Version};
use bauxite_forge::state::{Progress, StateEvent, UpdateState};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use super::gate::{ProbeShared, Source};
use super::health::Health;
use super::hub_link::{HubEvent, ReportQueue};
use super::status::{AssignmentView, Phase, SharedStatus};
use super::telemetry::Telemetry;
use super::transfer::{Control, SharedView, TransferEvent};
use super::tuf_grpc::Prepared;
use super::{Event, Reply, UpdateCommand};
use crate::config::UpdatesConfig;
use crate::hub::{BACKOFF_CAP, Backoff};

/// First retry delay after a failed attempt.
const RETRY_BASE: Duration = Duration::from_secs(2);
/// How often a running transfer's progress is copied into the status: often enough that
/// a script acting at a given percentage (the demonstration's power cut at 47 %) reads
/// it within a fraction of a percent of a 3 GiB transfer.
pub(super) const STATUS_REFRESH: Duration = Duration::from_millis(100);
/// Status refreshes per progress report to the hub and progress sample in the recording
/// (once a second).
pub(super) const REFRESHES_PER_REPORT: u64 = 10;

pub(super) struct Parts {
    pub(super) cfg: UpdatesConfig,
    pub(super) state_root: PathBuf,
    pub(super) status: Arc<SharedStatus>,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) hub_client: watch::Receiver<Option<UpdateServiceClient<Channel>>>,
    pub(super) reports: Arc<ReportQueue>,
    pub(super) queries: mpsc::Sender<Query>,
    pub(super) hub_peer: watch::Receiver<Option<VirtualIp>>,
    pub(super) seed: u64,
}

/// What runs now.
pub(super) enum Run {
    Idle,
    Preparing,
    Gating(Box<Prepared>),
    Transferring {
        control: watch::Sender<Control>,
        view: SharedView,
        probe: Option<(tokio::task::JoinHandle<()>, ProbeShared)>,
    },
}

pub(super) struct Agent {
    pub(super) p: Parts,
    pub(super) layout: Option<Layout>,
    pub(super) telemetry: Telemetry,
    pub(super) tuf_lock: Arc<std::sync::Mutex<()>>,
    pub(super) assignment: Option<UpdateAssignment>,
    pub(super) attempt: u64,
    /// Whether the current attempt already reported `FAILED`.
    pub(super) attempt_failed: bool,
    pub(super) run: Run,
    pub(super) retry: Option<tokio::time::Instant>,
    pub(super) backoff: Backoff,
    pub(super) health: Option<Health>,
    pub(super) last_rollback: Option<u64>,
    /// The update the current run installs: (target, version).
    pub(super) current_update: Option<(String, String)>,
    pub(super) last_progress: Progress,
    /// Status refreshes of this attempt (the first and every
    /// [`REFRESHES_PER_REPORT`]th after it also report).
    pub(super) refreshes: u64,
}

pub(super) fn unix_ms() -> u64 {
    clock::unix_nanos() / 1_000_000
}

pub(super) fn jiff_now() -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(clock::unix_nanos()))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

pub(super) fn parse_sources(a: &UpdateAssignment) -> Vec<Source> {
    a.sources
        .iter()
        .filter_map(|s| {
            let ip = s.virtual_ip.parse::<std::net::Ipv4Addr>().ok()?;
            let port = u16::try_from(s.port).ok().filter(|p| *p != 0)?;
            Some(Source {
                ip: VirtualIp::from(ip),
                port,
            })
        })
        .collect()
}

impl Agent {
    pub(super) fn new(p: Parts) -> Self {
        let seed = p.seed;
        Self {
            p,
            layout: None,
            telemetry: Telemetry::default(),
            tuf_lock: Arc::new(std::sync::Mutex::new(())),
            assignment: None,
            attempt: 0,
            attempt_failed: false,
            run: Run::Idle,
            retry: None,
            backoff: Backoff::new(RETRY_BASE, BACKOFF_CAP, seed),
            health: None,
            last_rollback: None,
            current_update: None,
            last_progress: Progress::default(),
            refreshes: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut commands: mpsc::Receiver<(UpdateCommand, Reply)>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        self.recover();
        let mut tick = tokio::time::interval(STATUS_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Runs for the daemon's life; ends on shutdown.
        loop {
            let retry = self.retry;
            let retry = async move {
                match retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let health = self.health_deadline();
            let health = async move {
                match health {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                Some(event) = events.recv() => self.on_event(event).await,
                Some((command, reply)) = commands.recv() => self.on_command(command, reply),
                _ = tick.tick() => self.on_tick(),
                () = retry => {
                    self.retry = None;
                    self.begin();
                }
                () = health => self.on_health_timeout(),
            }
        }
        self.stop(&mut events).await;
    }

    /// Cancels the transfer and waits (bounded) for its thread to end, then closes the
    /// recording.
    async fn stop(&mut self, events: &mut mpsc::Receiver<Event>) {
        let running = matches!(self.run, Run::Transferring { .. });
        let attempt = self.attempt;
        self.cancel_run();
        if running {
            let wait = async {
                while let Some(e) = events.recv().await {
                    if let Event::Transfer {
                        attempt: a,
                        event: TransferEvent::Finished(_),
                    } = e
                        && a == attempt
                    {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(super::STOP_TIMEOUT / 2, wait).await;
        }
        self.telemetry.finish();
    }

    pub(super) fn status(&self) -> &SharedStatus {
        &self.p.status
    }

    pub(super) fn active(&self) -> Option<Version> {
        self.layout
            .as_ref()
            .and_then(|l| l.current().ok().flatten())
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        let active = self.active().map(|v| v.to_string());
        self.status().update(|s| {
            s.phase = phase;
            s.active_version = active;
        });
    }

    /// `activate::recover` first, then the watchdog if a new version awaits its verdict.
    fn recover(&mut self) {
        let layout = match Layout::open(&self.p.state_root) {
            Ok(l) => l,
            Err(error) => {
                tracing::error!(%error, "update agent: the state root is unusable; updates are off until it is fixed");
                self.status().update(|s| {
                    s.phase = Phase::Disabled;
                    s.detail = Some(error.to_string());
                });
                return;
            }
        };
        let recovery = activate::recover(&layout, &mut NoCrash);
        self.layout = Some(layout);
        match recovery {
            Ok(Recovery::Steady { current }) => {
                tracing::info!(current = ?current.map(|v| v.to_string()), "update agent: state root recovered")
            }
            Ok(Recovery::ActivationAborted { current }) => tracing::warn!(
                current = ?current.map(|v| v.to_string()),
                "update agent: an activation was cut before the swap; the active version stays and the staged update is verified again when it is next applied"
            ),
            Ok(Recovery::RollbackCompleted(rb)) => {
                let detail = format!(
                    "an interrupted rollback was finished: current -> versions/{}; {} is blocked",
                    rb.restored, rb.rejected
                );
                self.daemon_state(
                    UpdateState::AtomicRolledBack,
                    rb.rejected.as_str(),
                    Some(detail),
                );
            }
            Ok(Recovery::AwaitingHealth {
                version,
                boot_attempts,
            }) => {
                self.ensure_recording(version.as_str());
                self.start_health(version, boot_attempts);
            }
            Err(error) => {
                tracing::error!(%error, "update agent: recovery of the state root failed; updates are off");
                self.layout = None;
                self.status().update(|s| {
                    s.phase = Phase::Disabled;
                    s.detail = Some(error.to_string());
                });
                return;
            }
        }
        if self.health.is_none() {
            self.set_phase(Phase::Idle);
        }
    }

    // ------------------------------------------------------------ events

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Hub(HubEvent::Connected) => {
                tracing::info!("update agent: connected to the hub's update service");
                self.status().update(|s| {
                    s.hub_connected = true;
                    s.hub_error = None;
                });
            }
            Event::Hub(HubEvent::Lost(why)) => {
                tracing::warn!(reason = %why, "update agent: hub update service lost; reconnecting");
                self.status().update(|s| {
                    s.hub_connected = false;
                    s.hub_error = Some(why);
                });
            }
            Event::Hub(HubEvent::Revoked(why)) => {
                tracing::error!(reason = %why, "update agent: this node was revoked; no more updates");
                self.status().update(|s| {
                    s.hub_connected = false;
                    s.hub_error = Some(format!("revoked: {why}"));
                });
            }
            Event::Hub(HubEvent::Assignment(a)) => self.on_assignment(a),
            Event::Prepared { attempt, result } if attempt == self.attempt => {
                self.on_prepared(result);
            }
            Event::Gate { attempt, result } if attempt == self.attempt => self.on_gate(result),
            Event::Transfer { attempt, event } if attempt == self.attempt => {
                self.on_transfer(event).await;
            }
            // A superseded attempt: its sockets and results are dropped here.
            Event::Prepared { .. } | Event::Gate { .. } | Event::Transfer { .. } => {}
        }
    }

    fn on_assignment(&mut self, a: UpdateAssignment) {
        tracing::info!(
            sequence = a.sequence,
            target = %a.target,
            version = %a.version,
            rollback = a.rollback,
            sources = a.sources.len(),
            "update assignment"
        );
        let previous = self.assignment.replace(a.clone());
        self.status().update(|s| {
            s.assignment = Some(AssignmentView {
                sequence: a.sequence,
                target: a.target.clone(),
                version: a.version.clone(),
                sources: parse_sources(&a).iter().map(ToString::to_string).collect(),
                rollback: a.rollback,
            });
        });
        if a.rollback {
            if self.last_rollback != Some(a.sequence) {
                self.last_rollback = Some(a.sequence);
                self.cancel_run();
                if let Err(e) = self.rollback("requested by the hub") {
                    tracing::warn!(error = %e, "update agent: the hub's rollback request could not be carried out");
                }
            }
            return;
        }
        if a.target.is_empty() {
            self.cancel_run();
            self.retry = None;
            if self.health.is_none() {
                self.set_phase(Phase::Idle);
            }
            return;
        }
        let same = previous
            .as_ref()
            .is_some_and(|p| p.target == a.target && p.version == a.version && !p.rollback);
        let phase = self.status().get().phase;
        if same && (phase.is_busy() || matches!(phase, Phase::Rejected | Phase::Waiting)) {
            return;
        }
        if self
            .current_update
            .as_ref()
            .is_some_and(|(t, v)| *t != a.target || *v != a.version)
        {
            self.cancel_run();
        }
        self.consider(&a);
    }

    /// Starts the assigned update unless it is active, blocked, or waits for `apply`.
    fn consider(&mut self, a: &UpdateAssignment) {
        if self.active().is_some_and(|v| v.as_str() == a.version) {
            if self.health.is_none() {
                self.set_phase(Phase::Idle);
                let state = match self
                    .layout
                    .as_ref()
                    .and_then(|l| activate::read_marker(l).ok().flatten())
                {
                    Some(m) if m.state == MarkerState::Pending => UpdateState::Activated,
                    _ => UpdateState::Committed,
                };
                // Tells a hub that restarted, or lost the last report, where this node is.
                self.current_update = Some((a.target.clone(), a.version.clone()));
                let mut ev = StateEvent::new(state, &a.version, self.last_progress);
                ev.detail = Some("the assigned version is active".into());
                self.p.reports.push_state(self.report(&ev));
            }
            return;
        }
        if self.health.is_some() {
            return;
        }
        if self.p.cfg.auto_apply {
            self.begin();
        } else {
            tracing::info!(version = %a.version, "update assigned; waiting for `bauxite update apply` (auto_apply = false)");
            self.set_phase(Phase::Waiting);
        }
    }
}
