//! Replicas follow each other: `LISTEN bauxite_hub` on a connection of its own, and a
//! resync of this replica's view for every commit announced on it.
//!
//! Invariant: after any commit of any replica, `on_change` runs at least once on every
//! listening replica after that commit is visible. Notifications are only hints (their
//! payload, the new audit length, is not trusted for anything): `on_change` re-reads the
//! database. A connection that breaks loses the notifications sent meanwhile, so every
//! (re)connection is followed by one `on_change` before waiting again.
//!
//! Signaling messages forwarded between replicas are announced on `bauxite_signal` with
//! the destination's ID; `on_signal(Some(id))` lets the replica take them if that node is
//! connected to it, and `on_signal(None)` after every (re)connection takes whatever waits
//! for any of its nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bauxite_conduit::PeerId;
use postgres::fallible_iterator::FallibleIterator;

use super::{CHANNEL, SIGNAL_CHANNEL, connect};
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
        Self::start_with_signals(url, on_change, |_| Ok(()))
    }

    /// As [`start`](Self::start), and `on_signal` is called for every forwarded signaling
    /// message with its destination (`None` after every (re)connection: any destination).
    pub fn start_with_signals(
        url: &str,
        on_change: impl Fn() -> Result<()> + Send + 'static,
        on_signal: impl Fn(Option<PeerId>) -> Result<()> + Send + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("bauxite-pg-listen".into())
            .spawn(move || run(&url, &flag, &on_change, &on_signal))
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

fn signalled(on_signal: &dyn Fn(Option<PeerId>) -> Result<()>, to: Option<PeerId>) {
    if let Err(e) = on_signal(to) {
        tracing::warn!(error = %e, "could not take a signal forwarded by another replica");
    }
}

fn run(
    url: &str,
    stop: &AtomicBool,
    on_change: &dyn Fn() -> Result<()>,
    on_signal: &dyn Fn(Option<PeerId>) -> Result<()>,
) {
    let mut backoff = MIN_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        let listening = connect(url).and_then(|mut client| {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {SIGNAL_CHANNEL}"))
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
        signalled(on_signal, None);
        while !stop.load(Ordering::Relaxed) {
            let next = client.notifications().timeout_iter(TICK).next();
            match next {
                // A malformed payload is nobody's: it could only come from outside the hub.
                Ok(Some(n)) if n.channel() == SIGNAL_CHANNEL => {
                    if let Some(to) = PeerId::from_hex(n.payload()) {
                        signalled(on_signal, Some(to));
                    }
                }
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
