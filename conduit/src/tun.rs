//! `TunDevice`: the node's IP side — the kernel TUN device `bauxite0` when it can be
//! created, an in-memory datagram pipe otherwise (no root, no `/dev/net/tun`).
//!
//! Invariant: on both backends one read returns exactly one IP packet and one write sends
//! exactly one, so the shell never frames, splits or reassembles. The in-memory pipe is a
//! Unix datagram socket pair: it keeps packet boundaries, never allocates per packet, and
//! has the same readiness interface as the kernel device.

use std::io;
use std::net::Ipv4Addr;

use tokio::net::UnixDatagram;

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

/// Which backend a [`TunDevice`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunKind {
    /// A kernel TUN interface with this name.
    Kernel(String),
    /// The in-memory fallback; the reason the kernel device could not be created.
    Memory(String),
}

/// Where IP packets enter and leave the node.
pub enum TunDevice {
    /// A kernel TUN interface.
    Kernel(tun_rs::AsyncDevice),
    /// One end of an in-memory datagram pipe; applications hold the other.
    Memory(UnixDatagram),
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kernel(d) => write!(f, "TunDevice::Kernel({:?})", d.name().ok()),
            Self::Memory(_) => f.write_str("TunDevice::Memory"),
        }
    }
}

impl TunDevice {
    /// Creates the kernel device, or falls back to the in-memory pipe with a WARN line
    /// saying why. Returns the device, which backend it is, and — for the fallback — the
    /// application end of the pipe. Must run inside a tokio runtime.
    pub fn open(config: &TunConfig) -> io::Result<(Self, TunKind, Option<UnixDatagram>)> {
        match Self::open_kernel(config) {
            Ok(device) => Ok((
                Self::Kernel(device),
                TunKind::Kernel(config.name.clone()),
                None,
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

    /// Creates the kernel device only.
    pub fn open_kernel(config: &TunConfig) -> io::Result<tun_rs::AsyncDevice> {
        tun_rs::DeviceBuilder::new()
            .name(&config.name)
            .mtu(config.mtu)
            .ipv4(config.address, config.prefix, None)
            .build_async()
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
}

#[cfg(test)]
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
}
