//! The hub relay across two `bauxite-dispatch serve --postgres` replicas (issue 13/11):
//! relay-only nodes connected to different replicas meet on the replica of the lower peer
//! ID, and a killed replica's relay presence goes with it.

use std::process::Command;
use std::time::Duration;

use bauxite_conduit::PeerId;
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::node::{RelayFrame, TopologyRequest, TopologySnapshot};
use bauxite_dispatch_api::relay::{RelayVia, VISIT_METADATA, relay_via};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::common::within;
use crate::replicas::TwoReplicas;

/// One relay stream: frames go up `send`, relayed frames come down `inbound`.
struct RelayStream {
    send: mpsc::Sender<RelayFrame>,
    inbound: Streaming<RelayFrame>,
}

/// Opens a relay stream on `client`'s replica, as a visitor when `visit`.
async fn open_relay(client: &HubClient, visit: bool) -> RelayStream {
    let (send, rx) = mpsc::channel(64);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if visit {
        request
            .metadata_mut()
            .insert(VISIT_METADATA, "1".parse().unwrap());
    }
    let inbound = within(client.relay().relay(request))
        .await
        .unwrap()
        .into_inner();
    RelayStream { send, inbound }
}

fn frame(to: PeerId, datagram: &[u8]) -> RelayFrame {
    RelayFrame {
        peer_id: to.0.to_vec(),
        datagram: datagram.to_vec(),
    }
}

/// Sends `datagram` from `from` to `to` until it arrives on `to` (the receiving stream may
/// be attached a moment after the sender's first frames, which the hub drops as offline);
/// returns the frame as received. Bounded by the test deadline.
async fn deliver(
    from: &RelayStream,
    to_id: PeerId,
    to: &mut RelayStream,
    datagram: &[u8],
) -> RelayFrame {
    within(async {
        loop {
            from.send.send(frame(to_id, datagram)).await.unwrap();
            if let Ok(got) =
                tokio::time::timeout(Duration::from_millis(200), to.inbound.message()).await
            {
                let got = got.unwrap().unwrap();
                if got.datagram == datagram {
                    return got;
                }
            }
        }
    })
    .await
}

/// Waits for a snapshot that satisfies `done`; returns it.
async fn topology_until(
    feed: &mut Streaming<TopologySnapshot>,
    done: impl Fn(&TopologySnapshot) -> bool,
) -> TopologySnapshot {
    within(async {
        loop {
            let snapshot = feed.message().await.unwrap().unwrap();
            if done(&snapshot) {
                return snapshot;
            }
        }
    })
    .await
}

fn relay_hub<'a>(snapshot: &'a TopologySnapshot, node: &str) -> Option<&'a str> {
    snapshot
        .peers
        .iter()
        .find(|p| p.node_id == node)
        .map(|p| p.relay_hub.as_str())
}

/// The stored presence rows as (node hex, replica URL), in node order (the client runs
/// its own runtime: a thread).
fn presence_rows(url: &str) -> Vec<(String, String)> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .query(
                "SELECT node, replica FROM relay_presence ORDER BY node",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (hex::encode(row.get::<_, &[u8]>(0)), row.get(1)))
            .collect()
    })
    .join()
    .unwrap()
}

