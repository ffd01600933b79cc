//! ICE on the mesh port: one webrtc-ice agent per peer session, sharing the node's one
//! UDP socket with mesh traffic.
//!
//! Invariant: the agents decide nothing about paths. They see only the STUN datagrams the
//! shell hands them ([`IceInbox`]), send their checks from the mesh socket itself (so the
//! NAT mapping a check opens is the one mesh packets use), and report what they found
//! ([`IceReport`]); the node decides which path carries the session
//! ([`BauxiteNode::handle_ice`](crate::BauxiteNode::handle_ice)).
//!
//! # Sharing the port
//!
//! The shell keeps reading the mesh socket with its batched receive (GRO, `recvmmsg`).
//! The node tags STUN datagrams (first byte below `0x80`, the STUN magic cookie) and the
//! shell passes every one that is ICE's ([`is_ice_stun`]: anything but a plain Binding
//! request, which the hub answers itself) to the inbox. [`IceMux`] turns the inbox into
//! a [`webrtc_util::Conn`] for webrtc-ice's `UDPMuxDefault`, which routes each message to
//! the agent whose ufrag it names. The agents send through a duplicate of the mesh
//! socket's descriptor: the same socket, the same port, outside the shell's GSO batches
//! (checks are rare and tiny).
//!
//! # Candidates
//!
//! In muxed mode webrtc-ice gathers host candidates only (every interface address with
//! the mesh port). The server-reflexive candidate is the address the shell's own STUN
//! binding client learned from the hub ([`srflx_candidate`]); a peer's reflexive address
//! as our NAT sees it turns up as a peer-reflexive candidate during the checks. Relay
//! candidates are not gathered: the node's TURN allocation has a socket of its own and
//! stays the fallback path the node already has (direct > TURN > hub).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};
use webrtc_ice::agent::Agent;
use webrtc_ice::agent::agent_config::{AgentConfig, InterfaceFilterFn, IpFilterFn};
use webrtc_ice::candidate::candidate_base::{CandidateBaseConfig, unmarshal_candidate};
use webrtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use webrtc_ice::candidate::{Candidate, CandidateType};
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::state::ConnectionState;
use webrtc_ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc_ice::udp_network::UDPNetwork;
use webrtc_util::Conn;

use crate::node::{IceKind, IceReport};
use crate::{Error, PeerId};

/// STUN datagrams queued between the shell and the agents' mux; more are dropped (the
/// agents retransmit).
pub const ICE_QUEUE: usize = 256;

/// Reports queued between the agents and the shell.
pub const ICE_REPORT_QUEUE: usize = 256;

/// The largest STUN datagram passed on (webrtc-ice's receive MTU).
const MAX_STUN: usize = 8192;

/// A STUN datagram for the agents, with where it came from.
type IceDatagram = (SocketAddr, Vec<u8>);

/// Whether a STUN datagram that reached the mesh port is ICE's: a connectivity check
/// (a Binding request naming a ufrag in USERNAME), an answer to one, or an indication
/// (keepalive). A Binding request without USERNAME is a plain STUN query (the hub
/// answers those) and anything unparsable is nobody's.
pub fn is_ice_stun(bytes: &[u8]) -> bool {
    let mut message = stun::message::Message::new();
    if message.unmarshal_binary(bytes).is_err() {
        return false;
    }
    message.typ.class != stun::message::CLASS_REQUEST
        || message.contains(stun::attributes::ATTR_USERNAME)
}

/// The shell's end of the agents' mux: STUN datagrams for ICE go in here.
#[derive(Clone, Debug)]
pub struct IceInbox {
    tx: mpsc::Sender<IceDatagram>,
}

impl IceInbox {
    /// Passes a STUN datagram to the agents; `false` when their queue is full or the mux
    /// is gone (the datagram is dropped: ICE retransmits).
    pub fn offer(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        bytes.len() <= MAX_STUN && self.tx.try_send((from, bytes.to_vec())).is_ok()
    }
}

