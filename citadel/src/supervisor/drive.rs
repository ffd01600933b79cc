//! [`supervise`]: the IO shell around [`Supervisor`]: it spawns, waits, signals and
//! sleeps, and feeds what happened back in with the time it happened.

use std::time::Instant;

use tokio::sync::watch;

use super::{Action, Supervisor, SupervisorConfig, SupervisorStatus};
use crate::spawn::{ChildProcess, ProcessSpawner, SpawnSpec};

#[allow(clippy::disallowed_methods)] // the shell's clock (tokio's, so paused tests stay virtual)
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs `spec` under a [`Supervisor`] until `stop` turns true (or its sender is dropped)
/// or the supervisor gives up; publishes every change on `status` and returns the last.
pub async fn supervise<S: ProcessSpawner>(
    spawner: S,
    spec: SpawnSpec,
    config: SupervisorConfig,
    seed: u64,
    status: watch::Sender<SupervisorStatus>,
    mut stop: watch::Receiver<bool>,
) -> SupervisorStatus {
    let mut supervisor = Supervisor::new(config, seed);
    let mut child: Option<S::Child> = None;
    let mut stop_seen = false;
    supervisor.start();
    loop {
        while let Some(action) = supervisor.poll_action() {
            match action {
                Action::Spawn => match spawner.spawn(&spec) {
                    Ok(c) => {
                        tracing::info!(program = %spec.program.display(), pid = c.pid(), "started");
                        supervisor.handle_spawned(now(), c.pid());
                        child = Some(c);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "start failed");
                        supervisor.handle_spawn_failed(now(), error.to_string());
                    }
                },
                Action::Signal(signal) => {
                    if let Some(c) = child.as_mut()
                        && let Err(error) = c.signal(signal)
                    {
                        tracing::warn!(%error, ?signal, "signal failed");
                    }
                }
            }
        }
        status.send_replace(supervisor.status());
        if supervisor.is_finished() {
            if let Some(s) = supervisor.status().failure {
                tracing::error!(program = %spec.program.display(), failure = %s, "gave up");
            }
            return supervisor.status();
        }
        let deadline = supervisor
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            exit = async { child.as_mut()?.wait().await.ok() }, if child.is_some() => {
                child = None;
                let exit = exit.unwrap_or(crate::spawn::Exit { code: None, signal: None });
                tracing::warn!(program = %spec.program.display(), %exit, "ended");
                supervisor.handle_exit(now(), exit);
            }
            () = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                supervisor.handle_timeout(now());
            }
            changed = stop.changed(), if !stop_seen => {
                if changed.is_err() || *stop.borrow() {
                    stop_seen = true;
                    supervisor.stop(now());
                }
            }
        }
    }
}
