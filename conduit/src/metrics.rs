//! Lock-free counters for the data plane, rendered as Prometheus text.
//!
//! Every counter only ever increases (relaxed atomics: they are statistics, not
//! synchronisation), so a scrape never sees a value go backwards.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Lane, PeerId};

mod bulk;
mod stages;

pub(crate) use bulk::PacingSource;
pub use bulk::{BulkPacing, BulkPacingGauge};
pub use stages::ConnectStageGauges;

/// Each peer's confirmed path MTU, for the metrics endpoint. Written only when discovery
/// changes a size (a handful of times per path, never per packet), so a short lock costs
/// the data plane nothing.
#[derive(Debug, Default)]
pub struct PathMtus(std::sync::Mutex<std::collections::BTreeMap<PeerId, u16>>);

impl PathMtus {
    /// Records `peer`'s path MTU, or forgets it (`None`).
    pub fn set(&self, peer: PeerId, mtu: Option<u16>) {
        // A writer that panicked left a plain map behind: still usable.
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match mtu {
            Some(mtu) => map.insert(peer, mtu),
            None => map.remove(&peer),
        };
    }

    /// Every peer's path MTU, in peer order.
    pub fn snapshot(&self) -> Vec<(PeerId, u16)> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(&p, &m)| (p, m)).collect()
    }
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// Node-wide counters. Shared by reference (`Arc<Metrics>`) with exporters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
            /// Per-lane packets handed to the scheduler (dropped ones included).
            pub lane_enqueued: [AtomicU64; 3],
            /// Per-lane packets handed to a path.
            pub lane_sent: [AtomicU64; 3],
            /// Per-lane packets dropped by the scheduler (overflow or eviction).
            pub lane_dropped: [AtomicU64; 3],
            /// Each peer's confirmed path MTU (a gauge, not a counter).
            pub path_mtu: PathMtus,
            /// Each peer's per-stage connect timings (ICE; gauges).
            pub connect_stages: ConnectStageGauges,
            /// Which controller paces bulk, and `auto`'s hand-overs.
            pub bulk_pacing: BulkPacingGauge,
        }

        impl Metrics {
            /// Plain values of every scalar counter, by name, in declaration order.
            pub fn scalars(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$( (stringify!($name), concat!($($doc),*), self.$name.load(Ordering::Relaxed)), )*]
            }
        }
    };
}

