//! Acknowledgements inside the tunnel: the delay signal the bulk lane's
//! [`CongestionStrategy`](super::CongestionStrategy) needs.
//!
//! Invariant: acknowledgements only ever release bulk bytes that were really sent, and
//! each sent byte is released at most once; an ack that names a packet this log no longer
//! remembers (too old, or overwritten by a newer packet in its slot)
//! is ignored, never guessed at.
//!
//! How it works: the receiver answers the IP packets it authenticates with a small
//! encrypted [`AckFrame`] naming the newest packet seen (its session index and counter).
//! The sender keeps a [`SendLog`]: for the last [`SEND_LOG_SLOTS`] data packets, when each
//! left and how many bulk bytes had left up to and including it. An ack therefore yields
//! one round-trip sample and the bulk bytes it settles (everything sent up to the named
//! packet, delivered or lost). The round trip is the delay signal: its growth over the
//! smallest one seen is the queue that bulk traffic built somewhere below the lanes — in
//! a socket buffer, a slow link's qdisc or a CPU-bound receiver.
//!
//! The frame travels as the plaintext of an ordinary data packet. IP packets start with
//! version nibble 4 or 6, so a plaintext whose first byte is below `0x10` is a control
//! frame (keepalives stay empty plaintexts). Two forms, both little-endian:
//!
//! ```text
//! Ack    0x01 | session index u32 | counter u64                          (13 bytes)
//! AckTs  0x04 | session index u32 | counter u64 | received_us u64
//!             | largest counter u64 | largest received_us u64            (37 bytes)
//! ```
//!
//! Nodes send `AckTs` and read both. Its timestamps are the receiver's clock (µs since
//! any epoch of its own) when the named packets arrived, so the sender gets a one-way
//! delay (receive stamp minus its own send time, plus the clocks' unknown but constant
//! offset): the reverse path's jitter and queue are out of the signal. "Largest" is the
//! largest datagram of the ack's batch (the newest among equals): under a 1 kHz control
//! loop the newest packet is mostly a small control packet, and the largest is the bulk
//! packet whose delay the bulk controller compares and whose arrival shows the path
//! carries full-size datagrams (path MTU black-hole detection).

use std::time::{Duration, Instant};

use crate::MalformedPacket;

/// Type byte of an acknowledgement frame without timestamps (read, no longer sent).
pub const FRAME_ACK: u8 = 0x01;
/// Type byte of an acknowledgement frame with receive timestamps.
pub const FRAME_ACK_TS: u8 = 0x04;
/// Length of an acknowledgement frame without timestamps.
pub const ACK_FRAME_LEN: usize = 13;
/// Length of an acknowledgement frame with timestamps.
pub const ACK_TS_FRAME_LEN: usize = 37;
/// Added to a raw one-way delay (receive stamp minus send time, in µs, any sign) so it
/// is a [`Duration`]: about 12.7 days, more than two clocks' offset and drift between a
/// session's two ends ever come to.
const ONE_WAY_OFFSET_US: i64 = 1 << 40;
/// Data packets a [`SendLog`] remembers. A window larger than this many packets could
/// not be acknowledged, so [`LedbatConfig`](super::LedbatConfig)'s default cap stays below.
pub const SEND_LOG_SLOTS: usize = 1024;

/// Whether a decrypted plaintext is a control frame rather than an IP packet.
pub fn is_control_frame(plaintext: &[u8]) -> bool {
    plaintext.first().is_some_and(|&b| b < 0x10)
}

/// "The newest data packet I have authenticated from you is `counter` on my session
/// `index`." Cumulative: it stands for every packet sent before that one too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckFrame {
    /// The acknowledging side's session index (the data packets' receiver index).
    pub index: u32,
    /// The data packet's counter.
    pub counter: u64,
    /// Receive timestamps; `None` from a peer that sends the 13-byte form.
    pub stamps: Option<AckStamps>,
}

/// When the acknowledged packets arrived, on the acknowledging side's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckStamps {
    /// When packet `counter` arrived, µs since the receiver's epoch.
    pub received_us: u64,
    /// The largest datagram of the ack's batch (the newest among equals), same session.
    pub largest: u64,
    /// When `largest` arrived, µs since the receiver's epoch.
    pub largest_received_us: u64,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

