//! The edge end of the hub's signaling relay (`SignalingService.ExchangeCandidates`): the
//! node's ICE signals (INVITE, OFFER, ANSWER, CANDIDATE, BYE) go up the stream, the ones
//! its peers sent come down into the shell.
//!
//! Invariants: nothing here trusts the hub — the payloads are signed by their senders and
//! the node verifies them against the peer table ([`SignedSignal`](bauxite_conduit::node::SignedSignal))
//! before acting — and nothing waits on a slow side: a full queue drops the signal (ICE
//! trickles again on the next session). The stream lives and dies with the connector's
//! hub session; a hub without it costs the direct pairs ICE would find, never the
//! connection.

use bauxite_conduit::PeerId;
use bauxite_conduit::io::{IceSignalPort, OutgoingSignal};
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::Signal;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Signals waiting to go up the stream.
const UPLINK_QUEUE: usize = 256;

/// The shell's signaling port, shared by the connector's successive hub sessions.
#[derive(Debug)]
pub struct SignalLink {
    outbound: Mutex<mpsc::Receiver<OutgoingSignal>>,
    inbound: mpsc::Sender<(PeerId, Vec<u8>)>,
}

impl SignalLink {
    /// Wraps the shell's port.
    pub fn new(port: IceSignalPort) -> Self {
        Self {
            outbound: Mutex::new(port.outbound),
            inbound: port.inbound,
        }
    }

    /// Opens the signaling stream on a new hub connection; `None` (logged) when the hub
    /// does not offer it.
    pub(crate) async fn open(&self, hub: &HubClient) -> Option<SignalStream<'_>> {
        let (up, rx) = mpsc::channel(UPLINK_QUEUE);
        match hub
            .signaling()
            .exchange_candidates(ReceiverStream::new(rx))
            .await
        {
            Ok(down) => {
                tracing::info!("hub signaling stream open (ICE)");
                Some(SignalStream {
                    outbound: self.outbound.lock().await,
                    inbound: &self.inbound,
                    up,
                    down: down.into_inner(),
                })
            }
            Err(status) => {
                tracing::warn!(%status, "hub signaling not available; no ICE pairs, relays only");
                None
            }
        }
    }
}

/// One hub session's signaling stream.
pub(crate) struct SignalStream<'a> {
    outbound: MutexGuard<'a, mpsc::Receiver<OutgoingSignal>>,
    inbound: &'a mpsc::Sender<(PeerId, Vec<u8>)>,
    up: mpsc::Sender<Signal>,
    down: tonic::Streaming<Signal>,
}

/// Moves signals both ways until the stream ends; returns why. Pending forever without
/// a stream.
pub(crate) async fn pump(signals: &mut Option<SignalStream<'_>>) -> String {
    let Some(stream) = signals.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            next = stream.outbound.recv() => {
                let Some(signal) = next else {
                    return "the shell stopped".into();
                };
                let message = Signal {
                    peer_id: signal.peer.to_string(),
                    kind: signal.kind,
                    session: 0,
                    payload: signal.payload,
                };
                if stream.up.try_send(message).is_err() {
                    tracing::debug!(peer = %signal.peer, "signaling uplink full; signal dropped");
                }
            }
            message = stream.down.message() => {
                let signal = match message {
                    Ok(Some(signal)) => signal,
                    Ok(None) => return "signaling stream ended".into(),
                    Err(status) => return format!("signaling stream: {status}"),
                };
                let Some(from) = PeerId::from_hex(&signal.peer_id) else {
                    tracing::debug!(peer = %signal.peer_id, "signal without a valid sender; dropped");
                    continue;
                };
                // Full: the shell is behind; the peer trickles again.
                let _ = stream.inbound.try_send((from, signal.payload));
            }
        }
    }
}
