//! `UdpIo`: the mesh socket, read with `recvmmsg` and UDP GRO, written with UDP GSO —
//! through quinn-udp, which owns the `cmsg` plumbing and the fallbacks for kernels and
//! devices without offload.
//!
//! Invariant: every datagram the kernel hands over reaches the node whole and once (a
//! coalesced GRO buffer is split at its stride), and every datagram of a complete
//! [`GsoBatch`] leaves once — all in one send, or one by one from where the previous send
//! stopped — unless the OS refuses it, which is counted.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Duration;

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::ShellCounters;
use super::critical_rx::CriticalRx;
use super::gso::{GsoBatch, MAX_BATCH_BYTES};

/// Receive buffers per `recvmmsg`. Each takes one datagram, or with GRO up to 64
/// coalesced ones, so one call can bring in a few hundred datagrams of a bulk flow.
const RX_SLOTS: usize = 8;

/// Largest UDP datagram: the least a receive buffer must hold.
const MAX_DATAGRAM: usize = 65_536;

/// Receive buffer asked of the kernel. The default (~208 KiB) overflows when a TCP
/// burst through the tunnel arrives faster than one loop turn drains it, and every
/// overflow is a loss that makes the inner TCP back off. Measured in the namespace bench
/// (docs/benchmarks.md): 4 MiB doubles TCP throughput over the default, 1 MiB gains
/// little; when the receiver is CPU-bound the buffer does hold a queue, which is why
/// latency under load is still open work (pacing at the sender).
const RECV_BUFFER: usize = 4 << 20;

/// Send buffer asked of the kernel; it doubles the value for its bookkeeping, so two
/// [`MAX_BATCH_BYTES`] batches. The send buffer bounds what waits in a qdisc in front of
/// a slower link, ahead of any critical packet and outside the lanes, and a GSO batch
/// is charged far less overhead than the same datagrams sent one by one: at the default
/// (~208 KiB) batching deepened that queue. Measured in the namespace bench (20 Mbit/s
/// tbf, ping under a bulk flow, 64 KiB batches): p50 67 ms at the default, 34 ms when
/// asking for 64 KiB, 24 ms for 32 KiB; unshaped throughput did not change (a veth
/// releases the charge as soon as it forwards a datagram).
const SEND_BUFFER: usize = MAX_BATCH_BYTES;

/// One datagram of a receive call.
#[derive(Debug)]
pub(super) struct Datagram<'a> {
    /// Who sent it.
    pub(super) from: SocketAddr,
    /// Whether it arrived coalesced with others (GRO).
    pub(super) coalesced: bool,
    /// When the kernel received it (`SO_TIMESTAMPNS`, which quinn-udp turns on; Unix
    /// time), if it said; coalesced datagrams share their first one's stamp.
    pub(super) stamp: Option<Duration>,
    /// Its bytes, for the node to decrypt in place.
    pub(super) bytes: &'a mut [u8],
}

/// The socket with its batching state and buffers.
pub(super) struct UdpIo {
    /// The mesh socket (also polled for readiness by the shell).
    pub(super) socket: UdpSocket,
    state: UdpSocketState,
    /// `RX_SLOTS` receive buffers of `slot` bytes, back to back.
    rx: Vec<u8>,
    slot: usize,
    metas: [RecvMeta; RX_SLOTS],
    /// The datagrams gathered for the next send.
    pub(super) batch: GsoBatch,
    /// The last send found the socket full.
    blocked: bool,
    /// The Critical datagrams' own socket on the same port, when it could join.
    critical: Option<CriticalRx>,
}

impl UdpIo {
    /// Sizes the socket's buffers, enables GRO and the other quinn-udp socket options and
    /// allocates the batch buffers; `capacity` is what `poll_transmit` needs per datagram.
    pub(super) fn new(socket: UdpSocket, capacity: usize) -> io::Result<Self> {
        size_receive_buffer(&socket);
        size_send_buffer(&socket);
        let state = UdpSocketState::new((&socket).into())?;
        probe_pmtu(&socket);
        // A GRO buffer holds up to `gro_segments` datagrams (the kernel's UDP_GRO_CNT_MAX);
        // quinn sizes its buffers the same way.
        let slot = MAX_DATAGRAM.max(state.gro_segments() * capacity);
        tracing::debug!(
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "udp offload"
        );
        Ok(Self {
            socket,
            state,
            rx: vec![0; RX_SLOTS * slot],
            slot,
            metas: [RecvMeta::default(); RX_SLOTS],
            batch: GsoBatch::new(capacity),
            blocked: false,
            critical: None,
        })
    }

