//! SIGTERM with nodes connected: the hub ends every open stream at once (topology and
//! policy with `UNAVAILABLE`, signaling closed) and exits cleanly well within its grace
//! period. Before, graceful shutdown waited on the nodes' never-ending streams (26 s with
//! two nodes connected).

use std::time::{Duration, Instant};

use bauxite_dispatch::server::SHUTDOWN_GRACE;
use bauxite_dispatch_api::proto::node::{PolicyRequest, Signal};

use crate::common::{HubProc, full_feed, within};

/// Skips the updates still in flight (the second node's join) and returns how the stream
/// ended; panics if it ends cleanly or keeps going.
async fn end_status<T>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    for _ in 0..8 {
        match within(stream.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => return status,
        }
    }
    panic!("stream kept sending after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_the_hub_exits_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::start(&tmp.path().join("hub"));
    let mut topology = Vec::new();
    let mut policy = Vec::new();
    let mut signaling = Vec::new();
    let mut senders = Vec::new();
    for seed in [1, 2] {
        let (_, client) = hub.node(seed).await;
        let mut t = full_feed(&client).await;
        within(t.message()).await.unwrap().unwrap();
        topology.push(t);
        let mut p = client
            .policy()
            .stream_policy(PolicyRequest {})
            .await
            .unwrap()
            .into_inner();
        within(p.message()).await.unwrap().unwrap();
        policy.push(p);
        let (tx, rx) = tokio::sync::mpsc::channel::<Signal>(1);
        senders.push(tx);
        let s = client
            .signaling()
            .exchange_candidates(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        signaling.push(s);
    }

    let started = Instant::now();
    hub.signal_term();
    for stream in &mut topology {
        let status = end_status(stream).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shutting down"), "{status:?}");
    }
    for stream in &mut policy {
        let status = end_status(stream).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    for stream in &mut signaling {
        // Closed by the hub: a clean end, or the connection going away.
        assert!(!matches!(within(stream.message()).await, Ok(Some(_))));
    }
    let status = hub.wait_exit(SHUTDOWN_GRACE + Duration::from_secs(5));
    assert!(status.success(), "hub exited with {status}");
    eprintln!("hub stopped {:?} after SIGTERM", started.elapsed());
    let log = std::fs::read_to_string(tmp.path().join("hub.log")).unwrap();
    assert!(
        !log.contains("still open after the shutdown grace"),
        "the streams should have ended before the grace ran out: {log}"
    );
    drop(senders);
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("hub.log");
    let mut child = std::process::Command::new(crate::common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("hub started") {
            break text;
        }
        assert!(
            started.elapsed() < crate::common::DEADLINE,
            "no start: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file: {text:?}"
    );
}
