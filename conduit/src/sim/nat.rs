//! NAT boxes for the simulator, by RFC 4787's two behaviours: how a box maps an inside
//! address to an outside port ([`Mapping`]), and which outside senders it lets back in
//! ([`Filtering`]). "Full cone" is endpoint-independent on both; "symmetric" (Linux
//! `masquerade fully-random`) is address-and-port-dependent mapping.
//!
//! Invariant: a box forwards an inbound datagram only to an inside address that has a
//! mapping on the port it arrived at, and only from a sender its filtering admits — an
//! unsolicited datagram is dropped, as real routers do. Mappings never expire here (a run
//! is seconds of virtual time; real boxes keep UDP mappings for 30 s or more after the
//! last packet, and the node's keepalives refresh them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// How a NAT box picks the outside port for an inside address (RFC 4787 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mapping {
    /// One outside port per inside address, whatever the destination ("cone").
    EndpointIndependent,
    /// A new outside port per destination IP address.
    AddressDependent,
    /// A new outside port per destination address and port ("symmetric").
    AddressAndPortDependent,
}

/// Which outside senders a NAT box lets through a mapping (RFC 4787 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filtering {
    /// Anyone, once the mapping exists ("full cone").
    EndpointIndependent,
    /// Only IP addresses the inside address has sent to ("restricted cone").
    AddressDependent,
    /// Only address-and-port pairs the inside address has sent to ("port-restricted").
    AddressAndPortDependent,
}

/// A NAT box's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatBehaviour {
    /// How outside ports are chosen.
    pub mapping: Mapping,
    /// Who may send back in.
    pub filtering: Filtering,
}

impl NatBehaviour {
    /// Every combination of mapping and filtering.
    pub fn all() -> impl Iterator<Item = NatBehaviour> {
        use Filtering as F;
        use Mapping as M;
        [
            M::EndpointIndependent,
            M::AddressDependent,
            M::AddressAndPortDependent,
        ]
        .into_iter()
        .flat_map(|mapping| {
            [
                F::EndpointIndependent,
                F::AddressDependent,
                F::AddressAndPortDependent,
            ]
            .into_iter()
            .map(move |filtering| NatBehaviour { mapping, filtering })
        })
    }
}

/// What a mapping is keyed by, depending on [`Mapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MapKey {
    Any(SocketAddr),
    Ip(SocketAddr, IpAddr),
    Endpoint(SocketAddr, SocketAddr),
}

/// One NAT box in front of one node.
#[derive(Clone, Debug)]
pub(crate) struct NatBox {
    pub(crate) behaviour: NatBehaviour,
    /// The box's outside address.
    pub(crate) public: IpAddr,
    next_port: u16,
    mappings: BTreeMap<MapKey, u16>,
    /// Outside port to (inside address, destinations it has sent to).
    ports: BTreeMap<u16, (SocketAddr, BTreeSet<SocketAddr>)>,
}

impl NatBox {
    pub(crate) fn new(behaviour: NatBehaviour, public: IpAddr, first_port: u16) -> Self {
        Self {
            behaviour,
            public,
            next_port: first_port,
            mappings: BTreeMap::new(),
            ports: BTreeMap::new(),
        }
    }

    /// Translates a datagram from `inside` to `dst` on its way out: the outside source
    /// address, creating the mapping (and the permission for `dst`) if needed.
    pub(crate) fn outbound(&mut self, inside: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let key = match self.behaviour.mapping {
            Mapping::EndpointIndependent => MapKey::Any(inside),
            Mapping::AddressDependent => MapKey::Ip(inside, dst.ip()),
            Mapping::AddressAndPortDependent => MapKey::Endpoint(inside, dst),
        };
        let port = match self.mappings.get(&key) {
            Some(port) => *port,
            None => {
                let port = self.next_port;
                self.next_port = self.next_port.wrapping_add(1).max(1024);
                self.mappings.insert(key, port);
                port
            }
        };
        self.ports
            .entry(port)
            .or_insert_with(|| (inside, BTreeSet::new()))
            .1
            .insert(dst);
        SocketAddr::new(self.public, port)
    }

