//! Receiver-side detection of a rate drop, and the frame that reports it at once.
//!
//! Invariant: the detector holds a fixed ring of arrivals (no allocation per packet) and
//! only ever reports packets it saw arrive; the sender trusts a report only after checking
//! it against its own send log (the same two packets took longer to arrive than to be
//! sent), so a false or forged report can at most cost a cut the sender's own log agrees
//! with.
//!
//! Why: when a link's rate steps down, the receiver sees the arrival rate fall as soon as
//! the first packet queued behind the step arrives, while an ack-driven sender's filters
//! (delivery-rate samples over rounds, a delay brake) take further rounds. The report
//! cannot beat the round trip itself (docs/congestion.md, section 6: the news still has
//! to travel back), only the time the sender's filters add on top of it.
//!
//! How: for each large datagram (bulk; small ones are the control loop's and say nothing
//! about the rate), the mean spacing of the last `window` arrivals is compared with a
//! slow average of that spacing. When the recent spacing is longer by more than
//! `1 / drop_ratio` (the arrival rate fell below `drop_ratio` of what it was) over at
//! least `min_span` (widened to that span when `window` arrivals come faster), a [`RateDropFrame`] names the window's first and last packets and
//! the receiver's time between them:
//!
//! ```text
//! RateDrop  0x05 | session index u32 | first counter u64 | last counter u64
//!                | arrival span µs u64                                    (29 bytes)
//! ```

use std::time::{Duration, Instant};

use crate::MalformedPacket;

/// Type byte of a rate-drop report.
pub const FRAME_RATE_DROP: u8 = 0x05;
/// Length of a rate-drop report.
pub const RATE_DROP_FRAME_LEN: usize = 29;
/// Arrivals the detector remembers (the largest window it can use).
const RING: usize = 128;

/// "Packets `first` to `last` of session `index` took `span_us` to arrive here": the
/// sender compares it with the time it took to send them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDropFrame {
    /// The reporting side's session index (the data packets' receiver index).
    pub index: u32,
    /// Counter of the window's first packet.
    pub first: u64,
    /// Counter of the window's last packet (greater than `first`).
    pub last: u64,
    /// Receiver's time from `first`'s arrival to `last`'s, µs (not zero).
    pub span_us: u64,
}

impl RateDropFrame {
    /// The frame's bytes (little-endian).
    pub fn encode(&self) -> [u8; RATE_DROP_FRAME_LEN] {
        let mut out = [0u8; RATE_DROP_FRAME_LEN];
        out[0] = FRAME_RATE_DROP;
        out[1..5].copy_from_slice(&self.index.to_le_bytes());
        out[5..13].copy_from_slice(&self.first.to_le_bytes());
        out[13..21].copy_from_slice(&self.last.to_le_bytes());
        out[21..29].copy_from_slice(&self.span_us.to_le_bytes());
        out
    }

    /// Parses a report; total over all inputs. Refuses a wrong length, a window whose
    /// last packet is not after its first, and a zero span (no rate follows from them).
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedPacket> {
        match bytes.first() {
            Some(&FRAME_RATE_DROP) => {}
            Some(&other) => return Err(MalformedPacket::UnknownType(other)),
            None => return Err(MalformedPacket::Empty),
        }
        let Ok(b) = <&[u8; RATE_DROP_FRAME_LEN]>::try_from(bytes) else {
            return Err(MalformedPacket::WrongLength {
                kind: "rate drop frame",
                expected: RATE_DROP_FRAME_LEN,
                got: bytes.len(),
            });
        };
        let u64_at = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(v)
        };
        let frame = Self {
            index: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
            first: u64_at(5),
            last: u64_at(13),
            span_us: u64_at(21),
        };
        if frame.last <= frame.first || frame.span_us == 0 {
            return Err(MalformedPacket::BadField {
                kind: "rate drop frame",
                field: "an empty window (last not after first, or a zero span)",
            });
        }
        Ok(frame)
    }
}

/// The detector's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArrivalConfig {
    /// Datagrams at least this long count as bulk arrivals.
    pub min_len: usize,
    /// Fewest arrivals per window (2..=128).
    pub window: usize,
    /// A window whose arrival rate is below this share of the average reports a drop.
    pub drop_ratio: f64,
    /// Shortest window span that may report (shorter ones are jitter's to make).
    pub min_span: Duration,
    /// No report for this long after one (the sender needs a round trip to act on it).
    pub holdoff: Duration,
    /// Weight of a window in the average spacing.
    pub gain: f64,
}

