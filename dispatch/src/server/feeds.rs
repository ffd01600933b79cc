//! `TopologyService` and `PolicyService`: snapshots first, then one message per change.
//!
//! Each stream runs in its own task that waits on the hub's watch channels; a slow client
//! never blocks the hub or another stream (each task owns a 2-message queue). A topology
//! client that asked for deltas gets, after its first full snapshot, one delta from the
//! version it holds to the newest on each wake (the hub's journal, shared by every stream:
//! N changes behind, one coalesced delta); one that fell further behind than the journal
//! gets a full snapshot again (a resync). A client that opens the stream naming the version
//! it already holds and its digest (a node reconnecting, to this replica or another) gets
//! one delta from it first, an empty one when it is current, instead of the full snapshot,
//! when the journal covers it. Other clients get the newest full snapshot and miss
//! intermediate versions. A
//! node's stream ends with `PERMISSION_DENIED` and [`Refusal::Revoked`] in the status details
//! as soon as the node is revoked, and with `UNAVAILABLE` as soon as the hub starts shutting
//! down.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::topology;

use super::auth;
use crate::clock::UnixTime;
use crate::hub::candidates::candidate_list;
use crate::hub::view::TopologyView;
use crate::hub::{Caller, Hub};
use crate::proto::node::policy_service_server::PolicyService;
use crate::proto::node::topology_service_server::TopologyService;
use crate::proto::node::{
    PolicyDocument, PolicyRequest, SetEndpointRequest, SetEndpointResponse, TopologyRequest,
    TopologySnapshot, TurnCredentials, TurnCredentialsRequest,
};

/// A server-streaming response.
pub type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves the topology feed, endpoint updates and TURN credentials.
pub struct Topology(pub Arc<Hub>, pub Option<Arc<crate::turn::TurnConfig>>);

/// Serves the policy document and its feed.
pub struct Policy(pub Arc<Hub>);

fn revoked(hub: &Hub, caller: Caller) -> bool {
    matches!(caller, Caller::Node(id) if !hub.is_active(id))
}

const REVOKED: &str = "this node was revoked; it must join again with a new identity";

/// Why a feed ends when the hub stops (nodes treat it like any lost connection).
pub(crate) const STOPPING: &str = "the hub is shutting down; reconnect later";

/// Resolves once the hub is shutting down (or gone).
pub(crate) async fn stopping(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // The borrow `wait_for` returns is dropped here, before the caller awaits anything.
    let _ = closing.wait_for(|c| *c).await.map(|_| ());
}

#[tonic::async_trait]
impl TopologyService for Topology {
    type StreamTopologyStream = Feed<TopologySnapshot>;

