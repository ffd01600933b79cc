//! Service sockets: in-process users (OTA transfer, the hub's services) sending and
//! receiving [service datagrams](crate::service) through a running shell, with or
//! without a device.
//!
//! Invariant: a datagram handed to a socket is queued in the lane its sender chose,
//! refused by the node and counted (`service_tx_dropped`: no route, policy), or still
//! waiting in the socket's bounded send queue — it is never lost for lack of room: the
//! shell moves datagrams into a lane only while the lane has room
//! ([`DataPlaneScheduler::room`](crate::scheduler::DataPlaneScheduler::room)), and a
//! sender waits while its queue is full (backpressure). On the way in, a full receive
//! queue drops and counts (`service_rx_dropped`): a slow reader never stalls the shell.
//!
//! # Batches, not a hop per datagram
//!
//! Each socket shares two queues with the shell, each a [`Packets`] arena (datagrams back
//! to back in one buffer) under a mutex. A sender encodes straight into the send queue
//! (or swaps a whole [`OutgoingBatch`] in); the shell swaps the full queue for its
//! drained one and feeds the node from it. A receiver swaps its drained
//! [`IncomingBatch`] for the shell's full one. So a lock is taken once per batch on the
//! hot side, three buffers circulate per direction, and nothing is allocated per
//! datagram once they have grown to their working size.
//!
//! Datagrams to a peer without a session wait in the node's per-peer stage while it
//! handshakes (128 packets; beyond that the oldest are dropped and counted in
//! `tx_dropped`), as packets from a TUN device do: start a bulk transfer after the peer
//! answered a first small datagram.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

use crate::error::ServiceError;
use crate::service::{self, ServiceDatagram, ServicePort};
use crate::{BauxiteNode, Lane, Metrics, VirtualIp};

/// Datagrams a socket's send queue holds, and an [`OutgoingBatch`] at most.
pub const SEND_QUEUE: usize = 256;

/// Receive queue length for callers without a reason to pick another.
pub const DEFAULT_RECV_QUEUE: usize = 1024;

/// Datagrams the shell moves from all sockets into the lanes per turn of its loop, so a
/// large send queue does not delay the handling of received packets.
const PUMP_PER_TURN: usize = 256;

/// Datagrams back to back in one buffer, each with its lane (outgoing) or its source
/// (incoming).
#[derive(Debug)]
struct Packets<M> {
    bytes: Vec<u8>,
    /// Per datagram: its metadata and where it ends in `bytes`.
    ends: Vec<(M, usize)>,
}

impl<M> Default for Packets<M> {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl<M: Copy> Packets<M> {
    fn with_capacity(datagrams: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(datagrams),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn get(&self, i: usize) -> Option<(M, &[u8])> {
        let &(meta, end) = self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].1);
        Some((meta, self.bytes.get(start..end)?))
    }

    fn push(&mut self, meta: M, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.ends.push((meta, self.bytes.len()));
    }

    /// Appends `other`'s datagrams.
    fn append(&mut self, other: &Self) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends
            .extend(other.ends.iter().map(|&(meta, end)| (meta, base + end)));
    }
}

/// The source of a received datagram.
#[derive(Clone, Copy, Debug)]
struct Source {
    ip: VirtualIp,
    port: u16,
    to: ServicePort,
}

/// Datagrams for one [`ServiceSocket::send_batch`], encoded as they are pushed (so the
/// sender's task, not the shell, pays for headers and checksums). Get one from
/// [`ServiceSender::batch`]; reuse it: a sent batch comes back empty with its buffers.
#[derive(Debug)]
pub struct OutgoingBatch {
    src: VirtualIp,
    port: ServicePort,
    max_payload: usize,
    packets: Packets<Lane>,
}

impl OutgoingBatch {
    /// Encodes one datagram to `peer`:`port` for `lane`. Refused when the payload is too
    /// large, or when the batch already holds [`SEND_QUEUE`] datagrams (send it first).
    pub fn push(
        &mut self,
        peer: VirtualIp,
        port: u16,
        lane: Lane,
        payload: &[u8],
    ) -> Result<(), ServiceError> {
        check_len(payload, self.max_payload)?;
        if self.packets.len() >= SEND_QUEUE {
            return Err(ServiceError::Full {
                port: self.port.get(),
            });
        }
        encode(
            &mut self.packets,
            self.src,
            self.port,
            peer,
            port,
            lane,
            payload,
        );
        Ok(())
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packets.len() == 0
    }

