//! The event loop: socket, device and timers into the node, the node's transmits out.
//!
//! Invariant: at most one sealed datagram waits outside the node (`parked`), and while
//! it waits the node is not polled for more, so the socket never holds the node's queue.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::mpsc;

use super::{BATCH, Query, ShellConfig, ShellCounters, ShellStatus, clock};
use crate::node::{Event, Received};
use crate::peers::PeerInfo;
use crate::tun::{TunDevice, TunKind};
use crate::{BauxiteNode, Error, Metrics};

/// Largest UDP datagram, and the device read buffer (a packet above the MTU is refused
/// by the node, not truncated here).
const MAX_DATAGRAM: usize = 65_536;

/// Receive buffer asked of the kernel. The default (~208 KiB) overflows when a TCP
/// burst through the tunnel arrives faster than one loop turn drains it, and every
/// overflow is a loss that makes the inner TCP back off. Measured in the namespace bench
/// (docs/benchmarks.md): 4 MiB doubles TCP throughput over the default, 1 MiB gains
/// little; when the receiver is CPU-bound the buffer does hold a queue, which is why
/// latency under load is still open work (pacing at the sender). The *send* buffer stays
/// at the default on purpose — a deep send queue would hold bulk ahead of critical
/// packets, outside the lanes.
const RECV_BUFFER: usize = 4 << 20;

/// What woke the loop.
enum Wake {
    Shutdown,
    Writable(io::Result<()>),
    Udp(io::Result<()>),
    Tun(io::Result<()>),
    Timer,
    Query(Option<Query>),
}

/// A node with its socket and device. Build with [`Shell::bind`], drive with
/// [`Shell::run`].
pub struct Shell {
    node: BauxiteNode,
    socket: UdpSocket,
    tun: TunDevice,
    tun_kind: TunKind,
    app: Option<UnixDatagram>,
    counters: ShellCounters,
    rx: Vec<u8>,
    packet: Vec<u8>,
    tx: Vec<u8>,
    parked: Option<(usize, SocketAddr)>,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("node", &self.node)
            .field("tun", &self.tun_kind)
            .finish_non_exhaustive()
    }
}

