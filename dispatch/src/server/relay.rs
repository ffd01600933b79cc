//! `MetricsService`, `SignalingService` and `RelayService`: node-only calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::Refusal;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth;
use super::feeds::Feed;
use crate::hub::Hub;
use crate::hub::relay::{RelayDrop, StreamRole};
use crate::proto::node::metrics_service_server::MetricsService;
use crate::proto::node::relay_service_server::RelayService;
use crate::proto::node::signaling_service_server::SignalingService;
use crate::proto::node::{RelayFrame, ReportMetricsRequest, ReportMetricsResponse, Signal};

/// Serves `ReportMetrics`.
pub struct Metrics(pub Arc<Hub>);

/// Serves `ExchangeCandidates`.
pub struct Signaling(pub Arc<Hub>);

/// Serves `Relay`: the data channel.
pub struct Relay(pub Arc<Hub>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn report_metrics(
        &self,
        request: Request<ReportMetricsRequest>,
    ) -> Result<Response<ReportMetricsResponse>, Status> {
        let node = auth::node(&self.0, &request)?;
        let report: Vec<(String, f64)> = request
            .into_inner()
            .metrics
            .into_iter()
            .map(|m| (m.name, m.value))
            .collect();
        let ros = crate::hub::ros::RosDiscovery::from_report(&report);
        if let Err(error) = self.0.set_ros_discovery(node, ros) {
            tracing::warn!(%node, %error, "ROS discovery role not recorded");
        }
        self.0.metrics().record_report(node, report);
        self.0
            .metrics()
            .record_seen(node, crate::clock::UnixTime::now());
        Ok(Response::new(ReportMetricsResponse {}))
    }
}

#[tonic::async_trait]
impl SignalingService for Signaling {
    type ExchangeCandidatesStream = Feed<Signal>;

    /// Messages that break the relay rules (unknown or inactive destination, self-addressed,
    /// INVITE from the higher ID, oversized) are dropped, logged and counted; the stream stays.
    async fn exchange_candidates(
        &self,
        request: Request<Streaming<Signal>>,
    ) -> Result<Response<Self::ExchangeCandidatesStream>, Status> {
        let me = auth::node(&self.0, &request)?;
        let (stream_no, outbound) = self.0.attach_signals(me)?;
        let mut inbound = request.into_inner();
        let hub = self.0.clone();
        let mut closing = hub.closing();
        tokio::spawn(async move {
            loop {
                // A stopping hub drops the inbound half too, so the stream (and with it
                // the connection) can close instead of waiting for the node to hang up.
                let message = tokio::select! {
                    message = inbound.message() => message,
                    () = super::feeds::stopping(&mut closing) => break,
                };
                let Ok(Some(message)) = message else { break };
                if !hub.is_active(me) {
                    break;
                }
                let to = PeerId::from_hex(&message.peer_id).filter(|to| hub.is_active(*to));
                let Some(to) = to else {
                    tracing::info!(from = %me, to = %message.peer_id, "signal to unknown or inactive node dropped");
                    continue;
                };
                match hub.route_signal(me, to, message) {
                    Ok(_) => {
                        hub.metrics()
                            .signals_relayed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::info!(from = %me, %to, error = %e, "signal dropped"),
                }
            }
            hub.signals().detach(me, stream_no);
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(outbound).map(Ok),
        )))
    }
}

/// The IO shell's clock for the relay's rate budgets.
#[allow(clippy::disallowed_methods)] // The relay stream task is an IO shell.
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[tonic::async_trait]
impl RelayService for Relay {
    type RelayStream = Feed<RelayFrame>;

    /// Frames that break the relay rules are dropped and counted (and the first of each
    /// stream logged); the stream stays. A revoked node's stream ends. A home stream (no
    /// visit metadata) is recorded as the node's relay presence on a replica.
    async fn relay(
        &self,
        request: Request<Streaming<RelayFrame>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let me = auth::node(&self.0, &request)?;
        let role = if request
            .metadata()
            .contains_key(bauxite_dispatch_api::relay::VISIT_METADATA)
        {
            StreamRole::Visit
        } else {
            StreamRole::Home
        };
        let (stream_no, outbound) = self.0.relays().attach_as(me, role, now());
        // A revocation between the certificate check and the attach would leave the
        // revoked node attached: check again now that it is.
        if !self.0.is_active(me) {
            self.0.relays().detach(me, stream_no);
            return Err(Refusal::Revoked
                .to_status("this node was revoked; it must join again with a new identity"));
        }
        if role == StreamRole::Home
            && let Err(error) = self.0.relay_attached(me)
        {
            // The relay works on this replica; peers on others meet it once the sweep
            // records it.
            tracing::warn!(node = %me, %error, "relay presence not recorded; retried by the sweep");
        }
        let mut inbound = request.into_inner();
        let hub = self.0.clone();
        let mut closing = hub.closing();
        tokio::spawn(async move {
            let mut logged = false;
            loop {
                let frame = tokio::select! {
                    frame = inbound.message() => frame,
                    () = super::feeds::stopping(&mut closing) => break,
                };
                let Ok(Some(frame)) = frame else { break };
                let len = frame.datagram.len() as u64;
                let routed = hub.relays().route(now(), me, stream_no, frame);
                let metrics = hub.metrics();
                match routed {
                    Ok(()) => {
                        metrics.relay_frames.fetch_add(1, Ordering::Relaxed);
                        metrics.relay_bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    // Detached: replaced by a newer stream, revoked, or the hub stops.
                    Err(RelayDrop::SenderDetached) => {
                        metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(reason) => {
                        metrics.relay_dropped.fetch_add(1, Ordering::Relaxed);
                        if !logged {
                            logged = true;
                            tracing::info!(from = %me, ?reason, "relay frame dropped (further drops are only counted)");
                        }
                    }
                }
            }
            hub.relays().detach(me, stream_no);
            // A stopping replica's presence dies with its database session.
            if role == StreamRole::Home
                && !*closing.borrow()
                && let Err(error) = hub.relay_detached(me)
            {
                tracing::warn!(node = %me, %error, "relay presence not removed; the sweep will");
            }
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(outbound).map(Ok),
        )))
    }
}
