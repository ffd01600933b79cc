//! A node's topology stream resumes from the version it holds: two `serve --postgres`
//! replicas on one real PostgreSQL, real gRPC over mTLS. Reconnecting to the same replica
//! or to the other one with a held version gets one delta (and the topology it yields is
//! the replica's fresh snapshot); a version the journal no longer covers, or one whose
//! digest does not match (another history), gets the full snapshot.

use bauxite_dispatch::hub::journal;
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::{SetEndpointRequest, TopologyRequest, TopologySnapshot};
use bauxite_dispatch_api::topology::TopologyFollower;
use tonic::Streaming;

use crate::common::{full_feed, within};
use crate::replicas::TwoReplicas;

/// Opens a stream with `request` and follows it into `follower` until it holds version
/// `at_least` or newer, complete. Returns the first message.
async fn follow(
    client: &HubClient,
    request: TopologyRequest,
    follower: &mut TopologyFollower,
    at_least: u64,
) -> (TopologySnapshot, Streaming<TopologySnapshot>) {
    let mut feed = client
        .topology()
        .stream_topology(request)
        .await
        .unwrap()
        .into_inner();
    let mut first = None;
    within(async {
        loop {
            let message = feed.message().await.unwrap().unwrap();
            first.get_or_insert_with(|| message.clone());
            let complete = follower.push(message).unwrap().is_some();
            if complete && follower.current().version >= at_least {
                return;
            }
        }
    })
    .await;
    (first.unwrap(), feed)
}

/// The replica's full snapshot of `version` (waiting for it to get there), as a client
/// without deltas gets it.
async fn fresh_snapshot(client: &HubClient, version: u64) -> TopologySnapshot {
    let mut feed = full_feed(client).await;
    within(async {
        loop {
            let snapshot = feed.message().await.unwrap().unwrap();
            assert!(!snapshot.delta && !snapshot.more);
            if snapshot.version >= version {
                return snapshot;
            }
        }
    })
    .await
}

/// `node` changes its advertised endpoint; returns the new topology version.
async fn change(client: &HubClient, port: u16) -> u64 {
    client
        .topology()
        .set_endpoint(SetEndpointRequest {
            endpoint: format!("192.0.2.7:{port}"),
            ..SetEndpointRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_resumes_with_one_delta_on_the_same_replica_and_on_another() {
    let Some(pair) = TwoReplicas::start("resume", 0x41, 0x42).await else {
        return;
    };
    let (a, b) = (&pair.a_client, &pair.b_client);
    // A's first topology, on replica one: the full snapshot.
    let mut follower = TopologyFollower::default();
    assert!(follower.request().held_version.is_none());
    let (first, feed) = follow(a, follower.request(), &mut follower, 0).await;
    assert!(!first.delta, "nothing held: a full snapshot");
    drop(feed);
    let (held, digest) = follower.held().map(|(v, d)| (v, d.to_vec())).unwrap();
    assert_eq!(digest.len(), 32);

    // Three changes while A is away (two by B, on replica two); A comes back to replica one.
    change(b, 6001).await;
    change(a, 6002).await;
    let version = change(b, 6003).await;
    let (first, feed) = follow(a, follower.request(), &mut follower, version).await;
    assert!(
        first.delta && first.base_version == held,
        "one delta from the version held: {first:?}"
    );
    assert!(first.peers.len() <= 2, "only the touched peers: {first:?}");
    drop(feed);
    let want = fresh_snapshot(a, follower.current().version).await;
    assert_eq!(
        follower.current(),
        &want,
        "the delta yields the replica's snapshot"
    );

    // Another change, and A moves to replica two: its version means the same there.
    let held = follower.current().version;
    let version = change(a, 6004).await;
    let a_on_two = HubClient::connect_mtls(&pair.two.addr, &pair.a.credentials)
        .await
        .unwrap();
    let (first, feed) = follow(&a_on_two, follower.request(), &mut follower, version).await;
    assert!(
        first.delta && first.base_version == held,
        "another replica resumes the version too: {first:?}"
    );
    drop(feed);
    let want = fresh_snapshot(&a_on_two, follower.current().version).await;
    assert_eq!(follower.current(), &want);

    // Current already: one empty delta says so.
    let held = follower.current().version;
    let (first, feed) = follow(&a_on_two, follower.request(), &mut follower, held).await;
    assert!(first.delta && first.base_version == held && first.version == held);
    assert!(first.peers.is_empty() && first.removed.is_empty());
    drop(feed);

    // The same version number with another digest (another history): the full snapshot,
    // which replaces what is held.
    let mut request = follower.request();
    request.held_digest = vec![0; 32];
    let mut other = TopologyFollower::default();
    let (first, feed) = follow(&a_on_two, request, &mut other, held).await;
    assert!(!first.delta, "a digest that does not match: {first:?}");
    drop(feed);
    // A version this replica never had.
    let mut request = follower.request();
    request.held_version = Some(held + 1000);
    let (first, feed) = follow(&a_on_two, request, &mut other, held).await;
    assert!(!first.delta, "an unknown version: {first:?}");
    drop(feed);

    // Further behind than the journal reaches (a small topology: its floor of one-peer
    // changes): the full snapshot again.
    let stale = follower.request();
    let mut version = 0;
    let changes = u16::try_from(journal::MIN_ENTRIES + 4).unwrap();
    for k in 0..changes {
        version = change(b, 7000 + k).await;
    }
    let (first, feed) = follow(&a_on_two, stale.clone(), &mut follower, version).await;
    assert!(!first.delta, "too old for the journal: {first:?}");
    drop(feed);
    let want = fresh_snapshot(&a_on_two, follower.current().version).await;
    assert_eq!(follower.current(), &want);
    // And on replica one, which followed the same changes.
    let mut on_one = TopologyFollower::default();
    let (first, _feed) = follow(a, stale, &mut on_one, version).await;
    assert!(!first.delta, "too old on the other replica too: {first:?}");
}
