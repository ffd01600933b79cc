//! ICE sessions, the node's half: roles, signaling, and what the agents' findings do to
//! a peer's path. The agents themselves are IO ([`crate::io::ice`]).
//!
//! Invariants: the decision is the node's, from its inputs alone (signals, agent
//! reports, `now`), so the simulator can drive it. The lower peer ID controls and sends
//! the INVITE; the other side answers OFFER + ANSWER; both trickle candidates. A signal
//! is acted on only after its signature verified under the sender's listed key
//! ([`SignedSignal::open`]). A pair the agents selected proved that both directions work
//! on that exact address pair from the mesh socket, so it becomes the peer's direct path
//! at once and takes the peer off TURN and the hub (direct > TURN > hub); a failed agent
//! moves a peer with a TURN path onto TURN at once instead of after `turn_after`, and
//! leaves a peer without one to the relay ladder (its TURN address may come later, and
//! the ladder moves it up to TURN from wherever it stands); while the
//! checks run without a pair, a peer with a TURN path moves onto it after
//! [`ICE_TURN_AFTER`] without a direct answer (not `turn_after`), so the session comes up
//! on TURN while the checks go on, and moves to the pair when one works. A pair that stops
//! answering restarts the session ([`ice_restart`](super::ice_restart)).
//!
//! # Driving
//!
//! ```text
//! node.enable_ice(true)                          // once
//! node.ice_begin(now, peer)                      // a new peer (replace_peers calls it)
//! node.handle_ice_signal(now, from, payload)     // an ExchangeCandidates message
//! node.handle_ice(now, peer, report)             // an agent's report
//! while let Some(a) = node.poll_ice() { do a }   // create/start/close agents, send signals
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::Rng;

use super::ice_signal::{IceSignal, SignedSignal};
pub use super::ice_types::{ConnectStages, IceAction, IceKind, IcePhase, IceReport, IceStatus};
use super::{BauxiteNode, Control, Event};
use crate::{Error, PeerId};

/// How long a peer whose ICE checks run may go without an answer on a direct address
/// before it moves onto TURN (instead of [`NodeConfig::turn_after`](super::NodeConfig::turn_after)):
/// the checks try every pair at once, and a direct pair that works answers within a few
/// check intervals (50 ms) — so a peer behind a symmetric NAT reaches TURN this soon,
/// while one that can go direct is not pushed through TURN first.
pub const ICE_TURN_AFTER: Duration = Duration::from_millis(300);

/// The node's record of one ICE session (in the peer's record).
#[derive(Clone, Debug)]
pub(super) struct IceSession {
    session: u64,
    controlling: bool,
    phase: IcePhase,
    started: Instant,
    first_local: Option<Instant>,
    first_remote: Option<Instant>,
    first_pair: Option<Instant>,
    pair: Option<(SocketAddr, SocketAddr, IceKind)>,
    rtt: Option<Duration>,
    /// What this side sent to open the session (the INVITE, or the OFFER), to send again.
    opening: Option<IceSignal>,
}

impl IceSession {
    fn new(session: u64, controlling: bool, now: Instant) -> Self {
        Self {
            session,
            controlling,
            phase: if controlling {
                IcePhase::Inviting
            } else {
                IcePhase::Checking
            },
            started: now,
            first_local: None,
            first_remote: None,
            first_pair: None,
            pair: None,
            rtt: None,
            opening: None,
        }
    }

    /// The session number both sides' signals carry.
    pub(super) fn session(&self) -> u64 {
        self.session
    }

    /// The selected pair stopped answering: it is proven no more.
    pub(super) fn pair_lost(&mut self) {
        if self.phase == IcePhase::Connected {
            self.phase = IcePhase::Checking;
        }
    }

    /// Whether a pair worked in this session and stopped answering (or the agent failed
    /// after it).
    pub(super) fn lost_pair(&self) -> bool {
        self.first_pair.is_some() && self.phase != IcePhase::Connected
    }

    /// Whether the agents proved a direct pair that has not stopped answering since.
    pub(super) fn pair_works(&self) -> bool {
        self.phase == IcePhase::Connected && self.pair.is_some_and(|(_, _, k)| k != IceKind::Relay)
    }

