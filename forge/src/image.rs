//! Images as sequences of 64 KiB chunks, read one chunk at a time.
//!
//! Invariant: a [`ChunkSource`] never needs more memory than the caller's one-chunk
//! buffer, so a server or a verifier handles images of any size in constant memory.
//! [`VirtualImage`] is the seed's deterministic test payload: every chunk is a pure
//! function of `(seed, chunk number)`, generated on demand and never materialised.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::chunk::ChunkNo;
use crate::error::{Error, Result, io};

/// Bytes per chunk (the last chunk of an image may be shorter).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Key-derivation context of the virtual image generator (BLAKE3 `derive_key` mode).
const VIRTUAL_CONTEXT: &str = "bauxite-forge 2026 virtual image v1";

/// Chunks in an image of `len` bytes, or an error when they do not fit 32-bit numbers.
pub fn chunk_count_for(len: u64) -> Result<u32> {
    u32::try_from(len.div_ceil(CHUNK_SIZE as u64)).map_err(|_| Error::ImageTooLarge { len })
}

/// Length of chunk `no` in an image of `len` bytes (`None` past the end).
pub fn chunk_len_for(len: u64, no: ChunkNo) -> Option<usize> {
    let start = no.offset();
    if start >= len {
        return None;
    }
    // At most CHUNK_SIZE, so the cast is lossless.
    Some((len - start).min(CHUNK_SIZE as u64) as usize)
}

/// Something that yields an image chunk by chunk.
pub trait ChunkSource {
    /// Image length in bytes.
    fn len(&self) -> u64;

    /// Whether the image is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of chunks (the constructor of every source checks that it fits a `u32`).
    fn chunk_count(&self) -> u32 {
        chunk_count_for(self.len()).unwrap_or(u32::MAX)
    }

    /// Length of chunk `no`, `None` past the end.
    fn chunk_len(&self, no: ChunkNo) -> Option<usize> {
        chunk_len_for(self.len(), no)
    }

    /// Fills `buf[..n]` with chunk `no` and returns `n`, the chunk's length.
    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> Result<usize>;
}

impl<T: ChunkSource + ?Sized> ChunkSource for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> Result<usize> {
        (**self).read_chunk(no, buf)
    }
}

impl<T: ChunkSource + ?Sized> ChunkSource for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> Result<usize> {
        (**self).read_chunk(no, buf)
    }
}

impl<T: ChunkSource + ?Sized> ChunkSource for std::sync::Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> Result<usize> {
        (**self).read_chunk(no, buf)
    }
}

/// Checks `no` and `buf` against an image of `len` bytes; returns the chunk's length.
fn check(len: u64, no: ChunkNo, buf: &[u8]) -> Result<usize> {
    let n = chunk_len_for(len, no).ok_or(Error::ChunkOutOfRange {
        chunk: no.0,
        count: chunk_count_for(len).unwrap_or(u32::MAX),
    })?;
    if buf.len() < n {
        return Err(Error::BufferTooSmall {
            chunk: no.0,
            needed: n,
            got: buf.len(),
        });
    }
    Ok(n)
}

/// A deterministic image of `len` bytes derived from `seed`: chunk `i` is the BLAKE3 XOF
/// output keyed by `derive_key(context, seed || i)`, so any chunk is generated alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualImage {
    seed: u64,
    len: u64,
}