    /// Opens the Critical socket beside the main one ([`CriticalRx`]); on failure logs
    /// one line and keeps the main socket alone.
    pub(super) fn open_critical(&mut self) {
        match CriticalRx::join(&self.socket) {
            Ok(critical) => self.critical = Some(critical),
            Err(error) => tracing::info!(
                %error,
                "one mesh socket: Critical datagrams share the receive buffer with bulk"
            ),
        }
    }

    /// Closes the Critical socket: every datagram goes to the main socket again.
    pub(super) fn close_critical(&mut self) {
        self.critical = None;
    }

    /// Whether the Critical socket is open.
    pub(super) fn has_critical(&self) -> bool {
        self.critical.is_some()
    }

    /// Waits until either socket may be read (cancel safe; may wake spuriously).
    pub(super) async fn readable(&self) -> io::Result<()> {
        match &self.critical {
            Some(critical) => tokio::select! {
                r = critical.readable() => r,
                r = self.socket.readable() => r,
            },
            None => self.socket.readable().await,
        }
    }

    /// One datagram from the Critical socket without waiting; `WouldBlock` when none is
    /// queued or there is no Critical socket.
    pub(super) fn recv_critical(&mut self) -> io::Result<(SocketAddr, &mut [u8])> {
        match &mut self.critical {
            Some(critical) => critical.recv(),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Segments one send may carry now (1 without GSO, or once the OS refused it).
    pub(super) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Whether a complete batch waits for room in the socket.
    pub(super) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// One `recvmmsg` without waiting; `WouldBlock` when nothing is queued.
    pub(super) fn recv(&mut self) -> io::Result<Datagrams<'_>> {
        let mut slots = self.rx.chunks_mut(self.slot);
        let mut iovs: [IoSliceMut<'_>; RX_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        let n = self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut iovs, &mut self.metas)
        })?;
        Ok(Datagrams {
            metas: self.metas.get(..n).unwrap_or_default().iter(),
            slots: self.rx.chunks_mut(self.slot),
            rest: &mut [],
            pending: false,
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            stride: 0,
            coalesced: false,
            stamp: None,
        })
    }

    /// Sends what is left of the complete batch. True when nothing complete is left;
    /// false when the socket is full (the rest stays in the batch, parked).
    pub(super) fn send_complete(&mut self, counters: &mut ShellCounters) -> bool {
        loop {
            let Some(unsent) = self.batch.unsent() else {
                return true;
            };
            let gso = unsent.datagrams > 1 && self.state.max_gso_segments() > 1;
            let (contents, datagrams) = if gso {
                (unsent.bytes, unsent.datagrams)
            } else {
                let first = unsent.bytes.get(..unsent.segment).unwrap_or(unsent.bytes);
                (first, 1)
            };
            let transmit = quinn_udp::Transmit {
                destination: unsent.dst,
                ecn: None,
                contents,
                segment_size: gso.then_some(unsent.segment),
                src_ip: None,
            };
            let result = self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            });
            let dst = unsent.dst;
            match result {
                Ok(()) => {
                    self.blocked = false;
                    if gso {
                        counters.udp_gso_sends += 1;
                        counters.udp_gso_datagrams += datagrams as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.blocked {
                        counters.udp_send_blocked += 1;
                        self.blocked = true;
                    }
                    return false;
                }
                Err(error) if gso && self.state.max_gso_segments() <= 1 => {
                    // quinn-udp switched GSO off after the device refused it: the same
                    // datagrams go again, one per send.
                    tracing::info!(%error, "UDP GSO refused; sending one datagram per syscall");
                    continue;
                }
                Err(error) => {
                    counters.udp_send_errors += datagrams as u64;
                    tracing::debug!(%dst, %error, datagrams, "udp send failed; dropped");
                }
            }
            self.batch.mark_sent(datagrams);
        }
    }
}