/// The mesh port as webrtc-ice sees it: reads what the shell passed on, writes through a
/// duplicate of the mesh socket's descriptor.
struct MeshPortConn {
    inbound: Mutex<mpsc::Receiver<IceDatagram>>,
    socket: UdpSocket,
    local: SocketAddr,
}

#[async_trait::async_trait]
impl Conn for MeshPortConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "the mesh port is not connected to one address".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut inbound = self.inbound.lock().await;
        let Some((from, bytes)) = inbound.recv().await else {
            return Err(webrtc_util::Error::ErrUseClosedNetworkConn);
        };
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok((n, from))
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "the mesh port sends only with a destination".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inbound.lock().await.close();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// webrtc-ice's UDP mux over the mesh port; every agent of the node shares it.
#[derive(Clone)]
pub struct IceMux {
    mux: Arc<UDPMuxDefault>,
    local: SocketAddr,
}

impl std::fmt::Debug for IceMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceMux")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl IceMux {
    /// Builds the mux over `socket` (the mesh socket, which keeps its reader): the
    /// agents send through a duplicate of its descriptor and read what the shell passes
    /// to the returned inbox. Must run inside a tokio runtime.
    pub fn new(socket: &UdpSocket) -> std::io::Result<(Self, IceInbox)> {
        let local = socket.local_addr()?;
        let duplicate = std::net::UdpSocket::from(socket.as_fd().try_clone_to_owned()?);
        duplicate.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel(ICE_QUEUE);
        let conn = MeshPortConn {
            inbound: Mutex::new(rx),
            socket: UdpSocket::from_std(duplicate)?,
            local,
        };
        let mux = UDPMuxDefault::new(UDPMuxParams::new(conn));
        Ok((Self { mux, local }, IceInbox { tx }))
    }

    /// The mesh port's address (the port of every host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// How an agent is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceSettings {
    /// Whether this side is the controlling agent (it sent the INVITE: the lower peer ID).
    pub controlling: bool,
    /// This side's ufrag and password (at least 4 and 22 characters; both empty: random).
    pub local_ufrag: String,
    /// See `local_ufrag`.
    pub local_pwd: String,
    /// Whether loopback addresses are host candidates (tests on one machine).
    pub include_loopback: bool,
    /// An interface whose addresses are never host candidates (the mesh's TUN device).
    pub exclude_interface: Option<String>,
    /// An IPv4 network (address, prefix length) never used for host candidates (the
    /// mesh's range).
    pub exclude_net: Option<(std::net::Ipv4Addr, u8)>,
    /// How long checks may find nothing before the agent reports failure.
    pub failed_timeout: Duration,
    /// Pace of connectivity checks.
    pub check_interval: Duration,
}

impl Default for IceSettings {
    fn default() -> Self {
        Self {
            controlling: false,
            local_ufrag: String::new(),
            local_pwd: String::new(),
            include_loopback: false,
            exclude_interface: None,
            exclude_net: None,
            failed_timeout: Duration::from_secs(5),
            check_interval: Duration::from_millis(50),
        }
    }
}

/// One peer session's agent. Dropping it leaves the agent running until
/// [`IceAgent::close`]; the shell closes every agent it drops.
pub struct IceAgent {
    peer: PeerId,
    agent: Arc<Agent>,
    controlling: bool,
    /// Kept alive while the checks run: `dial`/`accept` stop when it drops.
    cancel: Option<mpsc::Sender<()>>,
}

impl std::fmt::Debug for IceAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceAgent")
            .field("peer", &self.peer)
            .field("controlling", &self.controlling)
            .field("checking", &self.cancel.is_some())
            .finish_non_exhaustive()
    }
}

fn ice_error(peer: PeerId, action: &'static str, error: impl std::fmt::Display) -> Error {
    Error::Ice {
        peer,
        action,
        problem: error.to_string(),
    }
}

