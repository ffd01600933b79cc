use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

fn registry(n: u8) -> PeerRegistry {
    let mut reg = PeerRegistry::new();
    for i in 1..=n {
        let endpoint = (i % 2 == 0).then(|| format!("192.0.2.{i}:51820").parse().unwrap());
        reg.insert(PeerInfo::new(
            format!("robot-{i}"),
            VirtualIp::from(Ipv4Addr::new(100, 64, 0, i)),
            [i; 32],
            [i.wrapping_add(100); 32],
            endpoint,
        ))
        .unwrap();
    }
    reg
}

fn node() -> PeerId {
    PeerId::from_signing_public(&[42; 32])
}

fn snapshot_error(bytes: &[u8]) -> String {
    match StateSnapshot::from_bytes(bytes) {
        Err(Error::Snapshot(why)) => why,
        other => panic!("expected a snapshot error, got {other:?}"),
    }
}

#[test]
fn round_trips_and_restores_the_registry() {
    let reg = registry(5);
    let snapshot = StateSnapshot::capture(node(), &reg, 1_767_225_600);
    let bytes = snapshot.to_bytes().unwrap();
    assert!(bytes.starts_with(b"BXSNAP"));
    let decoded = StateSnapshot::from_bytes(&bytes).unwrap();
    assert_eq!(decoded, snapshot);
    let mut restored = PeerRegistry::new();
    decoded.restore_into(&mut restored).unwrap();
    assert!(restored.iter().eq(reg.iter()));
    assert_eq!(
        restored.by_static_public(&[3; 32]).map(|p| p.name.as_str()),
        Some("robot-3")
    );
}

#[test]
fn never_contains_a_session_secret() {
    // Whatever secrets a node holds in memory, the snapshot type has nowhere to put them;
    // this checks the encoding does not leak one by some other route.
    let session_key = *blake3::hash(b"a session key the node held").as_bytes();
    let reg = registry(8);
    let bytes = StateSnapshot::capture(node(), &reg, 0).to_bytes().unwrap();
    assert!(!bytes.windows(session_key.len()).any(|w| w == session_key));
    // The check itself can see a key: the peers' public keys are in there.
    assert!(bytes.windows(32).any(|w| w == [3u8; 32]));
}

#[test]
fn refuses_damaged_input_with_a_clear_reason() {
    let bytes = StateSnapshot::capture(node(), &registry(2), 7)
        .to_bytes()
        .unwrap();
    assert!(snapshot_error(&bytes[..20]).contains("truncated"));
    assert!(snapshot_error(&bytes[..bytes.len() - 1]).contains("checksum mismatch"));
    let mut flipped = bytes.clone();
    flipped[HEADER + 3] ^= 1;
    assert!(snapshot_error(&flipped).contains("checksum mismatch"));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(snapshot_error(&magic).contains("bad magic"));
    let mut future = bytes.clone();
    future[MAGIC.len()] = 2;
    assert_eq!(
        snapshot_error(&future),
        "format version 2, this build reads only 1"
    );
    let err = StateSnapshot::from_bytes(&future).unwrap_err().to_string();
    assert!(err.contains("delete it to cold-start"), "{err}");
}

#[test]
fn rejects_a_well_sealed_but_inconsistent_body() {
    // Valid framing and checksum around a body with trailing junk and a wrong version.
    let seal = |body: &[u8]| {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(body);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    };
    let mut snapshot = StateSnapshot::capture(node(), &registry(1), 0);
    let mut body = postcard::to_stdvec(&snapshot).unwrap();
    body.push(0);
    assert!(snapshot_error(&seal(&body)).contains("unexpected bytes"));
    snapshot.version = 9;
    let body = postcard::to_stdvec(&snapshot).unwrap();
    assert!(snapshot_error(&seal(&body)).contains("body says version 9"));
    assert!(snapshot_error(&seal(&[0xff; 3])).starts_with("body:"));
}

#[test]
fn restore_refuses_a_forged_table() {
    let mut snapshot = StateSnapshot::capture(node(), &registry(2), 0);
    snapshot.peers[1].virtual_ip = snapshot.peers[0].virtual_ip;
    let mut reg = registry(1);
    let before = reg.clone();
    assert!(snapshot.restore_into(&mut reg).is_err());
    assert_eq!(reg, before);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(matches!(StateSnapshot::from_bytes(&bytes), Err(Error::Snapshot(_))));
    }

    #[test]
    fn sealed_garbage_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&body);
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        let _ = StateSnapshot::from_bytes(&bytes);
    }

    #[test]
    fn round_trips_any_table(n in 0u8..20, taken_at in any::<u64>(), name in "\\PC{0,24}") {
        let mut reg = registry(n);
        if n > 0 {
            let mut first = reg.iter().next().unwrap().clone();
            first.name = name;
            reg.upsert(first).unwrap();
        }
        let snapshot = StateSnapshot::capture(node(), &reg, taken_at);
        let bytes = snapshot.to_bytes().unwrap();
        prop_assert_eq!(StateSnapshot::from_bytes(&bytes).unwrap(), snapshot);
        // Any single-byte corruption is caught.
        let mut corrupt = bytes.clone();
        let at = (taken_at as usize) % corrupt.len();
        corrupt[at] ^= 0x40;
        prop_assert!(StateSnapshot::from_bytes(&corrupt).is_err());
    }
}