    /// Whether [`push`](Self::push) would refuse for lack of room.
    pub fn is_full(&self) -> bool {
        self.packets.len() >= SEND_QUEUE
    }

    /// Forgets the datagrams pushed so far.
    pub fn clear(&mut self) {
        self.packets.clear();
    }
}

/// Datagrams taken from a socket's receive queue by [`ServiceSocket::recv_batch`].
#[derive(Debug, Default)]
pub struct IncomingBatch {
    packets: Packets<Source>,
}

impl IncomingBatch {
    /// An empty batch; its buffers grow to the working size once, then are reused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packets.len() == 0
    }

    /// The `i`-th datagram, in arrival order.
    pub fn get(&self, i: usize) -> Option<ServiceDatagram<'_>> {
        let (from, payload) = self.packets.get(i)?;
        Some(ServiceDatagram {
            src_ip: from.ip,
            src_port: from.port,
            dst_port: from.to,
            payload,
        })
    }

    /// The datagrams, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = ServiceDatagram<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// What a socket shares with the shell.
#[derive(Debug)]
struct Shared {
    port: ServicePort,
    local_ip: VirtualIp,
    max_payload: usize,
    tx: Mutex<Queue<Lane>>,
    rx: Mutex<Queue<Source>>,
    /// The socket was dropped; the shell unbinds its port.
    detached: AtomicBool,
    /// Wakes the shell when a send queue fills from empty (shared by all sockets).
    wake_shell: Arc<Notify>,
    /// Wakes senders when the shell took their queue, or stopped.
    tx_room: Notify,
    /// Wakes the receiver when datagrams arrived, or the shell stopped.
    rx_ready: Notify,
}

