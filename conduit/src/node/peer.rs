//! The node's per-peer record: everything it keeps about one peer besides the peer's
//! registry entry (which is indexed by virtual IP and static key too) and its session
//! indices (keyed by receiver index).
//!
//! Invariant: a registered peer has exactly one record and an unregistered one none, so
//! removing a peer is one removal from the map plus its session indices.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::PeerId;
use crate::path::{AckState, Endpoint, Path, PathState, PeerPaths, SendLog};
use crate::peers::CandidateKind;
use crate::session::Tunnel;

/// Per-peer acknowledgement state: what we sent (for the delay signal) and what we owe.
#[derive(Debug, Default)]
pub(super) struct Feedback {
    pub(super) sent: Option<SendLog>,
    pub(super) acks: AckState,
    /// The receiver's rate-drop detector (used when `rate_drop_feedback` is on).
    pub(super) arrival: crate::path::ArrivalDetector,
}

/// Per-peer loss repair of the bulk lane (when `bulk_repair` is on).
#[derive(Debug, Default)]
pub(super) struct Repair {
    /// Our bulk to the peer, numbered and kept for repair; created with the first
    /// sequenced packet.
    pub(super) sender: Option<crate::path::RepairSender>,
    /// The session (the peer's receiver index) on which the peer said it reads
    /// sequenced bulk: we number bulk only on that session.
    pub(super) peer_reads: Option<u32>,
    /// The peer's bulk to us, put in order; created with its first sequenced packet.
    pub(super) reorder: Option<Box<crate::path::BulkReorder>>,
    /// Our hellos for one of our sessions: its index, how many, the last one's time.
    pub(super) hello: Option<(u32, u8, Instant)>,
}

/// What the node knows about one registered peer.
#[derive(Debug, Default)]
pub(super) struct PeerState {
    /// Its paths and the addresses to try.
    pub(super) path: PeerPaths,
    /// The session (live, pending or waiting), created on first use.
    pub(super) tunnel: Option<Tunnel>,
    /// Acknowledgements of the current session.
    pub(super) feedback: Feedback,
    /// Loss repair of the bulk lane, both directions.
    pub(super) repair: Repair,
    /// What the hub says the peer's addresses are (status output only).
    pub(super) kinds: Vec<(SocketAddr, CandidateKind)>,
    /// What the node measured of the session (status output, quiet detection).
    pub(super) measured: Measured,
    /// Path MTU discovery on the current path.
    pub(super) pmtu: crate::path::Pmtu,
    /// When to move onto the hub relay, and when to probe off it.
    pub(super) hub: super::hub::HubWatch,
    /// The ICE session, while one runs.
    pub(super) ice: Option<super::ice::IceSession>,
    /// ICE restarts since a pair last worked (outlives the sessions).
    pub(super) ice_restarts: super::ice_restart::IceRestarts,
    /// The direct addresses the peer was heard from: its second path (bonding).
    pub(super) bond: crate::path::BondPaths,
}

/// Measurements of one peer's session. Reset when the session is torn down.
#[derive(Debug, Default)]
pub(super) struct Measured {
    /// Smoothed round trip (handshakes and acknowledged data packets).
    pub(super) rtt: Option<Duration>,
    /// From our first initiation to its response, for the last handshake we started.
    pub(super) connect_time: Option<Duration>,
    /// When the session went from unusable to usable.
    pub(super) connected_since: Option<Instant>,
    /// When we sent the first data packet (which the peer acknowledges) since the last
    /// authenticated packet from the peer.
    pub(super) awaiting_since: Option<Instant>,
    /// Whether [`Event::PathQuiet`](super::Event::PathQuiet) went out for `awaiting_since`.
    pub(super) quiet_reported: bool,
}

impl Measured {
    /// A round-trip sample: smoothed with gain 1/8 (TCP's SRTT), the first one taken whole.
    pub(super) fn sample_rtt(&mut self, sample: Duration) {
        self.rtt = Some(match self.rtt {
            Some(rtt) => (rtt * 7 + sample) / 8,
            None => sample,
        });
    }

    /// An authenticated packet came from the peer: the path works.
    pub(super) fn heard(&mut self) {
        self.awaiting_since = None;
        self.quiet_reported = false;
    }

    /// When the path counts as quiet, if it is not reported yet.
    pub(super) fn quiet_at(&self, after: Duration) -> Option<Instant> {
        self.awaiting_since
            .filter(|_| !self.quiet_reported)
            .map(|since| since + after)
    }
}

/// The per-peer records, by peer.
pub(super) type Peers = BTreeMap<PeerId, PeerState>;

/// The tunnel of `peer`, if it has one.
pub(super) fn tunnel_mut(peers: &mut Peers, peer: PeerId) -> Option<&mut Tunnel> {
    peers.get_mut(&peer).and_then(|s| s.tunnel.as_mut())
}

/// The path to `peer` now ([`Path::Drop`] for an unknown peer); a peer with no UDP path
/// goes through the hub if the node has a hub relay (`hub`).
pub(super) fn select(peers: &Peers, peer: PeerId, hub: bool) -> Path {
    peers
        .get(&peer)
        .map_or(Path::Drop, |s| s.path.select_or_hub(hub))
}

/// A read-only view of every peer's paths, for status and tests.
#[derive(Clone, Copy, Debug)]
pub struct Paths<'a> {
    pub(super) peers: &'a Peers,
    /// Whether the node has a hub relay.
    pub(super) hub: bool,
}

impl<'a> Paths<'a> {
    /// The paths of `peer` (all `None` if unknown).
    pub fn get(&self, peer: PeerId) -> PathState {
        self.peers
            .get(&peer)
            .map(|s| s.path.get())
            .unwrap_or_default()
    }

    /// The direct endpoint of `peer`, with its origin.
    pub fn direct(&self, peer: PeerId) -> Option<Endpoint> {
        self.get(peer).direct
    }

    /// The configured addresses of `peer`, best first.
    pub fn candidates(&self, peer: PeerId) -> &'a [SocketAddr] {
        self.peers.get(&peer).map_or(&[], |s| s.path.candidates())
    }

    /// The path for the next packet to `peer`.
    pub fn select(&self, peer: PeerId) -> Path {
        select(self.peers, peer, self.hub)
    }

    /// Peers with at least one path, with their paths, in ascending peer order.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, PathState)> + 'a {
        self.peers
            .iter()
            .map(|(&peer, s)| (peer, s.path.get()))
            .filter(|(_, state)| *state != PathState::default())
    }
}
