//! An isolated staging directory, `versions/<version>/`, filled chunk by chunk.
//!
//! Invariants: (1) only chunks that matched the index are written, each at its offset;
//! (2) `checkpoint.bin` is rewritten (atomically) only after an `fdatasync` of the image
//! that began after every chunk it adds was written, so it never vouches for a chunk that
//! a power cut could lose; (3) staging never writes
//! into the version `current` points to; (4) before activation the whole image is read
//! back and verified again ([`Staging::verify_chunk`], [`Staging::verified`]), so bytes
//! changed on disk after download are caught.
//!
//! Durability batches run on a thread of their own ([`Staging::begin_flush`]): the
//! `fdatasync` of a 16 MiB batch takes milliseconds, and the download goes on writing
//! the next batch meanwhile. The batch's chunk set is fixed when it begins, so chunks
//! written during the sync wait for the next checkpoint even when that sync happened to
//! carry them. One batch is in flight at a time.
//!
//! Methods by group: [`Staging::open`] (create or resume); the download path
//! (`write_chunk`, `begin_flush`, `settle`, `flush`); the final check (`verify_chunk`, `verified`); the ends
//! (`purge`, or [`activate`](crate::activate::activate) with the [`VerifiedStage`]).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::checkpoint::{Checkpoint, Rejection, UpdateBinding};
use crate::chunk::{ChunkIndex, ChunkNo};
use crate::chunkset::ChunkSet;
use crate::crash::{CrashHook, CrashPoint};
use crate::error::{Error, Result, io, io_error};
use crate::fsutil::{read_optional, remove_file_if_present, sync_dir, write_atomic};
use crate::image::CHUNK_SIZE;
use crate::layout::{Layout, Version};

/// What [`Staging::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No checkpoint: a fresh start.
    Fresh,
    /// A checkpoint of this update: these chunks are verified and durable.
    Loaded {
        /// The chunks the checkpoint vouches for.
        durable: ChunkSet,
    },
    /// A checkpoint that could not be trusted: a fresh start.
    Discarded {
        /// Why.
        reason: Rejection,
    },
}

/// Proof that a staged image matched its index in full, chunk by chunk, read back from
/// disk. Only [`Staging::verified`] makes one; activation requires it.
#[derive(Debug)]
pub struct VerifiedStage {
    pub(crate) version: Version,
}

impl VerifiedStage {
    /// The verified version.
    pub fn version(&self) -> &Version {
        &self.version
    }
}

/// A staging in progress.
pub struct Staging {
    layout: Layout,
    binding: UpdateBinding,
    image: File,
    image_path: PathBuf,
    checkpoint_path: PathBuf,
    dir: PathBuf,
    durable: ChunkSet,
    written: ChunkSet,
    verified_upto: u32,
    /// Threads hashing the final verification (the cores available, at most
    /// [`VERIFY_THREADS`]).
    threads: u32,
    /// The durability batch in flight, if any.
    syncing: Option<Syncing>,
    hook: SharedHook,
}

/// A durability batch made durable on a thread of its own.
struct Syncing {
    /// What `checkpoint.bin` says once the batch settled: the durable chunks and the
    /// batch.
    covers: ChunkSet,
    job: JoinHandle<Result<()>>,
}

/// The crash hook, shared by the download (chunk writes) and the durability thread.
#[derive(Clone)]
struct SharedHook(Arc<Mutex<Box<dyn CrashHook>>>);

