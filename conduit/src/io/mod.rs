//! The IO shell: one UDP socket and one TUN device around a sans-IO [`BauxiteNode`](crate::BauxiteNode),
//! driven on a single tokio thread.
//!
//! Invariant: the shell makes no protocol decision. It reads the clock and the OS RNG
//! ([`clock`]), moves bytes between the socket, the device and the node in the order the
//! node's "Driving a node" rules give, sleeps until `poll_timeout`, and answers status
//! queries; everything else is the node's.
//!
//! # Run to completion
//!
//! One task owns the node, the socket and the device. Each wake-up handles a bounded
//! batch of one input (up to [`BATCH`] datagrams or packets), runs due timers, then
//! drains `poll_transmit` into the socket until the node has nothing more or the socket
//! is full. A full socket parks the one datagram already sealed and stops polling the
//! node, so queueing happens in the node's lanes — where the critical lane overtakes
//! bulk — rather than in the kernel. No packet crosses a thread and steady-state
//! forwarding allocates nothing: three buffers are reused for every packet.

pub mod clock;
mod shell;

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::PeerId;
use crate::node::PeerStatus;
use crate::peers::PeerInfo;
use crate::policy::Policy;
use crate::tun::{TunConfig, TunKind};

pub use shell::Shell;

/// Datagrams or packets handled per wake-up before timers and transmission get a turn.
pub const BATCH: usize = 64;

/// Where the shell binds and what device it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellConfig {
    /// UDP address for mesh packets and STUN.
    pub listen: SocketAddr,
    /// The TUN device.
    pub tun: TunConfig,
}

/// A request to a running shell, answered between two batches.
#[derive(Debug)]
pub enum Query {
    /// Report the node's state.
    Status(oneshot::Sender<ShellStatus>),
    /// Make `peers` the whole peer table (a hub topology snapshot): new peers are added
    /// and dialled, changed ones updated, and peers not in the list removed with their
    /// sessions torn down (revocation).
    ReplacePeers(Vec<PeerInfo>),
    /// Install a firewall policy, or with `None` unload it (allow all).
    SetPolicy(Option<Policy>),
}

/// Counters of things only the shell sees (the node's own are in [`crate::Metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShellCounters {
    /// STUN messages received and ignored (no ICE agent yet).
    pub stun_ignored: u64,
    /// Datagrams the OS refused to send (unreachable, no route, ...).
    pub udp_send_errors: u64,
    /// Times the socket's send queue was full and the shell waited for room.
    pub udp_send_blocked: u64,
    /// Receive errors other than "nothing to read".
    pub udp_recv_errors: u64,
    /// Decrypted packets the device could not take (full or failing), dropped.
    pub tun_write_dropped: u64,
}

/// A running node's state, for `bauxite status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellStatus {
    /// This node's mesh ID.
    pub peer_id: PeerId,
    /// The bound UDP address.
    pub listen: SocketAddr,
    /// Which TUN backend carries IP packets.
    pub tun: TunKind,
    /// Every configured peer, in peer order.
    pub peers: Vec<PeerStatus>,
    /// Shell-level counters.
    pub counters: ShellCounters,
}