impl AckFrame {
    /// The frame's bytes: the timestamped form when it has stamps, else the 13-byte form.
    pub fn encode(&self) -> ([u8; ACK_TS_FRAME_LEN], usize) {
        let mut out = [0u8; ACK_TS_FRAME_LEN];
        out[1..5].copy_from_slice(&self.index.to_le_bytes());
        out[5..13].copy_from_slice(&self.counter.to_le_bytes());
        let Some(stamps) = self.stamps else {
            out[0] = FRAME_ACK;
            return (out, ACK_FRAME_LEN);
        };
        out[0] = FRAME_ACK_TS;
        out[13..21].copy_from_slice(&stamps.received_us.to_le_bytes());
        out[21..29].copy_from_slice(&stamps.largest.to_le_bytes());
        out[29..37].copy_from_slice(&stamps.largest_received_us.to_le_bytes());
        (out, ACK_TS_FRAME_LEN)
    }

    /// Parses an acknowledgement frame of either form; total over all inputs.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedPacket> {
        let expected = match bytes.first() {
            Some(&FRAME_ACK) => ACK_FRAME_LEN,
            Some(&FRAME_ACK_TS) => ACK_TS_FRAME_LEN,
            Some(&other) => return Err(MalformedPacket::UnknownType(other)),
            None => return Err(MalformedPacket::Empty),
        };
        if bytes.len() != expected {
            return Err(MalformedPacket::WrongLength {
                kind: "ack frame",
                expected,
                got: bytes.len(),
            });
        }
        let mut index = [0u8; 4];
        index.copy_from_slice(&bytes[1..5]);
        let stamps = (expected == ACK_TS_FRAME_LEN).then(|| AckStamps {
            received_us: le_u64(bytes, 13),
            largest: le_u64(bytes, 21),
            largest_received_us: le_u64(bytes, 29),
        });
        Ok(Self {
            index: u32::from_le_bytes(index),
            counter: le_u64(bytes, 5),
            stamps,
        })
    }
}

/// What an acknowledgement settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckSample {
    /// Bulk bytes newly settled (delivered, or lost before the acknowledged packet).
    pub bulk_bytes: usize,
    /// Time from sending the acknowledged packet to receiving its ack.
    pub round_trip: Duration,
    /// Whether the acknowledged packet was a bulk packet. Only those round trips are
    /// comparable with each other: on a 20 Mbit/s link a full-size packet spends 0.5 ms
    /// more on the wire than a 64-byte one, which a delay controller would take for a
    /// queue.
    pub from_bulk: bool,
    /// Length of the acknowledged datagram (path MTU black-hole detection).
    pub len: usize,
    /// The acknowledged packet's one-way delay plus the clocks' constant offset (only its
    /// changes mean anything); `None` when the ack had no timestamps.
    pub one_way: Option<Duration>,
    /// The batch's largest packet, when the ack names one this log remembers.
    pub largest: Option<PacketSample>,
}

/// Delay and size of one acknowledged packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSample {
    /// Time from sending it to receiving the ack that named it.
    pub round_trip: Duration,
    /// Its one-way delay plus the clocks' constant offset.
    pub one_way: Duration,
    /// Whether it was a bulk packet.
    pub from_bulk: bool,
    /// Its datagram length.
    pub len: usize,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    index: u32,
    counter: u64,
    sent_at: Instant,
    /// Bulk bytes sent to this peer up to and including this packet.
    bulk_through: u64,
    bulk: bool,
    len: usize,
}

/// The sender's memory of recent data packets to one peer.
#[derive(Debug)]
pub struct SendLog {
    slots: Box<[Option<Slot>]>,
    bulk_sent: u64,
    bulk_settled: u64,
    /// The origin of send times in µs (the first packet's), for one-way delays.
    epoch: Option<Instant>,
}

impl Default for SendLog {
    fn default() -> Self {
        Self::new()
    }
}

impl SendLog {
    /// An empty log (allocates its slots once).
    pub fn new() -> Self {
        Self {
            slots: vec![None; SEND_LOG_SLOTS].into_boxed_slice(),
            bulk_sent: 0,
            bulk_settled: 0,
            epoch: None,
        }
    }

