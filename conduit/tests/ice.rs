//! ICE on real shells over loopback: two `Shell`s with ICE on, each with one UDP socket
//! shared by mesh traffic and the webrtc-ice agent's STUN checks, a task in the middle
//! playing the hub's `ExchangeCandidates` relay (it stamps the sender, as the hub does
//! from the client certificate). Neither peer is given the other's address: only ICE can
//! find the path. Every wait is for a condition with a bounded deadline.

#![cfg(feature = "tun")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::{Arc, Mutex};

use bauxite_conduit::PeerId;
use bauxite_conduit::io::{IceConfig, IceSignalPort, Query};
use bauxite_conduit::ip::build;
use bauxite_conduit::node::{IcePhase, IceSignal, SignedSignal};
use bauxite_conduit::path::Path;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[path = "support/running.rs"]
mod running;
use running::{DEADLINE, Running, Spec, memory};

/// A started shell with ICE on (loopback host candidates), and its signaling port. It
/// advertises no endpoint: the peer learns nothing about this node but its keys.
async fn start(n: u8) -> (Running, IceSignalPort) {
    let spec = Spec {
        advertise: false,
        ..Spec::new(memory)
    };
    let (mut running, mut shell) = Running::bind(n, spec).await;
    let port = shell
        .enable_ice(IceConfig {
            include_loopback: true,
            ..IceConfig::default()
        })
        .unwrap();
    running.spawn(shell);
    (running, port)
}

/// What the relay saw: (sender, kind) of every signal, in order.
type Seen = Arc<Mutex<Vec<(PeerId, IceSignal)>>>;

/// Relays `from`'s outbound signals to `to`'s inbound as the hub does, stamping the
/// sender; `tamper` may rewrite a payload on the way (a malicious hub).
fn relay(
    from: PeerId,
    mut out: IceSignalPort,
    into: mpsc::Sender<(PeerId, Vec<u8>)>,
    seen: Seen,
    tamper: fn(Vec<u8>) -> Vec<u8>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(signal) = out.outbound.recv().await {
            if let Ok(decoded) = SignedSignal::decode(&signal.payload) {
                assert_eq!(decoded.signal.kind(), signal.kind);
                seen.lock().unwrap().push((from, decoded.signal));
            }
            if into.send((from, tamper(signal.payload))).await.is_err() {
                return;
            }
        }
    })
}

fn as_is(payload: Vec<u8>) -> Vec<u8> {
    payload
}

/// Two ICE shells introduced to each other through the relay.
async fn ice_pair(tamper: fn(Vec<u8>) -> Vec<u8>) -> (Running, Running, Seen, [JoinHandle<()>; 2]) {
    let (a, port_a) = start(1).await;
    let (b, port_b) = start(2).await;
    let seen = Seen::default();
    let (in_a, in_b) = (port_a.inbound.clone(), port_b.inbound.clone());
    let relays = [
        relay(a.info.id, port_a, in_b, Arc::clone(&seen), tamper),
        relay(b.info.id, port_b, in_a, Arc::clone(&seen), tamper),
    ];
    a.queries
        .send(Query::ReplacePeers(vec![b.info.clone()]))
        .await
        .unwrap();
    b.queries
        .send(Query::ReplacePeers(vec![a.info.clone()]))
        .await
        .unwrap();
    (a, b, seen, relays)
}

