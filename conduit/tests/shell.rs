//! Real shells on loopback: two `Shell`s, each with its own UDP socket on 127.0.0.1 and
//! an in-memory device or none, run as tasks and talk over the encrypted mesh — through
//! their devices, and through service sockets (in-process users, as OTA transfer uses).
//! Nothing needs privileges, and every wait is for a condition with a bounded deadline.

#![cfg(feature = "tun")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bauxite_conduit::io::service::DEFAULT_RECV_QUEUE;
use bauxite_conduit::io::{IncomingBatch, Query, ServiceSocket, Shell};
use bauxite_conduit::ip::build;
use bauxite_conduit::node::NodeConfig;
use bauxite_conduit::path::{CongestionStrategy, EndpointOrigin, MakeStrategy, Path};
use bauxite_conduit::peers::PeerInfo;
use bauxite_conduit::service::ServicePort;
use bauxite_conduit::tun::TunKind;
use bauxite_conduit::{Lane, Metrics, ServiceError, VirtualIp};
use tokio::sync::oneshot;

#[path = "support/running.rs"]
mod running;
use running::{DEADLINE, Device, Running, Spec, memory, no_device};

/// Binds a shell for node `n` on 127.0.0.1 (a free port), not yet running; it knows no
/// peers yet (see [`introduce`]).
async fn start(n: u8, device: Device, config: NodeConfig) -> (Running, Shell) {
    start_with(n, device, config, None).await
}

async fn start_with(
    n: u8,
    device: Device,
    config: NodeConfig,
    congestion: Option<MakeStrategy>,
) -> (Running, Shell) {
    let spec = Spec {
        config,
        congestion,
        ..Spec::new(device)
    };
    Running::bind(n, spec).await
}

/// Tells each shell about the other, which starts the handshake.
async fn introduce(a: &Running, b: &Running) {
    a.queries
        .send(Query::ReplacePeers(vec![b.info.clone()]))
        .await
        .unwrap();
    b.queries
        .send(Query::ReplacePeers(vec![a.info.clone()]))
        .await
        .unwrap();
    for (x, y) in [(a, b), (b, a)] {
        let id = y.info.id;
        x.wait_status("handshake", |s| {
            s.peers.iter().any(|p| p.id == id && p.established)
        })
        .await;
    }
}

/// Two started shells that know each other, with `devices` as their IP sides.
async fn pair(devices: [Device; 2], config: NodeConfig) -> (Running, Running) {
    let (mut a, shell_a) = start(1, devices[0], config.clone()).await;
    let (mut b, shell_b) = start(2, devices[1], config).await;
    a.spawn(shell_a);
    b.spawn(shell_b);
    introduce(&a, &b).await;
    (a, b)
}

fn udp_packet(from: &Running, to: &Running, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    build::ipv4_udp(
        from.info.virtual_ip.addr(),
        to.info.virtual_ip.addr(),
        40000,
        dst_port,
        payload,
        &mut packet,
    );
    packet
}

#[tokio::test(flavor = "current_thread")]
async fn in_memory_devices_carry_packets_between_two_shells() {
    let (a, b) = pair([memory, memory], NodeConfig::default()).await;
    assert!(matches!(a.status().await.tun, TunKind::Memory(_)));
    let packet = udp_packet(&a, &b, 9000, &[0xAB; 300]);
    a.app.as_ref().unwrap().send(&packet).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let len = tokio::time::timeout(DEADLINE, b.app.as_ref().unwrap().recv(&mut buf))
        .await
        .expect("packet delivered to b's device")
        .unwrap();
    assert_eq!(&buf[..len], &packet[..]);
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_shell_without_a_device_drops_and_counts_what_no_service_takes() {
    let (a, b) = pair([memory, no_device], NodeConfig::default()).await;
    assert_eq!(b.status().await.tun, TunKind::None);
    assert!(b.app.is_none(), "no device, no application end");
    for i in 0..3u8 {
        let packet = udp_packet(&a, &b, 9000, &[i; 200]);
        a.app.as_ref().unwrap().send(&packet).await.unwrap();
    }
    let status = b
        .wait_status("three drops", |s| s.counters.no_device_dropped == 3)
        .await;
    assert_eq!(status.counters.tun_write_dropped, 0);
    // The node delivered them (authenticated, allowed); only the missing device dropped them.
    assert!(Metrics::get(&b.metrics.rx_packets) >= 3);
    a.shut_down().await;
    b.shut_down().await;
}

const PORT: u16 = 7400;

fn port() -> ServicePort {
    ServicePort::new(PORT).unwrap()
}

/// A payload that names itself: `id` then bytes derived from it, `len` long.
fn payload(id: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u32 ^ id) as u8).collect();
    p[..4].copy_from_slice(&id.to_be_bytes());
    p
}

