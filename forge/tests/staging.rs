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
use bauxite_forge::crash::{AtomicStep, CrashHook, CrashPoint, NoCrash};
use bauxite_forge::image::CHUNK_SIZE;
use bauxite_forge::layout::Layout;
use bauxite_forge::staging::purge_version;
use stage_common::drive::{
    Release, Root, assert_one_verified_active, cfg, fast_link, install, run,
};
use stage_common::link::origin;

/// Records every crash point passed, crashing nowhere.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<CrashPoint>>>);

impl CrashHook for Recorder {
    fn before(&mut self, point: CrashPoint) -> std::io::Result<()> {
        self.0.lock().unwrap().push(point);
        Ok(())
    }
}

#[test]
fn a_checkpoint_is_written_only_after_the_data_it_vouches_for_is_synced() {
    let root = Root::new();
    let (a, b) = (
        Release::new("1.0.0", 1, 3 * CHUNK_SIZE as u64),
        Release::new("2.0.0", 2, 30 * CHUNK_SIZE as u64 - 1),
    );
    install(&root, &a);
    let rec = Recorder::default();
    let r = run(&root, &b, fast_link(), Box::new(rec.clone()), 2);
    assert!(matches!(r.result, Ok(Outcome::Activated(_))));
    let points = rec.0.lock().unwrap().clone();
    let mut writes_since_sync = 0;
    let mut synced = false;
    let mut checkpoints = 0;
    for p in &points {
        match p {
            CrashPoint::ChunkWrite => {
                writes_since_sync += 1;
                synced = false;
            }
            CrashPoint::ImageSync => {
                writes_since_sync = 0;
                synced = true;
            }
            CrashPoint::Checkpoint(AtomicStep::CreateTmp) => {
                assert!(
                    synced && writes_since_sync == 0,
                    "checkpoint before fdatasync"
                );
                checkpoints += 1;
            }
            _ => {}
        }
    }
    assert_eq!(
        points
            .iter()
            .filter(|p| **p == CrashPoint::ChunkWrite)
            .count(),
        30
    );
    assert_eq!(checkpoints, 8, "30 chunks in batches of 4");
    // Activation comes last, in protocol order.
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
