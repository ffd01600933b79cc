//! The hub data channel: mesh datagrams relayed between nodes whose UDP is blocked.
//!
//! Invariants: a relayed frame always carries the *authenticated* sender's ID (the client's
//! value is replaced); it goes only to a node with an open relay stream (the hub stores
//! nothing for offline nodes: a datagram is worth nothing late, and the session above
//! retransmits); routing never waits (a full destination queue drops the frame and counts
//! it, so one slow node cannot stall the hub or other nodes); each sender spends a byte
//! budget refilled at [`RATE_BYTES_PER_SEC`], so one node cannot hog the hub's uplink. The
//! hub never decrypts: it holds no session keys. A revoked node is detached (its streams
//! end) and a detached stream's frames are refused, so a revoked node cannot relay.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bauxite_conduit::PeerId;
use tokio::sync::mpsc;

use crate::proto::node::RelayFrame;

/// Largest datagram relayed (a mesh datagram is the device MTU plus about 40 bytes).
pub const MAX_DATAGRAM: usize = 16 * 1024;
/// Frames waiting for each connected node's stream before new ones are dropped.
pub const QUEUE_FRAMES: usize = 1024;
/// Sustained relay rate per sending node.
pub const RATE_BYTES_PER_SEC: u64 = 8 * 1024 * 1024;
/// Burst a sending node may send above the sustained rate.
pub const BURST_BYTES: u64 = 1024 * 1024;

/// Why a frame was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayDrop {
    /// The sender's stream is not (or no longer) attached: replaced, revoked, or stopping.
    SenderDetached,
    /// The destination is the sender.
    SelfAddressed,
    /// The destination field is not a 16-byte peer ID.
    BadDestination,
    /// Longer than [`MAX_DATAGRAM`].
    Oversized,
    /// The sender is over its rate budget.
    RateLimited,
    /// The destination has no open relay stream.
    Offline,
    /// The destination's queue is full (it reads too slowly).
    QueueFull,
}

/// A token bucket in bytes, driven by an injected `now`.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    tokens: u64,
    last: Instant,
}

impl Budget {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: BURST_BYTES,
            last: now,
        }
    }

    /// Takes `bytes` if the bucket holds them after refilling up to `now`.
    pub fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let refill = refill(elapsed);
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(BURST_BYTES);
            self.last = now;
        }
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        if self.tokens < bytes {
            return false;
        }
        self.tokens -= bytes;
        true
    }
}

fn refill(elapsed: Duration) -> u64 {
    let bytes = elapsed.as_nanos() * u128::from(RATE_BYTES_PER_SEC) / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

struct Stream {
    number: u64,
    tx: mpsc::Sender<RelayFrame>,
}

/// A node's streams on this hub and its budget (shared by its streams: the rate limit
/// is per node on each hub, whatever the number of streams).
struct Attached {
    home: Option<Stream>,
    visit: Option<Stream>,
    budget: Budget,
}

impl Attached {
    fn holds(&self, stream: u64) -> bool {
        [&self.home, &self.visit]
            .into_iter()
            .flatten()
            .any(|s| s.number == stream)
    }
}

/// Which of a node's relay streams a stream is (docs/hub.md, "The relay across replicas").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRole {
    /// The node's own stream on the replica it is connected to: recorded as its relay
    /// presence, where the peers with higher IDs come to meet it.
    Home,
    /// A stream the node opened on another replica to meet a lower-ID peer there
    /// (`bauxite_dispatch_api::relay::VISIT_METADATA`); never recorded as its presence.
    Visit,
}

/// Open relay streams, at most one of each role per node (a newer stream replaces an
/// older one of its role).
#[derive(Default)]
pub struct DatagramRelay {
    online: BTreeMap<PeerId, Attached>,
    next_stream: u64,
}

impl DatagramRelay {
    /// Registers `node`'s home relay stream at `now`, replacing an older one (whose
    /// frames are refused from then on). Returns the stream's number, for
    /// [`route`](Self::route) and [`detach`](Self::detach).
    pub fn attach(&mut self, node: PeerId, now: Instant) -> (u64, mpsc::Receiver<RelayFrame>) {
        self.attach_as(node, StreamRole::Home, now)
    }

    /// Registers `node`'s relay stream of `role` at `now`, replacing an older one of that
    /// role. Returns the stream's number.
    pub fn attach_as(
        &mut self,
        node: PeerId,
        role: StreamRole,
        now: Instant,
    ) -> (u64, mpsc::Receiver<RelayFrame>) {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        self.next_stream += 1;
        let stream = Stream {
            number: self.next_stream,
            tx,
        };
        let attached = self.online.entry(node).or_insert_with(|| Attached {
            home: None,
            visit: None,
            budget: Budget::new(now),
        });
        match role {
            StreamRole::Home => attached.home = Some(stream),
            StreamRole::Visit => attached.visit = Some(stream),
        }
        (self.next_stream, rx)
    }

