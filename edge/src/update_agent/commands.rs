//! The agent's commands from the control socket: `check`, `apply`, `rollback` and
//! `heartbeat` (in `health.rs`).
//!
//! Invariant: a command never runs disk or network work on the daemon's runtime thread
//! beyond the marker's small atomic writes: `check` refreshes TUF on a blocking thread
//! and answers from there.

use std::sync::Arc;

use bauxite_forge::activate;
use bauxite_forge::crash::NoCrash;
use bauxite_forge::layout::Version;
use bauxite_forge::state::UpdateState;
use serde_json::json;

use super::agent::{Agent, Run, jiff_now, parse_sources};
use super::status::{AssignmentView, Phase};
use super::tuf_grpc::{self, GrpcFiles};
use super::{Reply, UpdateCommand};

impl Agent {
    pub(super) fn on_command(&mut self, command: UpdateCommand, reply: Reply) {
        let answer = match command {
            UpdateCommand::Check => {
                self.check(reply);
                return;
            }
            UpdateCommand::Apply => self.apply(),
            UpdateCommand::Rollback => self.rollback("requested by the operator"),
            UpdateCommand::Heartbeat => Ok(self.heartbeat()),
        };
        let _ = reply.send(answer);
    }

    fn apply(&mut self) -> Result<serde_json::Value, String> {
        let phase = self.status().get().phase;
        if phase == Phase::Held
            && let Run::Transferring { control, view, .. } = &self.run
        {
            control.send_modify(|c| c.release = true);
            view.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .phase = Some(Phase::Verifying);
            tracing::info!("update: released from the hold point; verifying and activating");
            self.set_phase(Phase::Verifying);
            return Ok(json!({"resumed": true, "phase": "verifying"}));
        }
        if phase.is_moving() {
            return Ok(json!({"running": true, "phase": phase}));
        }
        if self.layout.is_none() {
            return Err("the update agent has no usable state root; see the daemon's log".into());
        }
        let Some(a) = self
            .assignment
            .clone()
            .filter(|a| !a.target.is_empty() && !a.rollback)
        else {
            return Err(
                "nothing is assigned to this node; deploy an update from the hub \
                 (`bauxite-dispatch update deploy`)"
                    .into(),
            );
        };
        if self.active().is_some_and(|v| v.as_str() == a.version) {
            return Ok(json!({"already_active": a.version}));
        }
        if self.health.is_some() {
            return Err("a new version is awaiting its health verdict; send `bauxite update heartbeat` or roll it back first".into());
        }
        self.begin();
        Ok(json!({"started": a.version, "target": a.target}))
    }

    fn check(&self, reply: Reply) {
        let Some(client) = self.p.hub_client.borrow().clone() else {
            let _ = reply.send(Err(
                "the hub's update service is not connected; see `bauxite update status` (hub_error)"
                    .into(),
            ));
            return;
        };
        let handle = tokio::runtime::Handle::current();
        let root = self.p.state_root.clone();
        let lock = Arc::clone(&self.tuf_lock);
        let assignment = self.assignment.clone();
        let active = self.active().map(|v| v.to_string());
        let blocked = |v: &str| {
            self.layout.as_ref().is_some_and(|l| {
                Version::parse(v)
                    .ok()
                    .is_some_and(|v| activate::is_blocked(l, &v).unwrap_or(false))
            })
        };
        let is_blocked = assignment.as_ref().is_some_and(|a| blocked(&a.version));
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock();
            let mut files = GrpcFiles::new(handle, client);
            let view = assignment.as_ref().map(|a| AssignmentView {
                sequence: a.sequence,
                target: a.target.clone(),
                version: a.version.clone(),
                sources: parse_sources(a).iter().map(ToString::to_string).collect(),
                rollback: a.rollback,
            });
            let answer = match assignment.filter(|a| !a.target.is_empty()) {
                None => {
                    // Nothing assigned: a refresh still proves the metadata is current.
                    let refreshed = (|| {
                        if !super::trust::is_installed(&root) {
                            return Err(tuf_grpc::PrepareError::NoTrust {
                                dir: super::trust::tuf_dir(&root).display().to_string(),
                            });
                        }
                        let mut tuf = bauxite_forge::tuf::Client::new(
                            bauxite_forge::tuf::DirStore::new(super::trust::tuf_dir(&root)),
                            bauxite_forge::tuf::Limits::default(),
                        );
                        tuf.refresh(&mut files, jiff_now())?;
                        Ok(())
                    })();
                    refreshed
                        .map(|()| json!({"assignment": null, "active_version": active, "metadata": "up to date"}))
                        .map_err(|e| e.to_string())
                }
                Some(a) => tuf_grpc::lookup(&root, &mut files, &a.target, jiff_now())
                    .map(|(_, fw)| {
                        let signed = tuf_grpc::SignedFirmware::from(&fw);
                        let newer = active
                            .as_deref()
                            .is_none_or(|cur| fw.info.check_newer_than(cur).is_ok());
                        json!({
                            "assignment": view,
                            "signed": signed,
                            "active_version": active,
                            "newer_than_active": newer,
                            "blocked": is_blocked,
                            "metadata": "up to date",
                        })
                    })
                    .map_err(|e| e.to_string()),
            };
            let _ = reply.send(answer);
        });
    }

    /// Restores the previous version (the operator or the hub asked).
    pub(super) fn rollback(&mut self, who: &str) -> Result<serde_json::Value, String> {
        if self.status().get().phase.is_busy() {
            return Err("an update is in progress; wait for it to end (or deploy another) before rolling back".into());
        }
        let Some(layout) = self.layout.clone() else {
            return Err("the update agent has no usable state root; see the daemon's log".into());
        };
        let done = activate::rollback(&layout, &mut NoCrash).map_err(|e| e.to_string())?;
        self.health = None;
        self.status().update(|s| s.watchdog = None);
        self.ensure_recording(done.rejected.as_str());
        let detail = format!(
            "rollback {who}: current -> versions/{}; {} is blocked",
            done.restored, done.rejected
        );
        self.daemon_state(
            UpdateState::AtomicRolledBack,
            done.rejected.as_str(),
            Some(detail),
        );
        self.set_phase(Phase::Idle);
        self.telemetry.finish();
        Ok(json!({"restored": done.restored.to_string(), "rejected": done.rejected.to_string()}))
    }
}
