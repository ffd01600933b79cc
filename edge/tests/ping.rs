//! `bauxite ping` between two real daemons on loopback (no root: the in-memory device):
//! probes go to the peer's echo service on the Critical lane and come back; the report
//! counts every probe, the round trips are real, and both nodes' Critical lanes carried
//! them (per-lane counters), none went through Bulk; status names the bulk controller
//! (the default `auto`, on the adaptive window while no bulk flows), and so does the
//! metrics endpoint. A ping to an unknown peer is refused with the peers the node knows; a
//! ping by virtual IP works from the side that learned the other's endpoint from its
//! handshake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::{Daemon, LIMIT, bauxite, json, keygen, node_section, text, wait_for};

fn lane(status: &serde_json::Value, lane: &str, field: &str) -> u64 {
    status["lanes"][lane][field].as_u64().unwrap()
}

/// `GET /metrics` from a daemon's metrics listener: the response, head and body. The
/// daemon binds it just after its control socket: waits (bounded) until it accepts.
fn scrape(addr: SocketAddr) -> String {
    let mut s = wait_for(LIMIT, "the metrics listener", || {
        TcpStream::connect(addr).ok()
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn ping_between_two_daemons_uses_the_critical_lane() {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    let peer_a = keygen(&p("a/node.identity"), "robot-a");
    let peer_b = keygen(&p("b/node.identity"), "robot-b");

    // B knows A without an endpoint; it learns A's address from A's handshake.
    let config_b = p("b/config.toml");
    fs::write(
        &config_b,
        format!(
            "{}\n{}\nvirtual_ip = \"100.64.0.1\"\n",
            node_section(&p("b/node.identity"), "100.64.0.2/10", &p("b/control.sock")),
            peer_a
        ),
    )
    .unwrap();
    let mut b = Daemon::start(&config_b, p("b.log"));
    let listen_b = b.wait_running()["listen"].as_str().unwrap().to_owned();

    // A serves its metrics on a port free a moment ago (the daemon refuses to start if
    // another process took it since, which fails the test loudly, not wrongly).
    let metrics_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config_a = p("a/config.toml");
    fs::write(
        &config_a,
        format!(
            "{}metrics_listen = \"{metrics_addr}\"\n\n{}\nvirtual_ip = \"100.64.0.2\"\nendpoint = \"{listen_b}\"\n",
            node_section(&p("a/node.identity"), "100.64.0.1/10", &p("a/control.sock")),
            peer_b
        ),
    )
    .unwrap();
    let mut a = Daemon::start(&config_a, p("a.log"));
    let before = a.wait_running();

    let report = json(
        &config_a,
        &["ping", "robot-b", "--count", "40", "--rate", "200"],
    );
    assert_eq!(report["name"], "robot-b");
    assert_eq!(report["virtual_ip"], "100.64.0.2");
    assert_eq!(report["lane"], "critical");
    assert_eq!(report["sent"], 40);
    assert_eq!(report["received"], 40, "loopback loses nothing: {report}");
    assert_eq!(report["loss_percent"], 0.0);
    let (p50, p99, max) = (
        report["p50_us"].as_u64().unwrap(),
        report["p99_us"].as_u64().unwrap(),
        report["max_us"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{report}");
    // Every reply came straight from B's socket, the address A was configured with.
    assert_eq!(
        report["paths"],
        serde_json::json!([{"path": format!("direct {listen_b} (configured)"), "replies": 40}]),
        "{report}"
    );

    let after = a.wait_running();
    assert!(
        lane(&after, "critical", "sent") >= lane(&before, "critical", "sent") + 40,
        "{after}"
    );
    assert_eq!(
        lane(&after, "bulk", "enqueued"),
        lane(&before, "bulk", "enqueued"),
        "no probe went through the bulk lane: {after}"
    );
    let b_status = b.wait_running();
    assert!(
        lane(&b_status, "critical", "sent") >= 40,
        "B's replies: {b_status}"
    );

    // Status shows each side's path, where its endpoint came from, the round trip the
    // session measured and how the session came up: A dialled (so it timed the
    // handshake), B learned A's address from A's packets.
    let to_b = &after["peers"][0];
    assert_eq!(to_b["name"], "robot-b");
    assert_eq!(to_b["path_type"], "direct", "{after}");
    assert_eq!(to_b["endpoint"], listen_b.as_str());
    assert_eq!(to_b["endpoint_kind"], "configured");
    let rtt = to_b["rtt_us"].as_u64().unwrap();
    assert!(rtt > 0 && rtt <= max.max(1_000_000), "{after}");
    assert!(to_b["connect_ms"].is_u64(), "{after}");
    assert!(to_b["connected_for_ms"].is_u64(), "{after}");
    let to_a = &b_status["peers"][0];
    assert_eq!(to_a["path_type"], "direct", "{b_status}");
    assert_eq!(to_a["endpoint_kind"], "learned", "{b_status}");
    assert!(to_a["connect_ms"].is_null(), "B did not dial: {b_status}");
    assert!(to_a["rtt_us"].as_u64().is_some_and(|r| r > 0), "{b_status}");
    // Which controller paces bulk: the default `auto`, still on the adaptive window (no
    // bulk has been sent, so no path has been quiet for a second of it), never handed over.
    for status in [&before, &after, &b_status] {
        assert_eq!(
            status["bulk_pacing"],
            serde_json::json!({"controller": "auto", "mode": "adaptive", "handovers": 0}),
            "{status}"
        );
    }
    let out = bauxite(&config_a, &["status"]);
    let t = text(&out);
    assert!(
        t.contains(&format!("direct {listen_b} (configured)")) && t.contains("rtt "),
        "{t}"
    );
    assert!(
        t.contains("\nbulk auto: the adaptive window now (0 hand-overs)\n"),
        "{t}"
    );
    // The metrics endpoint says the same (series labelled with the node's ID).
    let metrics = scrape(metrics_addr);
    let node = after["peer_id"].as_str().unwrap();
    for series in [
        format!("bauxite_bulk_pacing{{node=\"{node}\",controller=\"auto\",mode=\"adaptive\"}} 1\n"),
        format!("bauxite_bulk_pacing{{node=\"{node}\",controller=\"auto\",mode=\"rate\"}} 0\n"),
        format!("bauxite_bulk_pacing_handovers_total{{node=\"{node}\",controller=\"auto\"}} 0\n"),
    ] {
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }

    // The other way, by virtual IP; text output.
    let out = bauxite(
        &config_b,
        &["ping", "100.64.0.1", "--count", "5", "--rate", "50"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("robot-a (100.64.0.1)")
            && t.contains("5 sent, 5 received, 0.0% loss")
            && t.contains("5 replies via direct ")
            && t.contains("(learned)"),
        "{t}"
    );

    // An unknown peer: refused, naming the known ones.
    let out = bauxite(&config_a, &["ping", "robot-z"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("robot-z") && t.contains("robot-b (100.64.0.2)"),
        "{t}"
    );
    // Out-of-range options are refused before the daemon is asked.
    let out = bauxite(&config_a, &["ping", "robot-b", "--rate", "100000"]);
    assert!(
        !out.status.success() && text(&out).contains("--rate"),
        "{}",
        text(&out)
    );

    a.stop();
    b.stop();
}
