//! The kernel lane classifier in a real daemon: `bauxite run` attaches it to `bauxite0`,
//! and `status` and the metrics show its per-lane counters moving with real traffic.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use super::support::{can_run, wait_for};
use super::{Mesh, VIP};

fn kernel_lane(status: &serde_json::Value, lane: &str, field: &str) -> Option<u64> {
    status["offload"]["kernel_lanes"][lane][field].as_u64()
}

#[test]
fn the_daemon_classifies_its_tun_packets_in_the_kernel() {
    let Some(_machine) = can_run() else {
        return;
    };
    let mesh = Mesh::new();
    let node = &mesh.nodes[0];
    let status = node.status().unwrap();
    assert_eq!(status["offload"]["classifier"], "ebpf", "{status}");
    assert!(
        status["offload"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("bauxite0 egress"),
        "{status}"
    );

    let critical = kernel_lane(&status, "critical", "packets").unwrap();
    let telemetry = kernel_lane(&status, "telemetry", "packets").unwrap();
    assert!(mesh.net.ping(0, VIP[1], 5), "{}", mesh.logs());
    mesh.net.within(0, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            socket.send_to(&[9; 500], (VIP[1], 5006)).unwrap();
        }
    });
    let status = wait_for(Duration::from_secs(10), "kernel lane counters", || {
        let s = node.status()?;
        let pings = kernel_lane(&s, "critical", "packets")? >= critical + 5;
        let udp = kernel_lane(&s, "telemetry", "packets")? == telemetry + 3;
        (pings && udp).then_some(s)
    });
    assert!(kernel_lane(&status, "telemetry", "bytes").unwrap() >= 3 * 528);

    let scrape = mesh.net.within(0, || {
        let mut s = TcpStream::connect("127.0.0.1:9100").unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    assert!(
        scrape.contains("bauxite_lane_classifier{node=")
            && scrape.contains("classifier=\"ebpf\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("bauxite_kernel_lane_packets_total{node="),
        "{scrape}"
    );
}
