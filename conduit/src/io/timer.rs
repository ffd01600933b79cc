//! The shell's wake-up timer: a `timerfd`, so a paced send leaves within tens of
//! microseconds of its slot instead of at tokio's next millisecond tick.
//!
//! Why: the bulk pacer's slots are a fraction of a millisecond apart. Woken up to a
//! millisecond late, the pacer catches up with a burst of the slots it missed, and each
//! burst is a queue at the bottleneck that the peer's one-way delays report: on a short
//! jittery path the envelope controller (`path::adaptive::envelope`) reads it as
//! congestion and holds bulk back. Successive wake-ups are kept at least [`GRAIN`] apart,
//! which bounds the wake-ups to 4000 a second and leaves a fast pacer whole GSO batches.
//!
//! Invariant: `wait` completes no earlier than the deadline last `arm`ed; a dropped
//! `wait` (another branch of the shell's `select!` won) loses nothing, since the shell
//! arms the timer again on every turn.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::unix::AsyncFd;
use tokio::time::Sleep;

/// Least time between two wake-ups of the timer.
pub(super) const GRAIN: Duration = Duration::from_micros(250);

/// A one-shot timer armed with an absolute deadline on the monotonic clock.
pub(super) struct WakeTimer {
    inner: Inner,
    /// When the timer last fired (the next wake-up is no sooner than [`GRAIN`] after).
    last_fired: Option<Instant>,
}

enum Inner {
    Fd(AsyncFd<OwnedFd>),
    /// Without a `timerfd` (it cannot be created): tokio's millisecond timer.
    Tokio(Pin<Box<Sleep>>),
}

impl WakeTimer {
    /// A `timerfd`, or tokio's timer when the kernel refuses one (logged once).
    pub(super) fn new(now: Instant) -> Self {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(io::Error::from)
        .and_then(register);
        let inner = match fd {
            Ok(fd) => Inner::Fd(fd),
            Err(error) => {
                tracing::info!(%error, "no timerfd; paced sends wake on tokio's millisecond timer");
                Inner::Tokio(Box::pin(tokio::time::sleep_until(
                    tokio::time::Instant::from_std(now),
                )))
            }
        };
        Self {
            inner,
            last_fired: None,
        }
    }

    /// Arms the timer for `deadline` (held back to [`GRAIN`] after the last wake-up);
    /// `now` is the caller's clock, from which the relative time is set.
    pub(super) fn arm(&mut self, deadline: Instant, now: Instant) -> io::Result<()> {
        let at = self
            .last_fired
            .map_or(deadline, |fired| deadline.max(fired + GRAIN));
        match &mut self.inner {
            Inner::Fd(fd) => {
                // Zero disarms a timerfd: a deadline already due fires after 1 ns.
                let wait = at
                    .saturating_duration_since(now)
                    .max(Duration::from_nanos(1));
                let spec = Itimerspec {
                    it_interval: Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: timespec(wait),
                };
                timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            }
            Inner::Tokio(sleep) => sleep.as_mut().reset(tokio::time::Instant::from_std(at)),
        }
        Ok(())
    }

    /// Waits until the armed deadline has passed; `now` reads the clock when it has.
    pub(super) async fn wait(&mut self, now: impl Fn() -> Instant) -> io::Result<()> {
        match &mut self.inner {
            Inner::Fd(fd) => loop {
                let mut guard = fd.readable().await?;
                let mut expirations = [0u8; 8];
                match rustix::io::read(guard.get_inner(), &mut expirations) {
                    Ok(_) => break,
                    Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                    Err(error) => return Err(error.into()),
                }
            },
            Inner::Tokio(sleep) => sleep.as_mut().await,
        }
        self.last_fired = Some(now());
        Ok(())
    }
}

/// Registers the timer's descriptor with tokio's reactor.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes the `OwnedFd`, which keeps the descriptor open, and
    // its `as_raw_fd` the same, until the `AsyncFd` is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn now() -> Instant {
        Instant::now()
    }

    /// The timer never fires before its deadline, and the next wake-up keeps GRAIN
    /// from the last one even when asked for sooner.
    #[tokio::test(flavor = "current_thread")]
    async fn it_fires_no_sooner_than_the_deadline_nor_than_a_grain_after_the_last() {
        let mut timer = WakeTimer::new(now());
        assert!(matches!(timer.inner, Inner::Fd(_)), "Linux has timerfd");
        let start = now();
        timer
            .arm(start + Duration::from_micros(700), start)
            .unwrap();
        timer.wait(now).await.unwrap();
        let fired = timer.last_fired.expect("fired");
        assert!(fired >= start + Duration::from_micros(700));
        timer.arm(fired, now()).unwrap();
        timer.wait(now).await.unwrap();
        assert!(now() >= fired + GRAIN, "a due deadline waits out the grain");
    }

    /// A deadline already past fires at once (a timerfd set to zero would never fire).
    #[tokio::test(flavor = "current_thread")]
    async fn a_past_deadline_fires() {
        let mut timer = WakeTimer::new(now());
        let t = now();
        timer.arm(t, t + Duration::from_millis(5)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), timer.wait(now))
            .await
            .expect("fired")
            .unwrap();
    }

    /// Re-arming replaces the deadline: a dropped wait loses nothing and the new
    /// deadline holds.
    #[tokio::test(flavor = "current_thread")]
    async fn re_arming_replaces_the_deadline() {
        let mut timer = WakeTimer::new(now());
        let start = now();
        timer.arm(start + Duration::from_secs(60), start).unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(20), timer.wait(now)).await;
        assert!(pending.is_err(), "a minute away");
        let t = now();
        timer.arm(t + Duration::from_millis(2), t).unwrap();
        tokio::time::timeout(Duration::from_secs(5), timer.wait(now))
            .await
            .expect("fired at the new deadline")
            .unwrap();
        assert!(now() >= t + Duration::from_millis(2));
    }
}