    /// Records a data packet sealed for session `index` (the peer's index, as written in
    /// the header) with `counter`; `bulk_bytes` is its size if it came from the bulk lane;
    /// `len` is the sealed datagram's length.
    pub fn record(
        &mut self,
        index: u32,
        counter: u64,
        sent_at: Instant,
        bulk_bytes: usize,
        len: usize,
    ) {
        self.bulk_sent = self.bulk_sent.saturating_add(bulk_bytes as u64);
        self.epoch.get_or_insert(sent_at);
        let slot = (counter % SEND_LOG_SLOTS as u64) as usize;
        self.slots[slot] = Some(Slot {
            index,
            counter,
            sent_at,
            bulk_through: self.bulk_sent,
            bulk: bulk_bytes > 0,
            len,
        });
    }

    /// Applies an acknowledgement received at `now`; `None` if it names a packet this log
    /// no longer remembers.
    pub fn on_ack(&mut self, ack: AckFrame, now: Instant) -> Option<AckSample> {
        let entry = self.find(ack.index, ack.counter)?;
        let newly = entry.bulk_through.saturating_sub(self.bulk_settled);
        self.bulk_settled = self.bulk_settled.max(entry.bulk_through);
        let stamps = ack.stamps;
        let largest = stamps.and_then(|s| {
            let largest = self.find(ack.index, s.largest)?;
            Some(PacketSample {
                round_trip: now.saturating_duration_since(largest.sent_at),
                one_way: self.one_way(largest.sent_at, s.largest_received_us),
                from_bulk: largest.bulk,
                len: largest.len,
            })
        });
        Some(AckSample {
            bulk_bytes: usize::try_from(newly).unwrap_or(usize::MAX),
            round_trip: now.saturating_duration_since(entry.sent_at),
            from_bulk: entry.bulk,
            len: entry.len,
            one_way: stamps.map(|s| self.one_way(entry.sent_at, s.received_us)),
            largest,
        })
    }

    /// How long packets `first` to `last` of session `index` took to send, and the bulk
    /// bytes sent after `first` up to and including `last`; `None` if the log no longer
    /// remembers either (a receiver's [`RateDropFrame`](super::RateDropFrame) is checked
    /// against this before it is believed).
    pub fn window(&self, index: u32, first: u64, last: u64) -> Option<(Duration, u64)> {
        let (a, b) = (self.find(index, first)?, self.find(index, last)?);
        (b.counter > a.counter).then(|| {
            (
                b.sent_at.saturating_duration_since(a.sent_at),
                b.bulk_through.saturating_sub(a.bulk_through),
            )
        })
    }

    fn find(&self, index: u32, counter: u64) -> Option<Slot> {
        let slot = (counter % SEND_LOG_SLOTS as u64) as usize;
        self.slots[slot].filter(|s| s.index == index && s.counter == counter)
    }

    /// Receive stamp minus send time, shifted by [`ONE_WAY_OFFSET_US`] to be positive.
    fn one_way(&self, sent_at: Instant, received_us: u64) -> Duration {
        let sent_us = self
            .epoch
            .map_or(0, |e| sent_at.saturating_duration_since(e).as_micros());
        let raw = i128::from(received_us) - i128::try_from(sent_us).unwrap_or(i128::MAX);
        let shifted = (raw + i128::from(ONE_WAY_OFFSET_US)).max(0);
        Duration::from_micros(u64::try_from(shifted).unwrap_or(u64::MAX))
    }

    /// Bulk bytes sent and not yet settled by an ack.
    pub fn bulk_unsettled(&self) -> usize {
        usize::try_from(self.bulk_sent.saturating_sub(self.bulk_settled)).unwrap_or(usize::MAX)
    }

    /// Settles everything outstanding (the peer went away); returns the bytes settled.
    pub fn settle_all(&mut self) -> usize {
        let outstanding = self.bulk_unsettled();
        self.bulk_settled = self.bulk_sent;
        outstanding
    }
}

/// The receiver's side: which packet to acknowledge next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckState {
    due: Option<AckFrame>,
    /// Length of the batch's largest datagram so far.
    largest_len: usize,
    /// The origin of receive stamps (the first packet's arrival).
    epoch: Option<Instant>,
}