    /// Status, with `connected_since` the instant the peer's session became usable.
    pub(super) fn status(&self, connected_since: Option<Instant>) -> IceStatus {
        let since = |a: Option<Instant>, b: Option<Instant>| {
            a.zip(b).map(|(a, b)| b.saturating_duration_since(a))
        };
        let up = connected_since.filter(|c| *c >= self.started);
        IceStatus {
            controlling: self.controlling,
            phase: self.phase,
            pair: self.pair,
            rtt: self.rtt,
            stages: ConnectStages {
                signaling: since(self.first_local, self.first_remote),
                checks: since(self.first_remote.or(Some(self.started)), self.first_pair),
                handshake: since(
                    self.first_pair,
                    up.map(|u| u.max(self.first_pair.unwrap_or(u))),
                ),
                total: since(Some(self.started), up),
            },
        }
    }
}

/// A random ICE credential of `len` letters and digits.
fn credential(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            let i = rng.next_u32() as usize % ALPHABET.len();
            char::from(ALPHABET[i])
        })
        .collect()
}

impl BauxiteNode {
    /// Turns ICE on (or off): from now on [`replace_peers`](Self::replace_peers) starts
    /// a session with every new peer this node controls, and [`poll_ice`](Self::poll_ice)
    /// has work for the shell.
    pub fn enable_ice(&mut self, on: bool) {
        self.ice_enabled = on;
    }

    /// Whether ICE is on.
    pub fn ice_enabled(&self) -> bool {
        self.ice_enabled
    }

    /// The next thing the shell must do for ICE, if any.
    pub fn poll_ice(&mut self) -> Option<IceAction> {
        self.ice_actions.pop_front()
    }

    /// Whether this node controls the ICE session with `peer` (the lower peer ID does).
    pub(super) fn ice_controls(&self, peer: PeerId) -> bool {
        self.peer_id() < peer
    }

    pub(super) fn send_signal(&mut self, peer: PeerId, session: u64, signal: IceSignal) {
        let kind = signal.kind();
        let payload = SignedSignal::seal(&self.identity, peer, session, signal).encode();
        self.ice_actions.push_back(IceAction::Signal {
            peer,
            kind,
            payload,
        });
    }

    /// Starts a session with `peer` if ICE is on, this node controls, and none runs:
    /// creates the agent and sends the INVITE. The other side waits for our INVITE, and
    /// sends a BYE first: if the controlling side still holds a session from before this
    /// node (re)started, it invites again instead of checking against credentials that
    /// are gone.
    pub fn ice_begin(&mut self, now: Instant, peer: PeerId) -> Result<(), Error> {
        if !self.ice_enabled {
            return Ok(());
        }
        let state = self.peers.get(&peer).ok_or(Error::UnknownPeer(peer))?;
        if state.ice.is_some() {
            return Ok(());
        }
        if !self.ice_controls(peer) {
            self.send_signal(peer, 0, IceSignal::Bye);
            return Ok(());
        }
        let session = self.rng.next_u64();
        let (ufrag, pwd) = (credential(&mut self.rng, 16), credential(&mut self.rng, 32));
        self.open_session(
            now,
            peer,
            IceSession::new(session, true, now),
            ufrag.clone(),
            pwd.clone(),
        );
        let invite = IceSignal::Invite { ufrag, pwd };
        if let Some(s) = self.peers.get_mut(&peer).and_then(|s| s.ice.as_mut()) {
            s.opening = Some(invite.clone());
        }
        self.send_signal(peer, session, invite);
        Ok(())
    }

    /// Records a new session, asks for its agent, and starts the handshake on TURN while
    /// the checks run when the peer has a TURN path.
    fn open_session(
        &mut self,
        now: Instant,
        peer: PeerId,
        session: IceSession,
        ufrag: String,
        pwd: String,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let controlling = session.controlling;
        if state.ice.replace(session).is_some() {
            self.ice_actions.push_back(IceAction::Close { peer });
        }
        self.ice_actions.push_back(IceAction::Create {
            peer,
            controlling,
            ufrag,
            pwd,
        });
        if !self.is_connected(peer, now)
            && let Err(error) = self.connect(now, peer)
        {
            tracing::debug!(%peer, %error, "no handshake while ICE starts");
        }
    }

