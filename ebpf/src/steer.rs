//! `TUNSETSTEERINGEBPF`: the ioctl that makes a socket-filter program pick the queue of
//! every packet a multi-queue TUN device transmits (the kernel's `tun_select_queue`
//! runs it and takes the result modulo the number of queues). rustix has no wrapper for
//! it, so this is the crate's one `unsafe` call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets `program` as the steering program of the TUN device `queue` is attached to.
#[allow(unsafe_code)]
pub(crate) fn set_tun_steering(queue: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let program_fd: libc::c_int = program.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one `int` (a BPF program descriptor) through the
    // pointer, which points at a live local; both descriptors are borrowed from open files.
    let rc = unsafe {
        libc::ioctl(
            queue.as_raw_fd(),
            libc::TUNSETSTEERINGEBPF,
            &raw const program_fd,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
