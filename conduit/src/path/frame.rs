//! Control frames: plaintexts of data packets that are not IP packets (their first byte
//! is below `0x10`, where an IP packet has its version nibble). Being sealed like data,
//! they are authenticated and replay-checked before any of them changes state.
//!
//! Invariant: [`ControlFrame::parse`] is total — any bytes give a frame or a
//! [`MalformedPacket`].
//!
//! ```text
//! Ack        0x01 | session index u32 | counter u64     (13 bytes; see `feedback`)
//! AckTs      0x04 | the same | three u64 stamps        (37 bytes; see `feedback`)
//! Probe      0x02 | probe id u32 | zero padding         (the size under test)
//! ProbeAck   0x03 | probe id u32                        (5 bytes)
//! RateDrop   0x05 | index u32 | two counters u64 | span (29 bytes; see `arrival`)
//! BulkData   0x06 | sequence u32 | IP packet              (see `repair`; not parsed here)
//! Nack       0x07 | index u32 | first u32 | count u16     (11 bytes; see `repair`)
//! RepairHello 0x08 | index u32                            (5 bytes; see `repair`)
//! ```

use super::arrival::{FRAME_RATE_DROP, RateDropFrame};
use super::feedback::{AckFrame, FRAME_ACK, FRAME_ACK_TS};
use super::repair::{FRAME_NACK, FRAME_REPAIR_HELLO, NackFrame, RepairHello};
use crate::MalformedPacket;

/// Type byte of a path MTU probe.
pub const FRAME_PROBE: u8 = 0x02;
/// Type byte of a probe's acknowledgement.
pub const FRAME_PROBE_ACK: u8 = 0x03;
/// Length of a probe's header (and of a probe acknowledgement).
pub const PROBE_HEADER_LEN: usize = 5;

/// A decoded control frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlFrame {
    /// Acknowledgement of data packets (the bulk lane's delay signal).
    Ack(AckFrame),
    /// A path MTU probe: answer with [`ControlFrame::ProbeAck`] of the same id.
    Probe {
        /// The prober's id.
        id: u32,
    },
    /// The peer received our probe `id`.
    ProbeAck {
        /// The probe's id.
        id: u32,
    },
    /// The peer saw our packets arrive slower than before (a rate drop below us).
    RateDrop(RateDropFrame),
    /// Some of our bulk packets did not reach the peer: repair them.
    Nack(NackFrame),
    /// The peer reads sequenced bulk on the session it names.
    RepairHello(RepairHello),
}

impl ControlFrame {
    /// Parses a control frame; total over all inputs.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedPacket> {
        let id = || {
            let b = bytes.get(1..PROBE_HEADER_LEN)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let truncated = |kind| MalformedPacket::Truncated {
            kind,
            needed: PROBE_HEADER_LEN,
            got: bytes.len(),
        };
        match bytes.first() {
            Some(&FRAME_ACK | &FRAME_ACK_TS) => AckFrame::parse(bytes).map(Self::Ack),
            Some(&FRAME_RATE_DROP) => RateDropFrame::parse(bytes).map(Self::RateDrop),
            Some(&FRAME_NACK) => NackFrame::parse(bytes).map(Self::Nack),
            Some(&FRAME_REPAIR_HELLO) => RepairHello::parse(bytes).map(Self::RepairHello),
            Some(&FRAME_PROBE) => Ok(Self::Probe {
                id: id().ok_or(truncated("probe frame"))?,
            }),
            Some(&FRAME_PROBE_ACK) if bytes.len() == PROBE_HEADER_LEN => Ok(Self::ProbeAck {
                id: id().ok_or(truncated("probe ack frame"))?,
            }),
            Some(&FRAME_PROBE_ACK) => Err(MalformedPacket::WrongLength {
                kind: "probe ack frame",
                expected: PROBE_HEADER_LEN,
                got: bytes.len(),
            }),
            Some(&other) => Err(MalformedPacket::UnknownType(other)),
            None => Err(MalformedPacket::Empty),
        }
    }
}

/// Fills `out` (at least [`PROBE_HEADER_LEN`] bytes, else left as is) with a probe
/// frame: its header, then zeros.
pub fn write_probe(id: u32, out: &mut [u8]) {
    if let Some((header, padding)) = out.split_first_chunk_mut::<PROBE_HEADER_LEN>() {
        header[0] = FRAME_PROBE;
        header[1..].copy_from_slice(&id.to_le_bytes());
        padding.fill(0);
    }
}

/// A probe acknowledgement's bytes.
pub fn probe_ack(id: u32) -> [u8; PROBE_HEADER_LEN] {
    let mut out = [FRAME_PROBE_ACK, 0, 0, 0, 0];
    out[1..].copy_from_slice(&id.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn probes_round_trip() {
        let mut probe = [0xffu8; 1200];
        write_probe(77, &mut probe);
        assert_eq!(
            ControlFrame::parse(&probe),
            Ok(ControlFrame::Probe { id: 77 })
        );
        assert!(probe[PROBE_HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(
            ControlFrame::parse(&probe_ack(77)),
            Ok(ControlFrame::ProbeAck { id: 77 })
        );
        assert!(ControlFrame::parse(&probe[..3]).is_err());
        assert!(ControlFrame::parse(&[FRAME_PROBE_ACK, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ControlFrame::parse(&bytes);
        }
    }
}
