//! Fetch-protocol datagrams, parsed as views over the received bytes.
//!
//! Invariant: [`parse`] is total — any byte string yields a typed [`Datagram`] or a
//! [`Malformed`], never a panic — and a view only exposes fields whose bytes were
//! length-checked. Integers are little-endian. Every datagram starts with the same
//! 20-byte header:
//!
//! ```text
//! header   magic 0xFB | version 1 | kind u8 | flags u8 (0) | transfer id 16
//! Request  header | seq u32 | frag_size u16 | count u16 | count x {chunk u32, first_frag u16, mask u64}
//! Data     header | seq u32 | chunk u32 | frag u16 | payload (frag_size bytes, less for a chunk's last)
//! Refuse   header | seq u32 | reason u8 | detail u32
//! ```
//!
//! A request entry asks for the fragments `first_frag + b` of `chunk` for every bit `b`
//! set in `mask`. A data datagram echoes the `seq` of the request it answers, so the
//! client can measure the round trip without ambiguity (every request has a new `seq`).

use crate::chunk::{ChunkNo, IndexDigest};
use crate::image::CHUNK_SIZE;

/// First byte of every fetch datagram.
pub const MAGIC: u8 = 0xFB;
/// Protocol version carried in the second byte.
pub const VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 20;
/// Bytes of a request before its entries.
pub const REQUEST_FIXED_LEN: usize = HEADER_LEN + 8;
/// Bytes of one request entry.
pub const ENTRY_LEN: usize = 14;
/// Bytes of a data datagram before its payload.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 10;
/// Length of a refusal.
pub const REFUSE_LEN: usize = HEADER_LEN + 9;
/// Smallest fragment payload; it bounds the fragments of a chunk to [`MAX_FRAGS`].
pub const MIN_FRAG_SIZE: usize = 256;
/// Most fragments a chunk can have.
pub const MAX_FRAGS: usize = CHUNK_SIZE / MIN_FRAG_SIZE;

const KIND_REQUEST: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_REFUSE: u8 = 3;

/// Names the image a datagram is about: the first 16 bytes of its [`IndexDigest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub [u8; 16]);

impl From<IndexDigest> for TransferId {
    fn from(d: IndexDigest) -> Self {
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.0[..16]);
        Self(id)
    }
}

/// Why a datagram was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Shorter than its kind's fixed part.
    #[error("truncated: {needed} bytes needed, {got} received")]
    Truncated {
        /// Bytes the kind needs.
        needed: usize,
        /// Bytes received.
        got: usize,
    },
    /// Not a fetch datagram.
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    /// A protocol version this build does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// An unknown kind byte.
    #[error("unknown kind {0}")]
    UnknownKind(u8),
    /// A request whose entry count disagrees with its length.
    #[error("request announces {count} entries in {bytes} bytes")]
    EntryCount {
        /// Announced entries.
        count: u16,
        /// Bytes after the fixed part.
        bytes: usize,
    },
    /// A fragment size outside `MIN_FRAG_SIZE..=CHUNK_SIZE`.
    #[error("fragment size {0} out of range")]
    FragSize(u16),
    /// A data datagram without payload.
    #[error("data without payload")]
    EmptyPayload,
}

/// Why a server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The server does not serve this transfer id.
    UnknownTransfer,
    /// A chunk number beyond the image (`detail` = chunk count).
    ChunkOutOfRange,
    /// The fragment size does not fit the server's datagrams (`detail` = its maximum).
    FragSize,
    /// The server could not read the chunk from its source.
    SourceError,
    /// A reason this build does not know.
    Other(u8),
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            Self::UnknownTransfer => 1,
            Self::ChunkOutOfRange => 2,
            Self::FragSize => 3,
            Self::SourceError => 4,
            Self::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Self {
        match c {
            1 => Self::UnknownTransfer,
            2 => Self::ChunkOutOfRange,
            3 => Self::FragSize,
            4 => Self::SourceError,
            c => Self::Other(c),
        }
    }
}

/// One entry of a request: fragments `first_frag + b` for every bit `b` of `mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The chunk.
    pub chunk: ChunkNo,
    /// Fragment number of bit 0.
    pub first_frag: u16,
    /// Requested fragments.
    pub mask: u64,
}

/// A parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The image.
    pub transfer: TransferId,
    /// The client's request number, echoed in the answers.
    pub seq: u32,
    /// Payload bytes per fragment.
    pub frag_size: u16,
    entries: &'a [u8],
}

impl<'a> Request<'a> {
    /// The entries, in wire order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + 'a {
        self.entries.chunks_exact(ENTRY_LEN).map(|e| Entry {
            chunk: ChunkNo(u32_at(e, 0)),
            first_frag: u16_at(e, 4),
            mask: u64_at(e, 6),
        })
    }

    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len() / ENTRY_LEN
    }
}

/// A parsed data datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// The image.
    pub transfer: TransferId,
    /// The request this answers.
    pub seq: u32,
    /// The chunk.
    pub chunk: ChunkNo,
    /// The fragment number inside the chunk.
    pub frag: u16,
    /// The fragment's bytes.
    pub payload: &'a [u8],
}

