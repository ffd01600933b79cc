//! The shell's ICE side: the agents of every peer session, the mux they share on the
//! mesh port, and the channels to the hub connector's `ExchangeCandidates` stream.
//!
//! Invariant: this does what the node's [`IceAction`]s say and hands the node every agent
//! report and every signal that came through the hub; it decides nothing (which pair,
//! when to upgrade, when to give up are the node's, see `node/ice.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::mpsc;

use super::ice::{ICE_REPORT_QUEUE, IceAgent, IceInbox, IceMux, IceSettings, srflx_candidate};
use crate::node::{IceAction, IceReport};
use crate::{BauxiteNode, PeerId};

/// Signals queued between the shell and the hub connector, each way.
pub const ICE_SIGNAL_QUEUE: usize = 256;

/// A signal for the hub: the peer it goes to, the node.proto `SignalKind` number and the
/// `Signal.payload` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingSignal {
    /// The peer it goes to.
    pub peer: PeerId,
    /// node.proto `SignalKind`.
    pub kind: i32,
    /// `Signal.payload`.
    pub payload: Vec<u8>,
}

/// The hub connector's ends of the signaling channels ([`Shell::enable_ice`](super::Shell::enable_ice)).
#[derive(Debug)]
pub struct IceSignalPort {
    /// Signals the node sends to its peers through the hub.
    pub outbound: mpsc::Receiver<OutgoingSignal>,
    /// Signals the hub delivered: the sender (as the hub stamped it) and the payload.
    pub inbound: mpsc::Sender<(PeerId, Vec<u8>)>,
}

/// Settings of the shell's ICE side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// Whether loopback addresses are host candidates (tests on one machine).
    pub include_loopback: bool,
    /// The mesh's own TUN device, never a host candidate: checks through the tunnel
    /// would "succeed" and route the mesh over itself.
    pub exclude_interface: Option<String>,
    /// The mesh's address range (network, prefix length), never a host candidate, for
    /// the same reason.
    pub exclude_net: Option<(std::net::Ipv4Addr, u8)>,
}

/// The agents and their channels.
pub(super) struct IceIo {
    mux: IceMux,
    pub(super) inbox: IceInbox,
    config: IceConfig,
    agents: BTreeMap<PeerId, IceAgent>,
    reports_tx: mpsc::Sender<(PeerId, IceReport)>,
    pub(super) reports: mpsc::Receiver<(PeerId, IceReport)>,
    signals_out: mpsc::Sender<OutgoingSignal>,
    pub(super) signals_in: Option<mpsc::Receiver<(PeerId, Vec<u8>)>>,
    /// The server-reflexive address last turned into candidates.
    reflexive: Option<SocketAddr>,
    /// Signals the connector had no room for.
    pub(super) signals_dropped: u64,
}

impl IceIo {
    /// The ICE side over the mesh socket; returns the hub connector's port too.
    pub(super) fn new(
        socket: &tokio::net::UdpSocket,
        config: IceConfig,
    ) -> std::io::Result<(Self, IceSignalPort)> {
        let (mux, inbox) = IceMux::new(socket)?;
        let (reports_tx, reports) = mpsc::channel(ICE_REPORT_QUEUE);
        let (signals_out, outbound) = mpsc::channel(ICE_SIGNAL_QUEUE);
        let (inbound, signals_in) = mpsc::channel(ICE_SIGNAL_QUEUE);
        Ok((
            Self {
                mux,
                inbox,
                config,
                agents: BTreeMap::new(),
                reports_tx,
                reports,
                signals_out,
                signals_in: Some(signals_in),
                reflexive: None,
                signals_dropped: 0,
            },
            IceSignalPort { outbound, inbound },
        ))
    }

    /// Does what the node asks until it has nothing more.
    pub(super) async fn perform(&mut self, node: &mut BauxiteNode, now: Instant) {
        // Each action is taken once; creating an agent may add one report (the
        // reflexive candidate), never an action, so this ends.
        while let Some(action) = node.poll_ice() {
            match action {
                IceAction::Create {
                    peer,
                    controlling,
                    ufrag,
                    pwd,
                } => self.create(node, now, peer, controlling, ufrag, pwd).await,
                IceAction::Start { peer, ufrag, pwd } => {
                    if let Some(agent) = self.agents.get_mut(&peer) {
                        agent.start(ufrag, pwd);
                    }
                }
                IceAction::RemoteCandidate { peer, line } => {
                    if let Some(Err(error)) = self
                        .agents
                        .get(&peer)
                        .map(|a| a.add_remote_candidate(&line))
                    {
                        tracing::debug!(%peer, %error, "remote candidate refused");
                    }
                }
                IceAction::Close { peer } => {
                    if let Some(agent) = self.agents.remove(&peer) {
                        agent.close().await;
                    }
                }
                IceAction::Signal {
                    peer,
                    kind,
                    payload,
                } => {
                    let signal = OutgoingSignal {
                        peer,
                        kind,
                        payload,
                    };
                    if self.signals_out.try_send(signal).is_err() {
                        self.signals_dropped += 1;
                    }
                }
            }
        }
    }

    async fn create(
        &mut self,
        node: &mut BauxiteNode,
        now: Instant,
        peer: PeerId,
        controlling: bool,
        ufrag: String,
        pwd: String,
    ) {
        if let Some(old) = self.agents.remove(&peer) {
            old.close().await;
        }
        let settings = IceSettings {
            controlling,
            local_ufrag: ufrag,
            local_pwd: pwd,
            include_loopback: self.config.include_loopback,
            exclude_interface: self.config.exclude_interface.clone(),
            exclude_net: self.config.exclude_net,
            ..IceSettings::default()
        };
        match IceAgent::new(&self.mux, peer, &settings, self.reports_tx.clone()).await {
            Ok(agent) => {
                self.agents.insert(peer, agent);
                if let Some(line) = self
                    .reflexive
                    .and_then(|r| srflx_candidate(r, self.mux.local_addr()))
                {
                    node.handle_ice(now, peer, IceReport::LocalCandidate(line));
                }
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "no ICE agent");
                node.handle_ice(now, peer, IceReport::Failed);
            }
        }
    }

    /// The shell learned its server-reflexive address: every agent trickles it.
    pub(super) fn reflexive_changed(
        &mut self,
        node: &mut BauxiteNode,
        now: Instant,
        reflexive: Option<SocketAddr>,
    ) {
        if reflexive == self.reflexive {
            return;
        }
        self.reflexive = reflexive;
        let Some(line) = reflexive.and_then(|r| srflx_candidate(r, self.mux.local_addr())) else {
            return;
        };
        for &peer in self.agents.keys() {
            node.handle_ice(now, peer, IceReport::LocalCandidate(line.clone()));
        }
    }

    /// Closes every agent (the shell stops).
    pub(super) async fn close_all(&mut self) {
        for (_, agent) in std::mem::take(&mut self.agents) {
            agent.close().await;
        }
    }
}