/// The datagrams of one receive call, in arrival order.
#[derive(Debug)]
pub(super) struct Datagrams<'a> {
    metas: std::slice::Iter<'a, RecvMeta>,
    slots: std::slice::ChunksMut<'a, u8>,
    /// What is left of the current buffer.
    rest: &'a mut [u8],
    /// Whether `rest` still holds a datagram (which may be empty).
    pending: bool,
    from: SocketAddr,
    stride: usize,
    coalesced: bool,
    stamp: Option<Duration>,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = Datagram<'a>;

    fn next(&mut self) -> Option<Datagram<'a>> {
        loop {
            if self.pending {
                let rest = std::mem::take(&mut self.rest);
                let (bytes, tail) = rest.split_at_mut(self.stride.min(rest.len()));
                self.rest = tail;
                self.pending = !self.rest.is_empty();
                return Some(Datagram {
                    from: self.from,
                    coalesced: self.coalesced,
                    stamp: self.stamp,
                    bytes,
                });
            }
            let meta = self.metas.next()?;
            let slot = self.slots.next()?;
            let len = meta.len.min(slot.len());
            self.rest = slot.get_mut(..len).unwrap_or_default();
            // Without GRO the stride is the length; never split at zero.
            self.stride = if meta.stride == 0 { len } else { meta.stride };
            self.coalesced = len > self.stride;
            self.from = meta.addr;
            self.stamp = meta.timestamp;
            self.pending = true;
        }
    }
}

/// Raises the socket's receive buffer: past `net.core.rmem_max` when privileged
/// (`SO_RCVBUFFORCE`), else as far as the limit allows. Failure only costs throughput.
fn size_receive_buffer(socket: &UdpSocket) {
    use rustix::net::sockopt;
    let forced = sockopt::set_socket_recv_buffer_size_force(socket, RECV_BUFFER);
    if forced.is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(socket, RECV_BUFFER);
    }
    match sockopt::socket_recv_buffer_size(socket) {
        Ok(size) => tracing::debug!(size, forced = forced.is_ok(), "udp receive buffer"),
        Err(error) => tracing::debug!(%error, "cannot read udp receive buffer size"),
    }
}

/// Shrinks the socket's send buffer to [`SEND_BUFFER`]. Failure only costs latency.
fn size_send_buffer(socket: &UdpSocket) {
    use rustix::net::sockopt;
    if let Err(error) = sockopt::set_socket_send_buffer_size(socket, SEND_BUFFER) {
        tracing::debug!(%error, "cannot size udp send buffer");
    }
}

