//! [`RosEnv`]: the environment that makes a ROS 2 process a client of the fleet's
//! discovery servers: `ROS_DISCOVERY_SERVER` and `ROS_DOMAIN_ID`.
//!
//! Invariant: `ROS_DISCOVERY_SERVER` is written in Fast DDS's positional syntax, where a
//! server's place in the `;`-separated list is its server ID (`fast-discovery-server -i`):
//! server 0 is first, server 2 alone is `;;10.0.0.1:11811`. A client that got the position
//! wrong would wait for a server GUID nobody has, so positions are never compacted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::Error;

/// The domain Bauxite's fleets use unless configured otherwise.
pub const DEFAULT_DOMAIN_ID: u16 = 42;
/// The largest domain ID whose RTPS ports fit in 16 bits.
pub const MAX_DOMAIN_ID: u16 = 232;

/// A discovery server: its ID and where it listens (a virtual IP and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerAddr {
    /// Its server ID, the position in `ROS_DISCOVERY_SERVER`.
    pub id: u8,
    /// Its address on the mesh.
    pub addr: SocketAddr,
}

/// The environment for ROS 2 processes on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosEnv {
    servers: BTreeMap<u8, SocketAddr>,
    domain_id: u16,
}

impl RosEnv {
    /// Checks that IDs are unique, the domain is valid and at least one server is known.
    pub fn new(
        servers: impl IntoIterator<Item = ServerAddr>,
        domain_id: u32,
    ) -> Result<Self, Error> {
        let domain_id = u16::try_from(domain_id)
            .ok()
            .filter(|d| *d <= MAX_DOMAIN_ID)
            .ok_or(Error::DomainId { domain: domain_id })?;
        let mut map: BTreeMap<u8, SocketAddr> = BTreeMap::new();
        for s in servers {
            if let Some(first) = map.get(&s.id) {
                if *first == s.addr {
                    continue;
                }
                return Err(Error::DuplicateServerId {
                    id: s.id,
                    first: first.to_string(),
                    second: s.addr.to_string(),
                });
            }
            map.insert(s.id, s.addr);
        }
        if map.is_empty() {
            return Err(Error::NoServers);
        }
        Ok(Self {
            servers: map,
            domain_id,
        })
    }

    /// The domain ID.
    pub fn domain_id(&self) -> u16 {
        self.domain_id
    }

    /// `ROS_DISCOVERY_SERVER`'s value, e.g. `100.64.0.1:11811` or `;100.64.0.9:11811`.
    pub fn discovery_server(&self) -> String {
        let last = self.servers.keys().next_back().copied().unwrap_or(0);
        let mut out = String::new();
        for id in 0..=last {
            if id > 0 {
                out.push(';');
            }
            if let Some(addr) = self.servers.get(&id) {
                let _ = write!(out, "{addr}");
            }
        }
        out
    }

    /// The variables to set, in a fixed order.
    pub fn vars(&self) -> [(&'static str, String); 2] {
        [
            ("ROS_DISCOVERY_SERVER", self.discovery_server()),
            ("ROS_DOMAIN_ID", self.domain_id.to_string()),
        ]
    }

    /// `export NAME='value'` lines for a POSIX shell (`eval "$(bauxite ros env)"`).
    pub fn exports(&self) -> String {
        let mut out = String::new();
        for (name, value) in self.vars() {
            // Single quotes take everything literally; the values hold no quote, but a
            // quote is escaped anyway so the output is always one word.
            let quoted = value.replace('\'', r"'\''");
            let _ = writeln!(out, "export {name}='{quoted}'");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server(id: u8, addr: &str) -> ServerAddr {
        ServerAddr {
            id,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn one_server_at_position_zero() {
        let env = RosEnv::new([server(0, "100.64.0.1:11811")], 42).unwrap();
        assert_eq!(env.discovery_server(), "100.64.0.1:11811");
        assert_eq!(
            env.exports(),
            "export ROS_DISCOVERY_SERVER='100.64.0.1:11811'\nexport ROS_DOMAIN_ID='42'\n"
        );
    }

    #[test]
    fn positions_follow_server_ids_with_gaps_kept() {
        let env = RosEnv::new(
            [server(2, "100.64.0.9:11811"), server(0, "100.64.0.1:11812")],
            7,
        )
        .unwrap();
        assert_eq!(env.discovery_server(), "100.64.0.1:11812;;100.64.0.9:11811");
        let only_one = RosEnv::new([server(1, "[fd00::1]:11811")], 0).unwrap();
        assert_eq!(only_one.discovery_server(), ";[fd00::1]:11811");
        assert_eq!(only_one.vars()[1], ("ROS_DOMAIN_ID", "0".to_string()));
    }

    #[test]
    fn mistakes_are_refused_with_the_fix() {
        let e = RosEnv::new(
            [server(0, "100.64.0.1:11811"), server(0, "100.64.0.2:11811")],
            42,
        )
        .unwrap_err();
        assert!(matches!(e, Error::DuplicateServerId { id: 0, .. }), "{e}");
        assert!(e.to_string().contains("its own ID"), "{e}");
        // The same server listed twice (config and topology) is one server.
        let twice = [server(0, "100.64.0.1:11811"), server(0, "100.64.0.1:11811")];
        assert_eq!(
            RosEnv::new(twice, 42).unwrap().discovery_server(),
            "100.64.0.1:11811"
        );
        let e = RosEnv::new([server(0, "100.64.0.1:11811")], 233).unwrap_err();
        assert!(e.to_string().contains("0 to 232"), "{e}");
        let e = RosEnv::new([], 42).unwrap_err();
        assert!(matches!(e, Error::NoServers), "{e}");
    }

    proptest! {
        /// Every server sits at the position of its ID, and the list is exactly as long
        /// as the largest ID needs.
        #[test]
        fn every_server_is_at_its_position(ids in proptest::collection::btree_set(any::<u8>(), 1..6)) {
            let servers: Vec<_> = ids
                .iter()
                .map(|&id| ServerAddr { id, addr: SocketAddr::from(([100, 64, 0, id], 11811)) })
                .collect();
            let text = RosEnv::new(servers.clone(), 42).unwrap().discovery_server();
            let parts: Vec<&str> = text.split(';').collect();
            prop_assert_eq!(parts.len(), usize::from(*ids.iter().next_back().unwrap()) + 1);
            for s in &servers {
                prop_assert_eq!(parts[usize::from(s.id)], s.addr.to_string());
            }
            prop_assert_eq!(parts.iter().filter(|p| !p.is_empty()).count(), servers.len());
        }
    }
}
