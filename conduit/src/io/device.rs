//! `Device`: the shell's IP side — a TUN device (kernel or in-memory pipe), or none.
//!
//! Invariant: every packet the node delivers and no service socket takes is either
//! written to the device or dropped and counted (`tun_write_dropped`, or
//! `no_device_dropped` when there is no device); a shell without a device never reads
//! one, and its readiness future never completes.

use std::io;

#[cfg(feature = "tun")]
use tokio::net::UnixDatagram;

use super::{DeviceConfig, ShellCounters};
use crate::tun::TunKind;
#[cfg(feature = "tun")]
use crate::tun::{RecvBatch, SendBatch, TunDevice};
use crate::{BauxiteNode, Error};

/// The device with its reusable batches.
pub(super) enum Device {
    /// A kernel TUN device or the in-memory pipe.
    #[cfg(feature = "tun")]
    Tun(Box<TunSide>),
    /// No device: service sockets only.
    None,
}

/// A TUN device and the batches its reads and writes reuse.
#[cfg(feature = "tun")]
pub(super) struct TunSide {
    /// The device; on a multi-queue kernel device, queue 0: the Critical queue
    /// ([`crate::tun::queues`]), read first. All writes go through it.
    device: TunDevice,
    /// The kernel device's other queue, when it has two.
    other: Option<TunDevice>,
    /// Packets of the last read.
    rx: RecvBatch,
    /// Decrypted packets for the next write.
    tx: SendBatch,
}

/// What [`Device::open`] made.
pub(super) struct Opened {
    pub(super) device: Device,
    pub(super) kind: TunKind,
    /// The application end of the in-memory pipe, when that is the device.
    #[cfg(feature = "tun")]
    pub(super) app: Option<UnixDatagram>,
}

impl Device {
    /// Opens what `config` asks for; `mtu` sizes the read batch of the in-memory pipe.
    /// Must run inside a tokio runtime.
    pub(super) fn open(config: &DeviceConfig, mtu: usize) -> Result<Opened, Error> {
        #[cfg(not(feature = "tun"))]
        let _ = mtu;
        match config {
            DeviceConfig::None { .. } => Ok(Opened {
                device: Device::None,
                kind: TunKind::None,
                #[cfg(feature = "tun")]
                app: None,
            }),
            #[cfg(feature = "tun")]
            DeviceConfig::TunOrMemory(tun) => {
                let (device, kind, app) = TunDevice::open(tun).map_err(|source| Error::Io {
                    action: "create in-memory device for",
                    path: tun.name.clone().into(),
                    source,
                })?;
                Ok(Self::tun(device, kind, app, usize::from(tun.mtu)))
            }
            #[cfg(feature = "tun")]
            DeviceConfig::Tun(tun) => {
                let device = TunDevice::open_kernel(tun).map_err(|source| Error::Io {
                    action: "create TUN device",
                    path: tun.name.clone().into(),
                    source,
                })?;
                let kind = TunKind::Kernel(tun.name.clone());
                Ok(Self::tun(
                    TunDevice::Kernel(device),
                    kind,
                    None,
                    usize::from(tun.mtu),
                ))
            }
            #[cfg(feature = "tun")]
            DeviceConfig::Memory { .. } => {
                let (device, app) = TunDevice::memory().map_err(|source| Error::Io {
                    action: "create in-memory device",
                    path: "socketpair".into(),
                    source,
                })?;
                let kind = TunKind::Memory("asked for".into());
                Ok(Self::tun(device, kind, Some(app), mtu))
            }
        }
    }

    #[cfg(feature = "tun")]
    fn tun(device: TunDevice, kind: TunKind, app: Option<UnixDatagram>, mtu: usize) -> Opened {
        Opened {
            device: Device::Tun(Box::new(TunSide {
                device,
                other: None,
                rx: RecvBatch::new(mtu),
                tx: SendBatch::new(super::TUN_WRITE_BATCH),
            })),
            kind,
            app,
        }
    }

    /// Attaches the kernel device's second queue ([`crate::tun::queues`]); returns
    /// whether the device has two now. On a single-queue device (or any failure) logs
    /// one line and keeps one queue.
    pub(super) fn open_other_queue(&mut self) -> bool {
        #[cfg(feature = "tun")]
        if let Device::Tun(side) = self {
            if side.other.is_some() {
                return true;
            }
            if let TunDevice::Kernel(critical) = &side.device {
                match crate::tun::queues::open_other(critical) {
                    Ok(other) => {
                        side.other = Some(TunDevice::Kernel(other));
                        return true;
                    }
                    Err(error) => tracing::info!(
                        %error,
                        "one TUN queue: Critical packets share the driver's ring with bulk"
                    ),
                }
            }
        }
        false
    }

    /// Detaches the kernel device's second queue: one queue again.
    pub(super) fn close_other_queue(&mut self) {
        #[cfg(feature = "tun")]
        if let Device::Tun(side) = self {
            side.other = None;
        }
    }

