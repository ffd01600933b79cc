//! `HubConnector`: the daemon's side of the hub. It keeps an mTLS gRPC channel to the hub,
//! confirms the node's registration, reports where the node can be dialled (its
//! advertised endpoint, its interface addresses and its UDP port, see [`crate::candidates`])
//! once the first topology snapshot is in the peer table, turns the topology and policy
//! streams into [`Query::ReplacePeers`] and [`Query::SetPolicy`] for the shell (the only
//! owner of the node), reports the node's counters every `report_interval`, and
//! reconnects with [`Backoff`] when the hub goes away. Its standing with the hub is
//! published as a [`HubState`] for `bauxite status`.
//!
//! Revocation: when the hub refuses a call with [`Refusal::Revoked`] in the status details
//! (never inferred from the status code or text: a bare `PERMISSION_DENIED` is a generic
//! error and gets a reconnect), the connector logs an error, empties the peer table (every
//! session torn down), publishes [`HubState::Revoked`] and stops; the daemon then exits
//! with [`EXIT_REVOKED`](crate::run_cmd::EXIT_REVOKED), which the systemd unit does not
//! restart.
//!
//! Certificate renewal: on every connection, and then on a timer, the connector renews
//! the node's client certificate when [`Renewal`] says it is due (a third of its validity
//! left, or 7 days), over the same mTLS channel (`RenewCertificate`, proof signed by the
//! node's identity key). The new certificate is written atomically to `certs_dir/node.crt`
//! (temp file, fsync, rename, fsync of the directory; mode 0644, the key is untouched),
//! published to the update agent, and used at once: the connector reconnects with it.
//! A failure (the hub down, a write error) is retried with jittered backoff; the old
//! certificate can still renew while unexpired, so a lost answer never locks the node out.
//! A [`Refusal::Revoked`] answer is handled like any other revocation.
//!
//! Invariant: the connector never touches the node; every change goes through the shell's
//! query channel and is applied between two batches of packets.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use bauxite_conduit::identity::Identity;
use bauxite_conduit::io::{Query, clock};
use bauxite_conduit::policy::Policy;
use bauxite_conduit::{Metrics, PeerId};
use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::client::{HubClient, NodeCredentials, peers_from_snapshot};
use bauxite_dispatch_api::pki::{LeafFacts, files};
use bauxite_dispatch_api::proto::node::{
    ConfirmProvisionRequest, Metric, PolicyRequest, ReportMetricsRequest, SetEndpointRequest,
    TopologySnapshot, TurnCredentialsRequest,
};
use bauxite_dispatch_api::replicas::Replicas;
use tokio::sync::{mpsc, watch};

use crate::candidates::{self, MeshExclusion};
use crate::config::HubConfig;
use crate::hub_state::{CertState, HubState, stamp};
use crate::renewal::Renewal;

/// A timer that does not fire in practice.
fn far_future() -> Duration {
    Duration::from_secs(365 * 86_400)
}

/// Whether the TURN task published a new relayed address (`false`: it is gone);
/// pending forever without one.
async fn relayed_changed(rx: &mut Option<watch::Receiver<Option<SocketAddr>>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// First reconnect delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A capped exponential backoff with jitter, sans IO: the caller sleeps.
///
/// The `n`th delay after a reset is drawn uniformly from `[d/2, d]` where
/// `d = min(cap, base * 2^n)`, so a fleet that lost its hub at the same instant does not
/// reconnect in lockstep. The jitter comes from a seeded generator (same seed, same
/// schedule).
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    /// A schedule starting at `base`, never above `cap`, jittered from `seed`.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
            state: seed,
        }
    }

    /// The delay before the next attempt; each call doubles the ceiling up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32 << self.attempt.min(20))
            .unwrap_or(self.cap)
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            self.next_u64() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the first delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// splitmix64.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How one connection to the hub ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The hub refused this node with [`Refusal::Revoked`]: stop for good.
    Revoked(String),
    /// The connection or a stream failed: try again after a delay.
    Lost(String),
    /// The certificate was renewed: reconnect at once with the new one.
    Renewed,
    /// The shell stopped: nothing left to feed.
    ShellGone,
}

