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
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use webrtc_ice::agent::Agent;
use webrtc_ice::agent::agent_config::{AgentConfig, InterfaceFilterFn, IpFilterFn};
use webrtc_ice::candidate::candidate_base::{CandidateBaseConfig, unmarshal_candidate};
use webrtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use webrtc_ice::candidate::{Candidate, CandidateType};
use webrtc_ice::mdns::MulticastDnsMode;
use webrtc_ice::network_type::NetworkType;
use webrtc_ice::state::ConnectionState;
use webrtc_ice::udp_network::UDPNetwork;

pub use super::ice_mux::{ICE_QUEUE, IceInbox, IceMux, is_ice_stun};
use crate::node::{IceKind, IceReport};
use crate::{Error, PeerId};

/// Reports queued between the agents and the shell.
pub const ICE_REPORT_QUEUE: usize = 256;

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
