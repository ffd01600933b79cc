//! `TunDevice`: the node's IP side — the kernel TUN device `bauxite0` when it can be
//! created, an in-memory datagram pipe when this process may not create one (no root, no
//! `/dev/net/tun`). Any other failure (the name is taken, the device is busy) is an error:
//! falling back then would hide a misconfiguration behind a node that carries no traffic.
//!
//! Invariant: the shell sees whole IP packets of at most the MTU in both directions, on
//! every backend; how many a read or a write carries is this module's business.
//!
//! # Backends
//!
//! - **Kernel with offload** (`IFF_VNET_HDR`, TSO/USO): a read may return a TCP or UDP
//!   super-packet of up to 64 KiB that the kernel did not segment; [`TunDevice::try_recv_batch`]
//!   splits it at the MTU into a [`RecvBatch`], so one syscall brings in up to ~48 packets
//!   of a bulk flow. [`TunDevice::send_batch`] coalesces consecutive segments of a flow in
//!   a [`SendBatch`] into super-packets (GRO in userspace), so the kernel's TCP stack
//!   handles one large packet instead of dozens. Both are what the kernel does for a NIC,
//!   and both skip the per-packet cost of a syscall and a stack traversal.
//! - **Kernel without offload** (the kernel refused `TUNSETOFFLOAD`): one packet per read
//!   and per write, through the same calls.
//! - **In memory**: a Unix datagram socket pair, one packet per datagram; it keeps packet
//!   boundaries, never allocates per packet, and has the same readiness interface as the
//!   kernel device.
//!
//! The devices need the `tun` feature; the configuration types here do not, so a
//! device-less build (the hub) still names them.

// Without `tun` the device types linked above do not exist; the text still describes them.
#![cfg_attr(not(feature = "tun"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "tun")]
mod batch;
#[cfg(feature = "tun")]
pub mod queues;

use std::io;
use std::net::Ipv4Addr;

#[cfg(feature = "tun")]
use tokio::net::UnixDatagram;

#[cfg(feature = "tun")]
pub use batch::{MAX_PACKET, RecvBatch, SEND_OFFSET, SendBatch};

/// The default device name.
pub const DEFAULT_TUN_NAME: &str = "bauxite0";

/// How to create the TUN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes on Linux).
    pub name: String,
    /// Device MTU.
    pub mtu: u16,
    /// The node's virtual IP, assigned to the device.
    pub address: Ipv4Addr,
    /// Prefix length of the mesh network (routes the whole mesh into the device).
    pub prefix: u8,
}

/// Which device carries a shell's IP packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunKind {
    /// A kernel TUN interface with this name.
    Kernel(String),
    /// The in-memory pipe; why (the reason the kernel device could not be created, or
    /// that it was asked for).
    Memory(String),
    /// No device: only service sockets receive packets (the hub).
    None,
}

/// Whether a kernel TUN failure means "this process may not have a TUN device" — no
/// privilege (`EPERM`, `EACCES`) or no `/dev/net/tun` (`ENOENT`, as in a container without
/// the device) — the only cases where the in-memory fallback is the right answer.
pub fn kernel_tun_unavailable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
    )
}

/// The kernel TUN device could not be created for a reason other than privilege.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create TUN device {name}: {error}; an interface of that name may exist already \
     or be held by another process (a second daemon?): stop it, or set `node.tun_name`"
)]
pub struct TunCreateError {
    /// The requested interface name.
    pub name: String,
    /// The kernel's answer (part of the message, so not repeated as a source).
    pub error: io::Error,
}

/// Where IP packets enter and leave the node.
#[cfg(feature = "tun")]
pub enum TunDevice {
    /// A kernel TUN interface.
    Kernel(tun_rs::AsyncDevice),
    /// One end of an in-memory datagram pipe; applications hold the other.
    Memory(UnixDatagram),
}

#[cfg(feature = "tun")]
impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kernel(d) => write!(f, "TunDevice::Kernel({:?})", d.name().ok()),
            Self::Memory(_) => f.write_str("TunDevice::Memory"),
        }
    }
}