impl AckState {
    /// Notes an authenticated IP packet (`len`: its datagram length) that arrived at
    /// `now`; returns true if no ack was due before (the caller queues one), false if a
    /// pending ack now simply names a newer packet.
    pub fn on_packet(&mut self, index: u32, counter: u64, len: usize, now: Instant) -> bool {
        let epoch = *self.epoch.get_or_insert(now);
        let at =
            u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
        let newest = AckFrame {
            index,
            counter,
            stamps: Some(AckStamps {
                received_us: at,
                largest: counter,
                largest_received_us: at,
            }),
        };
        let Some(due) = &mut self.due else {
            self.due = Some(newest);
            self.largest_len = len;
            return true;
        };
        if due.index != index {
            // A new session's packets supersede the old session's.
            *due = newest;
            self.largest_len = len;
            return false;
        }
        // Same session: keep the highest counter (reordering must not move the ack
        // backwards), and the largest datagram, the newest among equals.
        let largest = due.stamps.map(|s| (s.largest, s.largest_received_us));
        let (mut big, mut big_at) = largest.unwrap_or((counter, at));
        if len >= self.largest_len {
            self.largest_len = len;
            (big, big_at) = (counter, at);
        }
        if counter > due.counter {
            due.counter = counter;
            due.stamps = Some(AckStamps {
                received_us: at,
                largest: big,
                largest_received_us: big_at,
            });
        } else if let Some(stamps) = &mut due.stamps {
            stamps.largest = big;
            stamps.largest_received_us = big_at;
        }
        false
    }

