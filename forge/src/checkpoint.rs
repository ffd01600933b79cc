//! `checkpoint.bin`: which chunks of a staged image are verified and durable.
//!
//! Invariant: a checkpoint never vouches for a chunk that is not durable — it is written
//! only after the image data it covers was fdatasynced (see [`staging`](crate::staging)) —
//! and a checkpoint that is corrupt, truncated, of another format, or bound to another
//! update is refused as a whole ([`Rejection`]), which means a fresh start, never a wrong
//! image.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "BXCKPT" 6 | format u16 = 1 | image_len u64 | chunk_count u32 | index digest 32
//! | target_len u8 | target (UTF-8) | version_len u8 | version | bitmap ceil(chunk_count/8)
//! | mac 32 = BLAKE3 derive_key("bauxite-forge 2026 checkpoint v1", everything before)
//! ```
//!
//! The MAC detects torn or corrupted files. It is keyed by a public context, so it is an
//! integrity check, not an authenticity proof: whatever a checkpoint claims, the whole
//! staged image is verified against the signed index before activation.

use crate::chunk::IndexDigest;
use crate::chunkset::ChunkSet;
use crate::image::chunk_count_for;
use crate::layout::Version;

/// First bytes of a checkpoint.
pub const MAGIC: &[u8; 6] = b"BXCKPT";
/// The format this build writes and reads.
pub const FORMAT: u16 = 1;
/// Bytes of the MAC.
pub const MAC_LEN: usize = 32;
const MAC_CONTEXT: &str = "bauxite-forge 2026 checkpoint v1";
const FIXED_LEN: usize = 6 + 2 + 8 + 4 + 32;

/// The update a checkpoint belongs to. Two checkpoints are about the same staging only
/// when every field is equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateBinding {
    /// The TUF target name.
    pub target: String,
    /// The version being staged.
    pub version: Version,
    /// Image length in bytes.
    pub image_len: u64,
    /// Chunks in the image.
    pub chunk_count: u32,
    /// Digest of the chunk index.
    pub index_digest: IndexDigest,
}

/// The checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The update.
    pub binding: UpdateBinding,
    /// Chunks verified and durable in the staged image.
    pub durable: ChunkSet,
}

/// Why a checkpoint was discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Shorter than its own fields say.
    #[error("truncated: {needed} bytes needed, {got} present")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Not a checkpoint.
    #[error("bad magic")]
    BadMagic,
    /// Written by another format version.
    #[error("format {0} (this build reads {FORMAT})")]
    Format(u16),
    /// Longer than its fields say.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// The MAC does not match the content (torn or corrupted).
    #[error("MAC mismatch (torn or corrupted file)")]
    BadMac,
    /// A field that cannot be right (chunk count vs length, name, bitmap).
    #[error("inconsistent field {0}")]
    Inconsistent(&'static str),
    /// A valid checkpoint of another update.
    #[error("belongs to another update ({field} differs)")]
    Foreign {
        /// The first field that differs.
        field: &'static str,
    },
    /// The image it vouches for is missing or has the wrong size.
    #[error("image missing or of the wrong size")]
    ImageMissing,
}

impl Checkpoint {
    /// The checkpoint as stored. Names longer than 255 bytes are cut (the binding is
    /// then refused as foreign on load: a fresh start, never a wrong image).
    pub fn emit(&self) -> Vec<u8> {
        let b = &self.binding;
        let target = &b.target.as_bytes()[..b.target.len().min(255)];
        let version = b.version.as_str().as_bytes();
        let mut out = Vec::with_capacity(FIXED_LEN + 2 + target.len() + version.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&b.image_len.to_le_bytes());
        out.extend_from_slice(&b.chunk_count.to_le_bytes());
        out.extend_from_slice(&b.index_digest.0);
        // Both lengths are at most 255 (the version by its own rules).
        out.push(target.len() as u8);
        out.extend_from_slice(target);
        out.push(version.len() as u8);
        out.extend_from_slice(version);
        out.extend_from_slice(&self.durable.to_bytes());
        let mac = mac(&out);
        out.extend_from_slice(&mac);
        out
    }