impl CrashHook for SharedHook {
    fn before(&mut self, point: CrashPoint) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .before(point)
    }
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("dir", &self.dir)
            .field("durable", &self.durable.count())
            .field("written", &self.written.count())
            .field("syncing", &self.syncing.is_some())
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// Opens (or creates) the staging of `binding.version`. A valid checkpoint of the
    /// same update resumes; anything else restarts from an empty, preallocated image, so
    /// a full disk is found before the download, not in the middle of it.
    pub fn open(
        layout: &Layout,
        binding: UpdateBinding,
        hook: Box<dyn CrashHook>,
    ) -> Result<(Self, Resume)> {
        let version = binding.version.clone();
        if layout.current()?.as_ref() == Some(&version) {
            return Err(Error::WouldPurgeActive {
                version: version.to_string(),
            });
        }
        let dir = layout.ensure_version_dir(&version)?;
        let image_path = layout.image_path(&version);
        let checkpoint_path = layout.checkpoint_path(&version);
        let found = read_optional(&checkpoint_path).map_err(io("read", &checkpoint_path))?;
        let mut resume = match found {
            None => Resume::Fresh,
            Some(bytes) => match Checkpoint::load_for(&bytes, &binding) {
                Ok(durable) => Resume::Loaded { durable },
                Err(reason) => Resume::Discarded { reason },
            },
        };
        if let Resume::Loaded { .. } = resume {
            let len = fs::metadata(&image_path).map(|m| m.len()).ok();
            if len != Some(binding.image_len) {
                resume = Resume::Discarded {
                    reason: Rejection::ImageMissing,
                };
            }
        }
        let image = match &resume {
            Resume::Loaded { .. } => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&image_path)
                .map_err(io("open", &image_path))?,
            Resume::Fresh | Resume::Discarded { .. } => {
                // The old checkpoint goes first: it must never vouch for the new image.
                remove_file_if_present(&checkpoint_path).map_err(io("remove", &checkpoint_path))?;
                match create_image(&image_path, binding.image_len) {
                    Ok(f) => f,
                    Err(e) => {
                        // Leave nothing half-made behind a full or read-only disk.
                        let _ = fs::remove_file(&image_path);
                        let _ = fs::remove_dir(&dir);
                        return Err(e);
                    }
                }
            }
        };
        sync_dir(&dir).map_err(io("fsync", &dir))?;
        let durable = match &resume {
            Resume::Loaded { durable } => durable.clone(),
            _ => ChunkSet::new(binding.chunk_count),
        };
        let written = ChunkSet::new(binding.chunk_count);
        Ok((
            Self {
                layout: layout.clone(),
                binding,
                image,
                image_path,
                checkpoint_path,
                dir,
                durable,
                written,
                verified_upto: 0,
                threads: verify_threads(),
                syncing: None,
                hook: SharedHook(Arc::new(Mutex::new(hook))),
            },
            resume,
        ))
    }

    /// The update being staged.
    pub fn binding(&self) -> &UpdateBinding {
        &self.binding
    }

    /// Chunks recorded durable in `checkpoint.bin`.
    pub fn durable(&self) -> &ChunkSet {
        &self.durable
    }

    /// Chunks written and in no durability batch yet.
    pub fn unflushed(&self) -> u32 {
        self.written.count()
    }

    /// Whether a durability batch is in flight.
    pub fn syncing(&self) -> bool {
        self.syncing.is_some()
    }

    /// Writes a verified chunk at its offset. The caller got `bytes` from a
    /// [`FetchClient`](crate::fetch::FetchClient), which verified them.
    pub fn write_chunk(&mut self, no: ChunkNo, bytes: &[u8]) -> Result<()> {
        if no.0 >= self.binding.chunk_count {
            return Err(Error::ChunkOutOfRange {
                chunk: no.0,
                count: self.binding.chunk_count,
            });
        }
        self.hook
            .before(CrashPoint::ChunkWrite)
            .map_err(io("write", &self.image_path))?;
        self.image
            .write_all_at(bytes, no.offset())
            .map_err(io("write", &self.image_path))?;
        self.written.insert(no);
        Ok(())
    }

    /// Starts making every chunk written so far durable, on a thread of its own:
    /// `fdatasync` of the image, then an atomic rewrite of `checkpoint.bin` that adds
    /// them. Settles the batch in flight first, if any, and returns the count of durable
    /// chunks it left ([`settle`](Self::settle)). Starts nothing when nothing was written.
    pub fn begin_flush(&mut self) -> Result<Option<u32>> {
        let settled = self.settle()?;
        if self.written.count() == 0 {
            return Ok(settled);
        }
        let (covers, checkpoint) = self.next_checkpoint();
        let image = self
            .image
            .try_clone()
            .map_err(io("duplicate", &self.image_path))?;
        let (image_path, checkpoint_path) = (self.image_path.clone(), self.checkpoint_path.clone());
        let mut hook = self.hook.clone();
        let job = std::thread::Builder::new()
            .name("forge-sync".into())
            .spawn(move || {
                make_durable(
                    &image,
                    &image_path,
                    &checkpoint_path,
                    &checkpoint,
                    &mut hook,
                )
            })
            .map_err(io("start the durability thread for", &self.image_path))?;
        self.syncing = Some(Syncing { covers, job });
        self.written = ChunkSet::new(self.binding.chunk_count);
        Ok(settled)
    }

    /// Waits for the durability batch in flight, if any. Returns the count of durable
    /// chunks once it settled, or `None` when none was in flight. A batch that failed
    /// leaves the durable set as it was (its checkpoint may or may not be on disk; either
    /// way it vouches only for synced chunks).
    pub fn settle(&mut self) -> Result<Option<u32>> {
        let Some(Syncing { covers, job }) = self.syncing.take() else {
            return Ok(None);
        };
        // A panic on the durability thread is a bug: pass it on, as if it happened here.
        job.join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        self.durable = covers;
        Ok(Some(self.durable.count()))
    }

    /// Makes every written chunk durable before returning: settles the batch in flight,
    /// then syncs what was written since on this thread.
    pub fn flush(&mut self) -> Result<()> {
        self.settle()?;
        if self.written.count() == 0 {
            return Ok(());
        }
        let (covers, checkpoint) = self.next_checkpoint();
        make_durable(
            &self.image,
            &self.image_path,
            &self.checkpoint_path,
            &checkpoint,
            &mut self.hook,
        )?;
        self.durable = covers;
        self.written = ChunkSet::new(self.binding.chunk_count);
        Ok(())
    }

    /// The durable set once the written chunks are added, and its checkpoint's bytes.
    fn next_checkpoint(&self) -> (ChunkSet, Vec<u8>) {
        let mut covers = self.durable.clone();
        covers.union_with(&self.written);
        let bytes = Checkpoint {
            binding: self.binding.clone(),
            durable: covers.clone(),
        }
        .emit();
        (covers, bytes)
    }

    /// Reads chunk `no` back from disk into `buf` and checks it against `index`.
    /// Returns whether it matched.
    pub fn verify_chunk(&self, index: &ChunkIndex, no: ChunkNo, buf: &mut [u8]) -> Result<bool> {
        let Some(len) = index.chunk_len(no) else {
            return Err(Error::ChunkOutOfRange {
                chunk: no.0,
                count: index.chunk_count(),
            });
        };
        if buf.len() < len {
            return Err(Error::BufferTooSmall {
                chunk: no.0,
                needed: len,
                got: buf.len(),
            });
        }
        self.image
            .read_exact_at(&mut buf[..len], no.offset())
            .map_err(io("read", &self.image_path))?;
        Ok(index.verify(no, &buf[..len]))
    }

    /// Verifies the chunks `from..from + n` (clipped), in order. Returns the first chunk
    /// that failed, if any; chunks that passed extend the verified prefix.
    ///
    /// Runs of consecutive chunks as large as `buf` (at least one chunk) are read back with
    /// one positioned read per thread and hashed on up to [`VERIFY_THREADS`] threads:
    /// nothing else runs while an update is verified before activation, so the final check
    /// of a 3 GiB image takes the machine's cores rather than one. The result is the same
    /// as chunk by chunk: the lowest failing chunk, or an I/O error met before it.
    pub fn verify_range(
        &mut self,
        index: &ChunkIndex,
        from: u32,
        n: u32,
        buf: &mut [u8],
    ) -> Result<Option<ChunkNo>> {
        let end = from.saturating_add(n).min(index.chunk_count());
        // At least one chunk per run; a buffer smaller than a chunk is refused below.
        let per_run = u32::try_from(buf.len() / CHUNK_SIZE)
            .unwrap_or(u32::MAX)
            .max(1);
        let mut at = from;
        while at < end {
            let run_end = at.saturating_add(per_run).min(end);
            if let Some(bad) = self.verify_run(index, at, run_end, buf)? {
                return Ok(Some(bad));
            }
            if (at..run_end).contains(&self.verified_upto) {
                self.verified_upto = run_end;
            }
            at = run_end;
        }
        Ok(None)
    }

    /// Verifies `from..to` (in range, consecutive, so contiguous on disk): the run is cut
    /// in one part per thread, each part read with one `pread` into its own slice of
    /// `buf` and hashed chunk by chunk.
    fn verify_run(
        &self,
        index: &ChunkIndex,
        from: u32,
        to: u32,
        buf: &mut [u8],
    ) -> Result<Option<ChunkNo>> {
        let chunks = to - from;
        let threads = self.threads.min(chunks).max(1);
        let per_part = chunks.div_ceil(threads);
        let mut parts = Vec::with_capacity(threads as usize);
        let mut rest = &mut buf[..];
        let mut at = from;
        while at < to {
            let part_end = at.saturating_add(per_part).min(to);
            let mut len = 0usize;
            for i in at..part_end {
                len += index.chunk_len(ChunkNo(i)).ok_or(Error::ChunkOutOfRange {
                    chunk: i,
                    count: index.chunk_count(),
                })?;
            }
            if rest.len() < len {
                return Err(Error::BufferTooSmall {
                    chunk: at,
                    needed: len,
                    got: rest.len(),
                });
            }
            let (mine, tail) = rest.split_at_mut(len);
            rest = tail;
            parts.push((at, part_end, mine));
            at = part_end;
        }
        let (image, path) = (&self.image, &self.image_path);
        let check = |(first, last, bytes): (u32, u32, &mut [u8])| -> Result<Option<ChunkNo>> {
            image
                .read_exact_at(bytes, ChunkNo(first).offset())
                .map_err(io("read", path))?;
            let mut off = 0;
            for i in first..last {
                let no = ChunkNo(i);
                let len = index.chunk_len(no).unwrap_or(0);
                if !index.verify(no, &bytes[off..off + len]) {
                    return Ok(Some(no));
                }
                off += len;
            }
            Ok(None)
        };
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return Ok(None);
        };
        let results: Vec<Result<Option<ChunkNo>>> = std::thread::scope(|s| {
            let others: Vec<_> = parts.map(|p| s.spawn(move || check(p))).collect();
            let mut results = vec![check(first)];
            for h in others {
                // A panic while hashing is a bug: pass it on, as if it happened here.
                results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            results
        });
        // In chunk order: the first part that failed or could not be read decides.
        for r in results {
            if let Some(bad) = r? {
                return Ok(Some(bad));
            }
        }
        Ok(None)
    }

    /// The proof of a full verification, once every chunk passed [`verify_range`]
    /// (in order, from 0) against an index bound to this staging.
    ///
    /// [`verify_range`]: Self::verify_range
    pub fn verified(&self, index: &ChunkIndex) -> Option<VerifiedStage> {
        (index.digest() == self.binding.index_digest
            && self.verified_upto == self.binding.chunk_count
            && self.durable.is_full())
        .then(|| VerifiedStage {
            version: self.binding.version.clone(),
        })
    }

    /// The crash hook, for the activation that follows a verification.
    pub(crate) fn hook(&mut self) -> &mut dyn CrashHook {
        &mut self.hook
    }

    /// Deletes the staging: checkpoint first (so it never outlives the data it vouches
    /// for), then the image, then the directory. A batch in flight ends first, so no
    /// checkpoint is written after the purge.
    pub fn purge(mut self) -> Result<()> {
        // The staging goes whatever that batch's fate: its error no longer matters.
        let _ = self.settle();
        purge_version(&self.layout, &self.binding.version, &mut self.hook)
    }
}

