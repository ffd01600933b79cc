//! The agent's link to the hub's `UpdateService`: an mTLS connection of its own that
//! follows `WatchUpdates`, sends the queued `ReportUpdateState` calls, and reconnects with
//! the daemon's [`Backoff`] when the hub goes away.
//!
//! Invariant: state reports leave in the order they were queued and none is dropped
//! while fewer than [`MAX_QUEUED`] wait (the oldest is dropped beyond that); progress
//! reports are coalesced (only the newest waiting one is kept), so a hub that is down
//! for an hour costs a bounded queue, not an hour of progress.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::client::{HubClient, NodeCredentials};
use bauxite_dispatch_api::proto::node::update_service_client::UpdateServiceClient;
use bauxite_dispatch_api::proto::node::{UpdateAssignment, UpdateStateReport, WatchUpdatesRequest};
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::Channel;

use crate::config::HubConfig;
use crate::hub::{BACKOFF_BASE, BACKOFF_CAP, Backoff};

/// State reports kept while the hub is unreachable.
pub(super) const MAX_QUEUED: usize = 256;

/// What the link tells the agent.
#[derive(Debug)]
pub(super) enum HubEvent {
    /// Connected; `WatchUpdates` is open.
    Connected,
    /// The connection or the stream failed; reconnecting.
    Lost(String),
    /// The hub revoked this node; the link stopped.
    Revoked(String),
    /// The current assignment (first after each connect), or a change.
    Assignment(UpdateAssignment),
}

#[derive(Debug, Default)]
struct Queue {
    states: VecDeque<UpdateStateReport>,
    progress: Option<UpdateStateReport>,
}

/// Reports waiting for the hub.
#[derive(Debug, Default)]
pub(super) struct ReportQueue {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl ReportQueue {
    /// Queues a state change.
    pub(super) fn push_state(&self, report: UpdateStateReport) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.states.len() == MAX_QUEUED {
            q.states.pop_front();
        }
        // A progress report older than this state is stale.
        q.progress = None;
        q.states.push_back(report);
        drop(q);
        self.ready.notify_one();
    }

    /// Queues a progress report, replacing one still waiting.
    pub(super) fn push_progress(&self, report: UpdateStateReport) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .progress = Some(report);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<UpdateStateReport> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = q.states.drain(..).collect();
        out.extend(q.progress.take());
        out
    }

    fn put_back(&self, mut unsent: Vec<UpdateStateReport>) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(r) = unsent.pop() {
            if q.states.len() < MAX_QUEUED {
                q.states.push_front(r);
            }
        }
    }
}

/// The link's inputs.
#[derive(Debug)]
pub(super) struct HubLink {
    /// Where the hub is.
    pub config: HubConfig,
    /// The node's current mTLS credentials (loaded and checked at start; the hub
    /// connector replaces them when it renews the certificate, read on every connect).
    pub credentials: watch::Receiver<NodeCredentials>,
    /// Events for the agent.
    pub events: mpsc::Sender<super::Event>,
    /// The connected client (for TUF files), `None` while down.
    pub client: watch::Sender<Option<UpdateServiceClient<Channel>>>,
    /// Reports to send.
    pub reports: std::sync::Arc<ReportQueue>,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

enum End {
    Lost(String),
    Revoked(String),
    AgentGone,
}

fn classify(status: &tonic::Status, what: &str) -> End {
    match Refusal::from_status(status) {
        Some(Refusal::Revoked) => End::Revoked(status.message().to_owned()),
        _ => End::Lost(format!(
            "{what}: {} ({:?})",
            status.message(),
            status.code()
        )),
    }
}

impl HubLink {
    /// Runs until the node is revoked or the agent stops.
    pub(super) async fn run(self) {
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP, self.seed);
        loop {
            let end = self.session(&mut backoff).await;
            self.client.send_replace(None);
            let event = match end {
                End::AgentGone => return,
                End::Revoked(why) => {
                    let _ = self
                        .events
                        .send(super::Event::Hub(HubEvent::Revoked(why)))
                        .await;
                    return;
                }
                End::Lost(why) => HubEvent::Lost(why),
            };
            if self.events.send(super::Event::Hub(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn send(&self, event: HubEvent) -> Result<(), End> {
        self.events
            .send(super::Event::Hub(event))
            .await
            .map_err(|_| End::AgentGone)
    }

    async fn session(&self, backoff: &mut Backoff) -> End {
        let credentials = self.credentials.borrow().clone();
        let hub = match HubClient::connect_mtls(&self.config.url, &credentials).await {
            Ok(hub) => hub,
            Err(bauxite_dispatch_api::Error::Refused {
                refusal: Refusal::Revoked,
                message,
            }) => return End::Revoked(message),
            Err(e) => return End::Lost(format!("connect: {e}")),
        };
        let mut client = UpdateServiceClient::new(hub.channel());
        let mut stream = match client.watch_updates(WatchUpdatesRequest {}).await {
            Ok(s) => s.into_inner(),
            Err(s) => return classify(&s, "watch updates"),
        };
        self.client.send_replace(Some(client.clone()));
        if let Err(end) = self.send(HubEvent::Connected).await {
            return end;
        }
        backoff.reset();
        // Reports queued while the hub was away (or put back after a failed send) go now.
        self.reports.ready.notify_one();
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(a)) => {
                        if let Err(end) = self.send(HubEvent::Assignment(a)).await {
                            return end;
                        }
                    }
                    Ok(None) => return End::Lost("watch updates: the hub ended the stream".into()),
                    Err(s) => return classify(&s, "watch updates"),
                },
                () = self.reports.ready.notified() => {
                    let batch = self.reports.take();
                    for (i, report) in batch.iter().enumerate() {
                        if let Err(s) = client.report_update_state(report.clone()).await {
                            self.reports.put_back(batch[i..].to_vec());
                            return classify(&s, "report update state");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str) -> UpdateStateReport {
        UpdateStateReport {
            state: state.into(),
            ..UpdateStateReport::default()
        }
    }

    #[test]
    fn states_keep_order_and_progress_coalesces() {
        let q = ReportQueue::default();
        q.push_progress(report("p1"));
        q.push_state(report("A"));
        q.push_progress(report("p2"));
        q.push_progress(report("p3"));
        q.push_state(report("B"));
        q.push_progress(report("p4"));
        let names: Vec<_> = q.take().into_iter().map(|r| r.state).collect();
        assert_eq!(names, ["A", "B", "p4"]);
        q.put_back(vec![report("C"), report("D")]);
        q.push_state(report("E"));
        let names: Vec<_> = q.take().into_iter().map(|r| r.state).collect();
        assert_eq!(names, ["C", "D", "E"]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let q = ReportQueue::default();
        for i in 0..(MAX_QUEUED + 10) {
            q.push_state(report(&i.to_string()));
        }
        let all = q.take();
        assert_eq!(all.len(), MAX_QUEUED);
        assert_eq!(all[0].state, "10");
    }
}
