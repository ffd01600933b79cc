//! The edge end of the hub's data channel (`RelayService.Relay`): mesh datagrams the
//! node routes through the hub (UDP blocked) go up the stream, relayed ones come down into
//! the shell.
//!
//! Across hub replicas, two relay-only nodes meet on the replica of the lower peer ID
//! ([`bauxite_dispatch_api::relay`]): a datagram for a lower peer whose topology entry
//! names another replica (`Peer.relay_hub`) goes up a *visit* stream opened there, on a
//! connection of its own with the same certificate. A visit stream opens with the first
//! datagram that needs it (both ends dial every new peer, so the higher one sends within
//! `hub_relay_after` of needing the relay), carries the peer's frames back down too, and
//! closes when no peer needs that replica any more or the hub session ends.
//!
//! Invariants: nothing here waits on a slow side — a full queue drops the datagram (the
//! session above is built for loss), and the hub's claim of who sent a datagram is passed
//! on but never trusted (the node authenticates the bytes). The streams live and die with
//! the connector's hub session.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bauxite_conduit::PeerId;
use bauxite_conduit::io::{HubRelayPort, RelayDatagram};
use bauxite_dispatch_api::client::{HubClient, NodeCredentials};
use bauxite_dispatch_api::proto::node::{RelayFrame, TopologySnapshot};
use bauxite_dispatch_api::relay::{RelayVia, VISIT_METADATA, relay_via};
use tokio::sync::{Mutex, MutexGuard, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// Frames waiting to go up the relay stream.
const UPLINK_QUEUE: usize = 1024;
/// Least time between two attempts to open a visit stream on one replica (one that
/// failed is not retried for every datagram).
const VISIT_RETRY: Duration = Duration::from_secs(1);

/// Where each peer holds its home relay stream (`Peer.relay_hub`), for peers that have one.
pub(crate) type RelayHubs = Arc<BTreeMap<PeerId, String>>;

/// The shell's relay port, shared by the connector's successive hub sessions.
#[derive(Debug)]
pub struct RelayLink {
    outbound: Mutex<mpsc::Receiver<RelayDatagram>>,
    inbound: mpsc::Sender<RelayDatagram>,
    relay_hubs: watch::Sender<RelayHubs>,
}

/// The peers' relay hubs named in `snapshot` (entries that are not a peer ID are skipped).
pub(crate) fn relay_hubs(snapshot: &TopologySnapshot) -> BTreeMap<PeerId, String> {
    snapshot
        .peers
        .iter()
        .filter(|p| !p.relay_hub.is_empty())
        .filter_map(|p| Some((PeerId::from_hex(&p.node_id)?, p.relay_hub.clone())))
        .collect()
}

/// The replicas `me`, at home on `home`, must visit to meet its peers (`relay_via`).
pub(crate) fn visits_needed(
    me: PeerId,
    home: &str,
    hubs: &BTreeMap<PeerId, String>,
) -> BTreeSet<String> {
    hubs.iter()
        .filter_map(|(peer, hub)| match relay_via(me, home, *peer, hub) {
            RelayVia::Home => None,
            RelayVia::Visit(url) => Some(url.to_owned()),
        })
        .collect()
}

impl RelayLink {
    /// Wraps the shell's port.
    pub fn new(port: HubRelayPort) -> Self {
        Self {
            outbound: Mutex::new(port.outbound),
            inbound: port.inbound,
            relay_hubs: watch::channel(RelayHubs::default()).0,
        }
    }

    /// Takes the peers' relay hubs from a (screened) topology snapshot.
    pub(crate) fn set_relay_hubs(&self, snapshot: &TopologySnapshot) {
        let hubs = relay_hubs(snapshot);
        self.relay_hubs.send_if_modified(|old| {
            let changed = **old != hubs;
            if changed {
                *old = Arc::new(hubs);
            }
            changed
        });
    }

    /// Opens the home relay stream on a new hub connection to `home` (the replica's URL);
    /// `me` and `credentials` open visit streams on other replicas. `None` (logged) when
    /// the hub does not offer the relay.
    pub(crate) async fn open(
        &self,
        hub: &HubClient,
        me: PeerId,
        home: &str,
        credentials: NodeCredentials,
    ) -> Option<RelayStream<'_>> {
        let (up, rx) = mpsc::channel(UPLINK_QUEUE);
        match hub.relay().relay(ReceiverStream::new(rx)).await {
            Ok(down) => {
                tracing::info!("hub relay stream open");
                Some(RelayStream {
                    outbound: self.outbound.lock().await,
                    inbound: &self.inbound,
                    up,
                    down: down.into_inner(),
                    me,
                    home: home.to_owned(),
                    credentials,
                    relay_hubs: self.relay_hubs.subscribe(),
                    visits: BTreeMap::new(),
                })
            }
            Err(status) => {
                tracing::warn!(%status, "hub relay not available; no fallback when UDP is blocked");
                None
            }
        }
    }
}

