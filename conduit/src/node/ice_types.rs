//! The ICE vocabulary the node and the shell share: what an agent reports, what the node
//! asks the shell to do, and what `bauxite status` shows of a session.
//!
//! Invariant: plain data, no behaviour — the decisions are in `node/ice.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::PeerId;

/// What kind of candidate the remote end of a pair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceKind {
    /// An interface address of the peer.
    Host,
    /// The peer's NAT mapping as a STUN server saw it.
    ServerReflexive,
    /// The peer's address as our checks saw it.
    PeerReflexive,
    /// A TURN-relayed address.
    Relay,
}

impl IceKind {
    /// Name for status output (the SDP `typ` names).
    pub fn name(self) -> &'static str {
        match self {
            IceKind::Host => "host",
            IceKind::ServerReflexive => "srflx",
            IceKind::PeerReflexive => "prflx",
            IceKind::Relay => "relay",
        }
    }
}

/// What an agent found out (the shell hands these to [`BauxiteNode::handle_ice`](crate::BauxiteNode::handle_ice)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceReport {
    /// A local candidate (SDP `candidate` text) to send to the peer.
    LocalCandidate(String),
    /// Gathering ended.
    GatheringDone,
    /// The agent selected a pair: checks succeeded both ways on it.
    Selected {
        /// Our end (the mesh socket's address as the candidate names it).
        local: SocketAddr,
        /// The peer's end.
        remote: SocketAddr,
        /// The kind of the peer's end.
        remote_kind: IceKind,
        /// The pair's round trip as the checks measured it.
        rtt: Option<Duration>,
    },
    /// The selected pair stopped answering.
    Disconnected,
    /// No pair works.
    Failed,
}

/// What the node asks the shell to do ([`BauxiteNode::poll_ice`](crate::BauxiteNode::poll_ice)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IceAction {
    /// Create `peer`'s agent with these settings (closing an older one).
    Create {
        /// The peer.
        peer: PeerId,
        /// Whether this side controls (it invited).
        controlling: bool,
        /// Local ufrag.
        ufrag: String,
        /// Local password.
        pwd: String,
    },
    /// Send a signal to `peer` through the hub's `ExchangeCandidates`.
    Signal {
        /// The peer.
        peer: PeerId,
        /// The node.proto `SignalKind` number.
        kind: i32,
        /// The `Signal.payload` bytes ([`SignedSignal::encode`](crate::node::SignedSignal::encode)).
        payload: Vec<u8>,
    },
    /// Give `peer`'s agent a candidate the peer sent.
    RemoteCandidate {
        /// The peer.
        peer: PeerId,
        /// SDP `candidate` text.
        line: String,
    },
    /// Start `peer`'s checks against its credentials.
    Start {
        /// The peer.
        peer: PeerId,
        /// The peer's ufrag.
        ufrag: String,
        /// The peer's password.
        pwd: String,
    },
    /// Close `peer`'s agent.
    Close {
        /// The peer.
        peer: PeerId,
    },
}

/// Where an ICE session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcePhase {
    /// INVITE sent, waiting for the OFFER.
    Inviting,
    /// Both sides' credentials known; checks running.
    Checking,
    /// A pair works.
    Connected,
    /// No pair worked.
    Failed,
}

impl IcePhase {
    /// Name for status output.
    pub fn name(self) -> &'static str {
        match self {
            IcePhase::Inviting => "inviting",
            IcePhase::Checking => "checking",
            IcePhase::Connected => "connected",
            IcePhase::Failed => "failed",
        }
    }
}

/// How long each stage of connecting took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectStages {
    /// From our first candidate sent to the peer's first candidate received.
    pub signaling: Option<Duration>,
    /// From the peer's first candidate (or the session's start) to the first working pair.
    pub checks: Option<Duration>,
    /// From the first working pair to the session being usable (zero when it already
    /// was, on a relay).
    pub handshake: Option<Duration>,
    /// From the session's start (INVITE sent or received) to the session being usable.
    /// `None` (and `handshake` too) when the session was usable before the ICE session
    /// began: the hub's candidates answered first.
    pub total: Option<Duration>,
}

/// One peer's ICE session, for `bauxite status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceStatus {
    /// Whether this side controls.
    pub controlling: bool,
    /// Where it stands.
    pub phase: IcePhase,
    /// The selected pair (ours, the peer's) and the kind of the peer's end.
    pub pair: Option<(SocketAddr, SocketAddr, IceKind)>,
    /// The pair's round trip as the checks measured it.
    pub rtt: Option<Duration>,
    /// Per-stage connect timings.
    pub stages: ConnectStages,
}
