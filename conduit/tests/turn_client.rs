//! The TURN client (`io::turn::TurnClient`) against a real coturn on loopback: it
//! allocates with long-term credentials, creates a permission for a peer's address, hands
//! what the peer sends to the relayed address to the shell's port with the peer's address,
//! and sends what the shell addresses through it to the peer from the relayed address.
//! A wrong password is refused with the typed error, and a permission whose byte meets a
//! closed port does not cost the allocation. Needs `turnserver` (Debian `coturn`,
//! `scripts/setup.sh`); without it the test prints SKIPPED. Every wait is for a condition
//! with a bounded deadline.

#![cfg(feature = "io")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(clippy::disallowed_methods)] // a test's deadlines are wall time

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bauxite_conduit::Error;
use bauxite_conduit::io::turn::{TurnClient, TurnEnd, TurnRelayPort, TurnServer};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

const LIMIT: Duration = Duration::from_secs(10);

/// coturn on 127.0.0.1, killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn coturn() -> Option<Coturn> {
    let found = Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: turnserver not installed (scripts/setup.sh installs coturn)");
        return None;
    }
    let port = StdUdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "listening-ip=127.0.0.1\nlistening-port={port}\nrelay-ip=127.0.0.1\n\
         min-port=49152\nmax-port=65535\nallow-loopback-peers\n\
         lt-cred-mech\nuser=bx:pw\nrealm=bauxite.test\n\
         no-tcp\nno-tls\nno-dtls\nno-tcp-relay\nno-cli\n\
         userdb={}\npidfile={}\nlog-file={}\nno-stdout-log\n",
        dir.path().join("turndb").display(),
        dir.path().join("turnserver.pid").display(),
        dir.path().join("turn.log").display(),
    );
    let conf = dir.path().join("turnserver.conf");
    std::fs::write(&conf, config).unwrap();
    let child = Command::new("turnserver")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + LIMIT;
    // Listening when its port is taken.
    while StdUdpSocket::bind(addr).is_ok() {
        assert!(Instant::now() < deadline, "turnserver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Coturn {
        child,
        addr,
        _dir: dir,
    })
}

fn server(addr: SocketAddr, password: &str) -> TurnServer {
    TurnServer {
        addr,
        username: "bx".into(),
        password: password.into(),
        realm: String::new(),
    }
}

#[tokio::test]
async fn relays_both_ways_through_a_real_coturn() {
    let Some(coturn) = coturn() else { return };
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();

    let refused = TurnClient::allocate(&server(coturn.addr, "wrong"), local, LIMIT).await;
    assert!(
        matches!(refused, Err(Error::Turn { server, .. }) if server == coturn.addr),
        "{refused:?}"
    );

    let client = TurnClient::allocate(&server(coturn.addr, "pw"), local, LIMIT)
        .await
        .unwrap();
    let relayed = client.relayed_addr();
    assert_eq!(relayed.ip(), coturn.addr.ip());
    let peer = UdpSocket::bind(local).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();

    let (out_tx, out_rx) = mpsc::channel(16);
    let (in_tx, mut in_rx) = mpsc::channel(16);
    let mut port = TurnRelayPort {
        outbound: out_rx,
        inbound: in_tx,
    };
    // A permission whose byte goes to a closed port first: the ICMP port-unreachable
    // that comes back to coturn does not cost the allocation.
    let closed = StdUdpSocket::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_permits_tx, permits) = watch::channel(vec![closed, peer_addr]);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        client
            .run(&mut port, permits, async {
                let _ = stop_rx.await;
            })
            .await
    });

    // The permission is created by a zero byte to the peer, from the relayed address.
    let mut buf = [0u8; 64];
    let (len, from) = tokio::time::timeout(LIMIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((len, buf[0], from), (1, 0, relayed));

    // Peer -> relayed address -> the shell's port, with the peer's address.
    let deadline = Instant::now() + LIMIT;
    let arrived = loop {
        peer.send_to(b"hello", relayed).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), in_rx.recv()).await {
            Ok(Some(datagram)) => break datagram,
            Ok(None) => panic!("the TURN client stopped"),
            Err(_) => assert!(Instant::now() < deadline, "nothing relayed in"),
        }
    };
    assert_eq!(arrived, (peer_addr, b"hello".to_vec()));

    // The shell's port -> the peer, from the relayed address.
    out_tx.send((peer_addr, b"world".to_vec())).await.unwrap();
    let (len, from) = tokio::time::timeout(LIMIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..len], from), (&b"world"[..], relayed));

    stop_tx.send(()).unwrap();
    let end = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    assert_eq!(end, TurnEnd::Shutdown);
}