fn id_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

/// Receives on `socket` until `want` datagrams arrived (or the deadline passes); checks
/// each one's bytes and returns their ids by lane-independent arrival.
async fn receive(socket: &mut ServiceSocket, from: VirtualIp, want: usize) -> Vec<u32> {
    let mut batch = IncomingBatch::new();
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ids.len() < want {
        let n = tokio::time::timeout_at(deadline, socket.recv_batch(&mut batch))
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} datagrams arrived", ids.len()))
            .unwrap();
        assert_eq!(n, batch.len());
        for d in batch.iter() {
            assert_eq!((d.src_ip, d.src_port, d.dst_port), (from, PORT, port()));
            let id = id_of(d.payload);
            assert_eq!(
                d.payload,
                &payload(id, d.payload.len())[..],
                "datagram {id} intact"
            );
            ids.push(id);
        }
    }
    ids
}

fn lanes(metrics: &Metrics, array: fn(&Metrics) -> &[std::sync::atomic::AtomicU64; 3]) -> [u64; 3] {
    Lane::ALL.map(|lane| Metrics::get(&array(metrics)[lane.index()]))
}

/// A robot (in-memory device, unprivileged) and a hub (no device) exchange service
/// datagrams: bulk one way — small ones too, which the classifier would call critical —
/// and critical both ways. Each is counted in the lane its sender picked, and only there.
#[tokio::test(flavor = "current_thread")]
async fn service_datagrams_ride_the_lane_their_sender_picks() {
    let (mut a, mut shell_a) = start(1, memory, NodeConfig::default()).await;
    let (mut b, mut shell_b) = start(2, no_device, NodeConfig::default()).await;
    let mut sock_a = shell_a.bind_service(port(), DEFAULT_RECV_QUEUE).unwrap();
    let mut sock_b = shell_b.bind_service(port(), 4096).unwrap();
    assert_eq!(
        shell_b.bind_service(port(), 1).unwrap_err(),
        ServiceError::PortInUse { port: PORT }
    );
    assert_eq!(sock_a.max_payload(), 1322);
    assert_eq!(sock_a.local_ip(), a.info.virtual_ip);
    a.spawn(shell_a);
    b.spawn(shell_b);
    introduce(&a, &b).await;
    let (vip_a, vip_b) = (a.info.virtual_ip, b.info.virtual_ip);

    const BULK: u32 = 3000;
    const CRITICAL: u32 = 40;
    let mut batch = sock_a.batch();
    for id in 0..BULK {
        // Every tenth is tiny (< 100 bytes): the caller's lane wins over the classifier.
        let len = if id % 10 == 0 { 40 } else { 1322 };
        if batch.is_full() {
            sock_a.send_batch(&mut batch).await.unwrap();
            assert!(batch.is_empty());
        }
        batch
            .push(vip_b, PORT, Lane::Bulk, &payload(id, len))
            .unwrap();
    }
    sock_a.send_batch(&mut batch).await.unwrap();
    let too_big = vec![0; 1323];
    assert_eq!(
        batch.push(vip_b, PORT, Lane::Bulk, &too_big).unwrap_err(),
        ServiceError::TooLarge {
            len: 1323,
            max: 1322
        }
    );
    for id in 0..CRITICAL {
        // One large critical datagram: lanes are not picked by size either.
        let len = if id == 7 { 1000 } else { 64 };
        sock_a
            .send_to(vip_b, PORT, Lane::Critical, &payload(BULK + id, len))
            .await
            .unwrap();
        sock_b
            .send_to(vip_a, PORT, Lane::Critical, &payload(id, len))
            .await
            .unwrap();
    }

    let at_b: BTreeSet<u32> = receive(&mut sock_b, vip_a, (BULK + CRITICAL) as usize)
        .await
        .into_iter()
        .collect();
    assert_eq!(at_b, (0..BULK + CRITICAL).collect());
    let at_a = receive(&mut sock_a, vip_b, CRITICAL as usize).await;
    assert_eq!(
        at_a,
        (0..CRITICAL).collect::<Vec<_>>(),
        "in order on one lane"
    );

    let (ma, mb) = (&a.metrics, &b.metrics);
    let (bulk, critical) = (u64::from(BULK), u64::from(CRITICAL));
    assert_eq!(lanes(ma, |m| &m.lane_enqueued), [critical, 0, bulk]);
    assert_eq!(lanes(mb, |m| &m.lane_enqueued), [critical, 0, 0]);
    a.wait_status("a's lanes drained", |_| {
        lanes(ma, |m| &m.lane_sent) == [critical, 0, bulk]
    })
    .await;
    assert_eq!(lanes(mb, |m| &m.lane_sent), [critical, 0, 0]);
    for m in [ma, mb] {
        assert_eq!(lanes(m, |m| &m.lane_dropped), [0, 0, 0]);
        assert_eq!(Metrics::get(&m.tx_dropped), 0);
        assert_eq!(Metrics::get(&m.service_rx_dropped), 0);
    }
    assert_eq!(Metrics::get(&ma.service_tx_packets), bulk + critical);
    assert_eq!(Metrics::get(&mb.service_rx_packets), bulk + critical);
    let status = b.status().await;
    assert_eq!(
        status.counters.no_device_dropped, 0,
        "all were for the socket"
    );

    a.shut_down().await;
    b.shut_down().await;
    // The shells stopped: the sockets say so instead of waiting forever.
    assert_eq!(
        sock_a.recv().await.unwrap_err(),
        ServiceError::Closed { port: PORT }
    );
    assert_eq!(
        sock_b.send_to(vip_a, PORT, Lane::Bulk, b"late").await,
        Err(ServiceError::Closed { port: PORT })
    );
}

