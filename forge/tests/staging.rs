//! Staging on real file systems: the durability order (data fdatasynced before the
//! checkpoint that vouches for it), a full disk and a read-only staging directory (in a
//! private mount namespace with a tiny tmpfs: root only), paths that would escape.

// `unshare(CLONE_NEWNS)` is unsafe in rustix because other unshare flags can break
// Rust's assumptions about file descriptors; this test only unshares the mount table of
// its own thread.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stage_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bauxite_forge::Error;
use bauxite_forge::agent::{Outcome, UpdateAgent};
use bauxite_forge::checkpoint::{Checkpoint, UpdateBinding};
use bauxite_forge::chunk::ChunkNo;
use bauxite_forge::crash::{AtomicStep, CrashHook, CrashPoint, NoCrash};
use bauxite_forge::image::CHUNK_SIZE;
use bauxite_forge::image::ChunkSource as _;
use bauxite_forge::layout::Layout;
use bauxite_forge::staging::{Resume, Staging, purge_version};
use stage_common::drive::{
    Release, Root, assert_one_verified_active, cfg, fast_link, install, run,
};
use stage_common::link::origin;

/// What the recorder saw: a crash point passed, or a checkpoint just renamed into place
/// vouching for this many chunks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Point(CrashPoint),
    Vouched(u32),
}

/// Records every crash point passed, crashing nowhere; reads each checkpoint back once it
/// is renamed into place.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    checkpoint: Option<PathBuf>,
}

impl Recorder {
    fn points(&self) -> Vec<CrashPoint> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter_map(|s| match s {
                Seen::Point(p) => Some(*p),
                Seen::Vouched(_) => None,
            })
            .collect()
    }
}

impl CrashHook for Recorder {
    fn before(&mut self, point: CrashPoint) -> std::io::Result<()> {
        let mut seen = self.seen.lock().unwrap();
        if let (CrashPoint::Checkpoint(AtomicStep::SyncDir), Some(path)) = (point, &self.checkpoint)
        {
            let c = Checkpoint::parse(&fs::read(path)?).unwrap();
            seen.push(Seen::Vouched(c.durable.count()));
        }
        seen.push(Seen::Point(point));
        Ok(())
    }
}

#[test]
fn a_checkpoint_vouches_only_for_chunks_written_before_its_sync_began() {
    let root = Root::new();
    let (a, b) = (
        Release::new("1.0.0", 1, 3 * CHUNK_SIZE as u64),
        Release::new("2.0.0", 2, 30 * CHUNK_SIZE as u64 - 1),
    );
    install(&root, &a);
    let rec = Recorder {
        checkpoint: Some(root.layout.checkpoint_path(b.version())),
        ..Recorder::default()
    };
    let r = run(&root, &b, fast_link(), Box::new(rec.clone()), 2);
    assert!(matches!(r.result, Ok(Outcome::Activated(_))));
    // Batches sync on a thread of their own while the download goes on, so chunk writes
    // may interleave with a sync; what each checkpoint vouches for must still have been
    // written before the fdatasync that precedes it began.
    let seen = rec.seen.lock().unwrap().clone();
    let (mut written, mut synced_upto, mut vouched) = (0u32, 0u32, Vec::new());
    for s in &seen {
        match s {
            Seen::Point(CrashPoint::ChunkWrite) => written += 1,
            Seen::Point(CrashPoint::ImageSync) => synced_upto = written,
            Seen::Vouched(n) => {
                assert!(
                    *n <= synced_upto,
                    "a checkpoint vouches for {n} chunks; only {synced_upto} were written before its sync: {seen:?}"
                );
                vouched.push(*n);
            }
            Seen::Point(_) => {}
        }
    }
    assert_eq!(written, 30);
    assert_eq!(vouched.len(), 8, "30 chunks in batches of 4: {vouched:?}");
    assert!(vouched.is_sorted(), "{vouched:?}");
    assert_eq!(vouched.last(), Some(&30));
    // Activation comes last, in protocol order.
    let points = rec.points();
    let tail: Vec<_> = points
        .iter()
        .skip_while(|p| **p != CrashPoint::Verified)
        .copied()
        .filter(|p| !matches!(p, CrashPoint::Marker(s) if *s != AtomicStep::CreateTmp))
        .collect();
    assert_eq!(
        tail,
        [
            CrashPoint::Verified,
            CrashPoint::Marker(AtomicStep::CreateTmp),
            CrashPoint::LinkCreate,
            CrashPoint::LinkRename,
            CrashPoint::RootSync,
            CrashPoint::Cleanup
        ]
    );
}

