use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

/// Peer number `n` with its own IP and keys.
fn peer(n: u8) -> PeerInfo {
    peer_at(n, n)
}

/// Peer number `n` at virtual IP 100.64.0.`host`.
fn peer_at(n: u8, host: u8) -> PeerInfo {
    PeerInfo::new(
        format!("robot-{n}"),
        VirtualIp::from(Ipv4Addr::new(100, 64, 0, host)),
        [n; 32],
        [n.wrapping_add(100); 32],
        None,
    )
}

fn conflict(result: Result<impl std::fmt::Debug, Error>) -> PeerConflict {
    match result {
        Err(Error::PeerConflict(conflict)) => conflict,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn looks_up_by_ip_id_and_static_key() {
    let mut reg = PeerRegistry::new();
    reg.insert(peer(1)).unwrap();
    reg.insert(peer(2)).unwrap();
    let p = peer(2);
    assert_eq!(reg.by_ip(p.virtual_ip), Some(&p));
    assert_eq!(reg.by_id(p.id), Some(&p));
    assert_eq!(reg.by_static_public(&[2; 32]), Some(&p));
    assert_eq!(reg.by_static_public(&[9; 32]), None);
    assert_eq!(reg.version(), 2);
    let ids: Vec<PeerId> = reg.iter().map(|p| p.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "stable ascending ID order");
}

#[test]
fn two_peers_cannot_share_an_ip_or_key() {
    let mut reg = PeerRegistry::new();
    reg.insert(peer(1)).unwrap();
    let clash = peer_at(2, 1);
    assert_eq!(
        conflict(reg.insert(clash)),
        PeerConflict::VirtualIpInUse {
            ip: peer(1).virtual_ip,
            owner: peer(1).id
        }
    );
    let mut same_key = peer(3);
    same_key.static_public = [1; 32];
    assert_eq!(
        conflict(reg.upsert(same_key)),
        PeerConflict::StaticKeyInUse { owner: peer(1).id }
    );
    assert_eq!(
        conflict(reg.insert(peer(1))),
        PeerConflict::AlreadyRegistered(peer(1).id)
    );
    assert_eq!(
        (reg.len(), reg.version()),
        (1, 1),
        "refused changes leave no trace"
    );
}

#[test]
fn forged_ids_are_refused() {
    let mut forged = peer(1);
    forged.id = peer(2).id;
    assert_eq!(
        conflict(PeerRegistry::new().insert(forged)),
        PeerConflict::IdMismatch(peer(2).id)
    );
}

#[test]
fn upsert_moves_the_ip_cleanly() {
    let mut reg = PeerRegistry::new();
    reg.insert(peer(1)).unwrap();
    let moved = peer_at(1, 50);
    assert_eq!(reg.upsert(moved.clone()).unwrap(), Some(peer(1)));
    assert_eq!(reg.by_ip(peer(1).virtual_ip), None, "old IP released");
    assert_eq!(reg.by_ip(moved.virtual_ip), Some(&moved));
    // The released address can now go to another peer.
    reg.insert(peer_at(2, 1)).unwrap();
    assert_eq!(
        reg.by_ip(peer(1).virtual_ip).map(|p| p.id),
        Some(peer(2).id)
    );
    let version = reg.version();
    reg.upsert(moved).unwrap();
    assert_eq!(reg.version(), version, "identical upsert is not a change");
}

#[test]
fn replace_all_swaps_addresses_atomically() {
    let mut reg = PeerRegistry::new();
    reg.replace_all([peer_at(1, 10), peer_at(2, 20)]).unwrap();
    reg.replace_all([peer_at(1, 20), peer_at(2, 10)]).unwrap();
    assert_eq!(
        reg.by_ip(peer_at(1, 20).virtual_ip).map(|p| p.id),
        Some(peer(1).id)
    );
    let before = reg.clone();
    assert!(reg.replace_all([peer_at(1, 7), peer_at(2, 7)]).is_err());
    assert_eq!(reg, before, "a refused batch changes nothing");
    reg.replace_all([peer_at(2, 10), peer_at(1, 20)]).unwrap();
    assert_eq!(reg.version(), before.version(), "same table, no bump");
}

#[test]
fn remove_and_endpoint_updates_bump_the_version() {
    let mut reg = PeerRegistry::new();
    reg.insert(peer(1)).unwrap();
    let endpoint = "192.0.2.1:51820".parse().unwrap();
    assert!(reg.set_endpoint(peer(1).id, Some(endpoint)));
    assert!(!reg.set_endpoint(peer(2).id, Some(endpoint)));
    assert_eq!(reg.version(), 2);
    assert_eq!(reg.remove(peer(1).id).unwrap().endpoint, Some(endpoint));
    assert_eq!(reg.remove(peer(1).id), None);
    assert_eq!((reg.version(), reg.by_static_public(&[1; 32])), (3, None));
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u8),
    Upsert(u8, u8),
    Remove(u8),
    ReplaceAll(Vec<(u8, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    // Few peers and few addresses, so conflicts are common.
    let pair = (0u8..6, 0u8..6);
    prop_oneof![
        pair.clone().prop_map(|(n, h)| Op::Insert(n, h)),
        pair.clone().prop_map(|(n, h)| Op::Upsert(n, h)),
        (0u8..6).prop_map(Op::Remove),
        proptest::collection::vec(pair, 0..5).prop_map(Op::ReplaceAll),
    ]
}

proptest! {
    /// After any sequence of changes, accepted or refused, every index agrees with the
    /// peer table, and the version moves exactly when the table does.
    #[test]
    fn indices_stay_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        let mut reg = PeerRegistry::new();
        for op in ops {
            let before = reg.clone();
            let result = match op {
                Op::Insert(n, h) => reg.insert(peer_at(n, h)),
                Op::Upsert(n, h) => reg.upsert(peer_at(n, h)).map(drop),
                Op::Remove(n) => { reg.remove(peer(n).id); Ok(()) }
                Op::ReplaceAll(list) => reg.replace_all(list.into_iter().map(|(n, h)| peer_at(n, h))),
            };
            if result.is_err() {
                prop_assert_eq!(&reg, &before);
            }
            prop_assert_eq!(reg.version() > before.version(), reg.peers != before.peers);
            prop_assert_eq!(reg.by_ip.len(), reg.len());
            prop_assert_eq!(reg.by_static.len(), reg.len());
            for p in reg.iter() {
                prop_assert_eq!(reg.by_ip(p.virtual_ip), Some(p));
                prop_assert_eq!(reg.by_static_public(&p.static_public), Some(p));
                prop_assert_eq!(PeerId::from_signing_public(&p.signing_public), p.id);
            }
        }
    }
}