impl Drop for Staging {
    /// Waits for the batch in flight: nothing of a dropped staging may still be
    /// writing its checkpoint (a resume or a purge could follow at once).
    fn drop(&mut self) {
        if let Some(s) = self.syncing.take() {
            let _ = s.job.join();
        }
    }
}

/// One durability batch: `fdatasync` of the image, then `checkpoint` written atomically.
/// The chunks the checkpoint adds were all written before this began.
fn make_durable(
    image: &File,
    image_path: &Path,
    checkpoint_path: &Path,
    checkpoint: &[u8],
    hook: &mut dyn CrashHook,
) -> Result<()> {
    hook.before(CrashPoint::ImageSync)
        .map_err(io("fdatasync", image_path))?;
    image.sync_data().map_err(io("fdatasync", image_path))?;
    write_atomic(
        checkpoint_path,
        checkpoint,
        0o644,
        hook,
        CrashPoint::Checkpoint,
    )
    .map_err(|e| io_error("write", checkpoint_path, e))
}

/// Most threads the final verification uses.
pub const VERIFY_THREADS: u32 = 4;

/// The cores this process may use, within `1..=VERIFY_THREADS`.
fn verify_threads() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(VERIFY_THREADS))
        .clamp(1, VERIFY_THREADS)
}

/// Creates an empty image of `len` bytes, reserving the blocks up front (`fallocate`),
/// so a full disk shows up now, as [`Error::NoSpace`].
fn create_image(path: &Path, len: u64) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io("create", path))?;
    match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => {}
        // File systems without fallocate still get the right size (sparse).
        Err(rustix::io::Errno::OPNOTSUPP) => f.set_len(len).map_err(io("truncate", path))?,
        Err(e) => return Err(io_error("fallocate", path, e.into())),
    }
    Ok(f)
}

