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
//! Each socket shares two queues with the shell, each a `Packets` arena (datagrams back
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

mod batch;
mod bound;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::error::ServiceError;
use crate::service::{self, ServicePort};
use crate::{Lane, VirtualIp};
use batch::{Packets, Source};

pub use batch::{IncomingBatch, OutgoingBatch};
pub(super) use bound::Services;

/// Datagrams a socket's send queue holds, and an [`OutgoingBatch`] at most.
pub const SEND_QUEUE: usize = 256;

/// Receive queue length for callers without a reason to pick another.
pub const DEFAULT_RECV_QUEUE: usize = 1024;

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
