//! The two kernel facts precheck needs: the filesystem type under a path (statfs) and
//! the kernel release (uname). Linux-only; other platforms get a stub that reports
//! "unsupported" so the decision logic above stays platform-free.

use std::io;
use std::path::Path;

/// The `f_type` magic number of the filesystem holding `path`.
#[cfg(target_os = "linux")]
pub fn fs_magic(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statfs(path)?;
    // f_type is signed on some ABIs; the magic numbers are 32-bit values.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_type as u64) & 0xffff_ffff)
}

/// The `f_type` magic number of the filesystem holding `path` (unsupported here).
#[cfg(not(target_os = "linux"))]
pub fn fs_magic(_path: &Path) -> io::Result<u64> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `uname().release`, the running kernel's version string.
#[cfg(unix)]
pub fn kernel_release() -> Result<String, String> {
    let u = rustix::system::uname();
    u.release()
        .to_str()
        .map(str::to_owned)
        .map_err(|_| "kernel release is not UTF-8".to_owned())
}

/// `uname().release` (unsupported here).
#[cfg(not(unix))]
pub fn kernel_release() -> Result<String, String> {
    Err("uname is not available on this platform".to_owned())
}
