//! Echo probes over the mesh, sans IO: the payloads `bauxite ping` and the update
//! agent's control-loop probe send to a peer's echo service (`ServicePort::ECHO`, replies
//! on the Critical lane), and the round-trip statistics of the replies.
//!
//! Invariant: a round trip is measured only from this tracker's own send time for that
//! sequence number (never from bytes in the reply, which the peer could change), each
//! probe is counted at most once, and memory is bounded whatever the number of probes:
//! at most [`MAX_IN_FLIGHT`] send times and a fixed-size histogram.
//!
//! # Driving rules
//!
//! [`Prober::new`] with a nonce (so replies to another prober are ignored), then for each
//! probe [`Prober::next_probe`] and send the bytes; feed every received payload to
//! [`Prober::handle_reply`]; read [`Prober::stats`] at any time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// First bytes of every probe payload.
pub const MAGIC: &[u8; 8] = b"BXPROBE1";
/// Smallest probe payload: magic, nonce, sequence number.
pub const MIN_PAYLOAD: usize = 24;
/// Probes whose send time is kept; an older unanswered probe counts as lost.
pub const MAX_IN_FLIGHT: usize = 65_536;
/// Round trips above this are recorded as this (the histogram's range).
const MAX_TRACKED_US: u64 = 60_000_000;

/// Round-trip statistics of a series of probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeStats {
    /// Probes sent.
    pub sent: u64,
    /// Replies matched to a probe (each probe once).
    pub received: u64,
    /// Share of probes without a reply, in percent (`0` before the first probe).
    pub loss_percent: f64,
    /// Smallest round trip, microseconds.
    pub min_us: u64,
    /// Median round trip, microseconds.
    pub p50_us: u64,
    /// 99th percentile round trip, microseconds.
    pub p99_us: u64,
    /// Largest round trip, microseconds.
    pub max_us: u64,
    /// Mean round trip, microseconds.
    pub mean_us: f64,
}

/// Sends probes and matches their replies.
#[derive(Debug)]
pub struct Prober {
    nonce: u64,
    next_seq: u64,
    /// Send times of probes not yet answered, in sequence order.
    in_flight: VecDeque<(u64, Instant)>,
    sent: u64,
    received: u64,
    histogram: Histogram<u64>,
}

impl Prober {
    /// A prober whose payloads carry `nonce`.
    #[allow(clippy::expect_used)] // constant, valid bounds: the constructor cannot fail
    pub fn new(nonce: u64) -> Self {
        Self {
            nonce,
            next_seq: 0,
            in_flight: VecDeque::new(),
            sent: 0,
            received: 0,
            // Three significant digits from 1 µs to a minute: about 20 KiB.
            histogram: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .expect("1 µs to a minute at 3 significant digits is a valid range"),
        }
    }

    /// Writes the next probe's payload (`size` bytes, at least [`MIN_PAYLOAD`]) into
    /// `out` (cleared first) and records its send time `now`.
    pub fn next_probe(&mut self, now: Instant, size: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.resize(size.max(MIN_PAYLOAD), 0);
        if self.in_flight.len() == MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((self.next_seq, now));
        self.next_seq += 1;
        self.sent += 1;
    }

    /// Matches a reply received at `now`; returns its round trip, or `None` for anything
    /// that is not an answer to a probe of this prober still in flight.
    pub fn handle_reply(&mut self, now: Instant, payload: &[u8]) -> Option<Duration> {
        if payload.len() < MIN_PAYLOAD || &payload[..8] != MAGIC {
            return None;
        }
        let nonce = u64::from_le_bytes(payload[8..16].try_into().ok()?);
        let seq = u64::from_le_bytes(payload[16..24].try_into().ok()?);
        if nonce != self.nonce {
            return None;
        }
        let at = self
            .in_flight
            .binary_search_by_key(&seq, |(s, _)| *s)
            .ok()?;
        let (_, sent) = self.in_flight.remove(at)?;
        let rtt = now.saturating_duration_since(sent);
        let us = u64::try_from(rtt.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TRACKED_US);
        self.histogram.saturating_record(us);
        self.received += 1;
        Some(rtt)
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether every probe sent so far was answered.
    pub fn all_answered(&self) -> bool {
        self.received == self.sent
    }

    /// The statistics so far.
    pub fn stats(&self) -> ProbeStats {
        let h = &self.histogram;
        let any = !h.is_empty();
        let q = |x: f64| if any { h.value_at_quantile(x) } else { 0 };
        ProbeStats {
            sent: self.sent,
            received: self.received,
            loss_percent: if self.sent == 0 {
                0.0
            } else {
                (self.sent - self.received) as f64 * 100.0 / self.sent as f64
            },
            min_us: if any { h.min() } else { 0 },
            p50_us: q(0.5),
            p99_us: q(0.99),
            max_us: if any { h.max() } else { 0 },
            mean_us: if any { h.mean() } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn round_trips_and_percentiles_from_own_send_times() {
        let t = t0();
        let mut p = Prober::new(7);
        let mut buf = Vec::new();
        let mut payloads = Vec::new();
        for i in 0..100u64 {
            p.next_probe(t + Duration::from_millis(i), 64, &mut buf);
            assert_eq!(buf.len(), 64);
            payloads.push(buf.clone());
        }
        // Replies in reverse order, each 100 + i µs after its send; probe 0 is lost.
        for i in (1..100u64).rev() {
            let at = t + Duration::from_millis(i) + Duration::from_micros(100 + i);
            let rtt = p.handle_reply(at, &payloads[i as usize]).unwrap();
            assert_eq!(rtt, Duration::from_micros(100 + i));
        }
        // A duplicate reply and another prober's reply are not counted.
        assert_eq!(p.handle_reply(t, &payloads[5]), None);
        let mut other = Prober::new(8);
        other.next_probe(t, 64, &mut buf);
        assert_eq!(p.handle_reply(t, &buf), None);
        let s = p.stats();
        assert_eq!((s.sent, s.received), (100, 99));
        assert!((s.loss_percent - 1.0).abs() < 1e-9);
        assert_eq!(s.min_us, 101);
        assert_eq!(s.max_us, 199);
        assert!((149..=151).contains(&s.p50_us), "{s:?}");
        assert!((197..=199).contains(&s.p99_us), "{s:?}");
        assert!(!p.all_answered());
    }

    #[test]
    fn in_flight_memory_is_bounded() {
        let t = t0();
        let mut p = Prober::new(1);
        let mut buf = Vec::new();
        let mut first = Vec::new();
        for i in 0..(MAX_IN_FLIGHT + 10) {
            p.next_probe(t, 24, &mut buf);
            if i == 0 {
                first = buf.clone();
            }
        }
        assert_eq!(p.in_flight.len(), MAX_IN_FLIGHT);
        // The oldest send time was forgotten: its late reply is not a sample.
        assert_eq!(p.handle_reply(t, &first), None);
        assert_eq!(p.stats().received, 0);
    }

    proptest! {
        #[test]
        fn any_bytes_are_a_reply_or_ignored(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let t = t0();
            let mut p = Prober::new(3);
            let mut buf = Vec::new();
            p.next_probe(t, 24, &mut buf);
            let _ = p.handle_reply(t, &bytes);
            prop_assert!(p.stats().received <= 1);
        }
    }
}