fn kind_of(candidate: &(dyn Candidate + Send + Sync)) -> IceKind {
    match candidate.candidate_type() {
        CandidateType::ServerReflexive => IceKind::ServerReflexive,
        CandidateType::PeerReflexive => IceKind::PeerReflexive,
        CandidateType::Relay => IceKind::Relay,
        _ => IceKind::Host,
    }
}

impl IceAgent {
    /// Creates the agent for `peer` on `mux` and starts gathering; its reports go to
    /// `reports`, each with the peer. Must run inside a tokio runtime.
    pub async fn new(
        mux: &IceMux,
        peer: PeerId,
        settings: &IceSettings,
        reports: mpsc::Sender<(PeerId, IceReport)>,
    ) -> Result<Self, Error> {
        let network_types = if mux.local.is_ipv4() {
            vec![NetworkType::Udp4]
        } else {
            vec![NetworkType::Udp4, NetworkType::Udp6]
        };
        let interface_filter: Option<InterfaceFilterFn> =
            settings.exclude_interface.clone().map(|name| {
                let filter: InterfaceFilterFn = Box::new(move |interface: &str| interface != name);
                filter
            });
        let ip_filter: Option<IpFilterFn> = settings.exclude_net.map(|(net, prefix)| {
            let filter: IpFilterFn = Box::new(move |ip: std::net::IpAddr| !in_net(ip, net, prefix));
            filter
        });
        let config = AgentConfig {
            udp_network: UDPNetwork::Muxed(mux.mux.clone()),
            interface_filter: Arc::new(interface_filter),
            ip_filter: Arc::new(ip_filter),
            local_ufrag: settings.local_ufrag.clone(),
            local_pwd: settings.local_pwd.clone(),
            multicast_dns_mode: MulticastDnsMode::Disabled,
            include_loopback: settings.include_loopback,
            network_types,
            candidate_types: vec![CandidateType::Host],
            is_controlling: settings.controlling,
            failed_timeout: Some(settings.failed_timeout),
            check_interval: settings.check_interval,
            // The node upgrades the path as better pairs work: take the first one that
            // does instead of waiting for a better type to answer.
            host_acceptance_min_wait: Some(Duration::ZERO),
            srflx_acceptance_min_wait: Some(Duration::ZERO),
            prflx_acceptance_min_wait: Some(Duration::ZERO),
            relay_acceptance_min_wait: Some(Duration::ZERO),
            ..AgentConfig::default()
        };
        let agent = Arc::new(
            Agent::new(config)
                .await
                .map_err(|e| ice_error(peer, "create the agent", e))?,
        );
        Self::install_handlers(&agent, peer, reports);
        agent
            .gather_candidates()
            .map_err(|e| ice_error(peer, "gather candidates", e))?;
        Ok(Self {
            peer,
            agent,
            controlling: settings.controlling,
            cancel: None,
        })
    }

    fn install_handlers(
        agent: &Arc<Agent>,
        peer: PeerId,
        reports: mpsc::Sender<(PeerId, IceReport)>,
    ) {
        let tx = reports.clone();
        agent.on_candidate(Box::new(move |candidate| {
            let tx = tx.clone();
            Box::pin(async move {
                let report = match candidate {
                    Some(c) => IceReport::LocalCandidate(c.marshal()),
                    None => IceReport::GatheringDone,
                };
                let _ = tx.send((peer, report)).await;
            })
        }));
        let tx = reports.clone();
        agent.on_connection_state_change(Box::new(move |state| {
            let tx = tx.clone();
            Box::pin(async move {
                let report = match state {
                    ConnectionState::Failed => Some(IceReport::Failed),
                    ConnectionState::Disconnected => Some(IceReport::Disconnected),
                    _ => None,
                };
                if let Some(report) = report {
                    let _ = tx.send((peer, report)).await;
                }
            })
        }));
        let weak: Weak<Agent> = Arc::downgrade(agent);
        agent.on_selected_candidate_pair_change(Box::new(move |local, remote| {
            let tx = reports.clone();
            let weak = weak.clone();
            let (local_addr, remote_addr) = (local.addr(), remote.addr());
            let (local_id, remote_id) = (local.id(), remote.id());
            let remote_kind = kind_of(remote.as_ref());
            Box::pin(async move {
                // The pair's last measured round trip, when the agent has one.
                let mut rtt = None;
                if let Some(agent) = weak.upgrade() {
                    rtt = agent
                        .get_candidate_pairs_stats()
                        .await
                        .into_iter()
                        .find(|s| {
                            s.local_candidate_id == local_id && s.remote_candidate_id == remote_id
                        })
                        .map(|s| s.current_round_trip_time)
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .map(Duration::from_secs_f64);
                }
                let report = IceReport::Selected {
                    local: local_addr,
                    remote: remote_addr,
                    remote_kind,
                    rtt,
                };
                let _ = tx.send((peer, report)).await;
            })
        }));
    }

