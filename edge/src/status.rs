//! `bauxite status`: the report a running daemon returns on its control socket, and its
//! rendering as text.
//!
//! Invariant: the JSON form is the contract (scripts and tests read it); maps are
//! `BTreeMap`s so the output is stable from one call to the next.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bauxite_conduit::io::ShellStatus;
use bauxite_conduit::node::PeerStatus;
use bauxite_conduit::path::{EndpointOrigin, Path as MeshPath};
use bauxite_conduit::tun::TunKind;
use bauxite_conduit::{Lane, Metrics};
use serde::{Deserialize, Serialize};

use bauxite_conduit::offload::DataPlaneOffload;

mod bulk_pacing;

pub use bulk_pacing::BulkPacingReport;

use crate::hub_state::{CertState, HubState};
use crate::offload::OffloadReport;
use crate::operator_lock::LockReport;

/// The whole status of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node's peer ID (hex).
    pub peer_id: String,
    /// The bound UDP address.
    pub listen: String,
    /// `kernel <name>` or `memory (<why the kernel device failed>)`.
    pub tun: String,
    /// One entry per configured peer.
    pub peers: Vec<PeerReport>,
    /// Every node and shell counter by name.
    pub counters: BTreeMap<String, u64>,
    /// Per-lane counters: `critical`, `telemetry`, `bulk`.
    pub lanes: BTreeMap<String, LaneReport>,
    /// The node's standing with its hub; absent for a node without `[hub]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubState>,
    /// The node's hub certificate: expiry and renewal; absent without `[hub]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertState>,
    /// The ROS 2 discovery server this node runs (`[ros.server]`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ros: Option<crate::ros_cmd::RosReport>,
    /// ROS 2 discovery servers the hub's topology announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ros_servers: Vec<crate::ros_cmd::RosServerEntry>,
    /// The operator lock: pinned keys and the peers refused; absent while it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_lock: Option<LockReport>,
    /// The lane classifier (kernel eBPF or userspace) and the kernel's lane counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<OffloadReport>,
    /// The data plane thread's CPU scheduling (`SCHED_FIFO 10 (raised by the daemon)`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<String>,
    /// Which controller paces bulk: the configured one, and with `auto` the one in force
    /// now and the hand-overs so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_pacing: Option<BulkPacingReport>,
}

/// One peer's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Peer ID (hex).
    pub id: String,
    /// Configured name.
    pub name: String,
    /// Its virtual IP.
    pub virtual_ip: String,
    /// `direct ADDR`, `turn ADDR`, `hub` or `none`.
    pub path: String,
    /// `direct`, `turn`, `hub` or `none`.
    #[serde(default)]
    pub path_type: String,
    /// The selected endpoint (`ip:port`), if there is a path.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Where the direct endpoint comes from: `host`, `srflx` (the peer's NAT mapping,
    /// from the hub's STUN), `observed` (the hub's guess) as the hub labels it, else
    /// `learned` (from the peer's authenticated packets) or `configured`; on TURN,
    /// `relay` (the peer's relayed address, sent to from the mesh socket) or `turn-peer`
    /// (the peer's address as our TURN server sees it, sent to through our allocation).
    #[serde(default)]
    pub endpoint_kind: Option<String>,
    /// Whether a session can carry data now.
    pub established: bool,
    /// Milliseconds since the current session's handshake (rekeys restart it).
    pub handshake_age_ms: Option<u64>,
    /// Milliseconds since the session became usable (rekeys do not restart it).
    #[serde(default)]
    pub connected_for_ms: Option<u64>,
    /// Milliseconds from this node's first initiation to the handshake's completion
    /// (absent when the peer dialled).
    #[serde(default)]
    pub connect_ms: Option<u64>,
    /// Smoothed round trip over the session, microseconds.
    #[serde(default)]
    pub rtt_us: Option<u64>,
    /// The path MTU discovery confirmed (IP packet bytes on the underlay); the largest
    /// packet through the tunnel is this minus 57 (IPv4) or 77 (IPv6).
    #[serde(default)]
    pub path_mtu: Option<u16>,
    /// Where path MTU discovery stands: `idle`, `base`, `searching`, `complete`, `error`.
    #[serde(default)]
    pub pmtu: Option<String>,
    /// The peer's ICE session (`node.ice = true`): its selected pair and per-stage
    /// connect timings.
    #[serde(default)]
    pub ice: Option<IceView>,
    /// The peer's second live direct path (`ip:port`) with `node.bonding` on: copies go
    /// there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
}

