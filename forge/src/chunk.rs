//! The chunk index: the BLAKE3 hash of every 64 KiB chunk of an image, in order.
//!
//! Invariant: a [`ChunkIndex`] always describes exactly `chunk_count_for(image_len)`
//! chunks, so `verify(i, bytes)` is answerable for every chunk of the image, and it
//! accepts only the bytes (length included) whose hash the index holds.

use crate::error::{Error, Result};
use crate::image::{CHUNK_SIZE, ChunkSource, chunk_count_for, chunk_len_for};

/// Bytes of one chunk hash in the index.
pub const HASH_LEN: usize = 32;

/// Key-derivation context of the index digest.
const DIGEST_CONTEXT: &str = "bauxite-forge 2026 chunk index digest v1";

/// A chunk number (the chunk starts at byte `no * CHUNK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkNo(pub u32);

impl ChunkNo {
    /// Byte offset of the chunk in the image.
    pub fn offset(self) -> u64 {
        u64::from(self.0) * CHUNK_SIZE as u64
    }

    /// The chunk number as an index into per-chunk tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for ChunkNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A digest that names one image: BLAKE3 (keyed by a fixed context) over the image
/// length and the index. Checkpoints and fetch requests carry it to bind themselves to
/// one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexDigest(pub [u8; 32]);

impl std::fmt::Display for IndexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The hashes of every chunk of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    image_len: u64,
    hashes: Vec<[u8; HASH_LEN]>,
    digest: IndexDigest,
}

impl ChunkIndex {
    /// Parses the concatenated hashes of an image of `image_len` bytes. Never panics;
    /// the length must match the image exactly.
    pub fn parse(image_len: u64, bytes: &[u8]) -> Result<Self> {
        let count = chunk_count_for(image_len)?;
        let expected = u64::from(count) * HASH_LEN as u64;
        if bytes.len() as u64 != expected {
            return Err(Error::IndexLength {
                got: bytes.len(),
                expected,
                image_len,
            });
        }
        let hashes = bytes
            .chunks_exact(HASH_LEN)
            .map(|c| {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Ok(Self::from_hashes(image_len, hashes))
    }

    fn from_hashes(image_len: u64, hashes: Vec<[u8; HASH_LEN]>) -> Self {
        let mut d = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
        d.update(&image_len.to_le_bytes());
        for h in &hashes {
            d.update(h);
        }
        Self {
            image_len,
            hashes,
            digest: IndexDigest(*d.finalize().as_bytes()),
        }
    }

    /// Builds the index of `src`, reading one chunk at a time (one 64 KiB buffer).
    pub fn build(src: &dyn ChunkSource) -> Result<Self> {
        let count = chunk_count_for(src.len())?;
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut hashes = Vec::with_capacity(count as usize);
        for i in 0..count {
            let n = src.read_chunk(ChunkNo(i), &mut buf)?;
            hashes.push(*blake3::hash(&buf[..n]).as_bytes());
        }
        Ok(Self::from_hashes(src.len(), hashes))
    }

    /// The index as stored and signed: every chunk hash, concatenated.
    pub fn emit(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    /// Length of the image the index describes.
    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        // `parse`/`build` checked that the count fits.
        self.hashes.len() as u32
    }

    /// Length of chunk `no`, `None` past the end.
    pub fn chunk_len(&self, no: ChunkNo) -> Option<usize> {
        chunk_len_for(self.image_len, no)
    }

    /// The hash of chunk `no`.
    pub fn hash(&self, no: ChunkNo) -> Option<&[u8; HASH_LEN]> {
        self.hashes.get(no.index())
    }

    /// The digest naming this image.
    pub fn digest(&self) -> IndexDigest {
        self.digest
    }

    /// Whether `bytes` are exactly chunk `no`. The hash comparison is constant-time
    /// (`blake3::Hash`'s equality), so timing reveals nothing about the expected hash.
    pub fn verify(&self, no: ChunkNo, bytes: &[u8]) -> bool {
        match (self.hash(no), self.chunk_len(no)) {
            (Some(h), Some(len)) if len == bytes.len() => {
                blake3::hash(bytes) == blake3::Hash::from_bytes(*h)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::VirtualImage;
    use proptest::prelude::*;

    #[test]
    fn build_emit_parse_round_trip_and_verify() {
        let img = VirtualImage::new(3, 5 * CHUNK_SIZE as u64 - 1).unwrap();
        let idx = ChunkIndex::build(&img).unwrap();
        assert_eq!(idx.chunk_count(), 5);
        let bytes = idx.emit();
        assert_eq!(bytes.len(), 5 * HASH_LEN);
        let back = ChunkIndex::parse(img.len(), &bytes).unwrap();
        assert_eq!(back, idx);
        let mut buf = vec![0u8; CHUNK_SIZE];
        for i in 0..5 {
            let n = img.read_chunk(ChunkNo(i), &mut buf).unwrap();
            assert!(idx.verify(ChunkNo(i), &buf[..n]));
            buf[n / 2] ^= 1;
            assert!(!idx.verify(ChunkNo(i), &buf[..n]), "a flipped bit fails");
            buf[n / 2] ^= 1;
            assert!(
                !idx.verify(ChunkNo(i), &buf[..n - 1]),
                "a short chunk fails"
            );
        }
        assert!(!idx.verify(ChunkNo(5), &buf));
        // The digest binds the length too.
        let other = ChunkIndex::parse(img.len() - 1, &bytes).unwrap();
        assert_ne!(other.digest(), idx.digest());
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert!(matches!(
            ChunkIndex::parse(CHUNK_SIZE as u64 + 1, &[0u8; 32]),
            Err(Error::IndexLength {
                got: 32,
                expected: 64,
                ..
            })
        ));
        assert!(ChunkIndex::parse(0, &[]).unwrap().chunk_count() == 0);
        assert!(ChunkIndex::parse(u64::MAX, &[]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(len in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(idx) = ChunkIndex::parse(len, &bytes) {
                prop_assert_eq!(idx.emit(), bytes);
                prop_assert_eq!(u64::from(idx.chunk_count()), len.div_ceil(CHUNK_SIZE as u64));
            }
        }
    }
}