async fn topology(client: &HubClient) -> Streaming<TopologySnapshot> {
    client
        .topology()
        .stream_topology(TopologyRequest {
            deltas: false,
            ..TopologyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The value of a counter in a Prometheus scrape.
fn counter(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from the scrape"))
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_only_nodes_on_two_replicas_meet_on_the_lower_ids_replica() {
    let Some(pair) = TwoReplicas::start("relay_meet", 0x51, 0x52).await else {
        return;
    };
    let TwoReplicas {
        url,
        one,
        two,
        a,
        b,
        a_id,
        b_id,
        a_client,
        b_client,
        ..
    } = &pair;
    let (a_node, b_node) = (a.node_id, b.node_id);
    // Each node's home relay stream, on the replica it is connected to.
    let mut a_home = open_relay(a_client, false).await;
    let mut b_home = open_relay(b_client, false).await;

    // Both presences are published to both: A at one, B at two.
    let mut a_topology = topology(a_client).await;
    let mut b_topology = topology(b_client).await;
    let both = |s: &TopologySnapshot| {
        relay_hub(s, a_id) == Some(one.addr.as_str())
            && relay_hub(s, b_id) == Some(two.addr.as_str())
    };
    topology_until(&mut a_topology, both).await;
    let seen_by_b = topology_until(&mut b_topology, both).await;
    let mut rows = presence_rows(url);
    rows.sort();
    let mut expected = vec![
        (a_id.clone(), one.addr.clone()),
        (b_id.clone(), two.addr.clone()),
    ];
    expected.sort();
    assert_eq!(
        rows, expected,
        "one row per home stream, naming its replica"
    );

    // Without the rule, B's frames on its own replica find no A there: dropped offline.
    let dropped = |hub: &crate::common::HubProc| {
        counter(&hub.scrape(), "bauxite_dispatch_relay_dropped_total")
    };
    let before = dropped(two);
    b_home.send.send(frame(a_node, b"lost")).await.unwrap();
    within(async {
        while dropped(two) == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // The rule, as each node's shell applies it to its topology: the higher ID visits.
    let a_via = relay_via(
        a_node,
        &one.addr,
        b_node,
        relay_hub(&seen_by_b, b_id).unwrap(),
    );
    let b_via = relay_via(
        b_node,
        &two.addr,
        a_node,
        relay_hub(&seen_by_b, a_id).unwrap(),
    );
    let (lower_home, higher_via) = if a_node < b_node {
        (&one.addr, b_via)
    } else {
        (&two.addr, a_via)
    };
    assert_eq!(higher_via, RelayVia::Visit(lower_home.as_str()));
    let (visitor, visitor_node, host_node) = if a_node < b_node {
        (b, b_node, a_node)
    } else {
        (a, a_node, b_node)
    };
    let visit_client = HubClient::connect_mtls(lower_home, &visitor.credentials)
        .await
        .unwrap();
    let mut visit = open_relay(&visit_client, true).await;
    let host_stream = if a_node < b_node {
        &mut a_home
    } else {
        &mut b_home
    };

    // Lower to higher and back, through the lower's replica, with the certified sources.
    let got = deliver(host_stream, visitor_node, &mut visit, b"to the visitor").await;
    assert_eq!(got.peer_id, host_node.0.to_vec());
    let got = deliver(&visit, host_node, host_stream, b"to the host").await;
    assert_eq!(got.peer_id, visitor_node.0.to_vec());
    // Sealed bytes pass untouched both ways.
    let sealed: Vec<u8> = (0..=255u8).cycle().take(1400).collect();
    let got = deliver(&visit, host_node, host_stream, &sealed).await;
    assert_eq!(got.datagram, sealed);

    // A visit is not a presence: the visitor is still published at its own replica.
    let mut rows = presence_rows(url);
    rows.sort();
    assert_eq!(rows, expected, "the visit stream wrote no presence");
    // Ending the visit leaves the visitor's home presence alone; ending the home stream
    // removes it and the topology says so.
    drop(visit);
    drop(visit_client);
    drop(a_home);
    let a_gone = |s: &TopologySnapshot| {
        relay_hub(s, a_id) == Some("") && relay_hub(s, b_id) == Some(two.addr.as_str())
    };
    topology_until(&mut b_topology, a_gone).await;
    assert_eq!(presence_rows(url), vec![(b_id.clone(), two.addr.clone())]);
    drop(b_home);
    drop(pair);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replicas_relay_presence_goes_with_it() {
    let Some(pair) = TwoReplicas::start("relay_kill", 0x61, 0x62).await else {
        return;
    };
    let TwoReplicas {
        _pg,
        _dir,
        url,
        one,
        two,
        a,
        b,
        a_id,
        b_id,
        a_client,
        b_client,
    } = pair;
    let a_home = open_relay(&a_client, false).await;
    let b_home = open_relay(&b_client, false).await;
    let mut a_topology = topology(&a_client).await;
    topology_until(&mut a_topology, |s| {
        relay_hub(s, a_id.as_str()) == Some(one.addr.as_str())
            && relay_hub(s, b_id.as_str()) == Some(two.addr.as_str())
    })
    .await;
    assert_eq!(presence_rows(&url).len(), 2);

    // Replica two is killed (no detach runs): its row goes, and replica one stops
    // publishing B there.
    let mut two = two;
    drop(b_home);
    drop(b_client);
    assert!(
        Command::new("kill")
            .args(["-KILL", &two.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    two.wait_exit(Duration::from_secs(10));
    topology_until(&mut a_topology, |s| {
        relay_hub(s, b_id.as_str()) == Some("")
            && relay_hub(s, a_id.as_str()) == Some(one.addr.as_str())
    })
    .await;
    assert_eq!(
        presence_rows(&url),
        vec![(a_id.clone(), one.addr.clone())],
        "the dead replica's row is gone, the live one's stays"
    );

    // B moves to replica one: it is published there, and both relay on one replica.
    let b_on_one = HubClient::connect_mtls(&one.addr, &b.credentials)
        .await
        .unwrap();
    let mut b_home = open_relay(&b_on_one, false).await;
    topology_until(&mut a_topology, |s| {
        relay_hub(s, b_id.as_str()) == Some(one.addr.as_str())
    })
    .await;
    let (a_node, b_node) = (a.node_id, b.node_id);
    assert_eq!(
        relay_via(b_node, &one.addr, a_node, &one.addr),
        RelayVia::Home
    );
    let got = deliver(&a_home, b_node, &mut b_home, b"same replica").await;
    assert_eq!(got.peer_id, a_node.0.to_vec());
    drop(a_home);
    drop(one);
}
