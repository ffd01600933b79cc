//! Store-and-forward relay of signaling messages between nodes.
//!
//! Invariant: a relayed message always carries the *authenticated* sender's ID (whatever
//! the sender wrote is replaced), goes only to an active node, and at most
//! [`PENDING_PER_PEER`] messages wait for an offline node (oldest dropped first, like the
//! critical lane: fresh candidates beat stale ones). Only the peer with the lower ID may
//! send `INVITE` ([`initiator`]), as in the seed's connection hookup.

use std::collections::{BTreeMap, VecDeque};

use bauxite_conduit::PeerId;
use tokio::sync::mpsc;

use crate::proto::node::{Signal, SignalKind};
use crate::{Error, Result};

/// Messages kept for a node that is not connected.
pub const PENDING_PER_PEER: usize = 64;
/// Largest payload relayed.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Buffer of each connected node's outgoing stream.
pub const STREAM_BUFFER: usize = 256;

/// Which of two peers initiates a session: the one with the lower peer ID.
pub fn initiator(a: PeerId, b: PeerId) -> PeerId {
    a.min(b)
}

/// What happened to a routed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the destination's open stream.
    Delivered,
    /// Kept until the destination connects.
    Queued,
    /// Handed to the other replicas (the destination is not connected to this one).
    Forwarded,
}

/// Open signaling streams and messages waiting for their destination.
#[derive(Default)]
pub struct SignalRouter {
    online: BTreeMap<PeerId, (u64, mpsc::Sender<Signal>)>,
    pending: BTreeMap<PeerId, VecDeque<Signal>>,
    next_stream: u64,
}

impl SignalRouter {
    /// Registers `node`'s stream (replacing an older one) and hands it the queued messages.
    /// Returns the stream's number, for [`detach`](Self::detach).
    pub fn attach(&mut self, node: PeerId) -> (u64, mpsc::Receiver<Signal>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        for message in self.pending.remove(&node).unwrap_or_default() {
            let _ = tx.try_send(message);
        }
        self.next_stream += 1;
        self.online.insert(node, (self.next_stream, tx));
        (self.next_stream, rx)
    }

    /// Unregisters stream `stream` of `node`, unless a newer stream replaced it.
    pub fn detach(&mut self, node: PeerId, stream: u64) {
        if self.online.get(&node).is_some_and(|(s, _)| *s == stream) {
            self.online.remove(&node);
        }
    }

    /// Forgets everything about `node` (on revocation): its stream closes.
    pub fn detach_all(&mut self, node: PeerId) {
        self.online.remove(&node);
        self.pending.remove(&node);
    }

    /// Closes every open stream (the hub is stopping); queued messages stay.
    pub fn close_all(&mut self) {
        self.online.clear();
    }

    /// Whether `node` has an open stream on this hub.
    pub fn is_online(&self, node: PeerId) -> bool {
        self.online.contains_key(&node)
    }

    /// The nodes with an open stream on this hub.
    pub fn online(&self) -> Vec<PeerId> {
        self.online.keys().copied().collect()
    }

    /// Validates and routes a message from the authenticated `from` to an active destination.
    pub fn route(&mut self, from: PeerId, to: PeerId, message: Signal) -> Result<Delivery> {
        let message = Self::check(from, to, message)?;
        match self.try_deliver(to, message) {
            None => Ok(Delivery::Delivered),
            Some(message) => {
                self.queue(to, message);
                Ok(Delivery::Queued)
            }
        }
    }

