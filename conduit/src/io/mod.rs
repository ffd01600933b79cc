//! The IO shell: one UDP socket and, optionally, one TUN device around a sans-IO
//! [`BauxiteNode`](crate::BauxiteNode), driven on a single tokio thread.
//!
//! Invariant: the shell makes no protocol decision. It reads the clock and the OS RNG
//! ([`clock`]), moves bytes between the socket, the device and the node in the order the
//! node's "Driving a node" rules give, sleeps until `poll_timeout`, and answers status
//! queries; everything else is the node's.
//!
//! # Run to completion
//!
//! One task owns the node, the socket and the device. Each wake-up handles a bounded
//! batch of input from both the socket and the device (up to [`BATCH`] datagrams and
//! [`BATCH`] packets), runs due timers, then drains `poll_transmit` into the socket until
//! the node has nothing more or the socket is full. A full socket parks the one batch
//! already sealed and stops polling the node, so queueing happens in the node's lanes —
//! where the critical lane overtakes bulk — rather than in the kernel. No packet from
//! the socket or the device crosses a thread: on two cores a hand-off costs more than
//! the work it would move. Service datagrams from in-process users do, so they cross
//! in batches (see [`service`]), and each turn also moves a bounded number of them into
//! the lanes.
//!
//! # Batched syscalls
//!
//! The node's per-packet work costs a few microseconds; one syscall per packet in each
//! direction cost as much again. The shell therefore batches every syscall Linux lets it
//! batch, and allocates every buffer once, in [`Shell::bind`]:
//!
//! - **UDP receive**: `recvmmsg` into 8 buffers with UDP GRO on (quinn-udp), so one call
//!   returns up to 8 buffers of up to 64 coalesced datagrams each. A buffer is split at
//!   its stride and each datagram decrypted in place.
//! - **UDP send**: consecutive transmits to one destination with one length (the last
//!   may be shorter) are sealed back to back into one buffer and leave in one `sendmsg`
//!   with UDP GSO — the kernel segments them, as quinn does. Only one such batch is
//!   gathered at a time (see the latency invariant in `shell`), up to 64 segments and
//!   32 KiB — half what the kernel takes, so that on a slow link a critical packet
//!   waits behind a shorter burst — and the socket's send buffer is shrunk to two
//!   batches, so a qdisc in front of a slow link cannot hold a deep queue either. If the
//!   device refuses GSO, quinn-udp switches it off and the batch is resent one datagram
//!   per call.
//! - **TUN read** with offload (`IFF_VNET_HDR`, TSO/USO): the kernel hands over a TCP
//!   super-packet of up to 64 KiB that tun-rs splits at the MTU — one read for what were
//!   dozens.
//! - **TUN write**: the decrypted packets of one receive call are coalesced per TCP/UDP
//!   flow into super-packets (userspace GRO, tun-rs `GROTable`) and written together, so
//!   the kernel's stack traverses one large packet instead of many.
//!
//! Without offload (old kernel, the in-memory device) the same code reads and writes one
//! packet per call. [`ShellCounters`] shows in `bauxite status` whether batching happens.
//!
//! # Devices
//!
//! [`DeviceConfig`] picks the IP side: the kernel TUN device (with or without the
//! in-memory fallback), the in-memory pipe alone, or no device at all — what the hub
//! runs, with only the `io` feature (no tun-rs). Without a device, delivered packets go
//! to service sockets or are dropped and counted (`no_device_dropped`).
//!
//! # Service sockets
//!
//! In-process users send and receive over the mesh through a [`ServiceSocket`] bound on
//! the shell ([`Shell::bind_service`] before `run`, [`Query::BindService`] while it
//! runs): UDP datagrams from the node's virtual IP, in the lane the caller picks, with
//! backpressure instead of loss when the lane is full (see [`service`]). Delivered
//! datagrams for a bound port go to its socket, not to the device.

mod arrival;
pub mod clock;
mod critical_rx;
mod device;
pub mod echo;
mod gso;
pub mod ice;
mod ice_driver;
mod ice_mux;
pub mod service;
mod shell;
pub mod turn;
mod udp;

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::node::PeerStatus;
use crate::peers::PeerInfo;
use crate::policy::Policy;
use crate::service::ServicePort;
#[cfg(feature = "tun")]
use crate::tun::TunConfig;
use crate::tun::TunKind;
use crate::{PeerId, ServiceError, VirtualIp};

pub use ice_driver::{ICE_SIGNAL_QUEUE, IceConfig, IceSignalPort, OutgoingSignal};
pub use service::{IncomingBatch, OutgoingBatch, ServiceSender, ServiceSocket};
pub use shell::{HUB_RELAY_QUEUE, HubRelayPort, RelayDatagram, RelayPort, Shell};

/// Datagrams, and packets, handled per wake-up before timers and transmission get a
/// turn. No new receive call starts past it; one call may overshoot it (a GRO receive
/// brings up to a few hundred datagrams, a TSO read a few dozen packets).
pub const BATCH: usize = 64;

/// Decrypted packets gathered for one batched TUN write: enough for a 64 KiB TCP
/// super-packet of MTU-sized segments to form.
pub const TUN_WRITE_BATCH: usize = 64;

/// Where the shell binds and what device it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellConfig {
    /// UDP address for mesh packets and STUN.
    pub listen: SocketAddr,
    /// The node's IP side.
    pub device: DeviceConfig,
}