impl Shell {
    /// Binds the UDP socket and opens the TUN device (falling back to the in-memory pipe
    /// with a WARN line). Must run inside a tokio runtime.
    pub async fn bind(node: BauxiteNode, config: &ShellConfig) -> Result<Self, Error> {
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| Error::Socket {
                action: "bind",
                addr: config.listen,
                source,
            })?;
        size_receive_buffer(&socket);
        let (tun, tun_kind, app) = TunDevice::open(&config.tun).map_err(|source| Error::Io {
            action: "create in-memory device for",
            path: config.tun.name.clone().into(),
            source,
        })?;
        let capacity = node.config().datagram_capacity();
        Ok(Self {
            node,
            socket,
            tun,
            tun_kind,
            app,
            counters: ShellCounters::default(),
            rx: vec![0; MAX_DATAGRAM],
            packet: vec![0; MAX_DATAGRAM],
            tx: vec![0; capacity],
            parked: None,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Which TUN backend carries IP packets.
    pub fn tun_kind(&self) -> &TunKind {
        &self.tun_kind
    }

    /// The application end of the in-memory device (only with the fallback; once).
    pub fn take_app_end(&mut self) -> Option<UnixDatagram> {
        self.app.take()
    }

    /// The node's counters, shared with exporters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(self.node.metrics())
    }

    /// Runs until `shutdown` completes; returns the node. Handshakes with every peer
    /// that has a known endpoint start at once, so a restarted node re-joins by itself.
    pub async fn run(
        mut self,
        mut queries: mpsc::Receiver<Query>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<BauxiteNode, Error> {
        let mut shutdown = std::pin::pin!(shutdown);
        self.dial(clock::now());
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(clock::now()));
        let mut sleep = std::pin::pin!(sleep);
        let mut queries_open = true;
        loop {
            let now = clock::now();
            if self.node.poll_timeout().is_some_and(|at| at <= now) {
                self.node.handle_timeout(now);
            }
            self.flush(now);
            self.log_events();
            let deadline = self.node.poll_timeout();
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline.unwrap_or(now)));
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                r = self.socket.writable(), if self.parked.is_some() => Wake::Writable(r),
                r = self.socket.readable() => Wake::Udp(r),
                r = self.tun.readable() => Wake::Tun(r),
                () = &mut sleep, if deadline.is_some() => Wake::Timer,
                q = queries.recv(), if queries_open => Wake::Query(q),
            };
            match wake {
                Wake::Shutdown => {
                    tracing::info!("shutting down");
                    return Ok(self.node);
                }
                Wake::Writable(r) | Wake::Udp(r) | Wake::Tun(r) if r.is_err() => {
                    if let Err(error) = r {
                        tracing::warn!(%error, "socket or device failed; stopping");
                        return Err(Error::Io {
                            action: "poll",
                            path: "udp socket / tun device".into(),
                            source: error,
                        });
                    }
                }
                Wake::Writable(_) | Wake::Timer => {}
                Wake::Udp(_) => self.on_datagrams(clock::now()),
                Wake::Tun(_) => self.on_packets(clock::now()),
                Wake::Query(Some(query)) => self.answer(query, clock::now()),
                Wake::Query(None) => queries_open = false,
            }
        }
    }

    fn dial(&mut self, now: Instant) {
        let peers: Vec<_> = self
            .node
            .registry()
            .iter()
            .filter(|p| p.endpoint.is_some())
            .map(|p| p.id)
            .collect();
        for peer in peers {
            if let Err(error) = self.node.connect(now, peer) {
                tracing::warn!(%peer, %error, "cannot start handshake");
            }
        }
    }

    /// Up to [`BATCH`] datagrams from the socket into the node; decrypted packets to TUN.
    fn on_datagrams(&mut self, now: Instant) {
        for _ in 0..BATCH {
            let (len, from) = match self.socket.try_recv_from(&mut self.rx) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    self.counters.udp_recv_errors += 1;
                    tracing::debug!(%error, "udp receive failed");
                    continue;
                }
            };
            let datagram = &mut self.rx[..len];
            match self.node.handle_datagram(now, from, datagram) {
                Received::Deliver(range) => {
                    if let Err(error) = self.tun.try_send(&datagram[range]) {
                        self.counters.tun_write_dropped += 1;
                        tracing::trace!(%error, "tun write failed; packet dropped");
                    }
                }
                Received::Stun => self.counters.stun_ignored += 1,
                Received::Consumed => {}
                Received::Dropped(reason) => {
                    tracing::trace!(%from, ?reason, len, "datagram dropped");
                }
            }
        }
    }

    /// Up to [`BATCH`] packets from the device into the node's lanes.
    fn on_packets(&mut self, now: Instant) {
        for _ in 0..BATCH {
            let len = match self.tun.try_recv(&mut self.packet) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::debug!(%error, "tun read failed");
                    return;
                }
            };
            let verdict = self.node.handle_tun_packet(now, &self.packet[..len]);
            tracing::trace!(len, ?verdict, "packet from tun");
        }
    }

    /// Sends the parked datagram, then whatever the node has, until it has nothing or the
    /// socket is full.
    fn flush(&mut self, now: Instant) {
        if let Some((len, dst)) = self.parked {
            if !self.send(len, dst) {
                return;
            }
            self.parked = None;
        }
        while let Some(t) = self.node.poll_transmit(now, &mut self.tx) {
            if !self.send(t.len, t.dst) {
                self.parked = Some((t.len, t.dst));
                self.counters.udp_send_blocked += 1;
                return;
            }
        }
    }

    /// Sends `tx[..len]`; false if the socket is full (the datagram is kept).
    fn send(&mut self, len: usize, dst: SocketAddr) -> bool {
        match self.socket.try_send_to(&self.tx[..len], dst) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(error) => {
                self.counters.udp_send_errors += 1;
                tracing::debug!(%dst, %error, "udp send failed; datagram dropped");
                true
            }
        }
    }

    fn log_events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::HandshakeCompleted { peer, initiator } => {
                    tracing::info!(%peer, initiator, "handshake completed");
                }
                Event::HandshakeGaveUp { peer, dropped } => {
                    tracing::warn!(%peer, dropped, "handshake gave up");
                }
            }
        }
    }

    fn answer(&mut self, query: Query, now: Instant) {
        match query {
            Query::Status(reply) => {
                let status = ShellStatus {
                    peer_id: self.node.peer_id(),
                    listen: self.socket.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()),
                    tun: self.tun_kind.clone(),
                    peers: self.node.peer_status(now),
                    counters: self.counters,
                };
                // The asker may have given up; nothing to do then.
                let _ = reply.send(status);
            }
            Query::ReplacePeers(peers) => self.replace_peers(peers, now),
            Query::SetPolicy(Some(policy)) => match self.node.policy_mut().load(policy) {
                Ok(()) => tracing::info!("policy loaded"),
                Err(error) => tracing::warn!(%error, "policy refused; keeping the previous one"),
            },
            Query::SetPolicy(None) => {
                self.node.policy_mut().clear();
                tracing::info!("policy cleared (allow all)");
            }
        }
    }

    /// Applies a full peer list: removes the peers not in it, upserts the others, and
    /// starts a handshake with every new or re-addressed peer that has an endpoint.
    fn replace_peers(&mut self, peers: Vec<PeerInfo>, now: Instant) {
        let keep: std::collections::HashSet<_> = peers.iter().map(|p| p.id).collect();
        let gone: Vec<_> = self
            .node
            .registry()
            .iter()
            .map(|p| p.id)
            .filter(|id| !keep.contains(id))
            .collect();
        for id in gone {
            if let Some(peer) = self.node.remove_peer(id) {
                tracing::info!(peer = %id, name = %peer.name, "peer removed");
            }
        }
        for peer in peers {
            let id = peer.id;
            let before = self.node.registry().by_id(id).cloned();
            let dial = peer.endpoint.is_some()
                && before.as_ref().is_none_or(|b| {
                    b.endpoint != peer.endpoint || b.static_public != peer.static_public
                });
            let name = peer.name.clone();
            match self.node.upsert_peer(peer) {
                Ok(()) => {
                    if before.is_none() {
                        tracing::info!(peer = %id, %name, "peer added");
                    }
                    if dial
                        && !self.node.is_connected(id, now)
                        && let Err(error) = self.node.connect(now, id)
                    {
                        tracing::warn!(peer = %id, %error, "cannot start handshake");
                    }
                }
                Err(error) => tracing::warn!(peer = %id, %error, "peer refused"),
            }
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
