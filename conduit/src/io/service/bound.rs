//! The shell's side of the service sockets: which ports are bound, moving queued
//! datagrams into the node's lanes while they have room, and handing delivered ones to
//! their socket.
//!
//! Invariant: a datagram leaves a socket's send queue only into a lane with room for it,
//! so the lanes never drop a service datagram; a bounded budget per turn keeps a long
//! queue from delaying received packets, except for critical datagrams, which never wait
//! a turn behind bulk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::batch::{Packets, Source};
use super::{IncomingBatch, Queue, SEND_QUEUE, ServiceSender, ServiceSocket, Shared, lock};
use crate::error::ServiceError;
use crate::service::{self, ServicePort};
use crate::{BauxiteNode, Lane, Metrics, VirtualIp};

/// Datagrams the shell moves from all sockets into the lanes per turn of its loop, so a
/// large send queue does not delay the handling of received packets.
const PUMP_PER_TURN: usize = 256;

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
pub(in crate::io) struct Services {
    bound: BTreeMap<u16, Bound>,
    local_ip: VirtualIp,
    max_payload: usize,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Which socket is pumped first next turn (round robin).
    first: usize,
}

impl Services {
    pub(in crate::io) fn new(local_ip: VirtualIp, mtu: usize, metrics: Arc<Metrics>) -> Self {
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
    pub(in crate::io) fn bind(
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
    pub(in crate::io) fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// Completes when a sender queued datagrams into an empty send queue (or a socket
    /// was dropped). Cancel safe.
    pub(in crate::io) fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Moves queued datagrams into the node's lanes while their lane has room, up to a
    /// per-turn budget, and says what is left.
    pub(in crate::io) fn pump(&mut self, node: &mut BauxiteNode, now: Instant) -> Pumped {
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
    pub(in crate::io) fn deliver(&mut self, packet: &[u8]) -> bool {
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
    pub(in crate::io) fn notify_receivers(&mut self) {
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
pub(in crate::io) struct Pumped {
    /// The budget ran out with datagrams that could still move.
    budget_spent: bool,
    /// Lanes that had no room for a socket's next datagram.
    waiting: [bool; 3],
}

impl Pumped {
    /// Whether the shell should pump again without sleeping: the budget ran out, or a
    /// lane that was full has room now (the flush after the pump drained it, and no
    /// input or timer may come to wake the shell).
    pub(in crate::io) fn again(&self, node: &BauxiteNode) -> bool {
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
