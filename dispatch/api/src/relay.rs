//! The hub relay across replicas: on which replica two nodes that both need the hub's data
//! channel (`RelayService.Relay`) meet, and how a node says it is only visiting.
//!
//! Rule: the pair meets on the replica that holds the *lower* peer ID's home relay stream
//! (the session initiator's, [`Peer::relay_hub`](crate::proto::node::Peer::relay_hub)).
//! The lower node sends on its home stream; the higher node sends there too, on a second
//! stream it opens on that replica with [`VISIT_METADATA`] when it is connected to another
//! one. No frame crosses between replicas, and a replica's death moves both ends with the
//! lower node. Sans-IO: the node's shell asks [`relay_via`] per datagram.

use bauxite_conduit::PeerId;

/// gRPC metadata key a node sets (to any value, conventionally `1`) on a relay stream it
/// opens on a replica other than its own: the replica does not record it as the node's
/// presence. Streams without it are the node's home stream (what older nodes open).
pub const VISIT_METADATA: &str = "bauxite-relay-visit";

/// Which relay stream a datagram for a peer goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayVia<'a> {
    /// The node's home stream, on the replica it is connected to.
    Home,
    /// A visit stream on the replica at this URL, where the peer holds its home stream.
    Visit(&'a str),
}

/// Where `me`, at home on the replica at `home`, sends relay frames for `peer`, whose
/// topology entry says it holds its home relay stream on `peer_relay_hub` (empty:
/// unknown, none, or an older hub: the home stream, as before replicas).
pub fn relay_via<'a>(
    me: PeerId,
    home: &str,
    peer: PeerId,
    peer_relay_hub: &'a str,
) -> RelayVia<'a> {
    if me < peer || peer_relay_hub.is_empty() || same_replica(home, peer_relay_hub) {
        RelayVia::Home
    } else {
        RelayVia::Visit(peer_relay_hub)
    }
}

/// Whether two hub URLs name the same replica (scheme and host are case-insensitive; a
/// trailing slash does not count).
pub fn same_replica(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> PeerId {
        PeerId([b; 16])
    }

    const R1: &str = "https://r1.example:7443";
    const R2: &str = "https://r2.example:7443";

    #[test]
    fn the_lower_id_stays_home_and_the_higher_visits_its_replica() {
        // 1 < 2: node 1 meets node 2 on its own replica, whatever 2's replica is.
        assert_eq!(relay_via(id(1), R1, id(2), R2), RelayVia::Home);
        // Node 2 goes to node 1's replica.
        assert_eq!(relay_via(id(2), R2, id(1), R1), RelayVia::Visit(R1));
        // Both on one replica (however the URL is spelled): no second stream.
        assert_eq!(relay_via(id(2), R1, id(1), R1), RelayVia::Home);
        assert_eq!(
            relay_via(id(2), "HTTPS://R1.example:7443/", id(1), R1),
            RelayVia::Home
        );
    }

    #[test]
    fn without_a_published_relay_hub_the_home_stream_is_used() {
        // An older hub, a single hub, or a lower peer that holds no relay stream.
        assert_eq!(relay_via(id(2), R2, id(1), ""), RelayVia::Home);
    }

    proptest::proptest! {
        #[test]
        fn exactly_one_end_may_visit_and_it_visits_the_other_ends_home(
            a in proptest::array::uniform16(0u8..), b in proptest::array::uniform16(0u8..),
            a_on_r1 in proptest::bool::ANY, b_on_r1 in proptest::bool::ANY,
        ) {
            let (a, b) = (PeerId(a), PeerId(b));
            proptest::prop_assume!(a != b);
            let home = |on_r1: bool| if on_r1 { R1 } else { R2 };
            let (ha, hb) = (home(a_on_r1), home(b_on_r1));
            let via_a = relay_via(a, ha, b, hb);
            let via_b = relay_via(b, hb, a, ha);
            // Where each end's frames land: its home or the replica it visits.
            fn lands<'a>(via: RelayVia<'a>, own: &'a str) -> &'a str {
                match via {
                    RelayVia::Home => own,
                    RelayVia::Visit(url) => url,
                }
            }
            proptest::prop_assert_eq!(lands(via_a, ha), lands(via_b, hb), "both ends meet on one replica");
            proptest::prop_assert_eq!(lands(via_a, ha), home(if a < b { a_on_r1 } else { b_on_r1 }), "the lower ID's replica");
            proptest::prop_assert!(via_a == RelayVia::Home || via_b == RelayVia::Home);
        }
    }
}