#[cfg(feature = "tun")]
impl TunDevice {
    /// Creates the kernel device, or — only when this process may not create one
    /// ([`kernel_tun_unavailable`]) — falls back to the in-memory pipe with a WARN line
    /// saying why. Any other failure (the name is taken, the device is busy) is returned
    /// as a [`TunCreateError`] inside the `io::Error`: a node that could have a real
    /// interface must not silently run without one. Returns the device, which backend it
    /// is, and — for the fallback — the application end of the pipe. Must run inside a
    /// tokio runtime.
    pub fn open(config: &TunConfig) -> io::Result<(Self, TunKind, Option<UnixDatagram>)> {
        match Self::open_kernel(config) {
            Ok(device) => Ok((
                Self::Kernel(device),
                TunKind::Kernel(config.name.clone()),
                None,
            )),
            Err(error) if !kernel_tun_unavailable(&error) => Err(io::Error::new(
                error.kind(),
                TunCreateError {
                    name: config.name.clone(),
                    error,
                },
            )),
            Err(error) => {
                tracing::warn!(
                    name = %config.name,
                    %error,
                    "cannot create TUN device; falling back to an in-memory pipe: mesh \
                     traffic reaches only this process (run as root or with CAP_NET_ADMIN \
                     and /dev/net/tun for a real interface)"
                );
                let (device, app) = Self::memory()?;
                Ok((device, TunKind::Memory(error.to_string()), Some(app)))
            }
        }
    }

    /// Creates the kernel device only: with TSO/USO offload when the kernel allows it,
    /// else (with an INFO line) without, one packet per read and write. The device is
    /// multi-queue (`IFF_MULTI_QUEUE`) when the kernel allows it, so the shell can open
    /// its second queue ([`queues::open_other`]); the returned handle is queue 0, the
    /// Critical queue once a steering program is attached.
    pub fn open_kernel(config: &TunConfig) -> io::Result<tun_rs::AsyncDevice> {
        let build = |offload: bool, multi_queue: bool| {
            tun_rs::DeviceBuilder::new()
                .name(&config.name)
                .mtu(config.mtu)
                .ipv4(config.address, config.prefix, None)
                .offload(offload)
                .multi_queue(multi_queue)
                .build_async()
        };
        let multi_queue = |offload: bool| match build(offload, true) {
            // On a multi-queue device that exists, TUNSETIFF attaches one more queue instead
            // of failing as busy: a second daemon would share the first one's device.
            Ok(_) if queues::held_elsewhere(&config.name) => {
                Err(io::Error::from_raw_os_error(libc::EBUSY))
            }
            Ok(device) => Ok(device),
            // Privilege and a missing /dev/net/tun fail the same either way; anything else
            // may be a kernel without multi-queue TUN: one queue still carries everything.
            Err(error) if kernel_tun_unavailable(&error) => Err(error),
            Err(error) => {
                tracing::info!(
                    name = %config.name,
                    %error,
                    "multi-queue TUN unavailable; one queue, Critical packets share the ring with bulk"
                );
                build(offload, false)
            }
        };
        match multi_queue(true) {
            Ok(device) => Ok(device),
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => Err(error),
            Err(error) => {
                tracing::info!(
                    name = %config.name,
                    %error,
                    "TUN offload unavailable; reading and writing one packet per syscall"
                );
                multi_queue(false)
            }
        }
    }

    /// Whether reads may carry super-packets and writes coalesce (kernel offload on).
    pub fn offload(&self) -> bool {
        match self {
            Self::Kernel(d) => d.tcp_gso(),
            Self::Memory(_) => false,
        }
    }

    /// An in-memory device and the application end of its pipe.
    pub fn memory() -> io::Result<(Self, UnixDatagram)> {
        let (node, app) = UnixDatagram::pair()?;
        Ok((Self::Memory(node), app))
    }

