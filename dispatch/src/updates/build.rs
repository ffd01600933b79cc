//! Building a package: one pass over the image, chunk by chunk, computing the chunk index
//! and the whole-image hashes the firmware target lists.
//!
//! Invariant: memory is one 64 KiB chunk buffer plus the index (32 bytes per chunk,
//! 1.5 MiB for 3 GiB) whatever the image size; a virtual image is generated chunk by chunk
//! and never stored; a file image is copied into the hub's images directory in the same
//! pass and appears under its final name (its index digest) only once complete and synced,
//! so a package never serves bytes other than those it was hashed from.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use bauxite_forge::chunk::{ChunkIndex, ChunkNo, IndexDigest};
use bauxite_forge::image::{CHUNK_SIZE, ChunkSource, FileImage, VirtualImage};
use bauxite_forge::tuf::Hashes;
use sha2::Digest as _;

use crate::{Error, Result};

/// What a pass over an image computed.
#[derive(Clone, Debug)]
pub struct Built {
    /// Image length in bytes.
    pub length: u64,
    /// The chunk index as published (32-byte BLAKE3 hash of every chunk).
    pub index: Vec<u8>,
    /// The index digest that names the image on the mesh.
    pub digest: IndexDigest,
    /// The whole image's sha256 and blake3, hex, as the firmware target lists them.
    pub hashes: Hashes,
}

impl Built {
    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        // `ChunkIndex::parse` checked the count fits.
        (self.index.len() / 32) as u32
    }
}

/// Hashes every chunk of `source` in order, handing each to `sink` as well.
fn pass(source: &dyn ChunkSource, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<Built> {
    let count = source.chunk_count();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut index = Vec::with_capacity(count as usize * 32);
    let mut sha256 = sha2::Sha256::new();
    let mut blake3 = blake3::Hasher::new();
    for i in 0..count {
        let n = source.read_chunk(ChunkNo(i), &mut buf)?;
        let chunk = &buf[..n];
        index.extend_from_slice(blake3::hash(chunk).as_bytes());
        sha256.update(chunk);
        blake3.update(chunk);
        sink(chunk)?;
    }
    let length = source.len();
    let digest = ChunkIndex::parse(length, &index)?.digest();
    let hashes = Hashes(
        [
            ("sha256".to_owned(), hex::encode(sha256.finalize())),
            ("blake3".to_owned(), blake3.finalize().to_hex().to_string()),
        ]
        .into(),
    );
    Ok(Built {
        length,
        index,
        digest,
        hashes,
    })
}

/// Builds the deterministic virtual image of `size` bytes from `seed` (never stored).
pub fn build_virtual(size: u64, seed: u64) -> Result<Built> {
    let image = VirtualImage::new(seed, size)?;
    pass(&image, |_| Ok(()))
}

/// The file name of an image copy in the images directory.
pub fn image_file_name(digest: &IndexDigest) -> String {
    format!("{digest}.img")
}

/// Copies `source` into `images_dir` while building it; the copy is named by the index
/// digest. Returns what was built and the copy's file name.
pub fn import_file(source: &Path, images_dir: &Path) -> Result<(Built, String)> {
    let image = FileImage::open(source)?;
    fs::create_dir_all(images_dir).map_err(Error::io("create directory", images_dir))?;
    let tmp = images_dir.join(format!(".import-{}.part", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    let result = pass(&image, |chunk| {
        out.write_all(chunk).map_err(Error::io("write", &tmp))
    })
    .and_then(|built| {
        out.sync_all().map_err(Error::io("fsync", &tmp))?;
        Ok(built)
    });
    let built = match result {
        Ok(built) => built,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let name = image_file_name(&built.digest);
    let dest = images_dir.join(&name);
    fs::rename(&tmp, &dest).map_err(Error::io("rename into place", &dest))?;
    File::open(images_dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", images_dir))?;
    Ok((built, name))
}

/// The path of an image copy, refusing a stored name that is not a plain file name.
pub fn image_path(images_dir: &Path, file: &str) -> Result<PathBuf> {
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if !plain {
        return Err(Error::InvalidArgument {
            field: "package image file",
            problem: format!("{file:?} is not a file name of the images directory"),
        });
    }
    Ok(images_dir.join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_virtual_builds_agree_and_the_copy_is_exact() {
        let size = 3 * CHUNK_SIZE as u64 + 1000;
        let virt = build_virtual(size, 9).unwrap();
        let image = VirtualImage::new(9, size).unwrap();
        let index = ChunkIndex::build(&image).unwrap();
        assert_eq!(virt.index, index.emit());
        assert_eq!(virt.digest, index.digest());
        assert_eq!(virt.chunk_count(), 4);

        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; CHUNK_SIZE];
        for i in 0..image.chunk_count() {
            let n = image.read_chunk(ChunkNo(i), &mut buf).unwrap();
            bytes.extend_from_slice(&buf[..n]);
        }
        let src = dir.path().join("fw.bin");
        fs::write(&src, &bytes).unwrap();
        let (built, name) = import_file(&src, &dir.path().join("images")).unwrap();
        assert_eq!(built.digest, virt.digest);
        assert_eq!(built.hashes, virt.hashes);
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(built.hashes.0["sha256"], sha);
        let copy = image_path(&dir.path().join("images"), &name).unwrap();
        assert_eq!(fs::read(copy).unwrap(), bytes);
        assert!(image_path(dir.path(), "../x").is_err());
        assert!(image_path(dir.path(), ".hidden").is_err());
    }
}