    /// Hands an already [checked](Self::check) `message` to `to`'s open stream, or gives it
    /// back when `to` has none here (or its buffer is full; a closed stream is forgotten).
    pub fn try_deliver(&mut self, to: PeerId, message: Signal) -> Option<Signal> {
        let Some((_, tx)) = self.online.get(&to) else {
            return Some(message);
        };
        match tx.try_send(message) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(m)) => Some(m),
            // The node hung up and its stream task has not detached yet: it is not here.
            Err(mpsc::error::TrySendError::Closed(m)) => {
                self.online.remove(&to);
                Some(m)
            }
        }
    }

    /// Keeps `message` until `to` attaches here, dropping the oldest beyond the bound.
    pub fn queue(&mut self, to: PeerId, message: Signal) {
        let queue = self.pending.entry(to).or_default();
        if queue.len() == PENDING_PER_PEER {
            queue.pop_front();
        }
        queue.push_back(message);
    }

    /// Applies the relay rules to a message from the authenticated `from` to `to` and
    /// returns it as relayed (with the sender's ID).
    pub fn check(from: PeerId, to: PeerId, mut message: Signal) -> Result<Signal> {
        let bad = |problem: String| Error::InvalidArgument {
            field: "signal",
            problem,
        };
        if to == from {
            return Err(bad("a node cannot signal itself".into()));
        }
        let kind = SignalKind::try_from(message.kind).unwrap_or(SignalKind::Unspecified);
        if kind == SignalKind::Unspecified {
            return Err(bad(format!("unknown kind {}", message.kind)));
        }
        if kind == SignalKind::Invite && initiator(from, to) != from {
            return Err(bad(format!(
                "only the peer with the lower ID ({to}) may invite; wait for its INVITE"
            )));
        }
        if message.payload.len() > MAX_PAYLOAD {
            return Err(bad(format!(
                "payload of {} bytes exceeds {MAX_PAYLOAD}",
                message.payload.len()
            )));
        }
        message.peer_id = from.to_string();
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> PeerId {
        PeerId([b; 16])
    }

    fn signal(kind: SignalKind, to: PeerId) -> Signal {
        Signal {
            peer_id: to.to_string(),
            kind: kind as i32,
            session: 1,
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn queues_until_attach_then_delivers_with_sender_id() {
        let mut r = SignalRouter::default();
        let (a, b) = (id(1), id(2));
        assert_eq!(
            r.route(a, b, signal(SignalKind::Invite, b)).unwrap(),
            Delivery::Queued
        );
        let (_, mut rx) = r.attach(b);
        let got = rx.try_recv().unwrap();
        assert_eq!(got.peer_id, a.to_string(), "destination sees the sender");
        assert_eq!(
            r.route(a, b, signal(SignalKind::Candidate, b)).unwrap(),
            Delivery::Delivered
        );
        assert_eq!(rx.try_recv().unwrap().kind, SignalKind::Candidate as i32);
    }

    #[test]
    fn only_lower_id_invites() {
        let mut r = SignalRouter::default();
        let (a, b) = (id(1), id(2));
        assert!(r.route(b, a, signal(SignalKind::Invite, a)).is_err());
        assert!(r.route(b, a, signal(SignalKind::Answer, a)).is_ok());
        assert!(r.route(a, a, signal(SignalKind::Offer, a)).is_err());
        assert!(r.route(a, b, signal(SignalKind::Unspecified, b)).is_err());
    }

    #[test]
    fn pending_is_bounded_and_drops_oldest() {
        let mut r = SignalRouter::default();
        let (a, b) = (id(1), id(2));
        for n in 0..(PENDING_PER_PEER as u64 + 5) {
            let mut s = signal(SignalKind::Candidate, b);
            s.session = n;
            r.route(a, b, s).unwrap();
        }
        let (_, mut rx) = r.attach(b);
        assert_eq!(rx.try_recv().unwrap().session, 5);
    }

    #[test]
    fn stale_detach_keeps_newer_stream() {
        let mut r = SignalRouter::default();
        let b = id(2);
        let (old, _rx1) = r.attach(b);
        let (_new, _rx2) = r.attach(b);
        r.detach(b, old);
        assert_eq!(
            r.route(id(1), b, signal(SignalKind::Offer, b)).unwrap(),
            Delivery::Delivered
        );
    }
}
