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
    /// The device.
    device: TunDevice,
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
                rx: RecvBatch::new(mtu),
                tx: SendBatch::new(super::TUN_WRITE_BATCH),
            })),
            kind,
            app,
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
    /// completes without a device.
    pub(super) async fn readable(&self) -> io::Result<()> {
        match self {
            #[cfg(feature = "tun")]
            Device::Tun(side) => side.device.readable().await,
            Device::None => std::future::pending().await,
        }
    }

    /// Packets from the device into the node's lanes, until `limit` are handled or none
    /// is left (one offloaded read may bring dozens).
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
                let TunSide { device, rx, .. } = &mut **side;
                let mut handled = 0;
                while handled < limit {
                    let n = match device.try_recv_batch(rx) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(error) => {
                            tracing::debug!(%error, "tun read failed");
                            return;
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
