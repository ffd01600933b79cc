//! A set of chunk numbers as a bitmap: which chunks are verified, durable or in flight.
//!
//! Invariant: bits at or beyond `len` are always zero, so the byte form is canonical and
//! `count()` is exact.

use crate::chunk::ChunkNo;

/// A bitmap over the chunks `0..len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSet {
    len: u32,
    words: Vec<u64>,
    count: u32,
}

impl ChunkSet {
    /// The empty set over `len` chunks.
    pub fn new(len: u32) -> Self {
        Self {
            len,
            words: vec![0; (len as usize).div_ceil(64)],
            count: 0,
        }
    }

    /// The full set over `len` chunks.
    pub fn full(len: u32) -> Self {
        let mut s = Self::new(len);
        for i in 0..len {
            s.insert(ChunkNo(i));
        }
        s
    }

    /// Number of chunks the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no chunk.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of chunks in the set.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether every chunk is in the set.
    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    /// Whether `no` is in the set.
    pub fn contains(&self, no: ChunkNo) -> bool {
        no.0 < self.len && self.words[no.index() / 64] & (1 << (no.0 % 64)) != 0
    }

    /// Adds `no`; returns whether it was new. Numbers out of range are ignored.
    pub fn insert(&mut self, no: ChunkNo) -> bool {
        if no.0 >= self.len || self.contains(no) {
            return false;
        }
        self.words[no.index() / 64] |= 1 << (no.0 % 64);
        self.count += 1;
        true
    }

    /// Adds every chunk of `other` (same range).
    pub fn union_with(&mut self, other: &ChunkSet) {
        for no in other.iter() {
            self.insert(no);
        }
    }

    /// The chunks in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = ChunkNo> + '_ {
        (0..self.len).map(ChunkNo).filter(|n| self.contains(*n))
    }

    /// The first chunk at or after `from` that is not in the set.
    pub fn next_missing(&self, from: u32) -> Option<ChunkNo> {
        (from..self.len).map(ChunkNo).find(|n| !self.contains(*n))
    }

    /// The bitmap as bytes: chunk `i` is bit `i % 8` of byte `i / 8`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = (self.len as usize).div_ceil(8);
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate(n);
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output for `len` chunks; `None` when the length
    /// is wrong or a bit beyond `len` is set. Never panics.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let mut s = Self::new(len);
        for (i, b) in bytes.iter().enumerate() {
            for bit in 0..8u32 {
                if b & (1 << bit) == 0 {
                    continue;
                }
                let no = i as u64 * 8 + u64::from(bit);
                if no >= u64::from(len) {
                    return None;
                }
                s.insert(ChunkNo(no as u32));
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bytes_round_trip(len in 0u32..300, picks in proptest::collection::vec(any::<u32>(), 0..64)) {
            let mut s = ChunkSet::new(len);
            for p in picks {
                if len > 0 {
                    s.insert(ChunkNo(p % len));
                }
            }
            let back = ChunkSet::from_bytes(len, &s.to_bytes()).unwrap();
            prop_assert_eq!(back.count(), s.iter().count() as u32);
            prop_assert_eq!(back, s);
        }

        #[test]
        fn from_bytes_never_panics(len in 0u32..100, bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Some(s) = ChunkSet::from_bytes(len, &bytes) {
                prop_assert_eq!(s.to_bytes(), bytes);
            }
        }
    }

    #[test]
    fn stray_high_bits_are_refused() {
        assert!(ChunkSet::from_bytes(3, &[0b0000_0111]).is_some());
        assert!(ChunkSet::from_bytes(3, &[0b0000_1000]).is_none());
        assert!(ChunkSet::from_bytes(3, &[0, 0]).is_none());
        let mut s = ChunkSet::new(70);
        assert!(s.insert(ChunkNo(69)));
        assert!(!s.insert(ChunkNo(69)));
        assert!(!s.insert(ChunkNo(70)));
        assert_eq!(s.next_missing(0), Some(ChunkNo(0)));
        assert_eq!(ChunkSet::full(70).next_missing(0), None);
    }
}