    /// Parses a stored checkpoint. Total: never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, Rejection> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Rejection::BadMagic);
        }
        let mut r = Reader { bytes, at: 6 };
        let format = u16::from_le_bytes(r.take()?);
        if format != FORMAT {
            return Err(Rejection::Format(format));
        }
        if bytes.len() < MAC_LEN + FIXED_LEN {
            return Err(Rejection::Truncated {
                needed: MAC_LEN + FIXED_LEN,
                got: bytes.len(),
            });
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        // blake3::Hash equality is constant-time.
        let mut expected = [0u8; MAC_LEN];
        expected.copy_from_slice(tag);
        if blake3::Hash::from_bytes(mac(body)) != blake3::Hash::from_bytes(expected) {
            return Err(Rejection::BadMac);
        }
        let mut r = Reader { bytes: body, at: 8 };
        let image_len = u64::from_le_bytes(r.take()?);
        let chunk_count = u32::from_le_bytes(r.take()?);
        let index_digest = IndexDigest(r.take()?);
        if chunk_count_for(image_len).ok() != Some(chunk_count) {
            return Err(Rejection::Inconsistent("chunk_count"));
        }
        let [tlen] = r.take()?;
        let target = std::str::from_utf8(r.slice(usize::from(tlen))?)
            .map_err(|_| Rejection::Inconsistent("target"))?
            .to_owned();
        let [vlen] = r.take()?;
        let version = std::str::from_utf8(r.slice(usize::from(vlen))?)
            .ok()
            .and_then(|s| Version::parse(s).ok())
            .ok_or(Rejection::Inconsistent("version"))?;
        let bitmap = r.slice((chunk_count as usize).div_ceil(8))?;
        let durable =
            ChunkSet::from_bytes(chunk_count, bitmap).ok_or(Rejection::Inconsistent("bitmap"))?;
        if r.at != body.len() {
            return Err(Rejection::Trailing(body.len() - r.at));
        }
        Ok(Self {
            binding: UpdateBinding {
                target,
                version,
                image_len,
                chunk_count,
                index_digest,
            },
            durable,
        })
    }

    /// Parses `bytes` and accepts them only for the update `expected`.
    pub fn load_for(bytes: &[u8], expected: &UpdateBinding) -> Result<ChunkSet, Rejection> {
        let c = Self::parse(bytes)?;
        let b = &c.binding;
        let field = if b.target != expected.target {
            "target"
        } else if b.version != expected.version {
            "version"
        } else if b.image_len != expected.image_len {
            "image_len"
        } else if b.chunk_count != expected.chunk_count {
            "chunk_count"
        } else if b.index_digest != expected.index_digest {
            "index_digest"
        } else {
            return Ok(c.durable);
        };
        Err(Rejection::Foreign { field })
    }
}

/// `body` followed by its MAC: a checkpoint as `emit` would frame it. For tests and
/// fuzzing, which need well-framed files with arbitrary fields (the MAC is an integrity
/// check under a public context, so this grants nothing an attacker lacks).
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&mac(body));
    out
}

fn mac(body: &[u8]) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_derive_key(MAC_CONTEXT);
    h.update(body);
    *h.finalize().as_bytes()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize) -> Result<&'a [u8], Rejection> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Rejection::Truncated {
                needed: self.at.saturating_add(n),
                got: self.bytes.len(),
            });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Rejection> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkNo;
    use proptest::prelude::*;

    fn binding() -> UpdateBinding {
        UpdateBinding {
            target: "robot-firmware.img".into(),
            version: Version::parse("2.0.0").unwrap(),
            image_len: 3 << 30,
            chunk_count: 49_152,
            index_digest: IndexDigest([7; 32]),
        }
    }

    fn sample() -> Checkpoint {
        let mut durable = ChunkSet::new(49_152);
        for i in (0..23_000).step_by(3) {
            durable.insert(ChunkNo(i));
        }
        Checkpoint {
            binding: binding(),
            durable,
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let c = sample();
        let bytes = c.emit();
        assert_eq!(bytes.len(), FIXED_LEN + 2 + 18 + 5 + 6144 + MAC_LEN);
        assert_eq!(Checkpoint::parse(&bytes).unwrap(), c);
        assert_eq!(Checkpoint::load_for(&bytes, &binding()).unwrap(), c.durable);
        for (field, b) in [
            (
                "target",
                UpdateBinding {
                    target: "other".into(),
                    ..binding()
                },
            ),
            (
                "version",
                UpdateBinding {
                    version: Version::parse("2.0.1").unwrap(),
                    ..binding()
                },
            ),
            (
                "index_digest",
                UpdateBinding {
                    index_digest: IndexDigest([8; 32]),
                    ..binding()
                },
            ),
        ] {
            assert_eq!(
                Checkpoint::load_for(&bytes, &b),
                Err(Rejection::Foreign { field })
            );
        }
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let bytes = sample().emit();
        for n in 0..bytes.len() {
            assert!(Checkpoint::parse(&bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Checkpoint::parse(&b).is_err(), "flip at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Checkpoint::parse(&longer).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Checkpoint::parse(&bytes);
        }

        #[test]
        fn sealed_bodies_parse_totally_and_round_trip(tail in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&FORMAT.to_le_bytes());
            body.extend_from_slice(&tail);
            let sealed = seal(&body);
            if let Ok(c) = Checkpoint::parse(&sealed) {
                prop_assert_eq!(c.emit(), sealed);
            }
        }

        #[test]
        fn parse_never_panics_on_a_valid_prefix(cut in 0usize..200, tail in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut b = sample().emit();
            b.truncate(cut.min(b.len()));
            b.extend_from_slice(&tail);
            let _ = Checkpoint::parse(&b);
        }

        #[test]
        fn emitted_checkpoints_parse_back(len in 0u64..(1 << 24), picks in proptest::collection::vec(any::<u32>(), 0..50)) {
            let count = chunk_count_for(len).unwrap();
            let mut durable = ChunkSet::new(count);
            for p in picks {
                if count > 0 { durable.insert(ChunkNo(p % count)); }
            }
            let c = Checkpoint {
                binding: UpdateBinding { image_len: len, chunk_count: count, ..binding() },
                durable,
            };
            prop_assert_eq!(Checkpoint::parse(&c.emit()).unwrap(), c);
        }
    }
}
