//! A debug-level trace of a bulk controller (the adaptive window, the rate model) between real daemons: what the simulator's
//! per-millisecond traces show (docs/congestion.md section 9), summed over a tenth of a
//! second, so a daemon run with
//! `RUST_LOG=info,bauxite_conduit::path::adaptive=debug` says why bulk got what it got.
//! Each line names its peer (`peer=`) and says whether its controller paces bulk
//! (`pacing=false` for the half of `auto` that only follows: read as the pacer, its lines
//! sent a session looking for a start-up that never paced anything, docs/congestion.md
//! section 17).
//!
//! Invariant: the counters cover exactly the acks and sends since the last line; nothing
//! here changes the window. Off (the default filter), [`Trace::due`] is never asked and
//! the per-send bookkeeping is a few saturating additions.

use std::time::{Duration, Instant};

/// How often a line is written while acks arrive.
const EVERY: Duration = Duration::from_millis(100);

/// Counters since the last trace line.
#[derive(Clone, Debug, Default)]
pub(in crate::path) struct Trace {
    since: Option<Instant>,
    acks: u32,
    acked: usize,
    sends: u32,
    sent: usize,
    /// Sends the pacer held (a slot was booked): how late each left after its slot, summed.
    paced: u32,
    late: Duration,
    late_max: Duration,
    /// Whose controller this is (the peer, in the daemon's log format), once named.
    peer: Option<Box<str>>,
    /// Whether another controller paces this path and this one only follows it (`auto`'s
    /// inactive half): its lines say `pacing=false`.
    shadow: bool,
}

/// One line's worth of counters.
#[derive(Clone, Copy, Debug)]
pub(in crate::path) struct Period {
    /// Acks taken, and the bulk bytes they settled per second, in Mbit/s.
    pub(in crate::path) acks: u32,
    pub(in crate::path) acked_mbit: f64,
    /// Bulk packets sent, and their rate in Mbit/s.
    pub(in crate::path) sends: u32,
    pub(in crate::path) sent_mbit: f64,
    /// Mean and largest delay of a paced send behind its slot, µs: a driver whose timer
    /// wakes late loses that much of the pacing rate unless the pacer catches up.
    pub(in crate::path) late_mean_us: u64,
    pub(in crate::path) late_max_us: u64,
}

impl Trace {
    /// A bulk packet of `bytes` left at `now`; `slot` is when the pacer would have let it.
    pub(in crate::path) fn on_sent(&mut self, now: Instant, bytes: usize, slot: Option<Instant>) {
        // Saturating: a daemon that never turns the trace on never resets the counters.
        self.sends = self.sends.saturating_add(1);
        self.sent = self.sent.saturating_add(bytes);
        if let Some(slot) = slot {
            let late = now.saturating_duration_since(slot);
            self.paced = self.paced.saturating_add(1);
            self.late = self.late.saturating_add(late);
            self.late_max = self.late_max.max(late);
        }
    }

    /// An ack settled `bytes` at `now`; returns the period's counters (and starts a new
    /// one) once [`EVERY`] has passed.
    pub(in crate::path) fn due(&mut self, now: Instant, bytes: usize) -> Option<Period> {
        self.acks += 1;
        self.acked += bytes;
        let since = *self.since.get_or_insert(now);
        let span = now.saturating_duration_since(since);
        if span < EVERY {
            return None;
        }
        let mbit = |b: usize| b as f64 * 8.0 / span.as_secs_f64() / 1e6;
        let period = Period {
            acks: self.acks,
            acked_mbit: mbit(self.acked),
            sends: self.sends,
            sent_mbit: mbit(self.sent),
            late_mean_us: (self.late / self.paced.max(1)).as_micros() as u64,
            late_max_us: self.late_max.as_micros() as u64,
        };
        *self = Self {
            since: Some(now),
            peer: self.peer.take(),
            shadow: self.shadow,
            ..Self::default()
        };
        Some(period)
    }

    /// Names the peer this controller paces bulk to, for its lines.
    pub(in crate::path) fn name(&mut self, peer: &str) {
        self.peer = Some(peer.into());
    }

    /// The peer's name, or "" before it is named (the simulator's controllers).
    pub(in crate::path) fn peer(&self) -> &str {
        self.peer.as_deref().unwrap_or_default()
    }

    /// Marks the controller as following another's pacing (or pacing again).
    pub(in crate::path) fn set_shadow(&mut self, shadow: bool) {
        self.shadow = shadow;
    }

    /// Whether this controller decides when bulk leaves.
    pub(in crate::path) fn pacing(&self) -> bool {
        !self.shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Some origin for test time; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_period_sums_its_acks_and_sends_and_the_pacer_s_lateness() {
        let t0 = origin();
        let mut trace = Trace::default();
        assert!(trace.due(t0, 0).is_none(), "the first ack opens the period");
        let ms = Duration::from_millis(1);
        trace.on_sent(t0 + ms, 1250, Some(t0));
        trace.on_sent(t0 + 2 * ms, 1250, Some(t0 + 2 * ms));
        trace.on_sent(t0 + 3 * ms, 1250, None);
        assert!(trace.due(t0 + 50 * ms, 1250).is_none());
        let p = trace
            .due(t0 + 100 * ms, 1250)
            .expect("a tenth of a second passed");
        assert_eq!((p.acks, p.sends), (3, 3));
        assert!((p.acked_mbit - 0.2).abs() < 1e-9, "{}", p.acked_mbit);
        assert!((p.sent_mbit - 0.3).abs() < 1e-9, "{}", p.sent_mbit);
        assert_eq!(
            (p.late_mean_us, p.late_max_us),
            (500, 1000),
            "paced sends only"
        );
        let next = trace.due(t0 + 150 * ms, 0);
        assert!(next.is_none(), "a new period started at the line");
    }

    #[test]
    fn the_peer_s_name_and_the_shadow_flag_outlive_each_period() {
        let t0 = origin();
        let mut trace = Trace::default();
        trace.name("ab12");
        trace.set_shadow(true);
        trace.due(t0, 0);
        assert!(trace.due(t0 + EVERY, 0).is_some());
        assert_eq!((trace.peer(), trace.pacing()), ("ab12", false));
    }
}
