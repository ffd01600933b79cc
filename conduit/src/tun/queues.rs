//! The kernel TUN device's two queues: why there are two, and which is which.
//!
//! Under an unresponsive flood the TUN driver's own ring (one `ptr_ring` of `txqueuelen`
//! packets per queue) overflows and `tun_net_xmit` drops whatever arrives next — a ping
//! as readily as a flood datagram — before any qdisc or lane sees it (docs/ebpf.md has
//! the measurement). With two queues and a steering program (`TUNSETSTEERINGEBPF`, the
//! `bauxite_steer` program of `bauxite-ebpf`, which classifies with the lane rules),
//! Critical packets get a ring of their own that the flood cannot fill, and the shell
//! reads that ring first.
//!
//! Invariant: queue [`CRITICAL_QUEUE`] is the handle [`TunDevice::open_kernel`]
//! returns (the kernel numbers queues in the order they attach); queue [`OTHER_QUEUE`]
//! is the one [`open_other`] attaches. The shell opens the second queue only when asked
//! (`Shell::open_critical_tun_queue`), and the daemon closes it again when the steering
//! program cannot be attached: without one the kernel spreads flows over both queues by
//! hash, and a ping could land in the queue the shell leaves to a flood.
//!
//! [`TunDevice::open_kernel`]: super::TunDevice::open_kernel

use std::io;

/// Index of the queue the steering program sends Critical packets to.
pub const CRITICAL_QUEUE: u32 = 0;
/// Index of the queue every other packet goes to.
pub const OTHER_QUEUE: u32 = 1;

/// Attaches queue [`OTHER_QUEUE`] to the multi-queue device `critical` is queue 0 of
/// (with the same offload settings). Fails on a single-queue device.
pub fn open_other(critical: &tun_rs::AsyncDevice) -> io::Result<tun_rs::AsyncDevice> {
    critical.try_clone()
}

/// Whether the multi-queue device `name`, just opened with one queue by this process,
/// has more than one queue attached: another process holds it. Read from sysfs
/// (`queues/tx-1` exists when the kernel counts two), which shows the namespace it was
/// mounted in; where it does not show the device, the answer is "no".
pub(crate) fn held_elsewhere(name: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(name)
        .join("queues/tx-1")
        .exists()
}