    /// A signal from `from` through the hub (`payload` as it came). Refused (with the
    /// reason) when its signature does not verify under `from`'s listed key, when it
    /// breaks the roles (an INVITE from the higher ID), or names another session.
    pub fn handle_ice_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        payload: &[u8],
    ) -> Result<(), Error> {
        let refuse = |problem: String| Error::Ice {
            peer: from,
            action: "accept a signal",
            problem,
        };
        let key = self
            .registry
            .by_id(from)
            .ok_or(Error::UnknownPeer(from))?
            .signing_public;
        let (session, signal) = SignedSignal::decode(payload)
            .and_then(|s| s.open(from, &key, self.peer_id()))
            .map_err(|reason| refuse(reason.to_string()))?;
        if !self.ice_enabled {
            return Ok(());
        }
        let current = self
            .peers
            .get(&from)
            .and_then(|s| s.ice.as_ref())
            .map(|s| s.session);
        match signal {
            IceSignal::Invite { ufrag, pwd } => {
                if self.ice_controls(from) {
                    return Err(refuse(
                        "an INVITE from the higher peer ID: we invite".into(),
                    ));
                }
                if current == Some(session) {
                    // The same INVITE again (our BYE crossed it): the session runs.
                    return Ok(());
                }
                let (lu, lp) = (credential(&mut self.rng, 16), credential(&mut self.rng, 32));
                self.open_session(
                    now,
                    from,
                    IceSession::new(session, false, now),
                    lu.clone(),
                    lp.clone(),
                );
                self.send_signal(from, session, IceSignal::Offer { ufrag: lu, pwd: lp });
                self.send_signal(from, session, IceSignal::Answer);
                self.ice_actions.push_back(IceAction::Start {
                    peer: from,
                    ufrag,
                    pwd,
                });
            }
            IceSignal::Bye if self.ice_controls(from) => {
                // The controlled side (re)started or gave up. While our INVITE is
                // unanswered it goes again, the same (the peer may have refused it before
                // it knew us; if not, it ignores the copy); a session it answered before
                // is gone on its side: a new one.
                let pending = self
                    .peers
                    .get(&from)
                    .and_then(|s| s.ice.as_ref())
                    .filter(|s| s.phase == IcePhase::Inviting)
                    .map(|s| (s.session, s.opening.clone()));
                match pending {
                    Some((session, Some(invite))) => self.send_signal(from, session, invite),
                    _ => {
                        self.ice_restart_by_peer(now, from);
                        self.ice_close(from);
                        self.ice_begin(now, from)?;
                    }
                }
            }
            _ if current != Some(session) => {
                return Err(refuse(format!("session {session} is not the current one")));
            }
            IceSignal::Offer { ufrag, pwd } => {
                if !self.ice_controls(from) {
                    return Err(refuse("an OFFER to the controlled side".into()));
                }
                if let Some(s) = self.peers.get_mut(&from).and_then(|s| s.ice.as_mut())
                    && s.phase == IcePhase::Inviting
                {
                    s.phase = IcePhase::Checking;
                    self.ice_actions.push_back(IceAction::Start {
                        peer: from,
                        ufrag,
                        pwd,
                    });
                }
            }
            IceSignal::Answer => {}
            IceSignal::Candidate(line) => {
                if let Some(s) = self.peers.get_mut(&from).and_then(|s| s.ice.as_mut()) {
                    s.first_remote.get_or_insert(now);
                }
                self.ice_actions
                    .push_back(IceAction::RemoteCandidate { peer: from, line });
            }
            IceSignal::Bye => self.ice_close(from),
        }
        Ok(())
    }

    /// Ends the ICE session with `peer` (its path stays as it is).
    pub(super) fn ice_close(&mut self, peer: PeerId) {
        if self
            .peers
            .get_mut(&peer)
            .and_then(|s| s.ice.take())
            .is_some()
        {
            self.metrics.connect_stages.set(peer, None);
            self.ice_actions.push_back(IceAction::Close { peer });
        }
    }

    /// An agent's report about `peer`.
    pub fn handle_ice(&mut self, now: Instant, peer: PeerId, report: IceReport) {
        let Some(s) = self.peers.get_mut(&peer).and_then(|s| s.ice.as_mut()) else {
            return;
        };
        let session = s.session;
        match report {
            IceReport::LocalCandidate(line) => {
                s.first_local.get_or_insert(now);
                self.send_signal(peer, session, IceSignal::Candidate(line));
            }
            IceReport::GatheringDone => {}
            IceReport::Disconnected => {
                // The pair is proven no more: the relay ladder carries the traffic while
                // a new session checks every pair again.
                if s.phase == IcePhase::Connected {
                    self.ice_pair_lost(now, peer, "the agent's pair stopped answering");
                }
            }
            IceReport::Selected {
                local,
                remote,
                remote_kind,
                rtt,
            } => {
                s.first_pair.get_or_insert(now);
                s.phase = IcePhase::Connected;
                s.pair = Some((local, remote, remote_kind));
                s.rtt = rtt.or(s.rtt);
                // A pair into the mesh's own addresses would route the mesh over itself
                // (a peer's agent gathered its TUN address): never a path.
                let into_mesh = match remote.ip() {
                    std::net::IpAddr::V4(ip) => {
                        self.registry.by_ip(crate::VirtualIp::from(ip)).is_some()
                    }
                    std::net::IpAddr::V6(_) => false,
                };
                if remote_kind != IceKind::Relay && !into_mesh {
                    self.take_pair(now, peer, remote);
                }
                self.ice_gauges(peer);
            }
            IceReport::Failed => {
                let had_pair = s.first_pair.is_some();
                s.phase = IcePhase::Failed;
                let restarted = self
                    .peers
                    .get(&peer)
                    .is_some_and(|s| s.ice_restarts.restarted());
                if had_pair || restarted {
                    // A pair worked on this path once (or we are restarting because one
                    // stopped): the network changed under us, so check again, bounded.
                    self.ice_pair_lost(now, peer, "the agent failed after a pair worked");
                }
                self.ice_failed(now, peer);
            }
        }
    }

    /// Publishes `peer`'s connect stages to the metrics (forgets them without a session).
    pub(super) fn ice_gauges(&self, peer: PeerId) {
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        // Without a session there is nothing to publish (closing one removed its gauge).
        if let Some(ice) = state.ice.as_ref() {
            let stages = ice.status(state.measured.connected_since).stages;
            self.metrics.connect_stages.set(peer, Some(stages));
        }
    }

    /// A working pair to `remote`: the peer's direct path from now on.
    fn take_pair(&mut self, now: Instant, peer: PeerId, remote: SocketAddr) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.ice_restarts.pair_works();
        if let Some(tunnel) = state.tunnel.as_mut() {
            tunnel.endpoint_known();
        }
        if state.path.direct().map(|d| d.addr) != Some(remote) {
            state.path.set_direct(Some(remote));
            state.pmtu = crate::path::Pmtu::default();
            self.metrics.path_mtu.set(peer, None);
        }
        if state.path.on_hub() {
            state.path.set_hub(false);
            self.events.push_back(Event::HubRelay {
                peer,
                active: false,
            });
        }
        if state.path.on_turn() {
            state.path.set_on_turn(false);
            self.events.push_back(Event::TurnRelay {
                peer,
                active: false,
            });
        }
        tracing::info!(%peer, %remote, "ICE pair works: direct path");
        if self.is_connected(peer, now) {
            // Tell the peer at once, on the new path.
            self.control.push_back(Control::DirectProbe { peer });
        } else if let Err(error) = self.redial(now, peer) {
            tracing::debug!(%peer, %error, "no handshake on the ICE pair");
        }
    }

    /// No pair works: TURN now, not after `turn_after`, when the peer has a TURN path.
    /// Without one the relay ladder decides: the peer's TURN address may still come (it
    /// reaches us through the topology, after the agents may have given up), and the
    /// ladder moves the peer onto TURN as soon as it does, or onto the hub after
    /// `hub_relay_after`, from where it still moves up to TURN.
    fn ice_failed(&mut self, now: Instant, peer: PeerId) {
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        let (has_turn, on_turn, on_hub) = (
            state.path.get().has_turn(),
            state.path.on_turn(),
            state.path.on_hub(),
        );
        // A session already up on a direct path that answers (the hub's candidates were
        // dialled before ICE ran, or ICE gave up on pairs the peer's router does not let
        // it check) keeps that path: a failed agent says nothing against it.
        let direct_works =
            !on_turn && !on_hub && state.measured.connected_since.is_some() && state.hub.answered();
        if direct_works {
            return;
        }
        if has_turn && !on_turn && !on_hub {
            self.go_turn(now, peer, "ICE found no direct pair");
        }
    }
}