/// One peer's ICE session in `bauxite status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceView {
    /// `inviting`, `checking`, `connected` or `failed`.
    pub phase: String,
    /// Whether this node controls (it has the lower peer ID and sent the INVITE).
    pub controlling: bool,
    /// The selected pair, `LOCAL -> REMOTE`, and the kind of the peer's end
    /// (`host`, `srflx`, `prflx`, `relay`).
    pub pair: Option<String>,
    /// Kind of the peer's end of the pair.
    pub remote_kind: Option<String>,
    /// The pair's round trip as the checks measured it, microseconds.
    pub pair_rtt_us: Option<u64>,
    /// First candidate sent to first candidate received, microseconds.
    pub signaling_us: Option<u64>,
    /// First remote candidate to the first working pair, microseconds.
    pub checks_us: Option<u64>,
    /// First working pair to the session being usable, microseconds (absent when the
    /// session was usable before the ICE session began: the hub's candidates answered
    /// first).
    pub handshake_us: Option<u64>,
    /// Session start (INVITE sent or received) to the session being usable, microseconds
    /// (absent like `handshake_us`).
    pub total_us: Option<u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl IceView {
    fn new(ice: &bauxite_conduit::node::IceStatus) -> Self {
        Self {
            phase: ice.phase.name().to_string(),
            controlling: ice.controlling,
            pair: ice.pair.map(|(l, r, _)| format!("{l} -> {r}")),
            remote_kind: ice.pair.map(|(_, _, k)| k.name().to_string()),
            pair_rtt_us: ice.rtt.map(micros),
            signaling_us: ice.stages.signaling.map(micros),
            checks_us: ice.stages.checks.map(micros),
            handshake_us: ice.stages.handshake.map(micros),
            total_us: ice.stages.total.map(micros),
        }
    }

    /// `ice connected pair A -> B (srflx)  signaling 12.0 ms  checks 3.1 ms  handshake 1.0 ms`.
    fn render(&self) -> String {
        let mut out = format!("ice {}", self.phase);
        if let Some(pair) = &self.pair {
            let _ = write!(out, " pair {pair}");
            if let Some(kind) = &self.remote_kind {
                let _ = write!(out, " ({kind})");
            }
        }
        for (name, us) in [
            ("signaling", self.signaling_us),
            ("checks", self.checks_us),
            ("handshake", self.handshake_us),
            ("total", self.total_us),
        ] {
            if let Some(us) = us {
                let _ = write!(out, "  {name} {:.1} ms", us as f64 / 1e3);
            }
        }
        out
    }
}

/// The name of the kind of `p`'s direct endpoint (see [`PeerReport::endpoint_kind`]).
pub fn endpoint_kind(p: &PeerStatus) -> Option<&'static str> {
    match p.path {
        MeshPath::Direct(_) => {}
        // The peer's relayed address on its TURN server.
        MeshPath::Relay(_) => return Some("relay"),
        // Where the peer's packets came from through our own allocation.
        MeshPath::Turn(_) => return Some("turn-peer"),
        MeshPath::Hub | MeshPath::Drop => return None,
    }
    match (p.endpoint_kind, p.endpoint_origin?) {
        (Some(kind), _) => Some(kind.name()),
        (None, EndpointOrigin::Learned) => Some("learned"),
        (None, EndpointOrigin::Configured) => Some("configured"),
    }
}

