//! Two `bauxite-dispatch serve --postgres` replicas on one real PostgreSQL (a throwaway
//! cluster): nodes connected to different replicas see each other's candidate addresses
//! and exchange signaling messages, also across a replica's death and restart.

use std::process::Command;
use std::time::Duration;

use bauxite_dispatch_api::client::{HubClient, JoinResult};
use bauxite_dispatch_api::proto::node::{
    SetEndpointRequest, Signal, SignalKind, TopologyRequest, TopologySnapshot,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::common::{HubProc, within};
use crate::fleet_support::copy_keys;
use crate::pg_cluster::PgCluster;

/// A node's open signaling stream on one replica.
struct SignalStream {
    send: mpsc::Sender<Signal>,
    inbound: Streaming<Signal>,
}

async fn open_signals(client: &HubClient) -> SignalStream {
    let (send, rx) = mpsc::channel(16);
    let inbound = client
        .signaling()
        .exchange_candidates(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    SignalStream { send, inbound }
}

fn signal(to: &str, kind: SignalKind, session: u64) -> Signal {
    Signal {
        peer_id: to.to_owned(),
        kind: kind as i32,
        session,
        payload: b"candidate 10.9.0.1:5000".to_vec(),
    }
}

/// The next message on `stream`, with the test deadline.
async fn next_signal(stream: &mut SignalStream) -> Signal {
    within(stream.inbound.message()).await.unwrap().unwrap()
}

/// Waits for a snapshot in which `peer` has `candidate`.
async fn candidate_seen(feed: &mut Streaming<TopologySnapshot>, peer: &str, candidate: &str) {
    within(async {
        loop {
            let snapshot = feed.message().await.unwrap().unwrap();
            let found = snapshot
                .peers
                .iter()
                .any(|p| p.node_id == peer && p.candidates.iter().any(|c| c == candidate));
            if found {
                return;
            }
        }
    })
    .await;
}

/// Two replicas on one throwaway PostgreSQL database; node A joined through the first and
/// node B through the second, each with a client on its own replica.
pub(crate) struct TwoReplicas {
    pub(crate) _pg: PgCluster,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) one: HubProc,
    pub(crate) two: HubProc,
    pub(crate) a: JoinResult,
    pub(crate) b: JoinResult,
    pub(crate) a_id: String,
    pub(crate) b_id: String,
    pub(crate) a_client: HubClient,
    pub(crate) b_client: HubClient,
}

impl TwoReplicas {
    /// `None` when PostgreSQL is not installed (the test is then skipped, as elsewhere).
    pub(crate) async fn start(db: &str, a_seed: u8, b_seed: u8) -> Option<Self> {
        let pg = PgCluster::start()?;
        let url = pg.create_db(db);
        let dir = tempfile::tempdir().unwrap();
        let pg_args = ["--postgres", url.as_str()];
        let one = HubProc::start_with(&dir.path().join("one"), &pg_args);
        copy_keys(&one.dir, &dir.path().join("two"));
        let two = HubProc::start_with(&dir.path().join("two"), &pg_args);
        let (token, _) = one.token(&["--uses", "2"]);
        let a = one.join(&token, a_seed).await.unwrap();
        let b = two.join(&token, b_seed).await.unwrap();
        let a_client = HubClient::connect_mtls(&one.addr, &a.credentials)
            .await
            .unwrap();
        let b_client = HubClient::connect_mtls(&two.addr, &b.credentials)
            .await
            .unwrap();
        Some(Self {
            a_id: a.node_id.to_string(),
            b_id: b.node_id.to_string(),
            _pg: pg,
            _dir: dir,
            url,
            one,
            two,
            a,
            b,
            a_client,
            b_client,
        })
    }
}

/// The kind of A's first signal to B: only the lower ID may invite.
fn first_kind(a_id: &str, b_id: &str) -> SignalKind {
    if a_id < b_id {
        SignalKind::Invite
    } else {
        SignalKind::Offer
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_on_two_replicas_exchange_candidates_and_signals_across_a_replica_restart() {
    let Some(pair) = TwoReplicas::start("signals", 0x31, 0x32).await else {
        return;
    };
    let TwoReplicas {
        _pg,
        _dir,
        url,
        one,
        two,
        b,
        a_id,
        b_id,
        a_client,
        b_client,
        ..
    } = pair;
    let pg_args = ["--postgres", url.as_str()];

    // A's candidates, reported to replica one, reach B's topology on replica two.
    let mut b_topology = b_client
        .topology()
        .stream_topology(TopologyRequest {
            deltas: false,
            ..TopologyRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    a_client
        .topology()
        .set_endpoint(SetEndpointRequest {
            local_addresses: vec!["10.9.0.1:5000".into()],
            ..SetEndpointRequest::default()
        })
        .await
        .unwrap();
    candidate_seen(&mut b_topology, &a_id, "10.9.0.1:5000").await;

    // Signals both ways between the replicas; the sender is the authenticated one.
    let mut a_signals = open_signals(&a_client).await;
    let mut b_signals = open_signals(&b_client).await;
    // Only the lower ID may invite.
    let a_first = first_kind(&a_id, &b_id);
    a_signals
        .send
        .send(signal(&b_id, a_first, 1))
        .await
        .unwrap();
    let got = next_signal(&mut b_signals).await;
    assert_eq!(got.peer_id, a_id, "B sees A as the sender");
    assert_eq!(got.kind, a_first as i32);
    assert_eq!(got.payload, b"candidate 10.9.0.1:5000");
    b_signals
        .send
        .send(signal(&a_id, SignalKind::Answer, 1))
        .await
        .unwrap();
    let got = next_signal(&mut a_signals).await;
    assert_eq!(
        (got.peer_id.as_str(), got.kind),
        (b_id.as_str(), SignalKind::Answer as i32)
    );

    // Replica two dies with B on it; what A sends meanwhile waits in PostgreSQL and
    // reaches B once it is back, on the surviving replica.
    let mut two = two;
    let two_dir = two.dir.clone();
    drop(b_signals);
    drop(b_topology);
    drop(b_client);
    assert!(
        Command::new("kill")
            .args(["-KILL", &two.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    two.wait_exit(Duration::from_secs(10));
    for session in 2..=4 {
        a_signals
            .send
            .send(signal(&b_id, SignalKind::Candidate, session))
            .await
            .unwrap();
    }
    // Sent in order on one stream: once the last is stored, so are the others.
    within(async {
        loop {
            if forwarded_rows(&url) >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let b_on_one = HubClient::connect_mtls(&one.addr, &b.credentials)
        .await
        .unwrap();
    let mut b_signals = open_signals(&b_on_one).await;
    for session in 2..=4 {
        let got = next_signal(&mut b_signals).await;
        assert_eq!(
            (got.peer_id.as_str(), got.session),
            (a_id.as_str(), session)
        );
    }
    assert_eq!(forwarded_rows(&url), 0, "taken, not copied");

    // Replica two restarts on the same data dir; B moves back to it and hears from A again.
    drop(b_signals);
    let two = HubProc::start_with(&two_dir, &pg_args);
    let b_client = HubClient::connect_mtls(&two.addr, &b.credentials)
        .await
        .unwrap();
    let mut b_signals = open_signals(&b_client).await;
    // B's stream on two is open once B can use it: its answer reaches A on one.
    b_signals
        .send
        .send(signal(&a_id, SignalKind::Answer, 5))
        .await
        .unwrap();
    assert_eq!(next_signal(&mut a_signals).await.session, 5);
    a_signals
        .send
        .send(signal(&b_id, SignalKind::Candidate, 6))
        .await
        .unwrap();
    let got = next_signal(&mut b_signals).await;
    assert_eq!((got.peer_id.as_str(), got.session), (a_id.as_str(), 6));
    drop(one);
    drop(two);
}

/// Rows waiting in the shared `signals` table (the client runs its own runtime: a thread).
fn forwarded_rows(url: &str) -> i64 {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .query_one("SELECT count(*) FROM signals", &[])
            .unwrap()
            .get(0)
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_revoked_on_one_replica_loses_its_signaling_stream_on_another() {
    let Some(pair) = TwoReplicas::start("revoke_across", 0x41, 0x42).await else {
        return;
    };
    let TwoReplicas {
        one,
        two,
        b,
        a_id,
        b_id,
        a_client,
        b_client,
        ..
    } = &pair;
    let a_signals = open_signals(a_client).await;
    let mut b_signals = open_signals(b_client).await;
    // B's stream on two is live: a signal from A on one reaches it.
    let a_first = first_kind(a_id, b_id);
    a_signals.send.send(signal(b_id, a_first, 1)).await.unwrap();
    assert_eq!(&next_signal(&mut b_signals).await.peer_id, a_id);

    // Revoked through replica one: replica two ends B's stream, and refuses B's next call.
    one.admin_ok(&["nodes", "revoke", b_id]);
    let ended = within(b_signals.inbound.message()).await;
    assert!(
        matches!(ended, Ok(None) | Err(_)),
        "B's stream on two still open: {ended:?}"
    );
    let again = HubClient::connect_mtls(&two.addr, &b.credentials).await;
    let refused = match again {
        Err(_) => true,
        Ok(client) => client
            .signaling()
            .exchange_candidates(ReceiverStream::new(mpsc::channel(1).1))
            .await
            .is_err(),
    };
    assert!(refused, "revoked B got a new signaling stream on two");
    drop(a_signals);
    drop(pair);
}