/// Which device carries the node's IP packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceConfig {
    /// The kernel TUN device; if it cannot be created, the in-memory pipe, with a WARN
    /// line saying why.
    #[cfg(feature = "tun")]
    TunOrMemory(TunConfig),
    /// The kernel TUN device, or an error saying why it cannot be created.
    #[cfg(feature = "tun")]
    Tun(TunConfig),
    /// The in-memory pipe only, never a kernel device (tests, demos, unprivileged runs).
    #[cfg(feature = "tun")]
    Memory {
        /// The node's virtual IP.
        virtual_ip: VirtualIp,
    },
    /// No device: delivered packets reach service sockets, or are dropped and counted.
    None {
        /// The node's virtual IP.
        virtual_ip: VirtualIp,
    },
}

impl DeviceConfig {
    /// The node's virtual IP: the source of what it sends, the address it receives on.
    pub fn virtual_ip(&self) -> VirtualIp {
        match self {
            #[cfg(feature = "tun")]
            DeviceConfig::TunOrMemory(tun) | DeviceConfig::Tun(tun) => tun.address.into(),
            #[cfg(feature = "tun")]
            DeviceConfig::Memory { virtual_ip } => *virtual_ip,
            DeviceConfig::None { virtual_ip } => *virtual_ip,
        }
    }
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
    /// Ask this STUN server (the hub's mesh endpoint) for the node's server-reflexive
    /// address now, and again every refresh; `None` stops asking. Answers are published
    /// on [`Shell::reflexive`].
    Stun(Option<SocketAddr>),
    /// Install a firewall policy, or with `None` unload it (allow all).
    SetPolicy(Option<Policy>),
    /// Capture the peer table as a [`StateSnapshot`](crate::snapshot::StateSnapshot)
    /// taken at `unix_seconds` (for a warm start across an update).
    Snapshot {
        /// Wall-clock time recorded in the snapshot, seconds since the Unix epoch.
        unix_seconds: u64,
        /// Where the snapshot goes.
        reply: oneshot::Sender<crate::snapshot::StateSnapshot>,
    },
    /// Bind a service port on the running shell (see [`Shell::bind_service`]).
    BindService {
        /// The port.
        port: ServicePort,
        /// Receive queue length in datagrams.
        recv_queue: usize,
        /// Where the socket (or the refusal) goes.
        reply: oneshot::Sender<Result<ServiceSocket, ServiceError>>,
    },
}

/// Counters of things only the shell sees (the node's own are in [`crate::Metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShellCounters {
    /// STUN messages that changed nothing: neither an answer that changed the
    /// server-reflexive address (a refresh that finds the same one counts here) nor, on a
    /// STUN-serving shell, a Binding request that was answered.
    pub stun_ignored: u64,
    /// Datagrams the OS refused to send (unreachable, no route, ...).
    pub udp_send_errors: u64,
    /// Times the socket's send queue was full and the shell waited for room.
    pub udp_send_blocked: u64,
    /// Receive errors other than "nothing to read".
    pub udp_recv_errors: u64,
    /// Decrypted packets the device could not take (full or failing), dropped; a failed
    /// batched write counts all of its packets.
    pub tun_write_dropped: u64,
    /// Decrypted packets for no service socket on a shell without a device, dropped.
    pub no_device_dropped: u64,
    /// UDP sends that carried several datagrams (GSO).
    pub udp_gso_sends: u64,
    /// Datagrams sent in those.
    pub udp_gso_datagrams: u64,
    /// Datagrams received coalesced with others in one buffer (GRO).
    pub udp_gro_datagrams: u64,
    /// Packets read from the device as part of a TSO/USO super-packet.
    pub tun_gso_packets: u64,
    /// Datagrams handed to the hub connector for the hub relay.
    pub hub_relay_sent: u64,
    /// Datagrams for the hub relay dropped: no connector, or its queue was full.
    pub hub_relay_dropped: u64,
    /// Datagrams that arrived through the hub relay.
    pub hub_relay_received: u64,
    /// Datagrams handed to the TURN client.
    pub turn_sent: u64,
    /// Datagrams for TURN dropped: no TURN client, or its queue was full.
    pub turn_dropped: u64,
    /// Datagrams that arrived through this node's TURN allocation.
    pub turn_received: u64,
    /// Datagrams read from the mesh port's Critical socket (small ones, read first).
    pub udp_critical_datagrams: u64,
    /// Packets read from the TUN device's Critical queue (read first).
    pub tun_critical_packets: u64,
    /// STUN datagrams on the mesh port passed to the ICE agents.
    pub ice_stun_received: u64,
    /// ICE STUN datagrams dropped because the agents' queue was full.
    pub ice_stun_dropped: u64,
    /// ICE signals dropped because the hub connector's queue was full.
    pub ice_signals_dropped: u64,
    /// ICE signals from the hub refused: bad signature (rewritten on the way), wrong
    /// role, or another session.
    pub ice_signals_refused: u64,
}

/// A running node's state, for `bauxite status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellStatus {
    /// This node's mesh ID.
    pub peer_id: PeerId,
    /// The bound UDP address.
    pub listen: SocketAddr,
    /// Which device carries IP packets ([`TunKind::None`] without one).
    pub tun: TunKind,
    /// Every configured peer, in peer order.
    pub peers: Vec<PeerStatus>,
    /// Shell-level counters.
    pub counters: ShellCounters,
}