    /// Where a datagram from `from` to the box's outside `port` goes inside, if the box
    /// lets it in.
    pub(crate) fn inbound(&self, port: u16, from: SocketAddr) -> Option<SocketAddr> {
        let (inside, sent_to) = self.ports.get(&port)?;
        let admitted = match self.behaviour.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => sent_to.iter().any(|d| d.ip() == from.ip()),
            Filtering::AddressAndPortDependent => sent_to.contains(&from),
        };
        admitted.then_some(*inside)
    }
}

/// Whether two nodes that know each other's server-reflexive addresses (as the hub saw
/// them) and dial each other at once must end up with a direct path: the oracle of the
/// NAT tests. `None` is a node on a public address, which behaves like a box that maps
/// and filters endpoint-independently.
///
/// A path exists when either node's initiation gets through and the answer gets back
/// ([`initiation_crosses`]).
pub fn direct_path_expected(a: Option<NatBehaviour>, b: Option<NatBehaviour>) -> bool {
    const OPEN: NatBehaviour = NatBehaviour {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::EndpointIndependent,
    };
    let (a, b) = (a.unwrap_or(OPEN), b.unwrap_or(OPEN));
    initiation_crosses(a, b) || initiation_crosses(b, a)
}

/// Whether an initiation from behind box `a` to the server-reflexive address of the node
/// behind box `b` (both dialling each other) is let in, and its answer let back.
///
/// In: `b`'s reflexive port is its mapping to the hub. An endpoint-independent filter
/// admits anyone there; an address-dependent one admits `a`'s IP only if `b` maps
/// endpoint-independently (its own initiation to `a` then left from that port, opening
/// it to `a`'s IP); an address-and-port-dependent one also needs `a`'s packet to come
/// from the exact address `b` dialled, so `a` must map endpoint-independently too.
/// Back: `b` answers to where the initiation came from; `a`'s mapping admits it unless
/// it filters by port and `b`'s answer leaves from a port other than the one `a` dialled
/// (a `b` that maps per destination).
pub fn initiation_crosses(a: NatBehaviour, b: NatBehaviour) -> bool {
    let predictable = |n: NatBehaviour| n.mapping == Mapping::EndpointIndependent;
    let admitted = match b.filtering {
        Filtering::EndpointIndependent => true,
        Filtering::AddressDependent => predictable(b),
        Filtering::AddressAndPortDependent => predictable(b) && predictable(a),
    };
    let answered = a.filtering != Filtering::AddressAndPortDependent || predictable(b);
    admitted && answered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mappings_and_filters_follow_their_behaviour() {
        let public: IpAddr = "203.0.113.1".parse().unwrap();
        let inside = addr("10.0.1.2:51820");
        let (x, x2, y) = (
            addr("192.0.2.1:1"),
            addr("192.0.2.1:2"),
            addr("192.0.2.2:1"),
        );
        for behaviour in NatBehaviour::all() {
            let mut nat = NatBox::new(behaviour, public, 40000);
            let to_x = nat.outbound(inside, x);
            let (to_x2, to_y) = (nat.outbound(inside, x2), nat.outbound(inside, y));
            assert_eq!(to_x.ip(), public);
            assert_eq!(nat.outbound(inside, x), to_x, "a mapping is reused");
            let (same_ip, other_ip) = match behaviour.mapping {
                Mapping::EndpointIndependent => (true, true),
                Mapping::AddressDependent => (true, false),
                Mapping::AddressAndPortDependent => (false, false),
            };
            assert_eq!(to_x2 == to_x, same_ip, "{behaviour:?}");
            assert_eq!(to_y == to_x, other_ip, "{behaviour:?}");
            // From an address never contacted, on the port mapped towards x.
            let stranger = addr("198.51.100.7:9");
            let admits_stranger = nat.inbound(to_x.port(), stranger).is_some();
            assert_eq!(
                admits_stranger,
                behaviour.filtering == Filtering::EndpointIndependent,
                "{behaviour:?}"
            );
            assert_eq!(nat.inbound(to_x.port(), x), Some(inside), "the dialled one");
            assert_eq!(nat.inbound(1, x), None, "no mapping on that port");
        }
    }
}