    async fn stream_topology(
        &self,
        request: Request<TopologyRequest>,
    ) -> Result<Response<Self::StreamTopologyStream>, Status> {
        let caller = auth::caller(&self.0, &request)?;
        let request = request.into_inner();
        let deltas = request.deltas;
        // What the client holds from an earlier stream (only meaningful with deltas).
        let resume = request
            .held_version
            .filter(|_| deltas)
            .map(|v| (v, request.held_digest));
        let hub = self.0.clone();
        let mut topology = hub.subscribe_topology();
        let mut closing = hub.closing();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            hub.metrics()
                .topology_streams
                .fetch_add(1, Ordering::Relaxed);
            // The version the client holds and its digest: what it named, then the last
            // complete version sent.
            let mut resuming = resume.is_some();
            let mut held: Option<(u64, Vec<u8>)> = resume;
            'feed: loop {
                // Marked seen before the journal is read: a change after this wakes us.
                let mut view = topology.borrow_and_update().clone();
                if revoked(&hub, caller) {
                    let _ = tx.send(Err(Refusal::Revoked.to_status(REVOKED))).await;
                    break;
                }
                if resuming && held.as_ref().is_some_and(|(v, _)| *v > view.version()) {
                    // It comes from a replica further on: catch up with the store first,
                    // rather than resend everything from an older version.
                    let _ = crate::hub::replica::blocking(|| hub.sync());
                    view = topology.borrow_and_update().clone();
                }
                let journal = held
                    .as_ref()
                    .filter(|_| deltas)
                    .and_then(|(v, digest)| hub.topology_delta_since(*v, digest));
                let mut outbox = match journal {
                    // Current: nothing to send, except to say so to a client that resumed
                    // (it waits for a complete version before going on).
                    Some(delta) if delta.version == delta.base_version && !resuming => {
                        Outbox::Deltas(None)
                    }
                    Some(delta) => Outbox::Deltas(Some(delta)),
                    // In pages, each cut from the shared version as it is sent: tonic keeps a
                    // stream's encode buffer as large as the largest message, and a stream
                    // that held its whole first topology would cost O(N) each.
                    None if deltas => Outbox::Pages {
                        after: None,
                        done: false,
                    },
                    None => Outbox::Full(Some(view.snapshot())),
                };
                if std::mem::take(&mut resuming) {
                    if matches!(outbox, Outbox::Deltas(Some(_))) {
                        hub.metrics()
                            .topology_resumed
                            .fetch_add(1, Ordering::Relaxed);
                    } else if let Some((version, _)) = &held {
                        tracing::debug!(
                            held = version,
                            current = view.version(),
                            journal_from = hub.topology_journal_start(),
                            "a stream could not resume (older than the journal, or other peers at that version): full snapshot"
                        );
                    }
                }
                while let Some(message) = outbox.next(&view) {
                    let complete =
                        (!message.more).then(|| (message.version, message.digest.clone()));
                    let page = message.base_version == message.version;
                    let counter = match (message.delta, page) {
                        (false, _) => Some(&hub.metrics().topology_snapshots_sent),
                        (true, false) => Some(&hub.metrics().topology_deltas_sent),
                        (true, true) => None,
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        break 'feed;
                    }
                    if complete.is_some() {
                        held = complete;
                    }
                    if let Some(counter) = counter {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::select! {
                    changed = topology.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                    () = stopping(&mut closing) => {
                        let _ = tx.send(Err(Status::unavailable(STOPPING))).await;
                        break;
                    }
                }
            }
            hub.metrics()
                .topology_streams
                .fetch_sub(1, Ordering::Relaxed);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn set_endpoint(
        &self,
        request: Request<SetEndpointRequest>,
    ) -> Result<Response<SetEndpointResponse>, Status> {
        let node = auth::node(&self.0, &request)?;
        let observed = request
            .extensions()
            .get::<super::tls::ConnInfo>()
            .map(|info| info.remote.ip().to_canonical());
        let report = request.into_inner();
        let endpoint = (!report.endpoint.is_empty()).then_some(report.endpoint);
        let candidates = candidate_list(
            observed,
            report.listen_port,
            &report.reflexive_addresses,
            &report.local_addresses,
            &report.relay_addresses,
        )?;
        self.0.set_endpoint(UnixTime::now(), node, endpoint)?;
        let (version, published) = self.0.set_candidates(node, candidates)?;
        if published.is_empty() {
            tracing::warn!(%node, "no address another node could dial; it can only be reached once it dials them");
        }
        Ok(Response::new(SetEndpointResponse {
            version,
            candidates: published.iter().map(ToString::to_string).collect(),
            observed_ip: observed.map(|ip| ip.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_turn_credentials(
        &self,
        request: Request<TurnCredentialsRequest>,
    ) -> Result<Response<TurnCredentials>, Status> {
        let node = auth::node(&self.0, &request)?;
        Ok(Response::new(
            self.turn_credentials(node, UnixTime::now().0),
        ))
    }
}

/// What a topology stream sends next for one version, one message at a time.
enum Outbox {
    /// The journal's one delta from the version the client holds.
    Deltas(Option<Arc<TopologySnapshot>>),
    /// The version's pages, after the peer `after`.
    Pages {
        after: Option<bauxite_conduit::PeerId>,
        done: bool,
    },
    /// The whole snapshot, for a client that did not ask for deltas.
    Full(Option<Arc<TopologySnapshot>>),
}

impl Outbox {
    fn next(&mut self, view: &TopologyView) -> Option<TopologySnapshot> {
        match self {
            Outbox::Deltas(delta) => delta.take().map(|d| (*d).clone()),
            Outbox::Full(full) => full.take().map(|f| (*f).clone()),
            Outbox::Pages { done: true, .. } => None,
            Outbox::Pages { after, done } => {
                let (page, next) = view.page(*after, topology::PAGE_PEERS);
                *done = next.is_none();
                *after = next;
                Some(page)
            }
        }
    }
}

impl Topology {
    /// Time-limited TURN credentials for `node` (none without TURN servers).
    fn turn_credentials(&self, node: bauxite_conduit::PeerId, now_unix: u64) -> TurnCredentials {
        let Some(turn) = &self.1 else {
            return TurnCredentials::default();
        };
        let c = turn.credentials(node, now_unix);
        TurnCredentials {
            urls: turn.urls.clone(),
            username: c.username,
            password: c.password,
            expires_unix: c.expires_unix,
        }
    }
}

#[tonic::async_trait]
impl PolicyService for Policy {
    type StreamPolicyStream = Feed<PolicyDocument>;

    async fn get_policy(
        &self,
        request: Request<PolicyRequest>,
    ) -> Result<Response<PolicyDocument>, Status> {
        auth::caller(&self.0, &request)?;
        Ok(Response::new((*self.0.policy()).clone()))
    }

    async fn stream_policy(
        &self,
        request: Request<PolicyRequest>,
    ) -> Result<Response<Self::StreamPolicyStream>, Status> {
        let caller = auth::caller(&self.0, &request)?;
        let hub = self.0.clone();
        let mut policy = hub.subscribe_policy();
        let mut topology = hub.subscribe_topology();
        let mut closing = hub.closing();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut send = true;
            loop {
                if revoked(&hub, caller) {
                    let _ = tx.send(Err(Refusal::Revoked.to_status(REVOKED))).await;
                    break;
                }
                if send {
                    let document = policy.borrow_and_update().clone();
                    if tx.send(Ok((*document).clone())).await.is_err() {
                        break;
                    }
                }
                // Topology changes only wake us to notice a revocation.
                tokio::select! {
                    changed = policy.changed() => { if changed.is_err() { break } send = true; }
                    changed = topology.changed() => { if changed.is_err() { break } send = false; }
                    () = tx.closed() => break,
                    () = stopping(&mut closing) => {
                        let _ = tx.send(Err(Status::unavailable(STOPPING))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