/// Sets DF on every datagram and keeps the kernel out of path MTU decisions
/// (`IP_PMTUDISC_PROBE`): the node discovers each peer path's MTU itself with probes
/// (`path::pmtu`, RFC 8899) and never sends data above what a probe confirmed, so DF
/// costs no ordinary datagram, and a probe larger than the path is dropped on the way —
/// which is the answer the probe asks for — instead of being fragmented (a fragment
/// filter downstream would lose it silently, and fragments are lost whole on any loss)
/// or refused locally because an ICMP, which anyone can forge, lowered the kernel's
/// cached path MTU. A datagram above the local interface's MTU is still refused with
/// `EMSGSIZE`.
fn probe_pmtu(socket: &UdpSocket) {
    use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};
    // On an IPv6 socket the IPv4 option still governs IPv4-mapped destinations.
    let v4 = sockopt::set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::PROBE);
    let v6 = match socket.local_addr() {
        Ok(SocketAddr::V6(_)) => {
            sockopt::set_ipv6_mtu_discover(socket, Ipv6PathMtuDiscovery::PROBE)
        }
        _ => Ok(()),
    };
    if let Err(error) = v4.and(v6) {
        tracing::warn!(%error, "cannot set DF on the mesh socket; path MTU probes may be fragmented");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(len: usize, stride: usize, port: u16) -> RecvMeta {
        let mut meta = RecvMeta::default();
        meta.len = len;
        meta.stride = stride;
        meta.addr = SocketAddr::from(([10, 0, 0, 1], port));
        meta
    }

    #[test]
    fn gro_buffers_split_at_their_stride() {
        let metas = [meta(250, 100, 1), meta(40, 40, 2), meta(0, 0, 3)];
        let mut rx = vec![0u8; 3 * 300];
        for (i, b) in rx.iter_mut().enumerate() {
            *b = (i % 300 / 10) as u8;
        }
        let datagrams = Datagrams {
            metas: metas.iter(),
            slots: rx.chunks_mut(300),
            rest: &mut [],
            pending: false,
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            stride: 0,
            coalesced: false,
            stamp: None,
        };
        let got: Vec<_> = datagrams
            .map(|d| {
                (
                    d.from.port(),
                    d.coalesced,
                    d.bytes.len(),
                    d.bytes.first().copied(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, true, 100, Some(0)),
                (1, true, 100, Some(10)),
                (1, true, 50, Some(20)),
                (2, false, 40, Some(0)),
                (3, false, 0, None),
            ]
        );
    }

    /// A GSO batch over loopback arrives as the same datagrams, in order (coalesced by
    /// GRO where the kernel does it).
    #[tokio::test(flavor = "current_thread")]
    async fn a_gso_batch_arrives_as_its_datagrams() {
        let bind = || UdpSocket::bind("127.0.0.1:0");
        let mut tx = UdpIo::new(bind().await.unwrap(), 1200).unwrap();
        let mut rx = UdpIo::new(bind().await.unwrap(), 1200).unwrap();
        let dst = rx.socket.local_addr().unwrap();
        assert_eq!(
            rustix::net::sockopt::ip_mtu_discover(&tx.socket).unwrap(),
            rustix::net::sockopt::Ipv4PathMtuDiscovery::PROBE,
            "DF set, the path MTU is the node's business"
        );
        let lens = [1200, 1200, 1200, 1200, 700];
        let sent_after = super::super::clock::unix_nanos();
        for (i, &len) in lens.iter().enumerate() {
            let tail = tx.batch.tail(tx.max_gso_segments()).unwrap();
            tail[..len].fill(u8::try_from(i).unwrap());
            tx.batch.push(dst, len);
        }
        tx.batch.finish();
        let mut counters = ShellCounters::default();
        // A fresh socket is writable once the reactor has seen it, as in the shell.
        while !tx.send_complete(&mut counters) {
            tx.socket.writable().await.unwrap();
        }
        assert!(tx.batch.is_empty());
        assert_eq!(counters.udp_send_errors, 0);
        if tx.max_gso_segments() > 1 {
            assert_eq!((counters.udp_gso_sends, counters.udp_gso_datagrams), (1, 5));
        }

        let (mut got, mut coalesced, mut stamps) = (Vec::new(), 0, Vec::new());
        while got.len() < lens.len() {
            rx.socket.readable().await.unwrap();
            let Ok(datagrams) = rx.recv() else { continue };
            for d in datagrams {
                assert!(
                    d.bytes.iter().all(|&b| b == d.bytes[0]),
                    "one datagram, whole"
                );
                coalesced += usize::from(d.coalesced);
                stamps.push(d.stamp);
                got.push((d.bytes[0], d.bytes.len()));
            }
        }
        let want: Vec<_> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u8, l))
            .collect();
        assert_eq!(got, want);
        let read_by = super::super::clock::unix_nanos();
        for stamp in stamps {
            let at = stamp.map(|s| u64::try_from(s.as_nanos()).unwrap());
            assert!(
                at.is_some_and(|at| sent_after <= at && at <= read_by),
                "the kernel stamped {at:?}, sent after {sent_after}, read by {read_by}"
            );
        }
        if tx.max_gso_segments() > 1 && rx.state.gro_segments() > 1 {
            // Loopback keeps a GSO send whole for a GRO socket.
            assert_eq!(coalesced, lens.len());
        }
    }
}
