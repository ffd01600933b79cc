//! The steps of one update attempt: prepare (TUF on a blocking thread), gate (sources,
//! sockets, first echo), transfer (forge's agent on its own thread, the probe beside it),
//! and the outcome; with the one-second tick that mirrors the transfer's progress.
//!
//! Invariant: each step checks that its event belongs to the current attempt (the loop
//! drops the others), and a failed step ends the attempt with one `FAILED` state and,
//! unless the failure cannot fix itself, a retry after a backoff delay.

use std::sync::Arc;

use bauxite_conduit::io::clock;
use bauxite_forge::activate::{self, MarkerState};
use bauxite_forge::agent::Outcome;
use bauxite_forge::layout::Version;
use bauxite_forge::state::{Progress, StateEvent, UpdateState};
use tokio::sync::watch;

use super::agent::{Agent, Run, jiff_now, parse_sources};
use super::gate::{self, ProbeShared};
use super::status::{FetchView, Phase, ProgressView};
use super::transfer::{self, Control, SharedView, TransferEvent};
use super::tuf_grpc::{self, GrpcFiles, Prepared};
use super::{Event, warm_start};
use crate::mesh_service;

impl Agent {
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
        self.refreshes = 0;
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
    pub(super) fn fail(&mut self, why: String, retry: bool) {
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

    pub(super) fn on_prepared(&mut self, result: Result<Prepared, tuf_grpc::PrepareError>) {
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

    pub(super) fn on_gate(&mut self, result: Result<gate::Open, String>) {
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

    pub(super) async fn on_transfer(&mut self, event: TransferEvent) {
        match event {
            TransferEvent::State(ev) => {
                self.last_progress = ev.progress;
                // Each state change is a progress sample too: a transfer that ended between
                // two refreshes still leaves its final progress in the recording.
                if ev.progress.chunk_count > 0 {
                    self.telemetry.progress(clock::unix_nanos(), &ev.progress);
                }
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

    pub(super) fn stop_probe(&mut self) {
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

    pub(super) fn on_finished(&mut self, result: Result<Outcome, String>) {
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

    pub(super) fn on_tick(&mut self) {
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
        // The first refresh that knows the chunk count reports too (refreshes before the
        // index arrived do not count), so a short transfer still has a progress sample.
        if v.progress.chunk_count == 0 {
            return;
        }
        self.refreshes += 1;
        if self.refreshes % super::agent::REFRESHES_PER_REPORT != 1 {
            return;
        }
        self.telemetry.progress(clock::unix_nanos(), &v.progress);
        self.telemetry.flush();
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