impl Default for ArrivalConfig {
    fn default() -> Self {
        Self {
            min_len: 1000,
            window: 16,
            drop_ratio: 0.7,
            min_span: Duration::from_millis(12),
            holdoff: Duration::from_millis(20),
            gain: 1.0 / 16.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Arrival {
    counter: u64,
    at: Instant,
    /// The average spacing when it arrived: a window is compared with the average from
    /// before it, which its own slow arrivals have not pulled up yet.
    spacing: Option<f64>,
}

/// The receiver's rate-drop detector for one peer's session (sans-IO: the caller passes
/// each authenticated data packet's arrival time).
#[derive(Clone, Debug)]
pub struct ArrivalDetector {
    config: ArrivalConfig,
    ring: [Option<Arrival>; RING],
    /// Ring position of the next arrival.
    next: usize,
    /// Arrivals recorded in this session, up to `RING`.
    filled: usize,
    index: Option<u32>,
    /// Slow average of a window's mean spacing, seconds per packet.
    spacing: Option<f64>,
    last_report: Option<Instant>,
}

impl Default for ArrivalDetector {
    fn default() -> Self {
        Self::new(ArrivalConfig::default())
    }
}

impl ArrivalDetector {
    /// A detector with `config` (its window clamped to 2..=128).
    pub fn new(config: ArrivalConfig) -> Self {
        Self {
            config: ArrivalConfig {
                window: config.window.clamp(2, RING),
                ..config
            },
            ring: [None; RING],
            next: 0,
            filled: 0,
            index: None,
            spacing: None,
            last_report: None,
        }
    }

    /// An authenticated data packet `counter` of session `index`, `len` bytes on the
    /// wire, arrived at `now`; returns a report to send now when the arrival rate fell.
    pub fn on_packet(
        &mut self,
        index: u32,
        counter: u64,
        len: usize,
        now: Instant,
    ) -> Option<RateDropFrame> {
        if len < self.config.min_len {
            return None;
        }
        if self.index != Some(index) {
            // A new session: counters restart, and so does what we know.
            *self = Self::new(self.config);
            self.index = Some(index);
        }
        let newest = self.newest();
        if newest.is_some_and(|n| counter <= n.counter) {
            // Reordered or repeated: it says nothing about the rate now.
            return None;
        }
        self.ring[self.next] = Some(Arrival {
            counter,
            at: now,
            spacing: self.spacing,
        });
        self.next = (self.next + 1) % RING;
        self.filled = (self.filled + 1).min(RING);
        let window = self.config.window;
        if self.filled < window {
            return None;
        }
        let at = |back: usize| self.ring[(self.next + RING - back) % RING];
        let short = at(window)?;
        let mean = now.saturating_duration_since(short.at).as_secs_f64() / (window - 1) as f64;
        let Some(average) = self.spacing else {
            self.spacing = Some(mean);
            return None;
        };
        self.spacing = Some(average + self.config.gain * (mean - average));
        // The window under test: at least `window` arrivals and at least `min_span` long
        // (jitter moves each end by milliseconds; a longer span dilutes it).
        let (back, first) = (window..=self.filled)
            .filter_map(|back| Some((back, at(back)?)))
            .find(|(_, a)| now.saturating_duration_since(a.at) >= self.config.min_span)?;
        let span = now.saturating_duration_since(first.at);
        let before = first.spacing?;
        let mean = span.as_secs_f64() / (back - 1) as f64;
        let dropped = mean * self.config.drop_ratio > before
            && self
                .last_report
                .is_none_or(|at| now.saturating_duration_since(at) >= self.config.holdoff);
        if !dropped {
            return None;
        }
        self.last_report = Some(now);
        Some(RateDropFrame {
            index,
            first: first.counter,
            last: counter,
            span_us: u64::try_from(span.as_micros()).unwrap_or(u64::MAX).max(1),
        })
    }

    fn newest(&self) -> Option<Arrival> {
        self.ring[(self.next + RING - 1) % RING].filter(|_| self.filled > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Some origin for test time; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    /// Feeds `n` bulk packets spaced `every` from `start`, counters from `counter`;
    /// returns the reports and the time after the last.
    fn feed(
        d: &mut ArrivalDetector,
        start: Instant,
        counter: &mut u64,
        n: usize,
        every: Duration,
    ) -> (Vec<RateDropFrame>, Instant) {
        let mut at = start;
        let mut reports = Vec::new();
        for _ in 0..n {
            *counter += 1;
            reports.extend(d.on_packet(7, *counter, 1395, at));
            at += every;
        }
        (reports, at)
    }

    #[test]
    fn a_halved_arrival_rate_is_reported_once_with_its_window() {
        let mut d = ArrivalDetector::default();
        let mut c = 0;
        let t0 = origin();
        // 10 Mbit/s of 1395-byte datagrams, then 5 Mbit/s.
        let (steady, t1) = feed(&mut d, t0, &mut c, 200, Duration::from_micros(1116));
        assert!(
            steady.is_empty(),
            "a steady rate reports nothing: {steady:?}"
        );
        // 12 packets: 27 ms, about one holdoff (20 ms) after the first report.
        let (after, _) = feed(&mut d, t1, &mut c, 12, Duration::from_micros(2232));
        assert_eq!(after.len(), 1, "one report per holdoff: {after:?}");
        let r = after[0];
        assert_eq!(r.index, 7);
        assert!(
            r.last - r.first >= 15,
            "at least the window's 16 packets: {r:?}"
        );
        // The window that reported took over 1 / drop_ratio (0.7) times what its packets
        // took before the step, and at least `min_span`.
        assert!(r.span_us * 7 > (r.last - r.first) * 1116 * 10, "{r:?}");
        assert!(r.span_us >= 12_000, "{r:?}");
        assert!(r.last > 200, "it reports packets after the step: {r:?}");
    }

    #[test]
    fn small_packets_and_a_steady_or_rising_rate_report_nothing() {
        let mut d = ArrivalDetector::default();
        let t0 = origin();
        for i in 0..1000u64 {
            // The control loop's 109-byte datagrams, 1 ms apart, then 10 ms apart.
            let gap = if i < 500 { 1 } else { 10 };
            assert_eq!(
                d.on_packet(1, i, 109, t0 + Duration::from_millis(i * gap)),
                None
            );
        }
        let mut c = 0;
        let (slow, t1) = feed(&mut d, t0, &mut c, 100, Duration::from_millis(2));
        let (fast, _) = feed(&mut d, t1, &mut c, 100, Duration::from_micros(500));
        assert!(slow.is_empty() && fast.is_empty());
    }

    #[test]
    fn a_new_session_starts_over() {
        let mut d = ArrivalDetector::default();
        let mut c = 0;
        let t0 = origin();
        let (_, t1) = feed(&mut d, t0, &mut c, 100, Duration::from_micros(1000));
        // Session 8 starts slower: nothing to compare with yet, so no report.
        for i in 0..16u64 {
            let at = t1 + Duration::from_millis(5 * i);
            assert_eq!(d.on_packet(8, i, 1395, at), None);
        }
    }

    #[test]
    fn malformed_reports_are_refused() {
        let good = RateDropFrame {
            index: 1,
            first: 10,
            last: 25,
            span_us: 30_000,
        };
        let bytes = good.encode();
        assert_eq!(RateDropFrame::parse(&bytes), Ok(good));
        assert!(RateDropFrame::parse(&bytes[..28]).is_err());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(RateDropFrame::parse(&longer).is_err());
        for bad in [
            RateDropFrame { last: 10, ..good },
            RateDropFrame { last: 9, ..good },
            RateDropFrame { span_us: 0, ..good },
        ] {
            assert!(RateDropFrame::parse(&bad.encode()).is_err(), "{bad:?}");
        }
        assert_eq!(
            RateDropFrame::parse(&[0x04; 29]),
            Err(MalformedPacket::UnknownType(0x04))
        );
        assert_eq!(RateDropFrame::parse(&[]), Err(MalformedPacket::Empty));
    }

    proptest! {
        #[test]
        fn parse_is_total_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(frame) = RateDropFrame::parse(&bytes) {
                let encoded = frame.encode();
                prop_assert_eq!(encoded.as_slice(), bytes.as_slice());
                prop_assert!(frame.last > frame.first && frame.span_us > 0);
            }
        }

        #[test]
        fn valid_frames_round_trip(index: u32, first in 0u64..u64::MAX, extra in 1u64..1000, span_us in 1u64..u64::MAX) {
            let frame = RateDropFrame { index, first, last: first.saturating_add(extra).max(first + 1), span_us };
            prop_assert_eq!(RateDropFrame::parse(&frame.encode()), Ok(frame));
        }
    }
}