    /// The Critical queue's descriptor, for attaching a steering program — only when the
    /// device has its two queues.
    #[cfg(feature = "tun")]
    pub(super) fn steering_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Device::Tun(side) => match (&side.device, &side.other) {
                (TunDevice::Kernel(critical), Some(_)) => Some((**critical).as_fd()),
                _ => None,
            },
            Device::None => None,
        }
    }

    /// Whether reads may carry super-packets and writes coalesce (kernel offload on).
    pub(super) fn offload(&self) -> bool {
        match self {
            #[cfg(feature = "tun")]
            Device::Tun(side) => side.device.offload(),
            Device::None => false,
        }
    }

    /// Waits until a packet may be read (cancel safe; may wake spuriously). Never
    /// completes without a device. With two queues, the other queue counts only when
    /// `bulk_room` (a bulk packet read now can be queued: [`DataPlaneScheduler::takes_bulk_reads`](crate::scheduler::DataPlaneScheduler::takes_bulk_reads)):
    /// while it is not, bulk waits in
    /// the kernel's ring instead of being read and dropped, and the loop sleeps until a
    /// Critical packet, a timer or the socket wakes it — a daemon that is not busy
    /// dropping a flood is woken at once when a ping arrives, even without real-time
    /// priority.
    pub(super) async fn readable(&self, bulk_room: bool) -> io::Result<()> {
        // Only a TUN device has a second queue to hold back.
        #[cfg(not(feature = "tun"))]
        let _ = bulk_room;
        match self {
            #[cfg(feature = "tun")]
            Device::Tun(side) => match &side.other {
                Some(other) if bulk_room => tokio::select! {
                    r = side.device.readable() => r,
                    r = other.readable() => r,
                },
                _ => side.device.readable().await,
            },
            Device::None => std::future::pending().await,
        }
    }

    /// Packets from the device into the node's lanes, until `limit` are handled or none
    /// is left (one offloaded read may bring dozens). With two queues the Critical queue
    /// is drained first (it only ever holds Critical packets, so this is bounded by what
    /// the Critical lane carries), then the other queue up to `limit` or until the bulk
    /// lane is full (see [`Device::readable`]).
    pub(super) fn read_into(
        &mut self,
        node: &mut BauxiteNode,
        now: std::time::Instant,
        limit: usize,
        counters: &mut ShellCounters,
    ) {
        match self {
            #[cfg(feature = "tun")]
            Device::Tun(side) => {
                let TunSide {
                    device, other, rx, ..
                } = &mut **side;
                match other {
                    Some(other) => {
                        let critical = read_queue(device, rx, node, now, limit, false, counters);
                        counters.tun_critical_packets += critical as u64;
                        read_queue(other, rx, node, now, limit, true, counters);
                    }
                    None => {
                        read_queue(device, rx, node, now, limit, false, counters);
                    }
                }
            }
            Device::None => {
                let _ = (node, now, limit, counters);
            }
        }
    }

    /// Queues a decrypted packet for the device, writing the batch when it is full;
    /// without a device the packet is dropped and counted.
    pub(super) async fn deliver(&mut self, packet: &[u8], counters: &mut ShellCounters) {
        match self {
            #[cfg(feature = "tun")]
            Device::Tun(side) => {
                let TunSide { device, tx, .. } = &mut **side;
                if !tx.push(packet) {
                    counters.tun_write_dropped += 1;
                }
                if tx.is_full() {
                    let dropped = device.send_batch(tx).await;
                    counters.tun_write_dropped += dropped as u64;
                }
            }
            Device::None => {
                counters.no_device_dropped += 1;
                tracing::trace!(
                    len = packet.len(),
                    "no device and no service socket; dropped"
                );
            }
        }
    }

    /// Writes what [`deliver`](Self::deliver) queued.
    pub(super) async fn flush(&mut self, counters: &mut ShellCounters) {
        match self {
            #[cfg(feature = "tun")]
            Device::Tun(side) => {
                let TunSide { device, tx, .. } = &mut **side;
                if !tx.is_empty() {
                    let dropped = device.send_batch(tx).await;
                    counters.tun_write_dropped += dropped as u64;
                }
            }
            Device::None => {
                let _ = counters;
            }
        }
    }
}

/// Reads one queue into the node's lanes until `limit` packets or `WouldBlock` — or,
/// with `while_bulk_room`, until no bulk packet read could be queued; returns how many it
/// read.
#[cfg(feature = "tun")]
fn read_queue(
    device: &TunDevice,
    rx: &mut RecvBatch,
    node: &mut BauxiteNode,
    now: std::time::Instant,
    limit: usize,
    while_bulk_room: bool,
    counters: &mut ShellCounters,
) -> usize {
    let mut handled = 0;
    while handled < limit {
        if while_bulk_room && !node.scheduler().takes_bulk_reads() {
            return handled;
        }
        let n = match device.try_recv_batch(rx) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return handled,
            Err(error) => {
                tracing::debug!(%error, "tun read failed");
                return handled;
            }
        };
        if n > 1 {
            counters.tun_gso_packets += n as u64;
        }
        for packet in rx.packets(n) {
            let verdict = node.handle_tun_packet(now, packet);
            tracing::trace!(len = packet.len(), ?verdict, "packet from tun");
        }
        handled += n.max(1);
    }
    handled
}
