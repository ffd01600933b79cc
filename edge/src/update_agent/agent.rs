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
use bauxite_dispatch_api::proto::node::update_service_client::UpdateServiceClient;
use bauxite_dispatch_api::proto::node::{UpdateAssignment, UpdateStateReport};
use bauxite_forge::activate::{self, MarkerState, Recovery};
use bauxite_forge::agent::Outcome;
use bauxite_forge::crash::NoCrash;
use bauxite_forge::layout::{Layout, Version};
use bauxite_forge::state::{Progress, StateEvent, UpdateState};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use super::gate::{self, ProbeShared, Source};
use super::health::Health;
use super::hub_link::{HubEvent, ReportQueue};
use super::status::{AssignmentView, FetchView, HistoryEntry, Phase, ProgressView, SharedStatus};
use super::telemetry::Telemetry;
use super::transfer::{self, Control, SharedView, TransferEvent};
use super::tuf_grpc::{self, GrpcFiles, Prepared};
use super::{Event, Reply, UpdateCommand, warm_start};
use crate::config::UpdatesConfig;
use crate::hub::{BACKOFF_CAP, Backoff};
use crate::mesh_service;

/// First retry delay after a failed attempt.
const RETRY_BASE: Duration = Duration::from_secs(2);

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
    attempt: u64,
    /// Whether the current attempt already reported `FAILED`.
    attempt_failed: bool,
    pub(super) run: Run,
    retry: Option<tokio::time::Instant>,
    backoff: Backoff,
    pub(super) health: Option<Health>,
    pub(super) last_rollback: Option<u64>,
    /// The update the current run installs: (target, version).
    current_update: Option<(String, String)>,
    last_progress: Progress,
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
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut commands: mpsc::Receiver<(UpdateCommand, Reply)>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        self.recover();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
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

    pub(super) fn ensure_recording(&self, version: &str) {
        if !self.telemetry.is_open() {
            let dir = self.p.cfg.recording_dir(&self.p.state_root);
            let path = self.telemetry.start(&dir, version, unix_ms());
            self.status()
                .update(|s| s.recording = path.map(|p| p.display().to_string()));
        }
    }

    // ------------------------------------------------------------ states

    fn report(&self, ev: &StateEvent) -> UpdateStateReport {
        let (target, sequence) = match (&self.current_update, &self.assignment) {
            (Some((t, _)), Some(a)) if a.target == *t => (t.clone(), a.sequence),
            (Some((t, _)), _) => (t.clone(), 0),
            (None, Some(a)) => (a.target.clone(), a.sequence),
            (None, None) => (String::new(), 0),
        };
        UpdateStateReport {
            sequence,
            target,
            version: ev.version.clone(),
            state: ev.state.name().to_owned(),
            chunks_done: u64::from(ev.progress.chunks_done),
            chunks_total: u64::from(ev.progress.chunk_count),
            bytes_transferred: ev.progress.bytes_transferred,
            bytes_retransferred: ev.progress.bytes_retransferred,
            active_version: self.active().map(|v| v.to_string()).unwrap_or_default(),
            detail: ev.detail.clone().unwrap_or_default(),
        }
    }

    /// Records a state change (already logged): status, recording, hub.
    pub(super) fn record(&mut self, ev: &StateEvent) {
        if ev.state == UpdateState::Failed {
            self.attempt_failed = true;
        }
        self.telemetry.state(clock::unix_nanos(), ev);
        let active = self.active().map(|v| v.to_string());
        self.status().update(|s| {
            s.active_version = active;
            s.push_history(HistoryEntry {
                unix_ms: unix_ms(),
                state: ev.state.name().to_owned(),
                version: ev.version.clone(),
                // Before the chunk index is known there is no progress to speak of.
                percent: if ev.progress.image_len == 0 {
                    0.0
                } else {
                    ev.progress.percent()
                },
                chunks_done: ev.progress.chunks_done,
                chunk_count: ev.progress.chunk_count,
                bytes_retransferred: ev.progress.bytes_retransferred,
                verified_bytes_refetched: ev.progress.verified_bytes_refetched,
                detail: ev.detail.clone(),
            });
        });
        self.p.reports.push_state(self.report(ev));
    }

    /// A state the daemon decides (not forge's agent): logged like forge's, then recorded.
    pub(super) fn daemon_state(
        &mut self,
        state: UpdateState,
        version: &str,
        detail: Option<String>,
    ) {
        tracing::info!(state = %state, version = %version, chunk = ?None::<u32>, detail = ?detail, "update state");
        let mut ev = StateEvent::new(state, version, self.last_progress);
        ev.detail = detail;
        self.record(&ev);
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

    /// Starts (or restarts) the assigned update: TUF on a blocking thread.
    pub(super) fn begin(&mut self) {
        let Some(a) = self
            .assignment
            .clone()
            .filter(|a| !a.target.is_empty() && !a.rollback)
        else {
            return;
        };
        if self.layout.is_none() {
            return;
        }
        self.cancel_run();
        self.attempt += 1;
        self.attempt_failed = false;
        self.retry = None;
        self.current_update = Some((a.target.clone(), a.version.clone()));
        self.last_progress = Progress::default();
        let attempt = self.attempt;
        let blocked = self.layout.as_ref().is_some_and(|l| {
            Version::parse(&a.version).is_ok_and(|v| activate::is_blocked(l, &v).unwrap_or(false))
        });
        if blocked {
            // Rolled back once: retrying would only loop (the watchdog's point).
            self.set_phase(Phase::Failed);
            self.status()
                .update(|s| s.target_version = Some(a.version.clone()));
            let detail = format!(
                "version {} was rolled back earlier and is blocked; deploy a newer version",
                a.version
            );
            tracing::warn!(version = %a.version, "update refused: the version is blocked");
            self.daemon_state(UpdateState::Failed, &a.version, Some(detail));
            return;
        }
        self.status().update(|s| {
            s.target_version = Some(a.version.clone());
            s.progress = None;
            s.fetch = None;
            s.resumed_chunks = 0;
            s.probe = None;
            s.signed = None;
        });
        let Some(client) = self.p.hub_client.borrow().clone() else {
            self.fail("the hub's update service is not connected".into(), true);
            return;
        };
        self.set_phase(Phase::Preparing);
        tracing::info!(target = %a.target, version = %a.version, attempt, "update: preparing (TUF refresh, firmware lookup, chunk index)");
        let handle = tokio::runtime::Handle::current();
        let root = self.p.state_root.clone();
        let lock = Arc::clone(&self.tuf_lock);
        let tx = self.p.events.clone();
        let current = self.active();
        self.run = Run::Preparing;
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock();
            let mut files = GrpcFiles::new(handle, client);
            let result = tuf_grpc::prepare(
                &root,
                &mut files,
                &a.target,
                &a.version,
                current.as_ref(),
                jiff_now(),
            );
            let _ = tx.blocking_send(Event::Prepared { attempt, result });
        });
    }

    /// Ends the attempt with `FAILED` (unless forge reported it already); with `retry`,
    /// tries again after a backoff delay.
    fn fail(&mut self, why: String, retry: bool) {
        tracing::warn!(reason = %why, "update attempt failed");
        self.stop_probe();
        self.run = Run::Idle;
        if !self.attempt_failed {
            let version = self
                .current_update
                .as_ref()
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            self.daemon_state(UpdateState::Failed, &version, Some(why));
        }
        self.set_phase(Phase::Failed);
        self.telemetry.finish();
        if retry && self.p.cfg.auto_apply {
            let delay = self.backoff.next_delay();
            tracing::info!(?delay, "update: retrying after a delay");
            self.retry = Some(tokio::time::Instant::now() + delay);
        }
    }

    fn on_prepared(&mut self, result: Result<Prepared, tuf_grpc::PrepareError>) {
        let prepared = match result {
            Ok(p) => p,
            Err(e) => {
                // A refusal by TUF (bad signature, downgrade) will not fix itself, but the
                // hub may publish new metadata: retry with backoff either way.
                self.fail(e.to_string(), true);
                return;
            }
        };
        let Some(a) = self.assignment.clone() else {
            return;
        };
        self.ensure_recording(prepared.plan.version.as_str());
        self.status()
            .update(|s| s.signed = Some(prepared.signed.clone()));
        self.set_phase(Phase::ConnectingSource);
        let sources = parse_sources(&a);
        let queries = self.p.queries.clone();
        let hub_peer = self.p.hub_peer.clone();
        let tx = self.p.events.clone();
        let attempt = self.attempt;
        tokio::spawn(async move {
            let result = gate::open(&queries, sources, hub_peer).await;
            let _ = tx.send(Event::Gate { attempt, result }).await;
        });
        self.run = Run::Gating(Box::new(prepared));
    }

    fn on_gate(&mut self, result: Result<gate::Open, String>) {
        let open = match result {
            Ok(o) => o,
            Err(e) => {
                self.fail(e, true);
                return;
            }
        };
        let Run::Gating(prepared) = std::mem::replace(&mut self.run, Run::Idle) else {
            return;
        };
        let Some(layout) = self.layout.clone() else {
            return;
        };
        let (first, rtt) = open.first;
        tracing::info!(source = %first, rtt_us = rtt.as_micros(), sources = open.sources.len(), "update: image source answered over the mesh; transfer starts (Bulk lane)");
        let (control, control_rx) = watch::channel(Control::default());
        let view = SharedView::default();
        let setup = transfer::Setup {
            layout,
            plan: prepared.plan,
            sources: open.sources,
            socket: open.fetch,
            hold: self.p.cfg.hold_before_activate,
            health_timeout: self.p.cfg.health_timeout,
            events: self.p.events.clone(),
            attempt: self.attempt,
            view: Arc::clone(&view),
            control: control_rx,
        };
        if let Err(e) = transfer::spawn(setup) {
            self.fail(format!("cannot start the transfer thread: {e}"), true);
            return;
        }
        let probe = (self.p.cfg.probe_hz > 0).then(|| {
            let shared = ProbeShared::default();
            let task = tokio::spawn(gate::probe(
                open.probe,
                first.ip,
                self.p.cfg.probe_hz,
                self.telemetry.clone(),
                Arc::clone(&shared),
            ));
            (task, shared)
        });
        self.run = Run::Transferring {
            control,
            view,
            probe,
        };
        self.set_phase(Phase::Transferring);
    }

    async fn on_transfer(&mut self, event: TransferEvent) {
        match event {
            TransferEvent::State(ev) => {
                self.last_progress = ev.progress;
                self.record(&ev);
            }
            TransferEvent::Held => {
                self.on_tick();
                self.status().update(|s| {
                    s.detail = Some(
                        "downloaded and durable; held before the final verification and the \
                         swap: run `bauxite update apply` to continue"
                            .into(),
                    );
                });
            }
            TransferEvent::SaveSnapshot(ack) => {
                self.save_snapshot().await;
                let _ = ack.send(());
            }
            TransferEvent::Finished(result) => self.on_finished(result),
        }
    }

    /// Saves the warm-start snapshot of the running node's peer table.
    pub(super) async fn save_snapshot(&self) {
        let secs = clock::unix_nanos() / 1_000_000_000;
        match mesh_service::snapshot(&self.p.queries, secs).await {
            Ok(snap) => {
                if let Err(e) = warm_start::save(&self.p.state_root, &snap) {
                    tracing::warn!(error = %e, "warm-start snapshot not saved");
                }
            }
            Err(e) => tracing::warn!(error = %e, "warm-start snapshot not taken"),
        }
    }

    fn stop_probe(&mut self) {
        if let Run::Transferring {
            probe: Some((task, shared)),
            ..
        } = &mut self.run
        {
            task.abort();
            let stats = gate::probe_stats(shared);
            self.status().update(|s| s.probe = Some(stats));
        }
    }

    fn on_finished(&mut self, result: Result<Outcome, String>) {
        self.on_tick();
        self.stop_probe();
        self.run = Run::Idle;
        match result {
            Ok(Outcome::Activated(done)) => {
                self.backoff.reset();
                let pending = self
                    .layout
                    .as_ref()
                    .and_then(|l| activate::read_marker(l).ok().flatten())
                    .is_some_and(|m| m.state == MarkerState::Pending);
                if pending {
                    self.start_health(done.version, 0);
                } else {
                    self.daemon_state(
                        UpdateState::Committed,
                        done.version.as_str(),
                        Some("first install: nothing to roll back to, committed at once".into()),
                    );
                    self.set_phase(Phase::Idle);
                    self.telemetry.finish();
                }
            }
            Ok(Outcome::AlreadyActive { .. }) => {
                self.set_phase(Phase::Idle);
                self.telemetry.finish();
            }
            Ok(Outcome::Rejected { .. }) => {
                self.set_phase(Phase::Rejected);
                self.telemetry.finish();
            }
            Ok(Outcome::Failed) => self.fail("the update agent failed".into(), true),
            Err(e) => self.fail(e, true),
        }
    }

    fn on_tick(&mut self) {
        let Run::Transferring { view, probe, .. } = &self.run else {
            return;
        };
        let v = transfer::read(view);
        let probe = probe.as_ref().map(|(_, s)| gate::probe_stats(s));
        self.last_progress = v.progress;
        // The transfer thread's phase is authoritative while it runs.
        self.status().update(|s| {
            s.progress = Some(ProgressView::from(&v.progress));
            s.fetch = Some(FetchView::from(&v.fetch));
            s.resumed_chunks = v.resumed;
            if probe.is_some() {
                s.probe = probe;
            }
            if let Some(phase) = v.phase {
                s.phase = phase;
            }
        });
        if v.progress.chunk_count == 0 {
            return;
        }
        self.telemetry.progress(clock::unix_nanos(), &v.progress);
        let state = self
            .status()
            .get()
            .state
            .and_then(|s| UpdateState::from_name(&s))
            .unwrap_or(UpdateState::PendingValidation);
        let version = self
            .current_update
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let ev = StateEvent::new(state, &version, v.progress);
        self.p.reports.push_progress(self.report(&ev));
    }

    /// Cancels whatever runs (the transfer stops at its next step; its checkpoint stays).
    pub(super) fn cancel_run(&mut self) {
        self.stop_probe();
        if let Run::Transferring { control, .. } = &self.run {
            control.send_modify(|c| c.cancel = true);
        }
        if !matches!(self.run, Run::Idle) {
            // Results of the cancelled attempt are ignored from now on.
            self.attempt += 1;
            self.current_update = None;
        }
        self.run = Run::Idle;
    }
}