/// A parsed refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refuse {
    /// The image.
    pub transfer: TransferId,
    /// The refused request.
    pub seq: u32,
    /// Why.
    pub reason: RefuseReason,
    /// A number that goes with the reason (chunk count, maximum fragment size).
    pub detail: u32,
}

/// A parsed fetch datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Client to server.
    Request(Request<'a>),
    /// Server to client.
    Data(Data<'a>),
    /// Server to client.
    Refuse(Refuse),
}

/// Parses one datagram. Total: never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Datagram<'_>, Malformed> {
    need(bytes, HEADER_LEN)?;
    if bytes[0] != MAGIC {
        return Err(Malformed::BadMagic(bytes[0]));
    }
    if bytes[1] != VERSION {
        return Err(Malformed::Version(bytes[1]));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[4..HEADER_LEN]);
    let transfer = TransferId(id);
    match bytes[2] {
        KIND_REQUEST => {
            need(bytes, REQUEST_FIXED_LEN)?;
            let frag_size = u16_at(bytes, HEADER_LEN + 4);
            let count = u16_at(bytes, HEADER_LEN + 6);
            let entries = &bytes[REQUEST_FIXED_LEN..];
            if entries.len() != usize::from(count) * ENTRY_LEN {
                return Err(Malformed::EntryCount {
                    count,
                    bytes: entries.len(),
                });
            }
            if !(MIN_FRAG_SIZE..=CHUNK_SIZE).contains(&usize::from(frag_size)) {
                return Err(Malformed::FragSize(frag_size));
            }
            Ok(Datagram::Request(Request {
                transfer,
                seq: u32_at(bytes, HEADER_LEN),
                frag_size,
                entries,
            }))
        }
        KIND_DATA => {
            need(bytes, DATA_HEADER_LEN)?;
            let payload = &bytes[DATA_HEADER_LEN..];
            if payload.is_empty() {
                return Err(Malformed::EmptyPayload);
            }
            Ok(Datagram::Data(Data {
                transfer,
                seq: u32_at(bytes, HEADER_LEN),
                chunk: ChunkNo(u32_at(bytes, HEADER_LEN + 4)),
                frag: u16_at(bytes, HEADER_LEN + 8),
                payload,
            }))
        }
        KIND_REFUSE => {
            need(bytes, REFUSE_LEN)?;
            Ok(Datagram::Refuse(Refuse {
                transfer,
                seq: u32_at(bytes, HEADER_LEN),
                reason: RefuseReason::from_code(bytes[HEADER_LEN + 4]),
                detail: u32_at(bytes, HEADER_LEN + 5),
            }))
        }
        k => Err(Malformed::UnknownKind(k)),
    }
}

fn need(bytes: &[u8], needed: usize) -> Result<(), Malformed> {
    if bytes.len() < needed {
        return Err(Malformed::Truncated {
            needed,
            got: bytes.len(),
        });
    }
    Ok(())
}

fn header(out: &mut [u8], kind: u8, transfer: TransferId) {
    out[0] = MAGIC;
    out[1] = VERSION;
    out[2] = kind;
    out[3] = 0;
    out[4..HEADER_LEN].copy_from_slice(&transfer.0);
}

/// Entries that fit a request in a datagram of `max_datagram` bytes.
pub fn max_entries(max_datagram: usize) -> usize {
    (max_datagram.saturating_sub(REQUEST_FIXED_LEN) / ENTRY_LEN).min(usize::from(u16::MAX))
}

/// Writes a request with `entries` into `out` and returns its length. The caller keeps
/// `entries.len()` within [`max_entries`] of `out.len()`; more entries are not written.
pub fn emit_request(
    out: &mut [u8],
    transfer: TransferId,
    seq: u32,
    frag_size: u16,
    entries: &[Entry],
) -> usize {
    let n = entries.len().min(max_entries(out.len()));
    header(out, KIND_REQUEST, transfer);
    out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&seq.to_le_bytes());
    out[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&frag_size.to_le_bytes());
    // `n` is bounded by `max_entries`, which is at most u16::MAX.
    out[HEADER_LEN + 6..HEADER_LEN + 8].copy_from_slice(&(n as u16).to_le_bytes());
    for (i, e) in entries[..n].iter().enumerate() {
        let at = REQUEST_FIXED_LEN + i * ENTRY_LEN;
        out[at..at + 4].copy_from_slice(&e.chunk.0.to_le_bytes());
        out[at + 4..at + 6].copy_from_slice(&e.first_frag.to_le_bytes());
        out[at + 6..at + 14].copy_from_slice(&e.mask.to_le_bytes());
    }
    REQUEST_FIXED_LEN + n * ENTRY_LEN
}

