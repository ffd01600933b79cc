//! Replicas follow each other: `LISTEN bauxite_hub` on a connection of its own, and a
//! resync of this replica's view for every commit announced on it.
//!
//! Invariant: after any commit of any replica, `on_change` runs at least once on every
//! listening replica after that commit is visible. Notifications are only hints (their
//! payload, the new audit length, is not trusted for anything): `on_change` re-reads the
//! database. A connection that breaks loses the notifications sent meanwhile, so every
//! (re)connection is followed by one `on_change` before waiting again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::{CHANNEL, connect};
use crate::{Error, Result};

/// How long one wait for a notification lasts before the stop flag is checked again.
const TICK: Duration = Duration::from_millis(200);
/// First wait after a failed connection; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A running listener; dropping it stops the thread (within 200 ms).
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening on the database at `url`; `on_change` is called on the listener's
    /// thread after every announced commit and after every (re)connection.
    pub fn start(url: &str, on_change: impl Fn() -> Result<()> + Send + 'static) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("bauxite-pg-listen".into())
            .spawn(move || run(&url, &flag, &on_change))
            .map_err(Error::io(
                "start the PostgreSQL listener",
                "bauxite-pg-listen",
            ))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn changed(on_change: &dyn Fn() -> Result<()>) {
    if let Err(e) = on_change() {
        tracing::warn!(error = %e, "could not follow another replica's change; retrying on the next one");
    }
}

fn run(url: &str, stop: &AtomicBool, on_change: &dyn Fn() -> Result<()>) {
    let mut backoff = MIN_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        let listening = connect(url).and_then(|mut client| {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(Error::postgres("listen for other replicas"))?;
            Ok(client)
        });
        let mut client = match listening {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "replica listener cannot reach PostgreSQL");
                pause(stop, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        // Commits made while this replica was not listening were never announced to it.
        changed(on_change);
        while !stop.load(Ordering::Relaxed) {
            let next = client.notifications().timeout_iter(TICK).next();
            match next {
                Ok(Some(_)) => changed(on_change),
                Err(e) => {
                    tracing::warn!(error = %e, "replica listener lost PostgreSQL; reconnecting");
                    break;
                }
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
            }
        }
    }
}

/// Waits `total` in [`TICK`] steps, returning early once `stop` is set.
fn pause(stop: &AtomicBool, total: Duration) {
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let step = left.min(TICK);
        std::thread::sleep(step);
        left -= step;
    }
}
