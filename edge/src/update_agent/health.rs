//! The health watchdog of a freshly activated version: forge's sans-IO [`Watchdog`]
//! driven by the agent, with `bauxite update heartbeat` as the health signal.
//!
//! Invariant: each start of the candidate is counted in `rollback.marker` *before* it is
//! considered started (`activate::record_start`), so a candidate that takes the machine
//! (or this daemon) down still uses up its starts; after `max_failed_starts` the next
//! start rolls it back without waiting. The daemon does not start the workload itself:
//! its supervisor starts whatever `{state_root}/current` points to, and the workload
//! reports healthy with `bauxite update heartbeat`. Without `heartbeat_required`, the
//! daemon running on with the new version counts as healthy.

use std::time::Instant;

use bauxite_conduit::io::clock;
use bauxite_forge::activate;
use bauxite_forge::crash::NoCrash;
use bauxite_forge::layout::Version;
use bauxite_forge::state::UpdateState;
use bauxite_forge::watchdog::{Watchdog, WatchdogAction, WatchdogConfig};
use serde_json::json;

use super::agent::Agent;
use super::status::{Phase, WatchdogView};

/// A watchdog in progress.
#[derive(Debug)]
pub(super) struct Health {
    watchdog: Watchdog,
    version: Version,
    started: Instant,
}

impl Agent {
    /// Starts watching `version`, already started `attempts` times.
    pub(super) fn start_health(&mut self, version: Version, attempts: u32) {
        let cfg = WatchdogConfig {
            health_timeout: self.p.cfg.health_timeout,
            max_starts: self.p.cfg.max_failed_starts,
        };
        tracing::info!(%version, starts_so_far = attempts, max_starts = cfg.max_starts, heartbeat_required = self.p.cfg.heartbeat_required, "update: watching the new version's health");
        let now = clock::now();
        self.health = Some(Health {
            watchdog: Watchdog::new(cfg, attempts, now),
            version,
            started: now,
        });
        self.drive_health();
    }

    /// When the current start's health deadline expires.
    pub(super) fn health_deadline(&self) -> Option<tokio::time::Instant> {
        self.health
            .as_ref()
            .and_then(|h| h.watchdog.poll_timeout())
            .map(tokio::time::Instant::from_std)
    }

    pub(super) fn on_health_timeout(&mut self) {
        if let Some(h) = self.health.as_mut() {
            h.watchdog.handle_timeout(clock::now());
        }
        self.drive_health();
    }

    /// `bauxite update heartbeat`: the workload of the active version is healthy.
    pub(super) fn heartbeat(&mut self) -> serde_json::Value {
        let Some(h) = self.health.as_mut() else {
            return json!({
                "awaiting_health": false,
                "active_version": self.active().map(|v| v.to_string()),
            });
        };
        let version = h.version.to_string();
        h.watchdog.handle_heartbeat(clock::now());
        self.drive_health();
        let committed = self.status().get().state.as_deref() == Some(UpdateState::Committed.name());
        json!({"awaiting_health": true, "version": version, "committed": committed})
    }

    /// Carries out the watchdog's actions until it has none left.
    fn drive_health(&mut self) {
        // Bounded: a watchdog emits at most `max_starts` starts and one verdict.
        for _ in 0..=self.p.cfg.max_failed_starts.saturating_add(2) {
            let Some(h) = self.health.as_mut() else {
                return;
            };
            let Some(action) = h.watchdog.poll_action() else {
                break;
            };
            let version = h.version.clone();
            let waited = clock::now().saturating_duration_since(h.started);
            let Some(layout) = self.layout.clone() else {
                return;
            };
            match action {
                WatchdogAction::Start { attempt } => {
                    if let Err(e) = activate::record_start(&layout, &mut NoCrash) {
                        tracing::error!(error = %e, "update: cannot count the new version's start");
                    }
                    tracing::info!(%version, attempt, "update: new version started; waiting for it to report healthy");
                    let view = WatchdogView {
                        version: version.to_string(),
                        attempt,
                        max_starts: self.p.cfg.max_failed_starts,
                        heartbeat_required: self.p.cfg.heartbeat_required,
                        health_timeout_secs: self.p.cfg.health_timeout.as_secs(),
                    };
                    self.status().update(|s| {
                        s.phase = Phase::AwaitingHealth;
                        s.watchdog = Some(view);
                    });
                    if !self.p.cfg.heartbeat_required
                        && let Some(h) = self.health.as_mut()
                    {
                        h.watchdog.handle_heartbeat(clock::now());
                    }
                }
                WatchdogAction::Commit => match activate::commit(&layout, &mut NoCrash) {
                    Ok(v) => {
                        let how = if self.p.cfg.heartbeat_required {
                            format!("heartbeat after {:.1} s", waited.as_secs_f64())
                        } else {
                            "running (no heartbeat required)".to_owned()
                        };
                        self.daemon_state(
                            UpdateState::Committed,
                            v.as_str(),
                            Some(format!("healthy: {how}; versions/{v} stays active")),
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "update: cannot commit the new version"),
                },
                WatchdogAction::RollBack(reason) => match activate::rollback(&layout, &mut NoCrash)
                {
                    Ok(done) => {
                        let detail = format!(
                            "{reason:?}: current -> versions/{}; {} is blocked",
                            done.restored, done.rejected
                        );
                        self.daemon_state(reason.state(), done.rejected.as_str(), Some(detail));
                    }
                    Err(e) => tracing::error!(error = %e, "update: the watchdog's rollback failed"),
                },
            }
        }
        if self.health.as_ref().is_some_and(|h| h.watchdog.is_done()) {
            self.health = None;
            self.status().update(|s| {
                s.watchdog = None;
                s.phase = Phase::Idle;
            });
            let active = self.active().map(|v| v.to_string());
            self.status().update(|s| s.active_version = active);
            self.telemetry.finish();
        }
    }
}