/// Deletes `versions/<v>/` (checkpoint, image, directory), refusing the active version.
pub fn purge_version(layout: &Layout, v: &Version, hook: &mut dyn CrashHook) -> Result<()> {
    if layout.current()?.as_ref() == Some(v) {
        return Err(Error::WouldPurgeActive {
            version: v.to_string(),
        });
    }
    let dir = layout.version_dir(v);
    let ckpt = layout.checkpoint_path(v);
    hook.before(CrashPoint::PurgeCheckpoint)
        .map_err(io("remove", &ckpt))?;
    remove_file_if_present(&ckpt).map_err(io("remove", &ckpt))?;
    remove_file_if_present(&crate::fsutil::tmp_sibling(&ckpt)).map_err(io("remove", &ckpt))?;
    if dir.is_dir() {
        sync_dir(&dir).map_err(io("fsync", &dir))?;
    }
    let image = layout.image_path(v);
    hook.before(CrashPoint::PurgeImage)
        .map_err(io("remove", &image))?;
    remove_file_if_present(&image).map_err(io("remove", &image))?;
    hook.before(CrashPoint::PurgeDir)
        .map_err(io("remove", &dir))?;
    match fs::remove_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error("remove", &dir, e));
        }
        _ => {}
    }
    let versions = layout.versions_dir();
    sync_dir(&versions).map_err(io("fsync", &versions))?;
    Ok(())
}