    /// Adds a candidate the peer sent (its SDP `candidate` text).
    pub fn add_remote_candidate(&self, line: &str) -> Result<(), Error> {
        let candidate = unmarshal_candidate(line).map_err(|e| {
            ice_error(
                self.peer,
                "parse a remote candidate",
                format!("{e}: {line:?}"),
            )
        })?;
        let candidate: Arc<dyn Candidate + Send + Sync> = Arc::new(candidate);
        self.agent
            .add_remote_candidate(&candidate)
            .map_err(|e| ice_error(self.peer, "add a remote candidate", e))
    }

    /// Starts the connectivity checks against the peer's credentials (once; later
    /// calls do nothing). The checks run on a task until a pair works (reported as
    /// [`IceReport::Selected`]), they fail, or the agent closes.
    pub fn start(&mut self, remote_ufrag: String, remote_pwd: String) {
        if self.cancel.is_some() {
            return;
        }
        let (cancel, cancel_rx) = mpsc::channel(1);
        self.cancel = Some(cancel);
        let agent = Arc::clone(&self.agent);
        let (peer, controlling) = (self.peer, self.controlling);
        tokio::spawn(async move {
            let connected = if controlling {
                agent
                    .dial(cancel_rx, remote_ufrag, remote_pwd)
                    .await
                    .map(drop)
            } else {
                agent
                    .accept(cancel_rx, remote_ufrag, remote_pwd)
                    .await
                    .map(drop)
            };
            if let Err(error) = connected {
                tracing::debug!(%peer, %error, "ICE checks ended without a pair");
            }
        });
    }

    /// This side's ufrag and password, for the INVITE or OFFER.
    pub async fn local_credentials(&self) -> (String, String) {
        self.agent.get_local_user_credentials().await
    }

    /// Stops the agent: checks, keepalives and its mux registration.
    pub async fn close(mut self) {
        self.cancel = None;
        if let Err(error) = self.agent.close().await {
            tracing::debug!(peer = %self.peer, %error, "ICE agent close");
        }
    }
}

/// Whether `ip` lies in the IPv4 network `net`/`prefix`.
fn in_net(ip: std::net::IpAddr, net: std::net::Ipv4Addr, prefix: u8) -> bool {
    let std::net::IpAddr::V4(v4) = ip else {
        return false;
    };
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(v4) & mask == u32::from(net) & mask
}

/// The SDP `candidate` text of this node's server-reflexive address `reflexive` (learned
/// by the shell's STUN binding client), with the mesh socket's `base` as related address.
pub fn srflx_candidate(reflexive: SocketAddr, base: SocketAddr) -> Option<String> {
    let candidate = CandidateServerReflexiveConfig {
        base_config: CandidateBaseConfig {
            network: "udp".to_owned(),
            address: reflexive.ip().to_string(),
            port: reflexive.port(),
            component: 1,
            ..CandidateBaseConfig::default()
        },
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
    }
    .new_candidate_server_reflexive()
    .ok()?;
    Some(candidate.marshal())
}