/// Lets one bulk packet leave every `gap`: a slow link below the node, so the bulk lane
/// fills while a sender pushes faster than that.
#[derive(Debug)]
struct Trickle {
    gap: Duration,
    next: Option<Instant>,
    armed: bool,
}

impl CongestionStrategy for Trickle {
    fn on_sent(&mut self, now: Instant, _bytes: usize) {
        self.next = Some(now + self.gap);
        self.armed = true;
    }
    fn on_ack(&mut self, _now: Instant, _bytes: usize, _delay: Duration) {}
    fn on_loss(&mut self, _now: Instant, _bytes: usize) {}
    fn forget(&mut self, _bytes: usize) {}
    fn can_send_bulk(&self, now: Instant, _bytes: usize) -> bool {
        self.next.is_none_or(|next| now >= next)
    }
    fn bytes_in_flight(&self) -> usize {
        0
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next.filter(|_| self.armed)
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.next.is_some_and(|next| now >= next) {
            self.armed = false;
        }
    }
}

/// A sender far faster than its lane drains is held back, not dropped: the bulk lane
/// reaches capacity, the shell leaves the rest in the socket's queue and the sender
/// waits, and every datagram arrives.
#[tokio::test(flavor = "current_thread")]
async fn a_full_bulk_lane_backpressures_the_sender_without_loss() {
    let trickle: MakeStrategy = Box::new(|| {
        Box::new(Trickle {
            gap: Duration::from_micros(20),
            next: None,
            armed: false,
        })
    });
    let (mut a, mut shell_a) = start_with(1, memory, NodeConfig::default(), Some(trickle)).await;
    let (mut b, mut shell_b) = start(2, no_device, NodeConfig::default()).await;
    let sock_a = shell_a.bind_service(port(), 16).unwrap();
    let mut sock_b = shell_b.bind_service(port(), 10_000).unwrap();
    a.spawn(shell_a);
    b.spawn(shell_b);
    introduce(&a, &b).await;

    const COUNT: u32 = 8000; // twice the bulk lane
    let sender = sock_a.sender();
    let to = b.info.virtual_ip;
    let mut full = 0u32;
    let send = async {
        for id in 0..COUNT {
            let p = payload(id, 1200);
            match sender.try_send_to(to, PORT, Lane::Bulk, &p) {
                Ok(()) => {}
                Err(ServiceError::Full { port }) => {
                    assert_eq!(port, PORT);
                    full += 1;
                    sender.send_to(to, PORT, Lane::Bulk, &p).await.unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let (_, ids) = tokio::join!(
        send,
        receive(&mut sock_b, a.info.virtual_ip, COUNT as usize)
    );
    let got: BTreeSet<u32> = ids.iter().copied().collect();
    assert_eq!(got.len(), ids.len(), "no duplicate");
    assert_eq!(got, (0..COUNT).collect(), "every datagram arrived");
    let m = &a.metrics;
    assert!(full > 0, "the sender was never held back");
    assert!(
        Metrics::get(&m.service_tx_waits) > 0,
        "the lane never filled"
    );
    assert_eq!(lanes(m, |m| &m.lane_dropped), [0, 0, 0]);
    assert_eq!(Metrics::get(&m.tx_dropped), 0);
    a.shut_down().await;
    b.shut_down().await;
}

/// A receiver that does not read loses what its queue cannot hold — counted — and the
/// shell keeps going; dropping a socket unbinds its port for a new one.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_receiver_drops_and_counts_and_a_port_can_be_rebound() {
    let (a, b) = pair([memory, no_device], NodeConfig::default()).await;
    let bind = |queue: usize| {
        let (reply, socket) = oneshot::channel();
        let query = Query::BindService {
            port: port(),
            recv_queue: queue,
            reply,
        };
        (query, socket)
    };
    let (query, reply) = bind(16);
    b.queries.send(query).await.unwrap();
    let mut sock_b = reply.await.unwrap().unwrap();
    let (query, reply) = bind(16);
    a.queries.send(query).await.unwrap();
    let sock_a = reply.await.unwrap().unwrap();
    for id in 0..100 {
        let p = payload(id, 500);
        sock_a
            .send_to(b.info.virtual_ip, PORT, Lane::Bulk, &p)
            .await
            .unwrap();
    }
    let m = Arc::clone(&b.metrics);
    b.wait_status("all 100 handled", |_| {
        Metrics::get(&m.service_rx_packets) + Metrics::get(&m.service_rx_dropped) == 100
    })
    .await;
    assert_eq!(Metrics::get(&m.service_rx_packets), 16);
    assert_eq!(Metrics::get(&m.service_rx_dropped), 84);
    let ids = receive(&mut sock_b, a.info.virtual_ip, 16).await;
    assert_eq!(ids, (0..16).collect::<Vec<_>>(), "the first 16 were kept");

    // Bound twice is refused; once dropped, the port is free again.
    let (query, reply) = bind(4);
    b.queries.send(query).await.unwrap();
    assert_eq!(
        reply.await.unwrap().unwrap_err(),
        ServiceError::PortInUse { port: PORT }
    );
    drop(sock_b);
    let (query, reply) = bind(4);
    b.queries.send(query).await.unwrap();
    let mut again = reply.await.unwrap().unwrap();
    sock_a
        .send_to(b.info.virtual_ip, PORT, Lane::Critical, &payload(500, 64))
        .await
        .unwrap();
    assert_eq!(receive(&mut again, a.info.virtual_ip, 1).await, vec![500]);
    a.shut_down().await;
    b.shut_down().await;
}

/// Only one side is told where the other is (the robot dials the hub; the hub is told
/// nothing): the hub answers where the initiation came from, then reaches the robot
/// from its side too, and its status says the endpoint was learned.
#[tokio::test(flavor = "current_thread")]
async fn one_side_knowing_the_other_is_enough_between_real_shells() {
    let (mut robot, mut shell_r) = start(1, memory, NodeConfig::default()).await;
    let (mut hub, mut shell_h) = start(2, no_device, NodeConfig::default()).await;
    let mut sock_r = shell_r.bind_service(port(), DEFAULT_RECV_QUEUE).unwrap();
    let sock_h = shell_h.bind_service(port(), DEFAULT_RECV_QUEUE).unwrap();
    robot.spawn(shell_r);
    hub.spawn(shell_h);
    let unknown_robot = PeerInfo {
        endpoint: None,
        ..robot.info.clone()
    };
    hub.queries
        .send(Query::ReplacePeers(vec![unknown_robot]))
        .await
        .unwrap();
    robot
        .queries
        .send(Query::ReplacePeers(vec![hub.info.clone()]))
        .await
        .unwrap();
    let id = robot.info.id;
    let status = hub
        .wait_status("session with the robot", |s| {
            s.peers.iter().any(|p| p.id == id && p.established)
        })
        .await;
    let peer = &status.peers[0];
    assert_eq!(peer.endpoint_origin, Some(EndpointOrigin::Learned));
    assert_eq!(peer.path, Path::Direct(robot.info.endpoint.unwrap()));
    sock_h
        .send_to(robot.info.virtual_ip, PORT, Lane::Critical, &payload(1, 64))
        .await
        .unwrap();
    assert_eq!(receive(&mut sock_r, hub.info.virtual_ip, 1).await, vec![1]);
    assert_eq!(Metrics::get(&hub.metrics.handshakes_initiated), 0);
    robot.shut_down().await;
    hub.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_echo_service_answers_on_the_critical_lane() {
    let (mut a, mut shell_a) = start(1, memory, NodeConfig::default()).await;
    let (mut b, mut shell_b) = start(2, no_device, NodeConfig::default()).await;
    let mut probe = shell_a.bind_service(port(), DEFAULT_RECV_QUEUE).unwrap();
    let echo = shell_b
        .bind_service(ServicePort::ECHO, DEFAULT_RECV_QUEUE)
        .unwrap();
    assert_eq!(ServicePort::ECHO.get(), 7);
    a.spawn(shell_a);
    b.spawn(shell_b);
    let responder = tokio::spawn(bauxite_conduit::io::echo::serve(echo));
    introduce(&a, &b).await;
    let critical_before = lanes(&b.metrics, |m| &m.lane_enqueued)[0];

    const PROBES: u32 = 50;
    for id in 0..PROBES {
        probe
            .send_to(
                b.info.virtual_ip,
                ServicePort::ECHO.get(),
                Lane::Critical,
                &payload(id, 64),
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < PROBES as usize {
        let (from, from_port, bytes) = tokio::time::timeout_at(deadline, probe.recv())
            .await
            .expect("every probe answered")
            .unwrap();
        assert_eq!(
            (from, from_port),
            (b.info.virtual_ip, ServicePort::ECHO.get())
        );
        let id = id_of(&bytes);
        assert_eq!(
            bytes,
            payload(id, 64),
            "reply {id} carries the request's bytes"
        );
        seen.push(id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..PROBES).collect::<Vec<_>>());
    // Every reply left b through its Critical lane, and nothing through the others.
    let after = lanes(&b.metrics, |m| &m.lane_enqueued);
    assert_eq!(after[0] - critical_before, u64::from(PROBES));
    assert_eq!(after[2], 0);
    a.shut_down().await;
    b.shut_down().await;
    assert_eq!(responder.await.unwrap(), u64::from(PROBES));
}
