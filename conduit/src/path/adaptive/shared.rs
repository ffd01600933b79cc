//! Windows of one node that read their queue from the envelope, and whose readings move
//! together, take the smallest of their readings: one bottleneck, read alike.
//!
//! Why: the envelope is the largest of a window's last few one-way delays. Behind one
//! jittery bottleneck a narrow window's few samples span several round trips and catch
//! the queue's peaks, a wide window's span a fraction of one; the narrow window reads
//! more queue, shrinks, spans longer still, and ends at a third of its share beside the
//! other (docs/congestion.md section 18). The densest window's reading is the truest, and
//! windows that read one queue alike move alike.
//!
//! Only for windows shown to share it: a robot on a congested cell of its own must read
//! its own queue, or it fills that cell's buffer (section 20: 108-130 ms of queue instead
//! of 3). Two windows are taken to share a bottleneck while their readings, averaged over
//! [`BIN`]s, have moved together (Pearson correlation at least [`SHARED_CORRELATION`]
//! over the last [`SPAN`] bins). A correlation found by chance on two cells must not cost
//! more than a bounded queue: a reading is never lowered by more than the window's own
//! target (`guard`).
//!
//! Cost: at most [`MEMBERS`] windows take part (the others read their own envelope), and
//! a reading computes at most [`CHECKED`] correlations; no allocation after `join`.
//!
//! Invariant: a member's history holds only readings taken while it was on the envelope
//! beside other windows; stepping out forgets it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Readings are averaged per bin of this length before they are compared.
pub(super) const BIN: Duration = Duration::from_millis(20);
/// Bins two windows' readings are compared over (1.5 s).
pub(super) const SPAN: u64 = 75;
/// Fewest bins both windows must have readings in before they are compared.
const MIN_COMMON: usize = 23;
/// Correlation from which two windows are taken to share a bottleneck.
pub(super) const SHARED_CORRELATION: f64 = 0.3;
/// Most windows that take part at once.
pub(super) const MEMBERS: usize = 16;
/// Most correlations one reading computes.
const CHECKED: usize = 8;
/// Bins each member keeps (a power of two above [`SPAN`]).
const RING: usize = 128;

/// One member's readings.
#[derive(Clone)]
struct History {
    /// When it last read, and what.
    at: Option<Instant>,
    reading: Duration,
    /// Per bin (by number modulo [`RING`]): which bin it holds, the sum and count of the
    /// readings in it (seconds).
    bin: [u64; RING],
    sum: [f64; RING],
    count: [u32; RING],
}

impl History {
    fn new() -> Self {
        Self {
            at: None,
            reading: Duration::ZERO,
            bin: [u64::MAX; RING],
            sum: [0.0; RING],
            count: [0; RING],
        }
    }

    fn add(&mut self, bin: u64, reading: Duration) {
        let i = (bin % RING as u64) as usize;
        if self.bin[i] != bin {
            self.bin[i] = bin;
            self.sum[i] = 0.0;
            self.count[i] = 0;
        }
        self.sum[i] += reading.as_secs_f64();
        self.count[i] += 1;
    }

    fn mean(&self, bin: u64) -> Option<f64> {
        let i = (bin % RING as u64) as usize;
        (self.bin[i] == bin && self.count[i] > 0).then(|| self.sum[i] / f64::from(self.count[i]))
    }
}

/// The Pearson correlation of two members' bin means over the [`SPAN`] bins before
/// `bin`; `None` with fewer than [`MIN_COMMON`] bins in common or no variation.
fn correlation(a: &History, b: &History, bin: u64) -> Option<f64> {
    let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
    for k in bin.saturating_sub(SPAN)..bin {
        if let (Some(x), Some(y)) = (a.mean(k), b.mean(k)) {
            n += 1;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
        }
    }
    if n < MIN_COMMON {
        return None;
    }
    let n = n as f64;
    let cov = sxy - sx * sy / n;
    let (vx, vy) = (sxx - sx * sx / n, syy - sy * sy / n);
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

struct Members {
    /// Bins are numbered from here (the first reading).
    epoch: Option<Instant>,
    /// Indexed by member id; `None` in the slot of a member not taking part now.
    slots: Vec<Option<Box<History>>>,
    /// Ids that joined and have not left (their slots are reserved).
    joined: Vec<bool>,
    /// The ids whose slots hold a history (at most [`MEMBERS`]; a hub's thousand peers
    /// are not walked at every ack).
    part: Vec<usize>,
}

impl Default for Members {
    fn default() -> Self {
        Self {
            epoch: None,
            slots: Vec::new(),
            joined: Vec::new(),
            part: Vec::with_capacity(MEMBERS),
        }
    }
}

/// The envelope readings of a node's windows (one per node, in its
/// [`AutoGroup`](crate::path::AutoGroup)). Cloning it shares it.
#[derive(Clone, Default)]
pub(in crate::path) struct SharedEnvelopes(Arc<Mutex<Members>>);

impl std::fmt::Debug for SharedEnvelopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the histories (kilobytes each), and no lock: a controller's Debug must not
        // wait on the data path.
        f.write_str("SharedEnvelopes")
    }
}

