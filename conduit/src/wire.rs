//! Mesh packet formats, as zero-copy views over received bytes.
//!
//! Invariant: [`parse`] is total — any byte string yields a typed message or a
//! [`MalformedPacket`], never a panic — and a view only exposes fields whose bytes were
//! length-checked. Every mesh packet's first byte has the `0x80` bit set; STUN messages
//! start with two zero bits, so both share one UDP port ([`demux`]).
//!
//! Layouts (integers little-endian):
//!
//! ```text
//! HandshakeInit  0x81 | ephemeral 32 | sealed static 32+16 | sealed {sender_index u32, timestamp u64} 12+16 | mac1 16   = 125
//! HandshakeResp  0x82 | receiver_index 4 | ephemeral 32 | sealed {sender_index u32} 4+16 | mac1 16                      = 73
//! Data           0x83 | receiver_index 4 | counter u64 8 | ciphertext | tag 16                                          >= 29
//! ```
//!
//! A keepalive is a data packet with an empty plaintext, so it is authenticated and
//! replay-checked like any other. A plaintext whose first byte is below `0x10` (no IP
//! version) is a control frame ([`path::frame`](crate::path::frame)): the
//! acknowledgements of [`path::feedback`](crate::path::feedback) that pace the bulk lane,
//! and the probes of path MTU discovery ([`path::pmtu`](crate::path::pmtu)).

use crate::MalformedPacket;
use crate::cipher::TAG_LEN;

/// Type byte of a handshake initiation.
pub const TYPE_INIT: u8 = 0x81;
/// Type byte of a handshake response.
pub const TYPE_RESP: u8 = 0x82;
/// Type byte of a data packet (and keepalive).
pub const TYPE_DATA: u8 = 0x83;

/// Length of a handshake initiation.
pub const INIT_LEN: usize = 125;
/// Length of a handshake response.
pub const RESP_LEN: usize = 73;
/// Bytes before a data packet's ciphertext: type, receiver index, counter.
pub const DATA_HEADER_LEN: usize = 13;
/// Bytes a data packet adds around its plaintext.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Length of the handshake MAC.
pub const MAC_LEN: usize = 16;

/// Offsets inside a handshake initiation.
pub mod init {
    /// Ephemeral public key.
    pub const EPHEMERAL: std::ops::Range<usize> = 1..33;
    /// Initiator's static key, sealed.
    pub const STATIC: std::ops::Range<usize> = 33..81;
    /// Sender index and timestamp, sealed.
    pub const PAYLOAD: std::ops::Range<usize> = 81..109;
    /// MAC keyed by the responder's static public key, over bytes `..MAC`.
    pub const MAC: std::ops::Range<usize> = 109..125;
}

/// Offsets inside a handshake response.
pub mod resp {
    /// The initiator's session index.
    pub const RECEIVER: std::ops::Range<usize> = 1..5;
    /// Ephemeral public key.
    pub const EPHEMERAL: std::ops::Range<usize> = 5..37;
    /// Responder's sender index, sealed.
    pub const PAYLOAD: std::ops::Range<usize> = 37..57;
    /// MAC keyed by the initiator's static public key, over bytes `..MAC`.
    pub const MAC: std::ops::Range<usize> = 57..73;
}

/// What the first byte of a UDP datagram says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demux {
    /// A mesh packet (high bit set).
    Mesh,
    /// A STUN message (first two bits zero), for the ICE agent.
    Stun,
    /// Neither; dropped and counted.
    Other,
}

/// Classifies a datagram by its first byte.
pub fn demux(datagram: &[u8]) -> Demux {
    match datagram.first() {
        Some(b) if b & 0x80 != 0 => Demux::Mesh,
        Some(b) if b & 0xC0 == 0 => Demux::Stun,
        _ => Demux::Other,
    }
}