/// Writes a data header into `out[..DATA_HEADER_LEN]`; the payload goes after it.
pub fn emit_data_header(out: &mut [u8], transfer: TransferId, seq: u32, chunk: ChunkNo, frag: u16) {
    header(out, KIND_DATA, transfer);
    out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&seq.to_le_bytes());
    out[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&chunk.0.to_le_bytes());
    out[HEADER_LEN + 8..HEADER_LEN + 10].copy_from_slice(&frag.to_le_bytes());
}

/// Writes a refusal into `out` and returns its length ([`REFUSE_LEN`]).
pub fn emit_refuse(
    out: &mut [u8],
    transfer: TransferId,
    seq: u32,
    reason: RefuseReason,
    detail: u32,
) -> usize {
    header(out, KIND_REFUSE, transfer);
    out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&seq.to_le_bytes());
    out[HEADER_LEN + 4] = reason.code();
    out[HEADER_LEN + 5..REFUSE_LEN].copy_from_slice(&detail.to_le_bytes());
    REFUSE_LEN
}

// Callers pass slices whose length was checked against the offsets.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: TransferId = TransferId([9; 16]);

    #[test]
    fn request_round_trip() {
        let entries = [
            Entry {
                chunk: ChunkNo(3),
                first_frag: 0,
                mask: u64::MAX >> 12,
            },
            Entry {
                chunk: ChunkNo(70_000),
                first_frag: 64,
                mask: 5,
            },
        ];
        let mut buf = [0u8; 1300];
        let n = emit_request(&mut buf, T, 77, 1270, &entries);
        assert_eq!(n, REQUEST_FIXED_LEN + 2 * ENTRY_LEN);
        let Ok(Datagram::Request(r)) = parse(&buf[..n]) else {
            panic!("not a request")
        };
        assert_eq!((r.transfer, r.seq, r.frag_size), (T, 77, 1270));
        assert_eq!(r.entries().collect::<Vec<_>>(), entries);
        assert_eq!(max_entries(1300), 90);
    }

    #[test]
    fn data_and_refuse_round_trip() {
        let mut buf = [0u8; 100];
        emit_data_header(&mut buf, T, 1, ChunkNo(2), 3);
        buf[DATA_HEADER_LEN..].fill(0xAB);
        let Ok(Datagram::Data(d)) = parse(&buf) else {
            panic!("not data")
        };
        assert_eq!(
            (d.seq, d.chunk, d.frag, d.payload.len()),
            (1, ChunkNo(2), 3, 70)
        );
        assert_eq!(parse(&buf[..DATA_HEADER_LEN]), Err(Malformed::EmptyPayload));
        let n = emit_refuse(&mut buf, T, 5, RefuseReason::FragSize, 1270);
        assert_eq!(
            parse(&buf[..n]),
            Ok(Datagram::Refuse(Refuse {
                transfer: T,
                seq: 5,
                reason: RefuseReason::FragSize,
                detail: 1270
            }))
        );
    }

    #[test]
    fn refusals_of_bad_headers() {
        let mut buf = [0u8; 40];
        emit_refuse(&mut buf, T, 0, RefuseReason::SourceError, 0);
        buf[0] = 0x80;
        assert_eq!(parse(&buf), Err(Malformed::BadMagic(0x80)));
        buf[0] = MAGIC;
        buf[1] = 2;
        assert_eq!(parse(&buf), Err(Malformed::Version(2)));
        buf[1] = VERSION;
        buf[2] = 9;
        assert_eq!(parse(&buf), Err(Malformed::UnknownKind(9)));
        assert!(matches!(parse(&buf[..5]), Err(Malformed::Truncated { .. })));
        let n = emit_request(&mut buf, T, 0, 100, &[]);
        assert_eq!(parse(&buf[..n]), Err(Malformed::FragSize(100)));
        let n = emit_request(&mut buf, T, 0, 1000, &[]);
        assert_eq!(
            parse(&buf[..n + 1]),
            Err(Malformed::EntryCount { count: 0, bytes: 1 })
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_after_a_valid_header(kind in 1u8..4, tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = vec![MAGIC, VERSION, kind, 0];
            bytes.extend_from_slice(&[1; 16]);
            bytes.extend_from_slice(&tail);
            if let Ok(Datagram::Request(r)) = parse(&bytes) {
                prop_assert_eq!(r.entries().count(), r.entry_count());
            }
        }

        #[test]
        fn emitted_requests_parse_back(seq in any::<u32>(), frag in 256u16..=1300,
                entries in proptest::collection::vec((any::<u32>(), any::<u16>(), any::<u64>()), 0..120)) {
            let entries: Vec<Entry> = entries.into_iter()
                .map(|(c, f, m)| Entry { chunk: ChunkNo(c), first_frag: f, mask: m }).collect();
            let mut buf = [0u8; 1300];
            let n = emit_request(&mut buf, T, seq, frag, &entries);
            let Ok(Datagram::Request(r)) = parse(&buf[..n]) else { panic!("unparseable") };
            let back: Vec<Entry> = r.entries().collect();
            prop_assert_eq!(&back[..], &entries[..back.len()]);
            prop_assert_eq!(back.len(), entries.len().min(max_entries(1300)));
        }
    }
}
