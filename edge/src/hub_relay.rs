//! The edge end of the hub's data channel (`RelayService.Relay`): mesh datagrams the
//! node routes through the hub (UDP blocked) go up the stream, relayed ones come down into
//! the shell.
//!
//! Invariants: nothing here waits on a slow side — a full queue drops the datagram (the
//! session above is built for loss), and the hub's claim of who sent a datagram is passed
//! on but never trusted (the node authenticates the bytes). The stream lives and dies with
//! the connector's hub session.

use bauxite_conduit::PeerId;
use bauxite_conduit::io::{HubRelayPort, RelayDatagram};
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::RelayFrame;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Frames waiting to go up the relay stream.
const UPLINK_QUEUE: usize = 1024;

/// The shell's relay port, shared by the connector's successive hub sessions.
#[derive(Debug)]
pub struct RelayLink {
    outbound: Mutex<mpsc::Receiver<RelayDatagram>>,
    inbound: mpsc::Sender<RelayDatagram>,
}

impl RelayLink {
    /// Wraps the shell's port.
    pub fn new(port: HubRelayPort) -> Self {
        Self {
            outbound: Mutex::new(port.outbound),
            inbound: port.inbound,
        }
    }

    /// Opens the relay stream on a new hub connection; `None` (logged) when the hub does
    /// not offer it.
    pub(crate) async fn open(&self, hub: &HubClient) -> Option<RelayStream<'_>> {
        let (up, rx) = mpsc::channel(UPLINK_QUEUE);
        match hub.relay().relay(ReceiverStream::new(rx)).await {
            Ok(down) => {
                tracing::info!("hub relay stream open");
                Some(RelayStream {
                    outbound: self.outbound.lock().await,
                    inbound: &self.inbound,
                    up,
                    down: down.into_inner(),
                })
            }
            Err(status) => {
                tracing::warn!(%status, "hub relay not available; no fallback when UDP is blocked");
                None
            }
        }
    }
}

/// One hub session's relay stream.
pub(crate) struct RelayStream<'a> {
    outbound: MutexGuard<'a, mpsc::Receiver<RelayDatagram>>,
    inbound: &'a mpsc::Sender<RelayDatagram>,
    up: mpsc::Sender<RelayFrame>,
    down: tonic::Streaming<RelayFrame>,
}

/// Moves datagrams both ways until the stream ends; returns why. Pending forever without
/// a stream.
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
                if stream.up.try_send(frame).is_err() {
                    tracing::trace!(%peer, "relay uplink full; datagram dropped");
                }
            }
            message = stream.down.message() => {
                let frame = match message {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return "relay stream ended".into(),
                    Err(status) => return format!("relay stream: {status}"),
                };
                let Ok(id) = <[u8; 16]>::try_from(frame.peer_id.as_slice()) else {
                    tracing::debug!("relay frame without a peer ID; dropped");
                    continue;
                };
                // Full: the shell is behind; dropped like a datagram the socket buffer lost.
                let _ = stream.inbound.try_send((PeerId(id), frame.datagram));
            }
        }
    }
}
