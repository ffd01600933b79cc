//! How a state change is recorded: the status history, the MCAP recording and a report
//! queued for the hub, in that order (forge's agent logs its own states; the daemon's are
//! logged here in the same form).
//!
//! Invariant: every state the agent reaches goes through [`Agent::record`], so the log,
//! `update status`, the recording and the hub never disagree about the sequence.

use bauxite_conduit::io::clock;
use bauxite_dispatch_api::proto::node::UpdateStateReport;
use bauxite_forge::state::{StateEvent, UpdateState};

use super::agent::{Agent, unix_ms};
use super::status::HistoryEntry;

impl Agent {
    pub(super) fn ensure_recording(&self, version: &str) {
        if !self.telemetry.is_open() {
            let dir = self.p.cfg.recording_dir(&self.p.state_root);
            let path = self.telemetry.start(&dir, version, unix_ms());
            self.status()
                .update(|s| s.recording = path.map(|p| p.display().to_string()));
        }
    }

    // ------------------------------------------------------------ states

    pub(super) fn report(&self, ev: &StateEvent) -> UpdateStateReport {
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
        self.telemetry.flush();
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
}
