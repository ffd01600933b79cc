//! The UDP ports RTPS (the DDS wire protocol) uses, from the OMG DDSI-RTPS well-known port
//! formula with Fast DDS's defaults: `PB = 7400`, `DG = 250`, `PG = 2`, offsets
//! `d0 = 0`, `d1 = 10`, `d2 = 1`, `d3 = 11`. For domain 42: discovery multicast 17900,
//! user multicast 17901, participant `p`'s discovery unicast `17910 + 2p` and user-data
//! unicast `17911 + 2p`. A domain owns the 250 ports from its base, so lane and firewall
//! rules can name a whole domain or one participant's data port.
//!
//! Invariant: every function returns `None` rather than a port that overflows 16 bits.

use std::ops::RangeInclusive;

const PB: u32 = 7400;
const DG: u32 = 250;
const PG: u32 = 2;

fn port(domain: u16, offset: u32, participant: u8) -> Option<u16> {
    let p = PB + DG * u32::from(domain) + offset + PG * u32::from(participant);
    u16::try_from(p).ok()
}

/// Discovery (SPDP) multicast port of `domain` (unused with a discovery server).
pub fn discovery_multicast(domain: u16) -> Option<u16> {
    port(domain, 0, 0)
}

/// User-data multicast port of `domain`.
pub fn user_multicast(domain: u16) -> Option<u16> {
    port(domain, 1, 0)
}

/// Discovery (metatraffic) unicast port of participant `participant` in `domain`.
pub fn discovery_unicast(domain: u16, participant: u8) -> Option<u16> {
    port(domain, 10, participant)
}

/// User-data unicast port of participant `participant` in `domain`: where its topics'
/// samples arrive (the port to map to a lane).
pub fn user_unicast(domain: u16, participant: u8) -> Option<u16> {
    port(domain, 11, participant)
}

/// Every port `domain` can use (its 250-port block).
pub fn domain_ports(domain: u16) -> Option<RangeInclusive<u16>> {
    Some(port(domain, 0, 0)?..=port(domain, DG - 1, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_42_ports() {
        assert_eq!(discovery_multicast(42), Some(17900));
        assert_eq!(user_multicast(42), Some(17901));
        assert_eq!(discovery_unicast(42, 0), Some(17910));
        assert_eq!(user_unicast(42, 0), Some(17911));
        assert_eq!(user_unicast(42, 3), Some(17917));
        assert_eq!(domain_ports(42), Some(17900..=18149));
        assert_eq!(discovery_multicast(0), Some(7400));
    }

    #[test]
    fn ports_never_overflow() {
        assert_eq!(domain_ports(232), None, "65400 + 249 is above 65535");
        assert_eq!(domain_ports(228), Some(64400..=64649));
        assert_eq!(discovery_unicast(232, 62), Some(65534));
        assert_eq!(user_unicast(232, 62), Some(65535));
        assert_eq!(user_unicast(232, 63), None);
        assert_eq!(discovery_multicast(u16::MAX), None);
    }
}