    /// Waits until a packet may be read (cancel safe; may wake spuriously).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Kernel(d) => d.readable().await,
            Self::Memory(s) => s.readable().await,
        }
    }

    /// Reads one packet without waiting (`WouldBlock` when none is queued).
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Kernel(d) => d.try_recv(buf),
            Self::Memory(s) => s.try_recv(buf),
        }
    }

    /// Writes one packet, waiting for room if the device is full.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        match self {
            Self::Kernel(d) => d.send(packet).await,
            Self::Memory(s) => s.send(packet).await,
        }
    }

    /// Writes one packet without waiting (`WouldBlock` when the device is full).
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        match self {
            Self::Kernel(d) => d.try_send(packet),
            Self::Memory(s) => s.try_send(packet),
        }
    }

    /// One read without waiting: the packets land in `batch` (see [`RecvBatch::packets`]);
    /// returns how many (`WouldBlock` when none is queued). With offload one read may
    /// return a split super-packet; otherwise exactly one packet.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let RecvBatch {
            original,
            packets,
            sizes,
        } = batch;
        match self {
            Self::Kernel(d) => d.try_recv_multiple(original, packets, sizes, 0),
            Self::Memory(s) => {
                let (Some(buf), Some(size)) = (packets.first_mut(), sizes.first_mut()) else {
                    return Err(io::Error::other("empty receive batch"));
                };
                *size = s.try_recv(buf)?;
                Ok(1)
            }
        }
    }

    /// Writes every packet of `batch` and empties it; returns how many were dropped. The
    /// kernel device with offload coalesces them first; a failed write of a coalesced
    /// batch is counted as all of its packets. Waits only if the kernel device is full,
    /// which a TUN device never is in practice (its queue is the stack's backlog); the
    /// in-memory pipe drops what does not fit instead.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> usize {
        let queued = batch.len();
        let dropped = match self {
            Self::Kernel(d) => {
                let SendBatch { bufs, len, gro } = batch;
                let bufs = bufs.get_mut(..*len).unwrap_or_default();
                match d.send_multiple(gro, bufs, SEND_OFFSET).await {
                    Ok(_) => 0,
                    Err(error) => {
                        tracing::debug!(%error, packets = queued, "tun batch write failed");
                        queued
                    }
                }
            }
            Self::Memory(s) => {
                let mut dropped = 0;
                for buf in batch.queued() {
                    let packet = buf.get(SEND_OFFSET..).unwrap_or_default();
                    if let Err(error) = s.try_send(packet) {
                        tracing::trace!(%error, "tun write failed; packet dropped");
                        dropped += 1;
                    }
                }
                dropped
            }
        };
        batch.clear();
        dropped
    }
}

#[cfg(all(test, feature = "tun"))]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn memory_pipe_keeps_packet_boundaries() {
        let (tun, app) = TunDevice::memory().unwrap();
        app.send(&[0x45; 60]).await.unwrap();
        app.send(&[0x45; 20]).await.unwrap();
        let mut buf = [0u8; 1500];
        tun.readable().await.unwrap();
        assert_eq!(tun.try_recv(&mut buf).unwrap(), 60);
        assert_eq!(tun.try_recv(&mut buf).unwrap(), 20);
        assert_eq!(
            tun.try_recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tun.send(&[0x60; 48]).await.unwrap();
        assert_eq!(app.recv(&mut buf).await.unwrap(), 48);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn memory_pipe_batches_one_packet_per_datagram() {
        let (tun, app) = TunDevice::memory().unwrap();
        assert!(!tun.offload());
        let mut rx = RecvBatch::new(1350);
        app.send(&[0x45; 60]).await.unwrap();
        tun.readable().await.unwrap();
        assert_eq!(tun.try_recv_batch(&mut rx).unwrap(), 1);
        assert_eq!(rx.packets(1).next().unwrap(), &[0x45; 60]);
        assert_eq!(
            tun.try_recv_batch(&mut rx).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        let mut tx = SendBatch::new(4);
        assert!(tx.push(&[0x45; 40]));
        assert!(tx.push(&[0x45; 41]));
        assert_eq!(tun.send_batch(&mut tx).await, 0);
        assert!(tx.is_empty());
        let mut buf = [0u8; 1500];
        assert_eq!(app.recv(&mut buf).await.unwrap(), 40);
        assert_eq!(app.recv(&mut buf).await.unwrap(), 41);
    }
}