/// A visit stream on another replica: its uplink and the task that runs it.
struct Visit {
    up: mpsc::Sender<RelayFrame>,
    task: tokio::task::JoinHandle<()>,
    opened: tokio::time::Instant,
}

impl Drop for Visit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One hub session's relay streams: the home stream and the visits.
pub(crate) struct RelayStream<'a> {
    outbound: MutexGuard<'a, mpsc::Receiver<RelayDatagram>>,
    inbound: &'a mpsc::Sender<RelayDatagram>,
    up: mpsc::Sender<RelayFrame>,
    down: tonic::Streaming<RelayFrame>,
    me: PeerId,
    home: String,
    credentials: NodeCredentials,
    relay_hubs: watch::Receiver<RelayHubs>,
    visits: BTreeMap<String, Visit>,
}

impl RelayStream<'_> {
    /// The uplink for `peer`'s datagrams: the home stream, or a visit stream (opened now
    /// if it is missing, or ended and not retried within [`VISIT_RETRY`]).
    fn uplink(&mut self, peer: PeerId) -> &mpsc::Sender<RelayFrame> {
        let hubs = self.relay_hubs.borrow().clone();
        let hub = hubs.get(&peer).map_or("", String::as_str);
        let url = match relay_via(self.me, &self.home, peer, hub) {
            RelayVia::Home => return &self.up,
            RelayVia::Visit(url) => url,
        };
        // The IO shell's clock: only paces reconnection attempts.
        let now = tokio::time::Instant::now();
        let stale = self
            .visits
            .get(url)
            .is_none_or(|v| v.task.is_finished() && now.duration_since(v.opened) >= VISIT_RETRY);
        if stale {
            let (up, rx) = mpsc::channel(UPLINK_QUEUE);
            let task = tokio::spawn(visit(
                url.to_owned(),
                self.credentials.clone(),
                rx,
                self.inbound.clone(),
            ));
            self.visits.insert(
                url.to_owned(),
                Visit {
                    up,
                    task,
                    opened: now,
                },
            );
        }
        self.visits.get(url).map_or(&self.up, |v| &v.up)
    }

    /// Closes the visit streams no peer needs any more.
    fn prune_visits(&mut self) {
        let needed = visits_needed(self.me, &self.home, &self.relay_hubs.borrow_and_update());
        self.visits.retain(|url, _| needed.contains(url));
    }
}