#[test]
fn chunks_written_while_a_batch_syncs_wait_for_the_next_checkpoint() {
    let root = Root::new();
    let b = Release::new("2.0.0", 2, 8 * CHUNK_SIZE as u64);
    let index = &b.plan.index;
    let binding = UpdateBinding {
        target: b.plan.target.clone(),
        version: b.version().clone(),
        image_len: index.image_len(),
        chunk_count: index.chunk_count(),
        index_digest: index.digest(),
    };
    let (mut staging, resume) =
        Staging::open(&root.layout, binding.clone(), Box::new(NoCrash)).unwrap();
    assert_eq!(resume, Resume::Fresh);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut write = |staging: &mut Staging, i: u32| {
        let n = b.image.read_chunk(ChunkNo(i), &mut buf).unwrap();
        staging.write_chunk(ChunkNo(i), &buf[..n]).unwrap();
    };
    let on_disk = || {
        let bytes = fs::read(root.layout.checkpoint_path(b.version())).unwrap();
        let c = Checkpoint::parse(&bytes).unwrap();
        c.durable.iter().map(|c| c.0).collect::<Vec<_>>()
    };
    for i in 0..3 {
        write(&mut staging, i);
    }
    assert_eq!(
        staging.begin_flush().unwrap(),
        None,
        "nothing was in flight"
    );
    assert!(staging.syncing());
    // Written while the batch may still be syncing: not in its checkpoint.
    for i in 3..5 {
        write(&mut staging, i);
    }
    assert_eq!(staging.settle().unwrap(), Some(3));
    assert!(!staging.syncing());
    assert_eq!(on_disk(), [0, 1, 2]);
    assert_eq!(staging.unflushed(), 2);
    // The next batch takes the two; the one after it settles it first.
    assert_eq!(staging.begin_flush().unwrap(), None);
    write(&mut staging, 5);
    assert_eq!(
        staging.begin_flush().unwrap(),
        Some(5),
        "the batch before settled first"
    );
    assert_eq!(staging.settle().unwrap(), Some(6));
    assert_eq!(on_disk(), [0, 1, 2, 3, 4, 5]);
    // A dropped staging waits for its batch: the checkpoint is whole when drop returns.
    write(&mut staging, 6);
    staging.begin_flush().unwrap();
    drop(staging);
    let (_, resume) = Staging::open(&root.layout, binding, Box::new(NoCrash)).unwrap();
    let Resume::Loaded { durable } = resume else {
        panic!("{resume:?}")
    };
    assert_eq!(
        durable.iter().map(|c| c.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn the_active_version_cannot_be_purged_and_a_planted_link_is_refused() {
    let root = Root::new();
    let a = Release::new("1.0.0", 1, 3 * CHUNK_SIZE as u64);
    install(&root, &a);
    assert!(matches!(
        purge_version(&root.layout, a.version(), &mut NoCrash),
        Err(Error::WouldPurgeActive { .. })
    ));
    let outside = tempfile::tempdir().unwrap();
    let b = Release::new("2.0.0", 2, 3 * CHUNK_SIZE as u64);
    std::os::unix::fs::symlink(outside.path(), root.layout.version_dir(b.version())).unwrap();
    let r = run(&root, &b, fast_link(), Box::new(NoCrash), 2);
    assert!(
        matches!(r.result, Err(Error::PathEscapesRoot { .. })),
        "{:?}",
        r.result
    );
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(assert_one_verified_active(&root, &[&a]), *a.version());
}

/// Runs `f` in a thread with its own mount table, where `dir` is a tmpfs of `size`
/// bytes. The mounts vanish with the thread. `None` when not root.
fn on_tmpfs<T: Send>(dir: &Path, size: u64, f: impl FnOnce(&Path) -> T + Send) -> Option<T> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: a private tmpfs needs root (CI runs the tests as root)");
        return None;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: only the mount namespace is unshared, not the file table.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.unwrap();
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )
            .unwrap();
            let opts = std::ffi::CString::new(format!("size={size}")).unwrap();
            rustix::mount::mount(
                "tmpfs",
                dir,
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                opts.as_c_str(),
            )
            .unwrap();
            f(dir)
        })
        .join()
        .unwrap()
    })
    .into()
}

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state");
    fs::create_dir(&p).unwrap();
    (d, p)
}