fn from_status(status: &tonic::Status, what: &str) -> End {
    match Refusal::from_status(status) {
        Some(Refusal::Revoked) => End::Revoked(status.message().to_string()),
        // The client's one-line wording: a refusal's meaning, or a lost connection's cause.
        _ => End::Lost(format!(
            "{what}: {}",
            bauxite_dispatch_api::Error::from(status.clone())
        )),
    }
}

fn from_error(error: bauxite_dispatch_api::Error, what: &str) -> End {
    match error {
        bauxite_dispatch_api::Error::Refused {
            refusal: Refusal::Revoked,
            message,
        } => End::Revoked(message),
        bauxite_dispatch_api::Error::Rpc(status) => from_status(&status, what),
        other => End::Lost(format!("{what}: {other}")),
    }
}

/// How long until Unix second `at` (zero if it passed); `None` for no instant.
fn until_unix(at: Option<u64>) -> Option<Duration> {
    let now = clock::unix_nanos() / 1_000_000_000;
    // One second late: the record is refused from `at` on, so the re-screen must not run before it.
    at.map(|at| Duration::from_secs(at.saturating_sub(now).saturating_add(1)))
}

/// Parses a hub policy document: empty means "no policy" (allow all).
pub fn parse_policy(json: &str) -> Result<Option<Policy>, serde_json::Error> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(json).map(Some)
}

/// The connector task's inputs.
#[derive(Debug)]
pub struct HubConnector {
    /// Where and how to connect.
    pub config: HubConfig,
    /// The node's mTLS files, loaded (and their modes checked) once at start: a local
    /// file problem is refused there, never retried here as if the hub were down. The
    /// connector replaces them when it renews the certificate (the update agent reads
    /// them from here on every connect).
    pub credentials: watch::Sender<NodeCredentials>,
    /// The node's identity, which signs the renewal proof.
    pub identity: Arc<Identity>,
    /// Where the connector publishes the certificate's expiry and renewal for `status`.
    pub cert: watch::Sender<Option<CertState>>,
    /// This node (skipped in topology snapshots).
    pub me: PeerId,
    /// The node's counters, reported to the hub.
    pub metrics: Arc<Metrics>,
    /// The shell's query channel.
    pub queries: mpsc::Sender<Query>,
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// The node's bound UDP address (its port is reported; a specific IP limits the
    /// addresses reported to that one).
    pub listen: SocketAddr,
    /// The mesh's own addresses, never reported as underlay addresses.
    pub mesh: MeshExclusion,
    /// Where the connector publishes its standing with the hub.
    pub state: watch::Sender<Option<HubState>>,
    /// Where the hub's own mesh node is (`Peer.hub`), for the update agent.
    pub hub_peer: watch::Sender<Option<bauxite_conduit::VirtualIp>>,
    /// The node's server-reflexive address as the hub's STUN answers show it
    /// ([`Shell::reflexive`](bauxite_conduit::io::Shell::reflexive)), reported to the hub.
    pub reflexive: watch::Receiver<Option<SocketAddr>>,
    /// The ROS 2 discovery server's gauges, reported with the counters when it runs.
    pub ros: Option<crate::ros_cmd::RosGauges>,
    /// Where the connector publishes the discovery servers the topology announces.
    pub ros_servers: watch::Sender<Vec<bauxite_citadel::ServerAddr>>,
    /// The operator lock, when the node pins operator keys: only peers with a valid
    /// operator-signed key record reach the shell ([`crate::operator_lock`]).
    pub lock: Option<crate::operator_lock::LockSetup>,
    /// The shell's hub-relay port ([`Shell::hub_relay`](bauxite_conduit::io::Shell::hub_relay)):
    /// the connector runs the hub's data channel with it on every connection.
    pub relay: Option<crate::hub_relay::RelayLink>,
    /// The shell's ICE signaling port ([`Shell::enable_ice`](bauxite_conduit::io::Shell::enable_ice)):
    /// the connector runs the hub's `ExchangeCandidates` stream with it on every connection.
    pub signals: Option<crate::hub_signal::SignalLink>,
    /// The TURN task ([`crate::turn`]): the connector hands it the hub's credentials,
    /// publishes its relayed address and tells it the peers' IPs to permit.
    pub turn: Option<crate::turn::TurnLink>,
}

