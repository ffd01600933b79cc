//! The upper envelope of one-way delays: the largest of the last few samples, against the
//! smallest such envelope of the recent past.
//!
//! Why the top and not the bottom: on a radio bearer the jitter is added after the
//! bottleneck and never reorders, so a packet that arrives behind a later-jittered one
//! waits for it. The denser the traffic, the closer every packet's delay is pushed to the
//! top of the jitter range: at full rate the path's *minimum* delay rises by up to twice
//! the jitter with no queue at all, and a minimum filter reads that as a queue. The
//! *maximum* of a few samples is the base delay plus the jitter's top plus the queue,
//! whatever the density, so its rise is the queue's.
//!
//! Invariant: `queuing` is `None` until the ring is full, never negative; the base holds
//! only envelopes of a full ring.

use std::time::{Duration, Instant};

use super::delay::DelayFilter;

/// Samples the envelope is the maximum of.
pub(super) const ENVELOPE: usize = 8;
const BASE_HISTORY: usize = 10;
const BASE_BUCKET: Duration = Duration::from_secs(60);

/// The upper envelope of one stream of one-way delays, and its base.
#[derive(Clone, Debug)]
pub(in crate::path) struct Envelope {
    recent: [Duration; ENVELOPE],
    filled: usize,
    next: usize,
    base: [Duration; BASE_HISTORY],
    base_tail: usize,
    last_rollover: Option<Instant>,
    /// The same samples' minimum filter: how far the path's floor moved.
    bottom: DelayFilter,
}

impl Default for Envelope {
    fn default() -> Self {
        Self {
            recent: [Duration::ZERO; ENVELOPE],
            filled: 0,
            next: 0,
            base: [Duration::MAX; BASE_HISTORY],
            base_tail: 0,
            last_rollover: None,
            bottom: DelayFilter::default(),
        }
    }
}

impl Envelope {
    /// Takes one one-way delay sample measured at `now`.
    pub(in crate::path) fn on_sample(&mut self, now: Instant, delay: Duration) {
        self.bottom.on_sample(now, delay);
        self.recent[self.next] = delay;
        self.next = (self.next + 1) % ENVELOPE;
        self.filled = (self.filled + 1).min(ENVELOPE);
        if let Some(top) = self.current() {
            self.update_base(now, top);
        }
    }

    /// The largest of the last [`ENVELOPE`] samples.
    pub(in crate::path) fn current(&self) -> Option<Duration> {
        (self.filled == ENVELOPE).then(|| self.recent.iter().copied().max().unwrap_or_default())
    }

    /// The smallest envelope of the base history.
    pub(in crate::path) fn base(&self) -> Option<Duration> {
        self.base
            .iter()
            .copied()
            .min()
            .filter(|&d| d != Duration::MAX)
    }

    /// The envelope's rise over its base: the queue.
    pub(in crate::path) fn queuing(&self) -> Option<Duration> {
        Some(self.current()?.saturating_sub(self.base()?))
    }

    /// The path got longer: moves the base up by as much as the bottom of the same
    /// samples rose over its own base (the window sat at its floor, so the bottom saw
    /// no queue), keeping the envelope's width. Re-measuring the top itself would take
    /// in whatever queue the last samples still held.
    pub(in crate::path) fn rebase(&mut self, horizon: Duration) {
        let Some(shift) = self.bottom.queuing(horizon) else {
            return;
        };
        self.bottom.rebase(horizon);
        if let Some(base) = self.base() {
            self.base = [Duration::MAX; BASE_HISTORY];
            self.base_tail = 0;
            self.base[0] = base + shift;
        }
    }

    fn update_base(&mut self, now: Instant, top: Duration) {
        let rolled = self
            .last_rollover
            .is_none_or(|at| now.saturating_duration_since(at) >= BASE_BUCKET);
        if rolled {
            self.last_rollover = Some(now);
            if self.base[self.base_tail] != Duration::MAX {
                self.base_tail = (self.base_tail + 1) % BASE_HISTORY;
            }
            self.base[self.base_tail] = top;
        } else {
            let tail = &mut self.base[self.base_tail];
            *tail = (*tail).min(top);
        }
    }
}