#[tokio::test(flavor = "current_thread")]
async fn two_shells_find_a_direct_pair_over_the_shared_mesh_port_and_carry_packets() {
    let (a, b, seen, relays) = ice_pair(as_is).await;
    for (x, y) in [(&a, &b), (&b, &a)] {
        let (peer, peer_addr) = (y.info.id, y.addr);
        let status = x
            .wait_status("an ICE pair and a session on it", |s| {
                s.peers.iter().any(|p| {
                    p.id == peer
                        && p.established
                        && p.path == Path::Direct(peer_addr)
                        && p.ice
                            .as_ref()
                            .is_some_and(|i| i.phase == IcePhase::Connected)
                })
            })
            .await;
        let p = status.peers.iter().find(|p| p.id == peer).unwrap();
        let ice = p.ice.as_ref().unwrap();
        // The pair ends on the peer's one mesh socket: the checks and the session share it.
        assert_eq!(ice.pair.map(|(_, remote, _)| remote), Some(peer_addr));
        assert!(
            ice.stages.checks.is_some() && ice.stages.total.is_some(),
            "{ice:?}"
        );
        assert!(
            status.counters.ice_stun_received > 0,
            "checks reached the agent"
        );
        assert_eq!(status.counters.ice_stun_dropped, 0);
    }
    // Roles: the lower ID invited (again, the same, if the other's BYE found it still
    // unanswered), the other offered and answered once, both trickled.
    let (lo, hi) = (a.info.id.min(b.info.id), a.info.id.max(b.info.id));
    let signals = seen.lock().unwrap().clone();
    let from = |id: PeerId, f: fn(&IceSignal) -> bool| {
        signals.iter().filter(|(s, m)| *s == id && f(m)).count()
    };
    let invites: Vec<_> = signals
        .iter()
        .filter(|(s, m)| *s == lo && matches!(m, IceSignal::Invite { .. }))
        .map(|(_, m)| m.clone())
        .collect();
    assert!((1..=2).contains(&invites.len()), "{signals:?}");
    assert!(
        invites.windows(2).all(|w| w[0] == w[1]),
        "a repeated INVITE is the same one"
    );
    assert_eq!(from(hi, |m| matches!(m, IceSignal::Bye)), 1);
    assert_eq!(from(hi, |m| matches!(m, IceSignal::Invite { .. })), 0);
    assert_eq!(from(hi, |m| matches!(m, IceSignal::Offer { .. })), 1);
    assert_eq!(from(hi, |m| matches!(m, IceSignal::Answer)), 1);
    for id in [lo, hi] {
        assert!(from(id, |m| matches!(m, IceSignal::Candidate(_))) >= 1);
    }
    // Mesh packets take the same port the checks used.
    let mut packet = Vec::new();
    build::ipv4_udp(
        a.info.virtual_ip.addr(),
        b.info.virtual_ip.addr(),
        40000,
        9000,
        &[0x5A; 400],
        &mut packet,
    );
    a.app.as_ref().unwrap().send(&packet).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let len = tokio::time::timeout(DEADLINE, b.app.as_ref().unwrap().recv(&mut buf))
        .await
        .expect("packet delivered over the ICE pair")
        .unwrap();
    assert_eq!(&buf[..len], &packet[..]);
    a.shut_down().await;
    b.shut_down().await;
    for r in relays {
        r.abort();
    }
}

/// A hub that rewrites the ICE credentials in every INVITE and OFFER.
fn rewrite_credentials(payload: Vec<u8>) -> Vec<u8> {
    let Ok(mut signal) = SignedSignal::decode(&payload) else {
        return payload;
    };
    if let IceSignal::Invite { ufrag, .. } | IceSignal::Offer { ufrag, .. } = &mut signal.signal {
        *ufrag = "HUBxHUBxHUBxHUBx".into();
    }
    signal.encode()
}

#[tokio::test(flavor = "current_thread")]
async fn a_hub_that_rewrites_ice_credentials_gets_no_session_started() {
    let (a, b, seen, relays) = ice_pair(rewrite_credentials).await;
    let (lo, hi) = if a.info.id < b.info.id {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // The invited side refuses the rewritten INVITE (and the candidates of a session it
    // never accepted) ...
    let status = hi
        .wait_status("the rewritten INVITE refused", |s| {
            s.counters.ice_signals_refused >= 1
        })
        .await;
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(id, m)| *id == lo.info.id && matches!(m, IceSignal::Invite { .. })),
        "the INVITE went out"
    );
    // ... so it never offers, and has no ICE session.
    let peer = status.peers.iter().find(|p| p.id == lo.info.id).unwrap();
    assert!(peer.ice.is_none(), "{peer:?}");
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| matches!(m, IceSignal::Offer { .. })),
        "an OFFER answered a forged INVITE"
    );
    a.shut_down().await;
    b.shut_down().await;
    for r in relays {
        r.abort();
    }
}