/// The path to `p` as one phrase: `direct 203.0.113.2:51820 (srflx)`, `turn ADDR (relay)`,
/// `hub …`, `none`.
pub fn path_phrase(p: &PeerStatus) -> String {
    match (p.path, endpoint_kind(p)) {
        (MeshPath::Direct(a), Some(kind)) => format!("direct {a} ({kind})"),
        (MeshPath::Direct(a), None) => format!("direct {a}"),
        (MeshPath::Relay(a), _) => format!("turn {a} (the peer's relay)"),
        (MeshPath::Turn(a), _) => format!("turn {a} (through our relay)"),
        (MeshPath::Hub, _) => "hub (relayed over the hub connection)".to_string(),
        (MeshPath::Drop, _) => "none".to_string(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One lane's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneReport {
    /// Packets accepted into the lane.
    pub enqueued: u64,
    /// Packets sent from the lane.
    pub sent: u64,
    /// Packets the lane dropped.
    pub dropped: u64,
}

impl StatusReport {
    /// Builds the report from the shell's answer, the node's counters and its standing
    /// with the hub (if it has one).
    pub fn new(
        status: &ShellStatus,
        metrics: &Metrics,
        hub: Option<HubState>,
        certificate: Option<CertState>,
    ) -> Self {
        let mut counters: BTreeMap<String, u64> = metrics
            .scalars()
            .into_iter()
            .map(|(name, _, value)| (name.to_string(), value))
            .collect();
        let c = status.counters;
        for (name, value) in [
            ("stun_ignored", c.stun_ignored),
            ("udp_send_errors", c.udp_send_errors),
            ("udp_send_blocked", c.udp_send_blocked),
            ("udp_recv_errors", c.udp_recv_errors),
            ("tun_write_dropped", c.tun_write_dropped),
            ("udp_gso_sends", c.udp_gso_sends),
            ("udp_gso_datagrams", c.udp_gso_datagrams),
            ("udp_gro_datagrams", c.udp_gro_datagrams),
            ("tun_gso_packets", c.tun_gso_packets),
            ("udp_critical_datagrams", c.udp_critical_datagrams),
            ("tun_critical_packets", c.tun_critical_packets),
        ] {
            counters.insert(name.to_string(), value);
        }
        let lanes = Lane::ALL
            .iter()
            .map(|lane| {
                let i = lane.index();
                let report = LaneReport {
                    enqueued: Metrics::get(&metrics.lane_enqueued[i]),
                    sent: Metrics::get(&metrics.lane_sent[i]),
                    dropped: Metrics::get(&metrics.lane_dropped[i]),
                };
                (lane.name().to_string(), report)
            })
            .collect();
        let peers = status
            .peers
            .iter()
            .map(|p| PeerReport {
                id: p.id.to_string(),
                name: p.name.clone(),
                virtual_ip: p.virtual_ip.to_string(),
                path: match p.path {
                    MeshPath::Direct(a) => format!("direct {a}"),
                    MeshPath::Relay(a) | MeshPath::Turn(a) => format!("turn {a}"),
                    MeshPath::Hub => "hub".to_string(),
                    MeshPath::Drop => "none".to_string(),
                },
                path_type: match p.path {
                    MeshPath::Direct(_) => "direct",
                    MeshPath::Relay(_) | MeshPath::Turn(_) => "turn",
                    MeshPath::Hub => "hub",
                    MeshPath::Drop => "none",
                }
                .to_string(),
                endpoint: match p.path {
                    MeshPath::Direct(a) | MeshPath::Relay(a) | MeshPath::Turn(a) => {
                        Some(a.to_string())
                    }
                    MeshPath::Hub | MeshPath::Drop => None,
                },
                endpoint_kind: endpoint_kind(p).map(str::to_string),
                established: p.established,
                handshake_age_ms: p.handshake_age.map(millis),
                connected_for_ms: p.connected_for.map(millis),
                connect_ms: p.connect_time.map(millis),
                rtt_us: p
                    .rtt
                    .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                path_mtu: p.path_mtu,
                pmtu: Some(p.pmtu_phase.name().to_string()),
                ice: p.ice.as_ref().map(IceView::new),
                secondary: p.secondary.map(|a| a.to_string()),
            })
            .collect();
        Self {
            peer_id: status.peer_id.to_string(),
            listen: status.listen.to_string(),
            tun: match &status.tun {
                TunKind::Kernel(name) => format!("kernel {name}"),
                TunKind::Memory(why) => format!("memory ({why})"),
                TunKind::None => "none (service sockets only)".to_string(),
            },
            peers,
            counters,
            lanes,
            hub,
            certificate,
            ros: None,
            ros_servers: Vec::new(),
            operator_lock: None,
            offload: None,
            scheduling: None,
            bulk_pacing: metrics
                .bulk_pacing
                .snapshot()
                .as_ref()
                .map(BulkPacingReport::new),
        }
    }

    /// Adds the operator lock's report, and its counters (`operator_refused_peers`: refused
    /// in the last topology; `operator_refusals_total`: since start).
    pub fn with_operator_lock(mut self, lock: Option<LockReport>) -> Self {
        if let Some(lock) = &lock {
            self.counters
                .insert("operator_refused_peers".into(), lock.refused.len() as u64);
            self.counters
                .insert("operator_refusals_total".into(), lock.refusals_total);
        }
        self.operator_lock = lock;
        self
    }

    /// Adds the lane classifier's state and kernel counters, read now.
    pub fn with_offload(mut self, offload: &dyn DataPlaneOffload) -> Self {
        self.offload = Some(OffloadReport::new(offload));
        self
    }

    /// Human-readable form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "node {}  listen {}  tun {}",
            self.peer_id, self.listen, self.tun
        );
        if let Some(scheduling) = &self.scheduling {
            let _ = writeln!(out, "cpu  {scheduling}");
        }
        if let Some(pacing) = &self.bulk_pacing {
            let _ = writeln!(out, "bulk {}", pacing.render());
        }
        if let Some(hub) = &self.hub {
            let _ = writeln!(out, "hub  {}", hub.render());
        }
        if let Some(cert) = &self.certificate {
            let _ = writeln!(out, "cert {}", cert.render());
        }
        if let Some(ros) = &self.ros {
            let _ = writeln!(out, "ros  {}", ros.render());
        }
        if !self.ros_servers.is_empty() {
            let list: Vec<String> = self
                .ros_servers
                .iter()
                .map(|s| format!("{} (id {})", s.address, s.id))
                .collect();
            let _ = writeln!(out, "ros  fleet discovery servers: {}", list.join(", "));
        }
        if let Some(lock) = &self.operator_lock {
            out.push_str(&lock.render());
        }
        let _ = writeln!(out, "\npeers:");
        for p in &self.peers {
            let state = if p.established {
                "established"
            } else {
                "not connected"
            };
            let mut path = p.path.clone();
            if let Some(kind) = &p.endpoint_kind {
                let _ = write!(path, " ({kind})");
            }
            if let Some(second) = &p.secondary {
                let _ = write!(path, " + bonded {second}");
            }
            let mut detail = String::new();
            if let Some(us) = p.rtt_us {
                let _ = write!(detail, "  rtt {:.1} ms", us as f64 / 1e3);
            }
            if let Some(mtu) = p.path_mtu {
                let _ = write!(detail, "  pmtu {mtu}");
                if let Some(phase) = p.pmtu.as_deref().filter(|&ph| ph != "complete") {
                    let _ = write!(detail, " ({phase})");
                }
            }
            if let Some(ms) = p.connected_for_ms {
                let _ = write!(detail, "  up {:.1} s", ms as f64 / 1e3);
            }
            if let Some(ms) = p.connect_ms {
                let _ = write!(detail, "  connected in {ms} ms");
            }
            if let Some(ms) = p.handshake_age_ms {
                let _ = write!(detail, "  handshake {:.1} s ago", ms as f64 / 1e3);
            }
            let _ = writeln!(
                out,
                "  {:<12} {:<15} {:<36} {state}{detail}",
                p.name, p.virtual_ip, path
            );
            if let Some(ice) = &p.ice {
                let _ = writeln!(out, "  {:<12} {}", "", ice.render());
            }
        }
        let _ = writeln!(out, "\nlanes:      enqueued        sent     dropped");
        for (name, l) in &self.lanes {
            let _ = writeln!(
                out,
                "  {name:<9} {:>10}  {:>10}  {:>10}",
                l.enqueued, l.sent, l.dropped
            );
        }
        if let Some(offload) = &self.offload {
            offload.render_text(&mut out);
        }
        let _ = writeln!(out, "\ncounters:");
        for (name, value) in &self.counters {
            let _ = writeln!(out, "  {name:<20} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(path_mtu: Option<u16>, pmtu: &str) -> PeerReport {
        PeerReport {
            id: "00".into(),
            name: "b".into(),
            virtual_ip: "100.64.0.2".into(),
            path: "direct 198.18.0.3:51820".into(),
            path_type: "direct".into(),
            endpoint: Some("198.18.0.3:51820".into()),
            endpoint_kind: None,
            established: true,
            handshake_age_ms: None,
            connected_for_ms: None,
            connect_ms: None,
            rtt_us: None,
            path_mtu,
            pmtu: Some(pmtu.into()),
            ice: None,
            secondary: None,
        }
    }

    #[test]
    fn a_bonded_peer_shows_its_second_path() {
        let mut bonded = peer(None, "idle");
        bonded.secondary = Some("198.19.0.3:51820".into());
        let text = report(vec![bonded.clone()]).render_text();
        assert!(
            text.contains("direct 198.18.0.3:51820 + bonded 198.19.0.3:51820"),
            "{text}"
        );
        let json = serde_json::to_value(report(vec![bonded])).unwrap();
        assert_eq!(json["peers"][0]["secondary"], "198.19.0.3:51820");
        let plain = serde_json::to_value(report(vec![peer(None, "idle")])).unwrap();
        assert!(
            plain["peers"][0].get("secondary").is_none(),
            "absent unless bonded"
        );
    }

    fn report(peers: Vec<PeerReport>) -> StatusReport {
        StatusReport {
            peer_id: "aa".into(),
            listen: "0.0.0.0:51820".into(),
            tun: "kernel bauxite0".into(),
            peers,
            counters: BTreeMap::new(),
            lanes: BTreeMap::new(),
            hub: None,
            certificate: None,
            ros: None,
            ros_servers: Vec::new(),
            operator_lock: None,
            offload: None,
            scheduling: Some("SCHED_FIFO 10 (raised by the daemon)".into()),
            bulk_pacing: None,
        }
    }

    #[test]
    fn the_bulk_controller_has_its_line_and_json_object() {
        let mut r = report(Vec::new());
        r.bulk_pacing = Some(BulkPacingReport {
            controller: "auto".into(),
            mode: Some("rate".into()),
            handovers: Some(3),
        });
        let text = r.render_text();
        assert!(
            text.contains("\nbulk auto: the rate model now (3 hand-overs)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["bulk_pacing"],
            serde_json::json!({"controller": "auto", "mode": "rate", "handovers": 3})
        );
        // A report from a daemon that does not say reads back without it, and shows no line.
        let mut old = json;
        old.as_object_mut().unwrap().remove("bulk_pacing");
        let parsed: StatusReport = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.bulk_pacing, None);
        assert!(!parsed.render_text().contains("\nbulk "));
    }

    #[test]
    fn ice_stages_are_shown_under_the_peer_and_in_json() {
        let mut p = peer(None, "idle");
        p.ice = Some(IceView {
            phase: "connected".into(),
            controlling: true,
            pair: Some("10.0.1.2:51820 -> 203.0.113.2:40000".into()),
            remote_kind: Some("srflx".into()),
            pair_rtt_us: Some(2_000),
            signaling_us: Some(51_000),
            checks_us: Some(3_100),
            handshake_us: Some(1_000),
            total_us: Some(55_100),
        });
        let r = report(vec![p]);
        let text = r.render_text();
        assert!(
            text.contains("ice connected pair 10.0.1.2:51820 -> 203.0.113.2:40000 (srflx)  signaling 51.0 ms  checks 3.1 ms  handshake 1.0 ms  total 55.1 ms"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["peers"][0]["ice"]["checks_us"], 3_100);
        // A report from a node without ICE reads back without it.
        let mut old = json.clone();
        old["peers"][0].as_object_mut().unwrap().remove("ice");
        let parsed: StatusReport = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.peers[0].ice, None);
    }

    #[test]
    fn the_data_plane_scheduling_has_its_line() {
        let text = report(Vec::new()).render_text();
        assert!(
            text.contains("cpu  SCHED_FIFO 10 (raised by the daemon)"),
            "{text}"
        );
    }

    #[test]
    fn path_mtu_is_shown_with_its_phase_until_complete() {
        let text = report(vec![peer(Some(1200), "complete")]).render_text();
        assert!(text.contains("  pmtu 1200"), "{text}");
        assert!(!text.contains("(complete)"), "{text}");
        let text = report(vec![peer(Some(1200), "searching")]).render_text();
        assert!(text.contains("pmtu 1200 (searching)"), "{text}");
        let text = report(vec![peer(None, "idle")]).render_text();
        assert!(!text.contains("pmtu"), "{text}");
    }

    #[test]
    fn json_carries_the_path_mtu_and_reads_old_reports() {
        let json = serde_json::to_value(report(vec![peer(Some(1200), "complete")])).unwrap();
        assert_eq!(json["peers"][0]["path_mtu"], 1200);
        assert_eq!(json["peers"][0]["pmtu"], "complete");
        // A report from a daemon without path MTU discovery still parses.
        let mut old = json;
        let entry = old["peers"][0].as_object_mut().unwrap();
        entry.remove("path_mtu");
        entry.remove("pmtu");
        let parsed: StatusReport = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.peers[0].path_mtu, None);
    }
}