counters! {
    /// Packets sent to peers.
    tx_packets,
    /// Payload bytes sent to peers.
    tx_bytes,
    /// Outbound packets dropped: no route, no path, policy, or no session.
    tx_dropped,
    /// Packets received from peers and delivered.
    rx_packets,
    /// Payload bytes received from peers and delivered.
    rx_bytes,
    /// Inbound packets dropped for any reason.
    rx_dropped,
    /// Inbound packets refused as older than the anti-replay window (or past the
    /// session's message limit).
    rx_replayed,
    /// Inbound packets whose counter was already received: the second copy of a packet
    /// sent over two bonded paths or repeated for redundancy, a link duplicate, or a
    /// recent packet replayed (harmless: dropped before decryption).
    rx_duplicates,
    /// Inbound packets whose authentication tag failed (tampered or forged).
    rx_auth_failed,
    /// Inbound datagrams that are not mesh packets or are malformed.
    rx_malformed,
    /// Inbound data for a session index we do not hold.
    rx_unknown_session,
    /// Packets refused by the policy engine (either direction).
    policy_denied,
    /// Handshakes completed (either role).
    handshakes_completed,
    /// Handshake messages refused (bad MAC, unknown key, stale, undecryptable).
    handshakes_rejected,
    /// Handshake initiations sent, retries included.
    handshakes_initiated,
    /// Keepalives sent.
    keepalives_sent,
    /// Redundant copies sent: on a peer's second path (bonding) or repeated on the same
    /// path (a policy rule's `redundancy`).
    tx_redundant,
    /// Datagram bytes of the redundant copies (the cost of redundancy on the wire).
    tx_redundant_bytes,
    /// Bulk packets sent again because the peer's NACK said they were lost (loss repair).
    bulk_repairs_sent,
    /// NACKs sent: bulk packets from a peer were missing.
    bulk_nacks_sent,
    /// Bulk packets from peers held behind a hole until it was repaired or given up.
    bulk_held,
    /// Bulk packets from peers given up on: not repaired before their wait ran out.
    bulk_given_up,
    /// Bulk packets from peers that arrived twice (a repair whose original came late, or
    /// a link duplicate), dropped.
    bulk_seq_duplicates,
    /// Bulk packets sent while the node kept all it may for repair (4096 over all
    /// peers): not kept, so a loss of one stays a loss.
    bulk_unkept,
    /// Times a peer's holes were given up because the node held all it may behind holes
    /// (4096 over all peers).
    bulk_hold_overflows,
    /// Keepalives sent to a peer's other direct addresses to keep a second path alive.
    bond_probes_sent,
    /// Acknowledgement frames sent (the bulk lane's delay signal for the peer).
    acks_sent,
    /// Acknowledgement frames received and matched to a packet we sent.
    acks_received,
    /// Path MTU probes sent.
    pmtu_probes_sent,
    /// Path MTU probes the peer acknowledged.
    pmtu_probes_acked,
    /// Path MTU black holes detected (a confirmed size stopped passing; back to the base).
    pmtu_black_holes,
    /// Outbound packets larger than the peer's path carries, refused with an ICMP answer.
    tx_too_big,
    /// ICMP "fragmentation needed" / "packet too big" messages written back to TUN.
    icmp_too_big_sent,
    /// Outbound IPv4 packets without DF fragmented to fit the peer's path.
    tx_fragmented,
    /// TCP SYN / SYN-ACK whose MSS option was lowered to fit the peer's path.
    mss_clamped,
    /// Service datagrams from in-process users queued in a lane.
    service_tx_packets,
    /// Service datagrams from in-process users refused by the node (no route, policy).
    service_tx_dropped,
    /// Turns in which service datagrams waited for room in their lane (backpressure, not loss).
    service_tx_waits,
    /// Service datagrams delivered to a bound service socket.
    service_rx_packets,
    /// Service datagrams dropped because their socket's receive queue was full.
    service_rx_dropped,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds one to a lane's counter in one of the per-lane arrays.
    pub fn inc_lane(array: &[AtomicU64; 3], lane: Lane) {
        array[lane.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every counter in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, node: &str) -> String {
        let mut out = String::new();
        for (name, help, value) in self.scalars() {
            let _ = writeln!(out, "# HELP bauxite_{name}_total{help}");
            let _ = writeln!(out, "# TYPE bauxite_{name}_total counter");
            let _ = writeln!(out, "bauxite_{name}_total{{node=\"{node}\"}} {value}");
        }
        for (name, array, help) in [
            (
                "lane_enqueued",
                &self.lane_enqueued,
                "Packets accepted per lane.",
            ),
            ("lane_sent", &self.lane_sent, "Packets sent per lane."),
            (
                "lane_dropped",
                &self.lane_dropped,
                "Packets dropped per lane.",
            ),
        ] {
            let _ = writeln!(out, "# HELP bauxite_{name}_total {help}");
            let _ = writeln!(out, "# TYPE bauxite_{name}_total counter");
            for lane in Lane::ALL {
                let value = array[lane.index()].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "bauxite_{name}_total{{node=\"{node}\",lane=\"{}\"}} {value}",
                    lane.name()
                );
            }
        }
        let mtus = self.path_mtu.snapshot();
        if !mtus.is_empty() {
            let _ = writeln!(
                out,
                "# HELP bauxite_path_mtu_bytes Path MTU discovery confirmed per peer (IP packet bytes on the underlay)."
            );
            let _ = writeln!(out, "# TYPE bauxite_path_mtu_bytes gauge");
            for (peer, mtu) in mtus {
                let _ = writeln!(
                    out,
                    "bauxite_path_mtu_bytes{{node=\"{node}\",peer=\"{peer}\"}} {mtu}"
                );
            }
        }
        self.connect_stages.render_prometheus(node, &mut out);
        self.bulk_pacing.render_prometheus(node, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_lanes() {
        let m = Metrics::default();
        Metrics::add(&m.tx_bytes, 1350);
        Metrics::inc_lane(&m.lane_dropped, Lane::Bulk);
        let text = m.render_prometheus("n1");
        assert!(text.contains("bauxite_tx_bytes_total{node=\"n1\"} 1350"));
        assert!(text.contains("bauxite_lane_dropped_total{node=\"n1\",lane=\"bulk\"} 1"));
        assert!(text.contains("# TYPE bauxite_rx_replayed_total counter"));
        assert!(text.contains("# HELP bauxite_tx_packets_total Packets sent to peers."));
        assert!(
            !text.contains("bauxite_path_mtu_bytes"),
            "no peer, no gauge"
        );
        let peer = PeerId::from_signing_public(&[7; 32]);
        m.path_mtu.set(peer, Some(1200));
        let text = m.render_prometheus("n1");
        assert!(text.contains(&format!(
            "bauxite_path_mtu_bytes{{node=\"n1\",peer=\"{peer}\"}} 1200"
        )));
        m.path_mtu.set(peer, None);
        assert!(m.path_mtu.snapshot().is_empty());
    }
}