#[test]
fn a_full_disk_gives_a_clear_error_before_the_download_and_leaves_current_alone() {
    let (_keep, dir) = state_dir();
    on_tmpfs(&dir, 1 << 20, |dir| {
        let root = Root::at(Layout::open(dir).unwrap());
        let a = Release::new("1.0.0", 1, 4 * CHUNK_SIZE as u64);
        install(&root, &a);
        let b = Release::new("2.0.0", 2, 32 * CHUNK_SIZE as u64);
        let r = run(&root, &b, fast_link(), Box::new(NoCrash), 2);
        assert!(
            matches!(r.result, Err(Error::NoSpace { .. })),
            "{:?}",
            r.result
        );
        assert!(r.requested.is_empty(), "refused before any download");
        let msg = r.result.unwrap_err().to_string();
        assert!(
            msg.contains("free space") && msg.contains("untouched"),
            "{msg}"
        );
        assert!(
            !root.layout.version_dir(b.version()).exists(),
            "nothing half-made left"
        );
        assert_eq!(assert_one_verified_active(&root, &[&a]), *a.version());
    });
}

/// Fills the file system when the first chunk is written, as another process might.
struct FillDisk(PathBuf, bool);

impl CrashHook for FillDisk {
    fn before(&mut self, point: CrashPoint) -> std::io::Result<()> {
        if point == CrashPoint::ChunkWrite && !self.1 {
            self.1 = true;
            let mut f = fs::File::create(&self.0)?;
            let block = vec![0u8; 4096];
            // Bounded: the tmpfs holds at most 1 MiB.
            for _ in 0..1024 {
                if std::io::Write::write_all(&mut f, &block).is_err() {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[test]
fn a_disk_filling_up_during_the_download_stops_it_cleanly() {
    let (_keep, dir) = state_dir();
    on_tmpfs(&dir, 1 << 20, |dir| {
        let root = Root::at(Layout::open(dir).unwrap());
        let a = Release::new("1.0.0", 1, 4 * CHUNK_SIZE as u64);
        install(&root, &a);
        let b = Release::new("2.0.0", 2, 8 * CHUNK_SIZE as u64);
        let hook = FillDisk(dir.join("filler"), false);
        let r = run(&root, &b, fast_link(), Box::new(hook), 2);
        assert!(
            matches!(r.result, Err(Error::NoSpace { .. })),
            "{:?}",
            r.result
        );
        assert_eq!(assert_one_verified_active(&root, &[&a]), *a.version());
        // Space comes back: the update resumes and completes.
        fs::remove_file(dir.join("filler")).unwrap();
        let r = run(&root, &b, fast_link(), Box::new(NoCrash), 3);
        assert!(
            matches!(r.result, Ok(Outcome::Activated(_))),
            "{:?}",
            r.result
        );
        assert_eq!(assert_one_verified_active(&root, &[&a, &b]), *b.version());
    });
}

#[test]
fn a_read_only_staging_directory_gives_a_clear_error_and_leaves_current_alone() {
    let (_keep, dir) = state_dir();
    on_tmpfs(&dir, 4 << 20, |dir| {
        let root = Root::at(Layout::open(dir).unwrap());
        let a = Release::new("1.0.0", 1, 4 * CHUNK_SIZE as u64);
        install(&root, &a);
        let versions = root.layout.versions_dir();
        rustix::mount::mount_bind(&versions, &versions).unwrap();
        rustix::mount::mount_remount(
            &versions,
            rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
            "",
        )
        .unwrap();
        let b = Release::new("2.0.0", 2, 4 * CHUNK_SIZE as u64);
        let agent = UpdateAgent::<u32>::new(
            &root.layout,
            b.plan.clone(),
            vec![1],
            cfg(),
            Box::new(NoCrash),
            origin(),
            0,
        );
        let Err(e) = agent else {
            panic!("staging in a read-only directory succeeded")
        };
        assert!(matches!(e, Error::ReadOnly { .. }), "{e:?}");
        assert!(e.to_string().contains("read-only"), "{e}");
        assert_eq!(assert_one_verified_active(&root, &[&a]), *a.version());
    });
}
