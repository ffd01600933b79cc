//! The hub data channel (`RelayService.Relay`): mesh datagrams between nodes over mTLS.

use bauxite_dispatch::hub::relay::MAX_DATAGRAM;
use bauxite_dispatch_api::proto::node::RelayFrame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::common::{HubProc, within};

fn frame(to: &bauxite_conduit::PeerId, datagram: &[u8]) -> RelayFrame {
    RelayFrame {
        peer_id: to.0.to_vec(),
        datagram: datagram.to_vec(),
    }
}

/// The value of a counter in a Prometheus scrape.
fn counter(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from the scrape"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_datagrams_with_the_certified_source_and_cuts_a_revoked_node() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let (a, ca) = hub.node(1).await;
    let (b, cb) = hub.node(2).await;

    let (tx_a, rx_a) = mpsc::channel::<RelayFrame>(8);
    let mut inbox_a = within(ca.relay().relay(ReceiverStream::new(rx_a)))
        .await
        .unwrap()
        .into_inner();
    let (tx_b, rx_b) = mpsc::channel::<RelayFrame>(8);
    let mut inbox_b = within(cb.relay().relay(ReceiverStream::new(rx_b)))
        .await
        .unwrap()
        .into_inner();

    // Both streams are attached once a frame makes the round trip: B may be attached
    // after A's first frames went out, which the hub drops (offline) — retry until one
    // arrives, bounded by the test deadline.
    let probe = frame(&b.node_id, b"probe");
    let first = within(async {
        loop {
            tx_a.send(probe.clone()).await.unwrap();
            if let Ok(got) =
                tokio::time::timeout(std::time::Duration::from_millis(200), inbox_b.message()).await
            {
                break got.unwrap().unwrap();
            }
        }
    })
    .await;
    assert_eq!(
        first.peer_id,
        a.node_id.0.to_vec(),
        "source stamped from A's certificate"
    );
    assert_eq!(first.datagram, b"probe");
    let before = counter(&hub.scrape(), "bauxite_dispatch_relay_dropped_total");

    // Rule breakers are dropped and counted; the stream stays and the next frame passes,
    // its bytes untouched (the hub never decrypts: it relays opaque datagrams).
    tx_a.send(frame(&a.node_id, b"to myself")).await.unwrap();
    tx_a.send(frame(&b.node_id, &vec![0u8; MAX_DATAGRAM + 1]))
        .await
        .unwrap();
    let sealed: Vec<u8> = (0..=255u8).cycle().take(1400).collect();
    tx_a.send(frame(&b.node_id, &sealed)).await.unwrap();
    let got = within(inbox_b.message()).await.unwrap().unwrap();
    assert_eq!(got.datagram, sealed);
    assert_eq!(got.peer_id, a.node_id.0.to_vec());
    // And the other way.
    tx_b.send(frame(&a.node_id, b"reply")).await.unwrap();
    let got = within(inbox_a.message()).await.unwrap().unwrap();
    assert_eq!(
        (got.peer_id, got.datagram),
        (b.node_id.0.to_vec(), b"reply".to_vec())
    );
    let scrape = hub.scrape();
    assert_eq!(
        counter(&scrape, "bauxite_dispatch_relay_dropped_total"),
        before + 2,
        "self-addressed and oversized frames are counted"
    );
    assert!(counter(&scrape, "bauxite_dispatch_relay_frames_total") >= 3);

    // Revoking A ends its relay stream; B's frames to A are dropped, not queued.
    hub.admin_ok(&["nodes", "revoke", &a.node_id.to_string()]);
    let ended = within(inbox_a.message()).await;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "a revoked node's relay stream ends"
    );
    tx_b.send(frame(&a.node_id, b"to the revoked"))
        .await
        .unwrap();
    let dropped = within(async {
        loop {
            let n = counter(&hub.scrape(), "bauxite_dispatch_relay_dropped_total");
            if n > before + 2 {
                break n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(dropped, before + 3);
    // A cannot open a new relay stream.
    let (_tx, rx) = mpsc::channel::<RelayFrame>(1);
    assert!(ca.relay().relay(ReceiverStream::new(rx)).await.is_err());
}
