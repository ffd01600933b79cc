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
//! frame (keepalives stay empty plaintexts):
//!
//! ```text
//! AckFrame  0x01 | session index u32 | counter u64      (13 bytes, little-endian)
//! ```

use std::time::{Duration, Instant};

use crate::MalformedPacket;

/// Type byte of an acknowledgement frame.
pub const FRAME_ACK: u8 = 0x01;
/// Length of an encoded [`AckFrame`].
pub const ACK_FRAME_LEN: usize = 13;
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
}

impl AckFrame {
    /// The frame's bytes.
    pub fn encode(&self) -> [u8; ACK_FRAME_LEN] {
        let mut out = [0u8; ACK_FRAME_LEN];
        out[0] = FRAME_ACK;
        out[1..5].copy_from_slice(&self.index.to_le_bytes());
        out[5..13].copy_from_slice(&self.counter.to_le_bytes());
        out
    }

    /// Parses a control frame; total over all inputs.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedPacket> {
        match bytes.first() {
            Some(&FRAME_ACK) => {}
            Some(&other) => return Err(MalformedPacket::UnknownType(other)),
            None => return Err(MalformedPacket::Empty),
        }
        if bytes.len() != ACK_FRAME_LEN {
            return Err(MalformedPacket::WrongLength {
                kind: "ack frame",
                expected: ACK_FRAME_LEN,
                got: bytes.len(),
            });
        }
        let mut index = [0u8; 4];
        index.copy_from_slice(&bytes[1..5]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&bytes[5..13]);
        Ok(Self {
            index: u32::from_le_bytes(index),
            counter: u64::from_le_bytes(counter),
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
        let slot = (ack.counter % SEND_LOG_SLOTS as u64) as usize;
        let entry =
            self.slots[slot].filter(|s| s.index == ack.index && s.counter == ack.counter)?;
        let newly = entry.bulk_through.saturating_sub(self.bulk_settled);
        self.bulk_settled = self.bulk_settled.max(entry.bulk_through);
        Some(AckSample {
            bulk_bytes: usize::try_from(newly).unwrap_or(usize::MAX),
            round_trip: now.saturating_duration_since(entry.sent_at),
            from_bulk: entry.bulk,
            len: entry.len,
        })
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
}

impl AckState {
    /// Notes an authenticated IP packet; returns true if no ack was due before (the
    /// caller queues one), false if a pending ack now simply names a newer packet.
    pub fn on_packet(&mut self, index: u32, counter: u64) -> bool {
        let newest = AckFrame { index, counter };
        match &mut self.due {
            Some(due) => {
                // Same session: keep the highest counter (reordering must not move the
                // ack backwards). A new session's packets supersede the old session's.
                if due.index != index || counter > due.counter {
                    *due = newest;
                }
                false
            }
            None => {
                self.due = Some(newest);
                true
            }
        }
    }

    /// The ack to send now, if one is due.
    pub fn take(&mut self) -> Option<AckFrame> {
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
        };
        let sample = log.on_ack(ack, t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(sample.bulk_bytes, 3000, "packets 0, 2 and 4");
        assert_eq!(sample.round_trip, Duration::from_millis(6));
        assert!(sample.from_bulk);
        let small = AckFrame {
            index: 7,
            counter: 5,
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
                    counter: 3
                },
                t0
            )
            .is_none()
        );
        assert!(
            log.on_ack(
                AckFrame {
                    index: 7,
                    counter: 4
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
                    counter: 3
                },
                t0
            )
            .is_none(),
            "slot reused by a newer packet"
        );
    }

    #[test]
    fn receiver_acks_the_newest_packet_once_per_batch() {
        let mut state = AckState::default();
        assert!(state.on_packet(1, 5));
        assert!(!state.on_packet(1, 3), "already due");
        assert!(!state.on_packet(1, 9));
        assert_eq!(
            state.take(),
            Some(AckFrame {
                index: 1,
                counter: 9
            })
        );
        assert_eq!(state.take(), None);
        assert!(state.on_packet(1, 10));
        assert!(!state.on_packet(2, 0), "a new session supersedes");
        assert_eq!(
            state.take(),
            Some(AckFrame {
                index: 2,
                counter: 0
            })
        );
    }

    #[test]
    fn control_frames_are_told_from_ip_packets() {
        assert!(is_control_frame(
            &AckFrame {
                index: 1,
                counter: 2
            }
            .encode()
        ));
        assert!(!is_control_frame(&[0x45, 0, 0, 20]));
        assert!(!is_control_frame(&[0x60, 0, 0, 0]));
        assert!(!is_control_frame(&[]));
    }

    proptest! {
        #[test]
        fn parse_is_total_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(frame) = AckFrame::parse(&bytes) {
                let encoded = frame.encode();
                prop_assert_eq!(encoded.as_slice(), bytes.as_slice());
            }
        }

        #[test]
        fn encode_parse_round_trip(index in any::<u32>(), counter in any::<u64>()) {
            let frame = AckFrame { index, counter };
            prop_assert_eq!(AckFrame::parse(&frame.encode()), Ok(frame));
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
                if let Some(sample) = log.on_ack(AckFrame { index: 1, counter }, t0) {
                    settled += sample.bulk_bytes;
                }
                prop_assert!(settled <= total);
                prop_assert_eq!(log.bulk_unsettled(), total - settled);
            }
        }
    }
}