    /// Unregisters stream `stream` of `node`, unless a newer stream replaced it. Returns
    /// whether that was `node`'s home stream (its relay presence here ends).
    pub fn detach(&mut self, node: PeerId, stream: u64) -> bool {
        let Some(attached) = self.online.get_mut(&node) else {
            return false;
        };
        let mut was_home = false;
        if attached.home.as_ref().is_some_and(|s| s.number == stream) {
            attached.home = None;
            was_home = true;
        }
        if attached.visit.as_ref().is_some_and(|s| s.number == stream) {
            attached.visit = None;
        }
        if attached.home.is_none() && attached.visit.is_none() {
            self.online.remove(&node);
        }
        was_home
    }

    /// Closes `node`'s streams (on revocation): its frames are refused from then on.
    pub fn detach_all(&mut self, node: PeerId) {
        self.online.remove(&node);
    }

    /// Closes every stream (the hub is stopping).
    pub fn close_all(&mut self) {
        self.online.clear();
    }

    /// Whether `node` has an open relay stream.
    pub fn is_online(&self, node: PeerId) -> bool {
        self.online.contains_key(&node)
    }

    /// The nodes whose home stream is open here, in peer-ID order.
    pub fn homes(&self) -> Vec<PeerId> {
        self.online
            .iter()
            .filter(|(_, a)| a.home.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Relays `frame` from stream `stream` of the authenticated `from` to the node its
    /// `peer_id` names, stamping `from` as the source. Never waits.
    pub fn route(
        &mut self,
        now: Instant,
        from: PeerId,
        stream: u64,
        mut frame: RelayFrame,
    ) -> Result<(), RelayDrop> {
        let to = <[u8; 16]>::try_from(frame.peer_id.as_slice())
            .map(PeerId)
            .map_err(|_| RelayDrop::BadDestination)?;
        let sender = self
            .online
            .get_mut(&from)
            .filter(|a| a.holds(stream))
            .ok_or(RelayDrop::SenderDetached)?;
        if to == from {
            return Err(RelayDrop::SelfAddressed);
        }
        if frame.datagram.len() > MAX_DATAGRAM {
            return Err(RelayDrop::Oversized);
        }
        if !sender.budget.take(now, frame.datagram.len()) {
            return Err(RelayDrop::RateLimited);
        }
        // The home stream first; a visiting node is reached on its visit stream.
        let destination = self
            .online
            .get(&to)
            .and_then(|a| a.home.as_ref().or(a.visit.as_ref()))
            .ok_or(RelayDrop::Offline)?;
        frame.peer_id = from.0.to_vec();
        destination.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RelayDrop::QueueFull,
            mpsc::error::TrySendError::Closed(_) => RelayDrop::Offline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> PeerId {
        PeerId([b; 16])
    }

    fn frame(to: PeerId, len: usize) -> RelayFrame {
        RelayFrame {
            peer_id: to.0.to_vec(),
            datagram: vec![0xAB; len],
        }
    }

    #[test]
    fn relays_with_the_authenticated_source() {
        let now = Instant::now_for_tests();
        let mut r = DatagramRelay::default();
        let (sa, _rxa) = r.attach(id(1), now);
        let (_, mut rxb) = r.attach(id(2), now);
        r.route(now, id(1), sa, frame(id(2), 100)).unwrap();
        let got = rxb.try_recv().unwrap();
        assert_eq!(
            got.peer_id,
            id(1).0.to_vec(),
            "the receiver sees the sender"
        );
        assert_eq!(got.datagram, vec![0xAB; 100], "bytes pass untouched");
    }

    #[test]
    fn refuses_what_breaks_the_rules() {
        let now = Instant::now_for_tests();
        let mut r = DatagramRelay::default();
        let (sa, _rxa) = r.attach(id(1), now);
        assert_eq!(
            r.route(now, id(1), sa, frame(id(1), 10)),
            Err(RelayDrop::SelfAddressed)
        );
        assert_eq!(
            r.route(now, id(1), sa, frame(id(3), 10)),
            Err(RelayDrop::Offline)
        );
        let (_, _rxb) = r.attach(id(2), now);
        assert_eq!(
            r.route(now, id(1), sa, frame(id(2), MAX_DATAGRAM + 1)),
            Err(RelayDrop::Oversized)
        );
        let mut short = frame(id(2), 10);
        short.peer_id.pop();
        assert_eq!(
            r.route(now, id(1), sa, short),
            Err(RelayDrop::BadDestination)
        );
        // Revocation detaches: the revoked node's frames are refused.
        r.detach_all(id(1));
        assert_eq!(
            r.route(now, id(1), sa, frame(id(2), 10)),
            Err(RelayDrop::SenderDetached)
        );
    }

    #[test]
    fn a_replaced_stream_cannot_send_and_a_stale_detach_keeps_the_new_one() {
        let now = Instant::now_for_tests();
        let mut r = DatagramRelay::default();
        let (_, _rxb) = r.attach(id(2), now);
        let (old, _rx1) = r.attach(id(1), now);
        let (new, _rx2) = r.attach(id(1), now);
        assert_eq!(
            r.route(now, id(1), old, frame(id(2), 10)),
            Err(RelayDrop::SenderDetached)
        );
        r.detach(id(1), old);
        assert!(r.route(now, id(1), new, frame(id(2), 10)).is_ok());
    }

    #[test]
    fn a_slow_destination_drops_instead_of_blocking() {
        let now = Instant::now_for_tests();
        let mut r = DatagramRelay::default();
        let (sa, _rxa) = r.attach(id(1), now);
        let (_, mut rxb) = r.attach(id(2), now);
        for _ in 0..QUEUE_FRAMES {
            r.route(now, id(1), sa, frame(id(2), 1)).unwrap();
        }
        assert_eq!(
            r.route(now, id(1), sa, frame(id(2), 1)),
            Err(RelayDrop::QueueFull)
        );
        rxb.try_recv().unwrap();
        assert!(r.route(now, id(1), sa, frame(id(2), 1)).is_ok());
    }

    #[test]
    fn a_visiting_node_is_reached_and_shares_its_budget_and_only_home_counts_as_presence() {
        let now = Instant::now_for_tests();
        let mut r = DatagramRelay::default();
        let (sa, _rxa) = r.attach(id(1), now);
        let (visit, mut rxb) = r.attach_as(id(2), StreamRole::Visit, now);
        assert_eq!(r.homes(), vec![id(1)], "a visit is not a presence");
        r.route(now, id(1), sa, frame(id(2), 10)).unwrap();
        assert_eq!(rxb.try_recv().unwrap().peer_id, id(1).0.to_vec());
        // The visitor sends on its visit stream; its home stream elsewhere is unknown here.
        r.route(now, id(2), visit, frame(id(1), 10)).unwrap();
        // A home stream of the same node opened later does not end the visit stream, and
        // both streams spend one budget.
        let (home, _rxh) = r.attach(id(2), now);
        let full = usize::try_from(BURST_BYTES).unwrap();
        assert!(
            r.route(now, id(2), visit, frame(id(1), MAX_DATAGRAM))
                .is_ok()
        );
        let mut spent = MAX_DATAGRAM + 10;
        while spent + MAX_DATAGRAM <= full {
            r.route(now, id(2), home, frame(id(1), MAX_DATAGRAM)).ok();
            spent += MAX_DATAGRAM;
        }
        assert_eq!(
            r.route(now, id(2), visit, frame(id(1), MAX_DATAGRAM)),
            Err(RelayDrop::RateLimited),
            "the two streams share the node's budget"
        );
        assert!(
            !r.detach(id(2), visit),
            "a visit's end is not a presence's end"
        );
        assert!(r.detach(id(2), home), "the home stream's end is");
        assert!(!r.is_online(id(2)));
    }

    #[test]
    fn the_rate_budget_refills_with_time() {
        let t0 = Instant::now_for_tests();
        let mut b = Budget::new(t0);
        let full = usize::try_from(BURST_BYTES).unwrap();
        assert!(b.take(t0, full));
        assert!(!b.take(t0, 1), "the burst is spent");
        // 1 ms refills RATE/1000 bytes.
        let t1 = t0 + Duration::from_millis(1);
        let per_ms = usize::try_from(RATE_BYTES_PER_SEC / 1000).unwrap();
        assert!(b.take(t1, per_ms));
        assert!(!b.take(t1, 1));
        // A long pause refills at most the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(b.take(t2, full));
        assert!(!b.take(t2, 1));
    }

    /// Tests need some base instant; the value does not matter, only differences do.
    trait NowForTests {
        fn now_for_tests() -> Instant;
    }

    impl NowForTests for Instant {
        #[allow(clippy::disallowed_methods)] // A base point; every later time is derived.
        fn now_for_tests() -> Instant {
            Instant::now()
        }
    }
}