impl HubConnector {
    /// Runs until the node is revoked or the shell stops; reconnects on every other error.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP, self.seed);
        let mut renewal = Renewal::new(self.seed.rotate_left(17) ^ 0x5eed);
        // The topology held, kept across connections: each new stream (to this replica or
        // another) resumes from its version with one delta instead of the whole fleet.
        let mut follower = bauxite_dispatch_api::topology::TopologyFollower::default();
        let mut replicas = Replicas::new(
            self.config.urls.clone(),
            &self.config.url,
            self.seed.rotate_left(29),
        );
        self.state.send_replace(Some(HubState::Connecting {
            url: self.config.url.clone(),
            since: stamp(clock::unix_nanos()),
        }));
        loop {
            // Every session talks to one replica: `config.url` names it for the session.
            self.config.url = replicas.current().to_owned();
            let url = self.config.url.clone();
            self.publish_cert(&renewal, None);
            match self
                .session(&mut backoff, &mut renewal, &mut follower)
                .await
            {
                End::Renewed => continue,
                End::Revoked(reason) => {
                    tracing::error!(
                        hub = %url,
                        %reason,
                        "this node was revoked by the hub; dropping every peer and no longer reconnecting (re-join with `bauxite join --force`)"
                    );
                    let _ = self.queries.send(Query::ReplacePeers(Vec::new())).await;
                    self.state.send_replace(Some(HubState::Revoked {
                        url,
                        since: stamp(clock::unix_nanos()),
                        reason,
                    }));
                    return;
                }
                End::ShellGone => return,
                End::Lost(reason) => {
                    if matches!(*self.state.borrow(), Some(HubState::Connected { .. })) {
                        replicas.connected();
                    }
                    let now = stamp(clock::unix_nanos());
                    self.state.send_modify(|state| {
                        *state = Some(HubState::lost(state.as_ref(), &url, &now, reason.clone()));
                    });
                    // The next replica at once; the backoff only once every one failed.
                    if let Some(next) = replicas.fail_over() {
                        tracing::warn!(hub = %url, %reason, next = %next, "hub connection lost; trying the next hub replica");
                        continue;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(hub = %url, %reason, ?delay, "hub connection lost; reconnecting");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Where other nodes may dial this node, as reported to the hub.
    fn endpoint_report(&self, reflexive: Option<SocketAddr>) -> SetEndpointRequest {
        let hub_on_loopback = candidates::hub_on_loopback(&self.config.url);
        let local = candidates::local_candidates(
            &candidates::interfaces(),
            self.listen,
            hub_on_loopback,
            &self.mesh,
        );
        SetEndpointRequest {
            endpoint: self
                .config
                .advertise
                .map(|a| a.to_string())
                .unwrap_or_default(),
            local_addresses: local.iter().map(ToString::to_string).collect(),
            listen_port: candidates::reportable_port(self.listen, hub_on_loopback),
            reflexive_addresses: reflexive.iter().map(ToString::to_string).collect(),
            relay_addresses: self
                .turn
                .as_ref()
                .and_then(|t| *t.relayed.borrow())
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Reports where this node can be dialled; returns what others will dial.
    async fn report_endpoint(
        &self,
        hub: &HubClient,
        reflexive: Option<SocketAddr>,
    ) -> Result<Vec<String>, End> {
        let answer = hub
            .topology()
            .set_endpoint(self.endpoint_report(reflexive))
            .await
            .map_err(|s| from_status(&s, "set endpoint"))?
            .into_inner();
        if answer.candidates.is_empty() {
            tracing::warn!(
                listen = %self.listen,
                "no address another node could dial: other nodes reach this one only after it dials them; \
                 set `advertise` in [hub] to an address they can reach, or listen on a reachable address"
            );
        } else {
            tracing::info!(candidates = ?answer.candidates, observed = %answer.observed_ip, "other nodes dial this node at these addresses, in order");
        }
        Ok(answer.candidates)
    }

    async fn send(&self, query: Query) -> Result<(), End> {
        self.queries.send(query).await.map_err(|_| End::ShellGone)
    }

    /// Hands a topology snapshot to the shell; a snapshot that does not convert is
    /// refused and the previous peer table kept. When the hub's mesh endpoint differs
    /// from `stun` (`None` forces it), the shell is told to ask it for this node's
    /// server-reflexive address, and `stun` is updated.
    ///
    /// With the operator lock on, the snapshot is screened first (refused peers never
    /// reach the shell) and the earliest expiry of an accepted record is returned: the
    /// caller screens the same snapshot again then.
    async fn apply_topology(
        &self,
        snapshot: &TopologySnapshot,
        hub_udp: Option<SocketAddr>,
        stun: &mut Option<SocketAddr>,
    ) -> Result<Option<u64>, End> {
        let screened = self
            .lock
            .as_ref()
            .map(|lock| lock.apply(snapshot, clock::unix_nanos() / 1_000_000_000));
        let next_expiry = screened.as_ref().and_then(|s| s.next_expiry);
        let snapshot = screened.as_ref().map_or(snapshot, |s| &s.snapshot);
        // Discovery servers only among the peers the lock let through.
        let ros = crate::ros_cmd::RosGauges::servers_in(snapshot);
        self.ros_servers.send_if_modified(|v| {
            let changed = *v != ros;
            *v = ros;
            changed
        });
        match peers_from_snapshot(snapshot, Some(self.me)) {
            Ok(mut peers) => {
                let server = crate::hub_peer::apply(snapshot, &mut peers, hub_udp, &self.hub_peer);
                if server.is_some() && server != *stun {
                    *stun = server;
                    self.send(Query::Stun(server)).await?;
                }
                tracing::info!(
                    version = snapshot.version,
                    peers = peers.len(),
                    "topology from the hub"
                );
                if let Some(turn) = &self.turn {
                    // A peer's packets reach the TURN server from its public address: its
                    // NAT's IP (server-reflexive, observed) or its advertised endpoint, on
                    // whatever port. Host addresses are left out: coturn drops an
                    // allocation whose send to an unroutable address fails.
                    use bauxite_conduit::peers::CandidateKind;
                    let addrs: Vec<SocketAddr> = peers
                        .iter()
                        .flat_map(|p| {
                            p.endpoint.into_iter().chain(
                                p.candidate_kinds
                                    .iter()
                                    .filter(|(_, k)| {
                                        matches!(
                                            k,
                                            CandidateKind::ServerReflexive
                                                | CandidateKind::Observed
                                        )
                                    })
                                    .map(|(a, _)| *a),
                            )
                        })
                        .collect();
                    turn.permits.send_replace(addrs);
                }
                if let Some(relay) = &self.relay {
                    relay.set_relay_hubs(snapshot);
                }
                self.send(Query::ReplacePeers(peers)).await?;
                Ok(next_expiry)
            }
            Err(error) => {
                tracing::warn!(version = snapshot.version, %error, "topology refused; keeping the previous one");
                Ok(None)
            }
        }
    }

    fn publish_connected(&self, since: &str, candidates: Vec<String>) {
        self.state.send_replace(Some(HubState::Connected {
            url: self.config.url.clone(),
            since: since.to_string(),
            candidates,
        }));
    }

    /// Publishes the current certificate's expiry and renewal time for `status`.
    fn publish_cert(&self, renewal: &Renewal, last_error: Option<String>) {
        let facts = LeafFacts::from_pem(&self.credentials.borrow().cert_pem).ok();
        let state = facts.map(|facts| CertState {
            expires: stamp(facts.not_after.saturating_mul(1_000_000_000)),
            renews_from: stamp(renewal.due_at(&facts).saturating_mul(1_000_000_000)),
            last_error,
        });
        self.cert.send_replace(state);
    }

    /// Seconds until `credentials`' certificate is due for renewal (`None`: unreadable,
    /// so never renewed here; precheck reports it).
    fn renew_in(&self, credentials: &NodeCredentials, renewal: &Renewal) -> Option<Duration> {
        let facts = LeafFacts::from_pem(&credentials.cert_pem).ok()?;
        let now = clock::unix_nanos() / 1_000_000_000;
        Some(Duration::from_secs(
            renewal.due_at(&facts).saturating_sub(now),
        ))
    }

    /// Renews the certificate over `hub`. `Err(End::Renewed)` once the new one is on disk
    /// (the caller reconnects with it), `Err(End::Revoked)` for a revoked node, and `Ok`
    /// after a failure, with the retry scheduled in `renewal`.
    async fn renew(
        &self,
        hub: &HubClient,
        credentials: &NodeCredentials,
        renewal: &mut Renewal,
    ) -> Result<(), End> {
        let now = clock::unix_nanos() / 1_000_000_000;
        let error = match bauxite_dispatch_api::client::renew(hub, &self.identity, credentials)
            .await
        {
            Ok(renewed) => {
                let path = self.config.certs_dir.join("node.crt");
                match files::write_atomic(&path, renewed.cert_pem.as_bytes(), 0o644) {
                    Ok(()) => {
                        renewal.succeeded(now);
                        let expires = LeafFacts::from_pem(&renewed.cert_pem)
                            .map(|f| stamp(f.not_after.saturating_mul(1_000_000_000)))
                            .unwrap_or_default();
                        self.credentials.send_replace(renewed);
                        self.publish_cert(renewal, None);
                        tracing::info!(path = %path.display(), %expires, "hub certificate renewed; reconnecting with it");
                        return Err(End::Renewed);
                    }
                    Err(e) => format!("the renewed certificate could not be written: {e}"),
                }
            }
            Err(bauxite_dispatch_api::Error::Refused {
                refusal: Refusal::Revoked,
                message,
            }) => return Err(End::Revoked(message)),
            Err(e) => e.to_string(),
        };
        let delay = renewal.failed(now);
        tracing::warn!(%error, retry_in = ?delay, "hub certificate renewal failed; retrying later");
        self.publish_cert(renewal, Some(error));
        Ok(())
    }

    /// One connection: connect, advertise, stream until something fails.
    /// Asks the hub for TURN credentials and hands them to the TURN task; returns when
    /// to ask again (`None`: no TURN task, or the hub has no TURN server).
    async fn refresh_turn(&self, hub: &HubClient) -> Result<Option<Duration>, End> {
        let Some(turn) = &self.turn else {
            return Ok(None);
        };
        let answer = hub
            .topology()
            .get_turn_credentials(TurnCredentialsRequest {})
            .await
            .map_err(|s| from_status(&s, "get TURN credentials"))?
            .into_inner();
        if answer.urls.is_empty() {
            // Only the configured servers; unchanged, the allocation stays.
            turn.servers.send_if_modified(|s| {
                let changed = *s != turn.configured;
                s.clone_from(&turn.configured);
                changed
            });
            return Ok(None);
        }
        let mut servers =
            crate::turn::servers(&answer.urls, &answer.username, &answer.password).await;
        servers.extend(turn.configured.iter().cloned());
        tracing::info!(urls = ?answer.urls, expires_unix = answer.expires_unix, "TURN credentials from the hub");
        turn.servers.send_replace(servers);
        let left = until_unix(Some(answer.expires_unix)).unwrap_or(Duration::ZERO);
        Ok(Some((left * 3 / 4).max(Duration::from_secs(30))))
    }

    async fn session(
        &self,
        backoff: &mut Backoff,
        renewal: &mut Renewal,
        follower: &mut bauxite_dispatch_api::topology::TopologyFollower,
    ) -> End {
        match self.session_inner(backoff, renewal, follower).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn session_inner(
        &self,
        backoff: &mut Backoff,
        renewal: &mut Renewal,
        follower: &mut bauxite_dispatch_api::topology::TopologyFollower,
    ) -> Result<std::convert::Infallible, End> {
        let credentials = self.credentials.borrow().clone();
        let hub = HubClient::connect_mtls(&self.config.url, &credentials)
            .await
            .map_err(|e| from_error(e, "connect"))?;
        // A due certificate is renewed first: if an earlier renewal reached the hub but
        // not the disk, only renewal still accepts the old certificate.
        if self.renew_in(&credentials, renewal) == Some(Duration::ZERO) {
            self.renew(&hub, &credentials, renewal).await?;
        }
        // The second phase of provisioning, in case `join` could not reach the hub after
        // writing the credentials; for a confirmed node it changes nothing.
        hub.provisioning()
            .confirm_provision(ConfirmProvisionRequest {})
            .await
            .map_err(|s| from_status(&s, "confirm registration"))?;
        // The peer table first, then where this node can be dialled: a peer that learns
        // our address dials us at once, and a handshake from a key we do not know yet is
        // refused — if that peer wins the simultaneous-initiation tie-break, it then
        // ignores our own initiation until its retry (seconds later).
        let mut topology = hub
            .topology()
            // After the first full snapshot, each change comes as what changed; a
            // reconnection names the version held and gets only what changed since.
            .stream_topology(follower.request())
            .await
            .map_err(|s| from_status(&s, "topology stream"))?
            .into_inner();
        // The hub's mesh node without an advertised endpoint is dialled here (hub_peer.rs).
        let hub_udp = crate::hub_peer::hub_udp_addr(&self.config.url).await;
        // The first topology may come in pages (or as one delta from the version held):
        // wait for the whole of it.
        let first = loop {
            let message = topology
                .message()
                .await
                .map_err(|s| from_status(&s, "topology stream"))?
                .ok_or_else(|| End::Lost("topology stream ended".into()))?;
            let complete = follower
                .push(message)
                .map_err(|e| End::Lost(e.to_string()))?;
            if let Some(first) = complete {
                break first.clone();
            }
        };
        // A new connection may mean a new NAT mapping: ask the hub's STUN again at once.
        let mut stun = None;
        let mut expiry = self.apply_topology(&first, hub_udp, &mut stun).await?;
        // Interface addresses are read again on every connection: DHCP and roaming
        // change them. The reflexive address follows when STUN answers (below).
        let mut reflexive = self.reflexive.clone();
        let current = *reflexive.borrow_and_update();
        let mut candidates = self.report_endpoint(&hub, current).await?;
        let mut policy = hub
            .policy()
            .stream_policy(PolicyRequest {})
            .await
            .map_err(|s| from_status(&s, "policy stream"))?
            .into_inner();
        // The data channel; a hub without it (or a failure to open it) costs only the
        // fallback, never the connection.
        let mut relay = match &self.relay {
            Some(link) => {
                link.open(&hub, self.me, &self.config.url, credentials.clone())
                    .await
            }
            None => None,
        };
        let mut signals = match &self.signals {
            Some(link) => link.open(&hub).await,
            None => None,
        };
        let mut metrics = hub.metrics();
        // TURN credentials, asked again when a quarter of their lifetime is left.
        let turn_in = self.refresh_turn(&hub).await?;
        let turn_timer = tokio::time::sleep(turn_in.unwrap_or(far_future()));
        tokio::pin!(turn_timer);
        let mut relayed = self.turn.as_ref().map(|t| t.relayed.clone());
        let mut report = tokio::time::interval(self.config.report_interval);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(hub = %self.config.url, advertise = ?self.config.advertise, "connected to the hub");
        let since = stamp(clock::unix_nanos());
        self.publish_connected(&since, candidates.clone());
        backoff.reset();
        // Far in the future when the certificate cannot be read (never renewed here).
        let far = Duration::from_secs(365 * 86_400);
        let renew_timer = tokio::time::sleep(self.renew_in(&credentials, renewal).unwrap_or(far));
        tokio::pin!(renew_timer);
        let expiry_timer = tokio::time::sleep(until_unix(expiry).unwrap_or(far));
        tokio::pin!(expiry_timer);
        loop {
            tokio::select! {
                () = &mut renew_timer => {
                    self.renew(&hub, &credentials, renewal).await?;
                    let next = self.renew_in(&credentials, renewal).unwrap_or(far);
                    renew_timer.set(tokio::time::sleep(next));
                }
                message = topology.message() => {
                    let update = message
                        .map_err(|s| from_status(&s, "topology stream"))?
                        .ok_or_else(|| End::Lost("topology stream ended".into()))?;
                    // A delta for another version means a message was lost: reconnecting
                    // starts again from a full snapshot.
                    let complete = follower
                        .push(update)
                        .map_err(|e| End::Lost(e.to_string()))?
                        .cloned();
                    let Some(current) = complete else { continue };
                    expiry = self.apply_topology(&current, hub_udp, &mut stun).await?;
                    expiry_timer.set(tokio::time::sleep(until_unix(expiry).unwrap_or(far)));
                }
                // An operator signature expired: the same topology, screened again.
                () = &mut expiry_timer => {
                    let current = follower.current().clone();
                    expiry = self.apply_topology(&current, hub_udp, &mut stun).await?;
                    expiry_timer.set(tokio::time::sleep(until_unix(expiry).unwrap_or(far)));
                }
                () = &mut turn_timer => {
                    let next = self.refresh_turn(&hub).await?;
                    turn_timer.set(tokio::time::sleep(next.unwrap_or(far_future())));
                }
                changed = relayed_changed(&mut relayed) => {
                    if !changed {
                        relayed = None;
                        continue;
                    }
                    let now = *reflexive.borrow();
                    let updated = self.report_endpoint(&hub, now).await?;
                    if updated != candidates {
                        candidates = updated;
                        self.publish_connected(&since, candidates.clone());
                    }
                }
                changed = reflexive.changed() => {
                    if changed.is_err() {
                        return Err(End::ShellGone);
                    }
                    let now = *reflexive.borrow_and_update();
                    let updated = self.report_endpoint(&hub, now).await?;
                    if updated != candidates {
                        candidates = updated;
                        self.publish_connected(&since, candidates.clone());
                    }
                }
                message = policy.message() => {
                    let document = message
                        .map_err(|s| from_status(&s, "policy stream"))?
                        .ok_or_else(|| End::Lost("policy stream ended".into()))?;
                    match parse_policy(&document.json) {
                        Ok(policy) => {
                            tracing::info!(version = document.version, set = policy.is_some(), "policy from the hub");
                            self.send(Query::SetPolicy(policy)).await?;
                        }
                        Err(error) => {
                            tracing::warn!(version = document.version, %error, "policy refused; keeping the previous one");
                        }
                    }
                }
                ended = crate::hub_signal::pump(&mut signals) => {
                    // Like the relay stream: the hub stopped it — reconnect.
                    return Err(End::Lost(ended));
                }
                ended = crate::hub_relay::pump(&mut relay) => {
                    // The relay stream ended while the others live: the hub stopped it
                    // (revocation or shutdown ends the other streams too) — reconnect.
                    return Err(End::Lost(ended));
                }
                _ = report.tick() => {
                    let paths = crate::path_metrics::from_shell(&self.queries).await;
                    let request = ReportMetricsRequest {
                        metrics: self
                            .metrics
                            .scalars()
                            .into_iter()
                            .map(|(name, _, value)| Metric { name: name.to_string(), value: value as f64 })
                            .chain(self.ros.iter().flat_map(|r| r.metrics()).map(|(name, value)| Metric { name: name.to_string(), value }))
                            .chain(paths.into_iter().map(|(name, value)| Metric { name: name.to_string(), value }))
                            .collect(),
                    };
                    metrics
                        .report_metrics(request)
                        .await
                        .map_err(|s| from_status(&s, "report metrics"))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_within_jitter() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        let mut b = Backoff::new(base, cap, 7);
        for n in 0..20u32 {
            let ceiling = (base * 2u32.pow(n.min(10))).min(cap);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {n}: {d:?} vs {ceiling:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn backoff_is_deterministic_per_seed_and_jittered_across_seeds() {
        let schedule = |seed| {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(schedule(1), schedule(1));
        assert_ne!(schedule(1), schedule(2));
    }

    #[test]
    fn backoff_survives_huge_attempt_counts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5), 0);
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
    }

    #[test]
    fn only_the_typed_refusal_means_revoked() {
        let revoked = Refusal::Revoked.to_status("node x was revoked");
        assert_eq!(
            from_status(&revoked, "x"),
            End::Revoked("node x was revoked".into())
        );
        // Through the client's error type too (as `connect`/`join` report it).
        let e = bauxite_dispatch_api::Error::from(revoked);
        assert_eq!(
            from_error(e, "x"),
            End::Revoked("node x was revoked".into())
        );
    }

    #[test]
    fn permission_denied_without_details_is_a_generic_error_that_reconnects() {
        let bare = tonic::Status::permission_denied("node x was revoked");
        assert!(matches!(from_status(&bare, "x"), End::Lost(_)));
        let e = bauxite_dispatch_api::Error::from(bare);
        assert!(matches!(from_error(e, "x"), End::Lost(_)));
        // Another typed refusal with the same code is not a revocation either.
        let other = Refusal::CertificateNotIssued.to_status("not yours");
        assert_eq!(other.code(), tonic::Code::PermissionDenied);
        assert!(matches!(from_status(&other, "x"), End::Lost(_)));
        let gone = tonic::Status::unavailable("down");
        assert!(matches!(from_status(&gone, "x"), End::Lost(_)));
    }

    #[test]
    fn empty_policy_is_allow_all_and_bad_policy_is_refused() {
        assert_eq!(parse_policy("").unwrap(), None);
        assert!(parse_policy("{\"rules\": []}").unwrap().is_some());
        assert!(parse_policy("{\"nonsense\": 1}").is_err());
    }
}