impl VirtualImage {
    /// An image of `len` bytes from `seed`.
    pub fn new(seed: u64, len: u64) -> Result<Self> {
        chunk_count_for(len)?;
        Ok(Self { seed, len })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl ChunkSource for VirtualImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> Result<usize> {
        let n = check(self.len, no, buf)?;
        let mut h = blake3::Hasher::new_derive_key(VIRTUAL_CONTEXT);
        h.update(&self.seed.to_le_bytes());
        h.update(&u64::from(no.0).to_le_bytes());
        h.finalize_xof().fill(&mut buf[..n]);
        Ok(n)
    }
}

/// An image stored in a file, read with positioned reads (no shared cursor, so `&self`).
#[derive(Debug)]
pub struct FileImage {
    file: File,
    path: PathBuf,
    len: u64,
}

impl FileImage {
    /// Opens `path`; its current size is the image length.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io("open", path))?;
        let len = file.metadata().map_err(io("stat", path))?.len();
        chunk_count_for(len)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Opens `path` and checks that it holds exactly `expected` bytes.
    pub fn open_expecting(path: &Path, expected: u64) -> Result<Self> {
        let me = Self::open(path)?;
        if me.len != expected {
            return Err(Error::SourceLength {
                path: path.to_path_buf(),
                got: me.len,
                expected,
            });
        }
        Ok(me)
    }
}

impl ChunkSource for FileImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_chunk(&self, no: ChunkNo, buf: &mut [u8]) -> Result<usize> {
        let n = check(self.len, no, buf)?;
        self.file
            .read_exact_at(&mut buf[..n], no.offset())
            .map_err(|source| Error::SourceRead {
                chunk: no.0,
                path: self.path.clone(),
                source,
            })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_chunks_are_deterministic_and_distinct() {
        let img = VirtualImage::new(7, 3 * CHUNK_SIZE as u64 + 10).unwrap();
        assert_eq!(img.chunk_count(), 4);
        let mut a = vec![0u8; CHUNK_SIZE];
        let mut b = vec![0u8; CHUNK_SIZE];
        assert_eq!(img.read_chunk(ChunkNo(1), &mut a).unwrap(), CHUNK_SIZE);
        img.read_chunk(ChunkNo(1), &mut b).unwrap();
        assert_eq!(a, b);
        img.read_chunk(ChunkNo(2), &mut b).unwrap();
        assert_ne!(a, b);
        let other = VirtualImage::new(8, img.len()).unwrap();
        other.read_chunk(ChunkNo(1), &mut b).unwrap();
        assert_ne!(a, b, "another seed gives another image");
        assert_eq!(img.read_chunk(ChunkNo(3), &mut b).unwrap(), 10);
        assert!(matches!(
            img.read_chunk(ChunkNo(4), &mut b),
            Err(Error::ChunkOutOfRange { chunk: 4, count: 4 })
        ));
        assert!(matches!(
            img.read_chunk(ChunkNo(0), &mut b[..100]),
            Err(Error::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn file_image_reads_what_the_virtual_one_wrote() {
        let img = VirtualImage::new(1, 2 * CHUNK_SIZE as u64 + 77).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut all = Vec::new();
        let mut buf = vec![0u8; CHUNK_SIZE];
        for i in 0..img.chunk_count() {
            let n = img.read_chunk(ChunkNo(i), &mut buf).unwrap();
            all.extend_from_slice(&buf[..n]);
        }
        std::fs::write(&path, &all).unwrap();
        let f = FileImage::open_expecting(&path, img.len()).unwrap();
        let mut fb = vec![0u8; CHUNK_SIZE];
        for i in 0..img.chunk_count() {
            let n = img.read_chunk(ChunkNo(i), &mut buf).unwrap();
            assert_eq!(f.read_chunk(ChunkNo(i), &mut fb).unwrap(), n);
            assert_eq!(buf[..n], fb[..n]);
        }
        assert!(matches!(
            FileImage::open_expecting(&path, 5),
            Err(Error::SourceLength { got, .. }) if got == img.len()
        ));
    }

    #[test]
    fn chunk_arithmetic() {
        assert_eq!(chunk_count_for(0).unwrap(), 0);
        assert_eq!(chunk_count_for(1).unwrap(), 1);
        assert_eq!(chunk_count_for(CHUNK_SIZE as u64).unwrap(), 1);
        assert_eq!(
            chunk_count_for(3 << 30).unwrap(),
            49_152,
            "the seed's 3 GiB image"
        );
        assert!(chunk_count_for(u64::MAX).is_err());
        assert_eq!(chunk_len_for(100, ChunkNo(0)), Some(100));
        assert_eq!(chunk_len_for(100, ChunkNo(1)), None);
    }
}
