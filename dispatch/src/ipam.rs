//! Virtual IP allocation from the mesh CIDR.
//!
//! Invariant: an allocated address is a host address of the CIDR (never the network or
//! broadcast address) that no existing node, active or revoked, holds. Addresses of revoked
//! nodes are not reused, so a stale route on some robot never points at a newcomer.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use bauxite_conduit::VirtualIp;

use crate::Error;

/// An IPv4 network, e.g. `100.64.0.0/10`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshCidr {
    network: u32,
    prefix: u8,
}

impl MeshCidr {
    /// Builds a CIDR; `addr` must have no host bits set and `prefix` must be 8..=30.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        let bad = |problem: String| Error::InvalidArgument {
            field: "mesh CIDR",
            problem,
        };
        if !(8..=30).contains(&prefix) {
            return Err(bad(format!("prefix /{prefix} must be between /8 and /30")));
        }
        let network = u32::from(addr);
        if network & !Self::mask(prefix) != 0 {
            return Err(bad(format!("{addr}/{prefix} has host bits set")));
        }
        Ok(Self { network, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX << (32 - u32::from(prefix))
    }

    /// First assignable host address.
    pub fn first_host(&self) -> u32 {
        self.network + 1
    }

    /// Last assignable host address (the one before broadcast).
    pub fn last_host(&self) -> u32 {
        (self.network | !Self::mask(self.prefix)) - 1
    }

    /// Whether `ip` is a host address of this network.
    pub fn contains(&self, ip: VirtualIp) -> bool {
        (self.first_host()..=self.last_host()).contains(&ip.0)
    }

    /// The lowest host address not in `used`, or `None` when the mesh is full.
    pub fn allocate(&self, used: &BTreeSet<VirtualIp>) -> Option<VirtualIp> {
        let mut candidate = self.first_host();
        for ip in used.range(VirtualIp(candidate)..=VirtualIp(self.last_host())) {
            if ip.0 != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= self.last_host()).then_some(VirtualIp(candidate))
    }
}

impl Default for MeshCidr {
    /// `100.64.0.0/10`, the carrier-grade NAT range that mesh VPNs conventionally use.
    fn default() -> Self {
        Self {
            network: u32::from(Ipv4Addr::new(100, 64, 0, 0)),
            prefix: 10,
        }
    }
}

impl FromStr for MeshCidr {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidArgument {
            field: "mesh CIDR",
            problem: format!("{text:?} is not of the form 100.64.0.0/10"),
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix)
    }
}

impl fmt::Display for MeshCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> VirtualIp {
        VirtualIp::from(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn allocates_lowest_free_host() {
        let cidr: MeshCidr = "100.64.0.0/10".parse().unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(cidr.allocate(&used), Some(ip(100, 64, 0, 1)));
        used.extend([ip(100, 64, 0, 1), ip(100, 64, 0, 2), ip(100, 64, 0, 4)]);
        assert_eq!(cidr.allocate(&used), Some(ip(100, 64, 0, 3)));
        used.insert(ip(100, 64, 0, 3));
        assert_eq!(cidr.allocate(&used), Some(ip(100, 64, 0, 5)));
    }

    #[test]
    fn full_small_network() {
        let cidr: MeshCidr = "10.0.0.0/30".parse().unwrap();
        let used: BTreeSet<_> = [ip(10, 0, 0, 1), ip(10, 0, 0, 2)].into();
        assert_eq!(cidr.allocate(&used), None);
        assert!(!cidr.contains(ip(10, 0, 0, 3)), "broadcast is not a host");
        assert!(!cidr.contains(ip(10, 0, 0, 0)), "network is not a host");
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "100.64.0.1/10",
            "100.64.0.0/31",
            "100.64.0.0",
            "x/10",
            "100.64.0.0/x",
        ] {
            assert!(bad.parse::<MeshCidr>().is_err(), "{bad}");
        }
        assert_eq!(MeshCidr::default().to_string(), "100.64.0.0/10");
    }
}