/// Runs a visit stream on the replica at `url` until it fails: frames from `up` go to
/// it, frames from it go to the shell.
async fn visit(
    url: String,
    credentials: NodeCredentials,
    up: mpsc::Receiver<RelayFrame>,
    inbound: mpsc::Sender<RelayDatagram>,
) {
    let client = match HubClient::connect_mtls(&url, &credentials).await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(replica = %url, %error, "cannot reach the peer's hub replica for the relay");
            return;
        }
    };
    let mut request = tonic::Request::new(ReceiverStream::new(up));
    request.metadata_mut().insert(
        VISIT_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let mut down = match client.relay().relay(request).await {
        Ok(down) => down.into_inner(),
        Err(status) => {
            tracing::warn!(replica = %url, %status, "the peer's hub replica refused the relay visit");
            return;
        }
    };
    tracing::info!(replica = %url, "relay visit stream open (a peer's relay is on that replica)");
    loop {
        match down.message().await {
            Ok(Some(frame)) => hand_in(&inbound, frame),
            Ok(None) => break,
            Err(status) => {
                tracing::info!(replica = %url, %status, "relay visit stream ended");
                break;
            }
        }
    }
}

/// Hands a relayed frame to the shell (dropped when malformed or the shell is behind).
fn hand_in(inbound: &mpsc::Sender<RelayDatagram>, frame: RelayFrame) {
    let Ok(id) = <[u8; 16]>::try_from(frame.peer_id.as_slice()) else {
        tracing::debug!("relay frame without a peer ID; dropped");
        return;
    };
    // Full: the shell is behind; dropped like a datagram the socket buffer lost.
    let _ = inbound.try_send((PeerId(id), frame.datagram));
}

/// Moves datagrams both ways until the home stream ends; returns why. Pending forever
/// without a stream.
pub(crate) async fn pump(relay: &mut Option<RelayStream<'_>>) -> String {
    let Some(stream) = relay.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            next = stream.outbound.recv() => {
                let Some((peer, datagram)) = next else {
                    return "the shell stopped".into();
                };
                let frame = RelayFrame { peer_id: peer.0.to_vec(), datagram };
                // Full: the hub is behind; the datagram is lost like one a full socket refuses.
                if stream.uplink(peer).try_send(frame).is_err() {
                    tracing::trace!(%peer, "relay uplink full; datagram dropped");
                }
            }
            message = stream.down.message() => {
                match message {
                    Ok(Some(frame)) => hand_in(stream.inbound, frame),
                    Ok(None) => return "relay stream ended".into(),
                    Err(status) => return format!("relay stream: {status}"),
                }
            }
            changed = stream.relay_hubs.changed() => {
                // The link outlives the session: a closed channel cannot happen here.
                if changed.is_ok() {
                    stream.prune_visits();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bauxite_dispatch_api::proto::node::Peer;

    fn id(b: u8) -> PeerId {
        PeerId([b; 16])
    }

    const R1: &str = "https://r1.example:7443";
    const R2: &str = "https://r2.example:7443";
    const R3: &str = "https://r3.example:7443";

    #[test]
    fn visits_the_replicas_of_lower_peers_elsewhere_only() {
        let hubs: BTreeMap<PeerId, String> = [
            (id(1), R1.to_owned()),
            (id(2), R3.to_owned()),
            (id(3), R2.to_owned()),
            // Higher than us: it comes to us.
            (id(9), R1.to_owned()),
        ]
        .into();
        let needed = visits_needed(id(5), R2, &hubs);
        assert_eq!(
            needed,
            [R1.to_owned(), R3.to_owned()].into(),
            "peer 3 is at home with us"
        );
        // The lowest node never visits.
        assert!(visits_needed(id(0), R2, &hubs).is_empty());
    }

    #[test]
    fn relay_hubs_come_from_the_snapshot_and_skip_empty_and_malformed_entries() {
        let peer = |node_id: String, relay_hub: &str| Peer {
            node_id,
            relay_hub: relay_hub.to_owned(),
            ..Peer::default()
        };
        let snapshot = TopologySnapshot {
            peers: vec![
                peer(id(1).to_string(), R1),
                peer(id(2).to_string(), ""),
                peer("not hex".into(), R2),
            ],
            ..TopologySnapshot::default()
        };
        assert_eq!(relay_hubs(&snapshot), [(id(1), R1.to_owned())].into());
    }
}