#[derive(Debug)]
struct Queue<M> {
    packets: Packets<M>,
    capacity: usize,
    closed: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The queues hold plain bytes: a panic elsewhere leaves them consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_len(payload: &[u8], max: usize) -> Result<(), ServiceError> {
    if payload.len() > max {
        return Err(ServiceError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(())
}

/// Appends a datagram whose payload fits (checked by the caller) to `packets`.
fn encode(
    packets: &mut Packets<Lane>,
    src: VirtualIp,
    src_port: ServicePort,
    peer: VirtualIp,
    port: u16,
    lane: Lane,
    payload: &[u8],
) {
    // A payload within `max_payload` always fits in an IPv4 packet.
    if service::encode(src, src_port, peer, port, payload, &mut packets.bytes).is_ok() {
        packets.ends.push((lane, packets.bytes.len()));
    }
}

/// The sending half of a [`ServiceSocket`]; clone it for other tasks. Sends fail with
/// [`ServiceError::Closed`] once the socket is dropped or the shell stopped.
#[derive(Clone, Debug)]
pub struct ServiceSender {
    shared: Arc<Shared>,
}

impl ServiceSender {
    /// The bound port (the source port of every datagram sent).
    pub fn local_port(&self) -> ServicePort {
        self.shared.port
    }

    /// The node's virtual IP (the source address of every datagram sent).
    pub fn local_ip(&self) -> VirtualIp {
        self.shared.local_ip
    }

    /// The largest payload one datagram carries (the MTU less 28 header bytes).
    pub fn max_payload(&self) -> usize {
        self.shared.max_payload
    }

    /// An empty batch from this socket.
    pub fn batch(&self) -> OutgoingBatch {
        OutgoingBatch {
            src: self.shared.local_ip,
            port: self.shared.port,
            max_payload: self.shared.max_payload,
            packets: Packets::with_capacity(SEND_QUEUE, SEND_QUEUE * self.packet_bytes()),
        }
    }

    fn packet_bytes(&self) -> usize {
        self.shared.max_payload + service::HEADER_LEN
    }

    /// Queues one datagram to `peer`:`port` in `lane`, waiting while the send queue is
    /// full (the lane below it is busy).
    pub async fn send_to(
        &self,
        peer: VirtualIp,
        port: u16,
        lane: Lane,
        payload: &[u8],
    ) -> Result<(), ServiceError> {
        check_len(payload, self.shared.max_payload)?;
        loop {
            let room = self.shared.tx_room.notified();
            let mut room = std::pin::pin!(room);
            // Registered before the check, so a wake-up between the two is not missed.
            room.as_mut().enable();
            match self.try_send_to(peer, port, lane, payload) {
                Err(ServiceError::Full { .. }) => room.await,
                done => return done,
            }
        }
    }

    /// Queues one datagram without waiting; [`ServiceError::Full`] when the send queue is
    /// full (retry later: nothing was queued).
    pub fn try_send_to(
        &self,
        peer: VirtualIp,
        port: u16,
        lane: Lane,
        payload: &[u8],
    ) -> Result<(), ServiceError> {
        let s = &self.shared;
        check_len(payload, s.max_payload)?;
        let mut tx = lock(&s.tx);
        if tx.closed {
            return Err(ServiceError::Closed { port: s.port.get() });
        }
        if tx.packets.len() >= tx.capacity {
            return Err(ServiceError::Full { port: s.port.get() });
        }
        let was_empty = tx.packets.len() == 0;
        encode(
            &mut tx.packets,
            s.local_ip,
            s.port,
            peer,
            port,
            lane,
            payload,
        );
        drop(tx);
        if was_empty {
            s.wake_shell.notify_one();
        }
        Ok(())
    }

    /// Queues every datagram of `batch`, waiting while the send queue has no room for
    /// them; `batch` comes back empty. An empty queue takes the batch's buffers whole
    /// (no copy).
    pub async fn send_batch(&self, batch: &mut OutgoingBatch) -> Result<(), ServiceError> {
        let s = &self.shared;
        if batch.is_empty() {
            return Ok(());
        }
        loop {
            let room = s.tx_room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            {
                let mut tx = lock(&s.tx);
                if tx.closed {
                    return Err(ServiceError::Closed { port: s.port.get() });
                }
                if tx.packets.len() == 0 {
                    std::mem::swap(&mut tx.packets, &mut batch.packets);
                    drop(tx);
                    s.wake_shell.notify_one();
                    return Ok(());
                }
                if tx.packets.len() + batch.len() <= tx.capacity {
                    tx.packets.append(&batch.packets);
                    drop(tx);
                    batch.clear();
                    return Ok(());
                }
            }
            room.await;
        }
    }
}

/// A bound service port on a running shell: sends datagrams from the node's virtual IP
/// and this port into the lane the caller picks, and receives the datagrams peers send
/// to it. Get one from [`Shell::bind_service`](super::Shell::bind_service) or
/// [`Query::BindService`](super::Query::BindService); dropping it unbinds the port.
#[derive(Debug)]
pub struct ServiceSocket {
    sender: ServiceSender,
    /// Received datagrams not yet handed out by [`recv`](Self::recv).
    inbox: IncomingBatch,
    next: usize,
}

impl Drop for ServiceSocket {
    fn drop(&mut self) {
        let s = &self.sender.shared;
        s.detached.store(true, Ordering::Release);
        lock(&s.tx).closed = true;
        s.tx_room.notify_waiters();
        s.wake_shell.notify_one();
    }
}

impl std::ops::Deref for ServiceSocket {
    type Target = ServiceSender;

    fn deref(&self) -> &ServiceSender {
        &self.sender
    }
}

impl ServiceSocket {
    /// A sending handle for other tasks.
    pub fn sender(&self) -> ServiceSender {
        self.sender.clone()
    }

    /// The next datagram: `(peer, peer's port, payload)`. Waits for one; allocates the
    /// payload (use [`recv_batch`](Self::recv_batch) on a hot path).
    pub async fn recv(&mut self) -> Result<(VirtualIp, u16, Vec<u8>), ServiceError> {
        if self.next >= self.inbox.len() {
            let mut inbox = std::mem::take(&mut self.inbox);
            let received = self.recv_batch(&mut inbox).await;
            self.inbox = inbox;
            self.next = 0;
            received?;
        }
        let d = self.inbox.get(self.next).ok_or(ServiceError::Closed {
            port: self.sender.shared.port.get(),
        })?;
        self.next += 1;
        Ok((d.src_ip, d.src_port, d.payload.to_vec()))
    }

    /// Replaces `batch`'s contents with every datagram received since the last call,
    /// waiting for at least one; returns how many. No copy: the batch's buffers go back
    /// to the shell for the next datagrams.
    pub async fn recv_batch(&mut self, batch: &mut IncomingBatch) -> Result<usize, ServiceError> {
        let s = &self.sender.shared;
        batch.packets.clear();
        // Datagrams `recv` has not handed out yet come first.
        if self.next < self.inbox.len() {
            for i in self.next..self.inbox.len() {
                if let Some((from, payload)) = self.inbox.packets.get(i) {
                    batch.packets.push(from, payload);
                }
            }
            self.inbox.packets.clear();
            self.next = 0;
            return Ok(batch.len());
        }
        loop {
            let ready = s.rx_ready.notified();
            let mut ready = std::pin::pin!(ready);
            ready.as_mut().enable();
            {
                let mut rx = lock(&s.rx);
                if rx.packets.len() > 0 {
                    std::mem::swap(&mut rx.packets, &mut batch.packets);
                    return Ok(batch.len());
                }
                if rx.closed {
                    return Err(ServiceError::Closed { port: s.port.get() });
                }
            }
            ready.await;
        }
    }
}

/// The shell's side of one bound port.
#[derive(Debug)]
struct Bound {
    shared: Arc<Shared>,
    /// The send queue taken from the socket, fed to the node from `cursor`.
    draining: Packets<Lane>,
    cursor: usize,
    /// Datagrams arrived since the receiver was last woken.
    woke: bool,
}

/// Every bound port of a shell. Dropping it (the shell stopped) closes every socket.
#[derive(Debug)]
pub(super) struct Services {
    bound: BTreeMap<u16, Bound>,
    local_ip: VirtualIp,
    max_payload: usize,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Which socket is pumped first next turn (round robin).
    first: usize,
}

impl Services {
    pub(super) fn new(local_ip: VirtualIp, mtu: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            bound: BTreeMap::new(),
            local_ip,
            max_payload: service::max_payload(mtu),
            wake: Arc::new(Notify::new()),
            metrics,
            first: 0,
        }
    }

    /// Binds `port` with a receive queue of `recv_queue` datagrams (at least one).
    pub(super) fn bind(
        &mut self,
        port: ServicePort,
        recv_queue: usize,
    ) -> Result<ServiceSocket, ServiceError> {
        self.unbind_detached();
        if self.bound.contains_key(&port.get()) {
            return Err(ServiceError::PortInUse { port: port.get() });
        }
        let packet = self.max_payload + service::HEADER_LEN;
        let recv_queue = recv_queue.max(1);
        let shared = Arc::new(Shared {
            port,
            local_ip: self.local_ip,
            max_payload: self.max_payload,
            tx: Mutex::new(Queue {
                packets: Packets::with_capacity(SEND_QUEUE, SEND_QUEUE * packet),
                capacity: SEND_QUEUE,
                closed: false,
            }),
            rx: Mutex::new(Queue {
                packets: Packets::with_capacity(recv_queue, recv_queue * self.max_payload),
                capacity: recv_queue,
                closed: false,
            }),
            detached: AtomicBool::new(false),
            wake_shell: Arc::clone(&self.wake),
            tx_room: Notify::new(),
            rx_ready: Notify::new(),
        });
        self.bound.insert(
            port.get(),
            Bound {
                shared: Arc::clone(&shared),
                draining: Packets::with_capacity(SEND_QUEUE, SEND_QUEUE * packet),
                cursor: 0,
                woke: false,
            },
        );
        tracing::debug!(%port, recv_queue, "service port bound");
        Ok(ServiceSocket {
            sender: ServiceSender { shared },
            inbox: IncomingBatch::new(),
            next: 0,
        })
    }

    /// Whether no port is bound.
    pub(super) fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// Completes when a sender queued datagrams into an empty send queue (or a socket
    /// was dropped). Cancel safe.
    pub(super) fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Moves queued datagrams into the node's lanes while their lane has room, up to a
    /// per-turn budget, and says what is left.
    pub(super) fn pump(&mut self, node: &mut BauxiteNode, now: Instant) -> Pumped {
        self.unbind_detached();
        let mut pumped = Pumped::default();
        let count = self.bound.len();
        if count == 0 {
            return pumped;
        }
        let mut budget = PUMP_PER_TURN;
        let first = self.first % count;
        self.first = self.first.wrapping_add(1);
        for bound in self.bound.values_mut().skip(first) {
            pump_one(bound, node, now, &self.metrics, &mut budget, &mut pumped);
        }
        for bound in self.bound.values_mut().take(first) {
            pump_one(bound, node, now, &self.metrics, &mut budget, &mut pumped);
        }
        pumped
    }

    /// Takes `packet` if it is a service datagram for a bound port: queues its payload
    /// for the socket (or drops and counts it when the queue is full). False when the
    /// packet is for the device.
    pub(super) fn deliver(&mut self, packet: &[u8]) -> bool {
        let Some(d) = service::parse(packet, self.local_ip, |_| true) else {
            return false;
        };
        let Some(bound) = self.bound.get_mut(&d.dst_port.get()) else {
            return false;
        };
        let mut rx = lock(&bound.shared.rx);
        if rx.packets.len() >= rx.capacity || rx.closed {
            drop(rx);
            Metrics::inc(&self.metrics.service_rx_dropped);
            tracing::trace!(port = %d.dst_port, "service receive queue full; dropped");
            return true;
        }
        let from = Source {
            ip: d.src_ip,
            port: d.src_port,
            to: d.dst_port,
        };
        rx.packets.push(from, d.payload);
        drop(rx);
        Metrics::inc(&self.metrics.service_rx_packets);
        bound.woke = true;
        true
    }

    /// Wakes the receivers that got datagrams since the last call (once per batch of
    /// received datagrams, not per datagram).
    pub(super) fn notify_receivers(&mut self) {
        for bound in self.bound.values_mut().filter(|b| b.woke) {
            bound.woke = false;
            bound.shared.rx_ready.notify_one();
        }
    }

    fn unbind_detached(&mut self) {
        self.bound.retain(|port, b| {
            let keep = !b.shared.detached.load(Ordering::Acquire);
            if !keep {
                tracing::debug!(port, "service port unbound");
            }
            keep
        });
    }
}

/// What a [`Services::pump`] left behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pumped {
    /// The budget ran out with datagrams that could still move.
    budget_spent: bool,
    /// Lanes that had no room for a socket's next datagram.
    waiting: [bool; 3],
}

impl Pumped {
    /// Whether the shell should pump again without sleeping: the budget ran out, or a
    /// lane that was full has room now (the flush after the pump drained it, and no
    /// input or timer may come to wake the shell).
    pub(super) fn again(&self, node: &BauxiteNode) -> bool {
        self.budget_spent
            || Lane::ALL
                .iter()
                .any(|&lane| self.waiting[lane.index()] && node.scheduler().room(lane) > 0)
    }
}

/// Pumps one socket until its queue is empty, its next datagram's lane is full, or the
/// budget is spent.
fn pump_one(
    bound: &mut Bound,
    node: &mut BauxiteNode,
    now: Instant,
    metrics: &Metrics,
    budget: &mut usize,
    pumped: &mut Pumped,
) {
    loop {
        if bound.cursor >= bound.draining.len() {
            bound.draining.clear();
            bound.cursor = 0;
            let mut tx = lock(&bound.shared.tx);
            if tx.packets.len() == 0 {
                return;
            }
            std::mem::swap(&mut tx.packets, &mut bound.draining);
            drop(tx);
            bound.shared.tx_room.notify_waiters();
        }
        let Some((lane, packet)) = bound.draining.get(bound.cursor) else {
            return;
        };
        if node.scheduler().room(lane) == 0 {
            // Backpressure: it waits here, and its sender behind it, until the lane drains.
            Metrics::inc(&metrics.service_tx_waits);
            pumped.waiting[lane.index()] = true;
            return;
        }
        // Critical datagrams are few and must not wait a turn behind bulk: no budget.
        if lane != Lane::Critical {
            if *budget == 0 {
                pumped.budget_spent = true;
                return;
            }
            *budget -= 1;
        }
        bound.cursor += 1;
        match node.handle_tun_packet_in(now, lane, packet) {
            crate::node::TunVerdict::Queued(_) => Metrics::inc(&metrics.service_tx_packets),
            verdict => {
                Metrics::inc(&metrics.service_tx_dropped);
                tracing::trace!(port = %bound.shared.port, ?verdict, "service datagram refused");
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for bound in self.bound.values() {
            let s = &bound.shared;
            lock(&s.tx).closed = true;
            lock(&s.rx).closed = true;
            s.tx_room.notify_waiters();
            s.rx_ready.notify_one();
        }
    }
}
