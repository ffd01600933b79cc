//! The port rules the kernel program reads from its hash map, and the userspace function
//! they stand for.
//!
//! Invariant: [`LaneRules::classify`] with the default rules is conduit's
//! [`classify`](bauxite_conduit::scheduler::classify), packet for packet; the property test
//! below checks it and `tests/kernel.rs` checks the kernel against this function.

use std::collections::BTreeMap;

use bauxite_conduit::Lane;
use bauxite_conduit::ip::{IpView, PROTO_ICMP, PROTO_ICMPV6};
use bauxite_conduit::scheduler::{SMALL_PACKET_BYTES, TELEMETRY_PORT};

use crate::Error;
use crate::abi::MAX_PORT_RULES;

/// Port -> lane rules for TCP and UDP: the destination port is looked up first, then the
/// source port. They come after the Critical rules (small, ICMP), as port 5006 does in the
/// userspace classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneRules {
    ports: BTreeMap<u16, Lane>,
}

impl Default for LaneRules {
    /// Conduit's rules: port 5006 -> Telemetry.
    fn default() -> Self {
        Self {
            ports: BTreeMap::from([(TELEMETRY_PORT, Lane::Telemetry)]),
        }
    }
}

impl LaneRules {
    /// No port rules at all (every TCP/UDP packet that is not Critical is Bulk).
    pub fn empty() -> Self {
        Self {
            ports: BTreeMap::new(),
        }
    }

    /// Adds or replaces the rule for `port`; refused beyond the kernel map's capacity.
    pub fn set(&mut self, port: u16, lane: Lane) -> Result<(), Error> {
        if !self.ports.contains_key(&port) && self.ports.len() >= MAX_PORT_RULES {
            return Err(Error::TooManyRules {
                port,
                max: MAX_PORT_RULES,
            });
        }
        self.ports.insert(port, lane);
        Ok(())
    }

    /// The rules, by port.
    pub fn ports(&self) -> impl Iterator<Item = (u16, Lane)> + '_ {
        self.ports.iter().map(|(port, lane)| (*port, *lane))
    }

    /// The lane the kernel program gives `packet` (bytes from the IP header on).
    pub fn classify(&self, packet: &[u8]) -> Lane {
        if packet.len() < SMALL_PACKET_BYTES {
            return Lane::Critical;
        }
        let Ok(view) = IpView::parse(packet) else {
            return Lane::Bulk;
        };
        if matches!(
            (view.version(), view.protocol()),
            (4, PROTO_ICMP) | (6, PROTO_ICMPV6)
        ) {
            return Lane::Critical;
        }
        let rule = |port: Option<u16>| port.and_then(|port| self.ports.get(&port).copied());
        rule(view.dst_port())
            .or_else(|| rule(view.src_port()))
            .unwrap_or(Lane::Bulk)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bauxite_conduit::ip::build;
    use bauxite_conduit::scheduler::classify;
    use proptest::prelude::*;

    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

    #[test]
    fn destination_rule_wins_over_source_rule() {
        let mut rules = LaneRules::default();
        rules.set(443, Lane::Bulk).unwrap();
        rules.set(9000, Lane::Critical).unwrap();
        let mut pkt = Vec::new();
        build::ipv4_udp(A, B, TELEMETRY_PORT, 9000, &[0; 200], &mut pkt);
        assert_eq!(rules.classify(&pkt), Lane::Critical);
        build::ipv4_tcp(A, B, 9000, TELEMETRY_PORT, &[0; 200], &mut pkt);
        assert_eq!(rules.classify(&pkt), Lane::Telemetry);
        build::ipv4_tcp(A, B, 40000, 443, &[0; 200], &mut pkt);
        assert_eq!(rules.classify(&pkt), Lane::Bulk);
    }

    #[test]
    fn the_map_capacity_is_enforced() {
        let mut rules = LaneRules::empty();
        for port in 0..u16::try_from(MAX_PORT_RULES).unwrap() {
            rules.set(port, Lane::Telemetry).unwrap();
        }
        rules.set(0, Lane::Bulk).unwrap();
        assert!(matches!(
            rules.set(60000, Lane::Bulk),
            Err(Error::TooManyRules { port: 60000, .. })
        ));
    }

    proptest! {
        #[test]
        fn default_rules_are_conduits_classifier(
            version in prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
            proto in prop_oneof![Just(1u8), Just(6), Just(17), Just(58), any::<u8>()],
            port in prop_oneof![Just(TELEMETRY_PORT), any::<u16>()],
            mut bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            if let Some(first) = bytes.first_mut() { *first = version; }
            let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
            if bytes.len() > 40 {
                bytes[2..4].copy_from_slice(&len);
                bytes[9] = proto;
                bytes[6] = proto;
                bytes[22..24].copy_from_slice(&port.to_be_bytes());
            }
            prop_assert_eq!(LaneRules::default().classify(&bytes), classify(&bytes));
        }
    }
}