    /// The ack to send now, if one is due.
    pub fn take(&mut self) -> Option<AckFrame> {
        self.largest_len = 0;
        self.due.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn ack_settles_bulk_up_to_the_named_packet_once() {
        let t0 = origin();
        let mut log = SendLog::new();
        for counter in 0..10u64 {
            let bulk = if counter % 2 == 0 { 1000 } else { 0 };
            log.record(7, counter, t0 + Duration::from_millis(counter), bulk, 100);
        }
        assert_eq!(log.bulk_unsettled(), 5000);
        let ack = AckFrame {
            index: 7,
            counter: 4,
            stamps: None,
        };
        let sample = log.on_ack(ack, t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(sample.bulk_bytes, 3000, "packets 0, 2 and 4");
        assert_eq!(sample.round_trip, Duration::from_millis(6));
        assert!(sample.from_bulk);
        let small = AckFrame {
            index: 7,
            counter: 5,
            stamps: None,
        };
        assert!(
            !log.on_ack(small, t0 + Duration::from_millis(10))
                .unwrap()
                .from_bulk
        );
        assert_eq!(
            log.on_ack(ack, t0 + Duration::from_millis(11))
                .unwrap()
                .bulk_bytes,
            0,
            "a duplicate ack settles nothing more"
        );
        let older = AckFrame {
            index: 7,
            counter: 2,
            stamps: None,
        };
        assert_eq!(
            log.on_ack(older, t0 + Duration::from_millis(12))
                .unwrap()
                .bulk_bytes,
            0,
            "a reordered, older ack settles nothing"
        );
        assert_eq!(log.bulk_unsettled(), 2000);
        assert_eq!(log.settle_all(), 2000);
        assert_eq!(log.bulk_unsettled(), 0);
    }

    #[test]
    fn unknown_or_overwritten_packets_are_ignored() {
        let t0 = origin();
        let mut log = SendLog::new();
        log.record(7, 3, t0, 100, 129);
        assert!(
            log.on_ack(
                AckFrame {
                    index: 8,
                    counter: 3,
                    stamps: None,
                },
                t0
            )
            .is_none()
        );
        assert!(
            log.on_ack(
                AckFrame {
                    index: 7,
                    counter: 4,
                    stamps: None,
                },
                t0
            )
            .is_none()
        );
        log.record(7, 3 + SEND_LOG_SLOTS as u64, t0, 100, 129);
        assert!(
            log.on_ack(
                AckFrame {
                    index: 7,
                    counter: 3,
                    stamps: None,
                },
                t0
            )
            .is_none(),
            "slot reused by a newer packet"
        );
    }

    #[test]
    fn receiver_acks_the_newest_packet_once_per_batch() {
        let t0 = origin();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut state = AckState::default();
        assert!(state.on_packet(1, 5, 100, at(0)));
        assert!(!state.on_packet(1, 3, 1400, at(10)), "already due");
        assert!(!state.on_packet(1, 9, 100, at(20)));
        assert_eq!(
            state.take(),
            Some(AckFrame {
                index: 1,
                counter: 9,
                stamps: Some(AckStamps {
                    received_us: 20,
                    largest: 3,
                    largest_received_us: 10,
                }),
            }),
            "the newest packet, and the batch's largest with its own stamp"
        );
        assert_eq!(state.take(), None);
        assert!(state.on_packet(1, 10, 1400, at(30)));
        assert!(!state.on_packet(1, 11, 1400, at(40)));
        assert_eq!(
            state.take().and_then(|a| a.stamps).map(|s| s.largest),
            Some(11),
            "the newest among equals"
        );
        assert!(state.on_packet(1, 12, 100, at(50)));
        assert!(
            !state.on_packet(2, 0, 100, at(60)),
            "a new session supersedes"
        );
        assert_eq!(
            state.take(),
            Some(AckFrame {
                index: 2,
                counter: 0,
                stamps: Some(AckStamps {
                    received_us: 60,
                    largest: 0,
                    largest_received_us: 60,
                }),
            })
        );
    }

    #[test]
    fn stamped_acks_give_one_way_delays_whatever_the_clock_offset() {
        let t0 = origin();
        let mut log = SendLog::new();
        log.record(7, 0, t0, 1000, 1400);
        log.record(7, 1, t0 + Duration::from_millis(1), 0, 100);
        // The receiver's clock reads 5 s less than ours; the bulk packet took 30 ms, the
        // small one 20 ms.
        let ack = AckFrame {
            index: 7,
            counter: 1,
            stamps: Some(AckStamps {
                received_us: 21_000,
                largest: 0,
                largest_received_us: 30_000,
            }),
        };
        let sample = log.on_ack(ack, t0 + Duration::from_millis(50)).unwrap();
        let small = sample.one_way.unwrap();
        let bulk = sample.largest.unwrap();
        assert!(bulk.from_bulk && !sample.from_bulk);
        assert_eq!(bulk.len, 1400);
        assert_eq!(bulk.round_trip, Duration::from_millis(50));
        assert_eq!(bulk.one_way - small, Duration::from_millis(10));
        let feedback = crate::path::Feedback::from_ack(&sample);
        assert!(feedback.bulk, "the bulk packet is the delay sample");
        assert_eq!(feedback.one_way, Some(bulk.one_way));
        assert_eq!(feedback.bytes, 1000);
    }

    #[test]
    fn control_frames_are_told_from_ip_packets() {
        let (ack, len) = AckFrame {
            index: 1,
            counter: 2,
            stamps: None,
        }
        .encode();
        assert!(is_control_frame(&ack[..len]));
        assert!(!is_control_frame(&[0x45, 0, 0, 20]));
        assert!(!is_control_frame(&[0x60, 0, 0, 0]));
        assert!(!is_control_frame(&[]));
    }

    proptest! {
        #[test]
        fn parse_is_total_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(frame) = AckFrame::parse(&bytes) {
                let (encoded, len) = frame.encode();
                prop_assert_eq!(&encoded[..len], bytes.as_slice());
            }
        }

        #[test]
        fn encode_parse_round_trip(
            index in any::<u32>(),
            counter in any::<u64>(),
            stamps in proptest::option::of(any::<(u64, u64, u64)>()),
        ) {
            let stamps = stamps.map(|(received_us, largest, largest_received_us)| AckStamps {
                received_us,
                largest,
                largest_received_us,
            });
            let frame = AckFrame { index, counter, stamps };
            let (bytes, len) = frame.encode();
            prop_assert_eq!(AckFrame::parse(&bytes[..len]), Ok(frame));
        }

        /// However acks arrive (reordered, duplicated, unknown), settled bytes never
        /// exceed sent bytes and never go backwards.
        #[test]
        fn settled_never_exceeds_sent(
            sizes in proptest::collection::vec(0usize..2000, 1..200),
            acks in proptest::collection::vec(any::<u16>(), 0..100),
        ) {
            let t0 = origin();
            let mut log = SendLog::new();
            for (counter, &size) in sizes.iter().enumerate() {
                log.record(1, counter as u64, t0, size, size);
            }
            let total: usize = sizes.iter().sum();
            let mut settled = 0usize;
            for ack in acks {
                let counter = u64::from(ack) % (sizes.len() as u64 + 5);
                if let Some(sample) = log.on_ack(AckFrame { index: 1, counter, stamps: None }, t0) {
                    settled += sample.bulk_bytes;
                }
                prop_assert!(settled <= total);
                prop_assert_eq!(log.bulk_unsettled(), total - settled);
            }
        }
    }
}