/// A parsed mesh packet borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Handshake initiation (exactly [`INIT_LEN`] bytes).
    Init(&'a [u8; INIT_LEN]),
    /// Handshake response (exactly [`RESP_LEN`] bytes).
    Resp(&'a [u8; RESP_LEN]),
    /// Data packet header; the ciphertext is `datagram[DATA_HEADER_LEN..]`.
    Data(DataHeader),
}

/// The cleartext header of a data packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// The receiver's session index.
    pub receiver_index: u32,
    /// Per-session sequence number; also the AEAD nonce.
    pub counter: u64,
}

impl DataHeader {
    /// Writes the header into the first [`DATA_HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8; DATA_HEADER_LEN]) {
        out[0] = TYPE_DATA;
        out[1..5].copy_from_slice(&self.receiver_index.to_le_bytes());
        out[5..13].copy_from_slice(&self.counter.to_le_bytes());
    }
}

/// Parses a datagram that should be a mesh packet.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, MalformedPacket> {
    let first = *datagram.first().ok_or(MalformedPacket::Empty)?;
    if first & 0x80 == 0 {
        return Err(MalformedPacket::NotMesh(first));
    }
    match first {
        TYPE_INIT => exact(datagram, "handshake initiation").map(Message::Init),
        TYPE_RESP => exact(datagram, "handshake response").map(Message::Resp),
        TYPE_DATA => {
            if datagram.len() < DATA_OVERHEAD {
                return Err(MalformedPacket::Truncated {
                    kind: "data packet",
                    needed: DATA_OVERHEAD,
                    got: datagram.len(),
                });
            }
            Ok(Message::Data(DataHeader {
                receiver_index: u32_le(&datagram[1..5]),
                counter: u64_le(&datagram[5..13]),
            }))
        }
        other => Err(MalformedPacket::UnknownType(other)),
    }
}

fn exact<'a, const N: usize>(
    datagram: &'a [u8],
    kind: &'static str,
) -> Result<&'a [u8; N], MalformedPacket> {
    datagram
        .try_into()
        .map_err(|_| MalformedPacket::WrongLength {
            kind,
            expected: N,
            got: datagram.len(),
        })
}

/// Reads a little-endian u32 from exactly four bytes (callers pass checked slices).
pub fn u32_le(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(b)
}

/// Reads a little-endian u64 from exactly eight bytes (callers pass checked slices).
pub fn u64_le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn demux_separates_stun_and_mesh() {
        assert_eq!(demux(&[0x00, 0x01]), Demux::Stun);
        assert_eq!(demux(&[0x83]), Demux::Mesh);
        assert_eq!(demux(&[0x40]), Demux::Other);
        assert_eq!(demux(&[]), Demux::Other);
    }

    #[test]
    fn exact_lengths_enforced() {
        let mut init = [0u8; INIT_LEN + 1];
        init[0] = TYPE_INIT;
        assert!(matches!(parse(&init[..INIT_LEN]), Ok(Message::Init(_))));
        assert_eq!(
            parse(&init),
            Err(MalformedPacket::WrongLength {
                kind: "handshake initiation",
                expected: INIT_LEN,
                got: INIT_LEN + 1
            })
        );
        let mut data = [0u8; DATA_OVERHEAD - 1];
        data[0] = TYPE_DATA;
        assert!(matches!(
            parse(&data),
            Err(MalformedPacket::Truncated { .. })
        ));
        assert_eq!(parse(&[0x9f]), Err(MalformedPacket::UnknownType(0x9f)));
        assert_eq!(parse(&[0x01]), Err(MalformedPacket::NotMesh(0x01)));
        assert_eq!(parse(&[]), Err(MalformedPacket::Empty));
    }

    proptest! {
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let _ = demux(&bytes);
        }

        #[test]
        fn data_header_round_trips(index in any::<u32>(), counter in any::<u64>(), body in 16usize..64) {
            let mut buf = vec![0u8; DATA_HEADER_LEN + body];
            let header = DataHeader { receiver_index: index, counter };
            let mut h = [0u8; DATA_HEADER_LEN];
            header.emit(&mut h);
            buf[..DATA_HEADER_LEN].copy_from_slice(&h);
            prop_assert_eq!(parse(&buf), Ok(Message::Data(header)));
            prop_assert_eq!(demux(&buf), Demux::Mesh);
        }
    }
}