impl SharedEnvelopes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        // Plain data updated in one step; a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one window; its history is allocated here, not on the data path.
    pub(in crate::path) fn join(&self) -> Membership {
        let mut m = self.lock();
        let id = match m.joined.iter().position(|joined| !joined) {
            Some(id) => id,
            None => {
                m.joined.push(false);
                m.slots.push(None);
                m.joined.len() - 1
            }
        };
        m.joined[id] = true;
        Membership {
            pool: self.clone(),
            id,
            history: Some(Box::new(History::new())),
        }
    }

    /// How many windows take part now.
    #[cfg(test)]
    fn taking_part(&self) -> usize {
        self.lock().part.len()
    }
}

/// One window's place in [`SharedEnvelopes`]; leaves it when dropped.
pub(in crate::path) struct Membership {
    pool: SharedEnvelopes,
    id: usize,
    /// The history while it does not take part (moved into the pool while it does), so
    /// taking part again allocates nothing.
    history: Option<Box<History>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("id", &self.id)
            .field("taking_part", &self.history.is_none())
            .finish()
    }
}

impl Clone for Membership {
    fn clone(&self) -> Self {
        // A copy of a controller is a window of its own.
        self.pool.join()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.step_out();
        let mut m = self.pool.lock();
        if let Some(joined) = m.joined.get_mut(self.id) {
            *joined = false;
        }
    }
}

impl Membership {
    /// The window reads `own` of queue from its envelope at `now`, beside other windows:
    /// records it, and returns the smallest reading of the members whose readings moved
    /// with its own and that read within `fresh_for`, but never less than `own - guard`.
    pub(in crate::path) fn read(
        &mut self,
        now: Instant,
        own: Duration,
        fresh_for: Duration,
        guard: Duration,
    ) -> Duration {
        let mut members = self.pool.lock();
        let m = &mut *members;
        let epoch = *m.epoch.get_or_insert(now);
        let bin = (now.saturating_duration_since(epoch).as_nanos() / BIN.as_nanos()) as u64;
        if m.slots[self.id].is_none() {
            if m.part.len() >= MEMBERS {
                return own;
            }
            let Some(mut history) = self.history.take() else {
                return own;
            };
            *history = History::new();
            m.slots[self.id] = Some(history);
            m.part.push(self.id);
        }
        if let Some(me) = m.slots[self.id].as_deref_mut() {
            me.at = Some(now);
            me.reading = own;
            me.add(bin, own);
        }
        let Some(me) = m.slots[self.id].as_deref() else {
            return own;
        };
        let mut reading = own;
        let mut checked = 0;
        for &id in &m.part {
            let Some(other) = m.slots[id].as_deref() else {
                continue;
            };
            let fresh = other
                .at
                .is_some_and(|at| now.saturating_duration_since(at) <= fresh_for);
            if id == self.id || other.reading >= reading || !fresh {
                continue;
            }
            if checked == CHECKED {
                break;
            }
            checked += 1;
            if correlation(me, other, bin).is_some_and(|c| c >= SHARED_CORRELATION) {
                reading = other.reading;
            }
        }
        reading.max(own.saturating_sub(guard))
    }

    /// The window is off the envelope or alone: its history is forgotten.
    pub(in crate::path) fn step_out(&mut self) {
        if self.history.is_some() {
            return;
        }
        let mut m = self.pool.lock();
        if let Some(history) = m.slots.get_mut(self.id).and_then(Option::take) {
            m.part.retain(|&id| id != self.id);
            self.history = Some(history);
        }
    }
}

#[cfg(test)]
mod tests;
