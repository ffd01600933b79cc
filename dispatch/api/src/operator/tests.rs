use super::*;
use crate::error::LockRefusal;
use bauxite_conduit::identity::Identity;
use proptest::prelude::*;

fn facts(seed: u8) -> NodeKeyFacts {
    let public = Identity::from_secrets([seed; 32], [seed.wrapping_add(1); 32]).public();
    NodeKeyFacts {
        node_id: public.peer_id(),
        ed25519: public.signing_public,
        x25519: public.static_public,
        virtual_ip: VirtualIp::from(std::net::Ipv4Addr::new(100, 64, 0, seed)),
    }
}

fn operator(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

const NOW: u64 = 1_800_000_000;

fn signed(seed: u8, op: &SigningKey) -> SignedKeyRecord {
    KeyRecord {
        facts: facts(seed),
        not_after: NOW + 3600,
        serial: 7,
    }
    .sign(op)
}

fn lock(op: &SigningKey) -> OperatorLock {
    OperatorLock::new(vec![op.verifying_key().to_bytes()])
}

#[test]
fn a_signed_record_matching_the_hubs_entry_is_accepted() {
    let op = operator(9);
    let record = signed(1, &op);
    let accepted = lock(&op).check(&facts(1), &record.encode(), NOW).unwrap();
    assert_eq!(accepted, record);
    assert_eq!(accepted.record.serial, 7);
}

#[test]
fn every_substituted_fact_is_refused_and_named() {
    let op = operator(9);
    let encoded = signed(1, &op).encode();
    let lock = lock(&op);
    let other = facts(2);
    let swaps = [
        (
            NodeKeyFacts {
                x25519: other.x25519,
                ..facts(1)
            },
            "X25519 static key",
        ),
        (
            NodeKeyFacts {
                ed25519: other.ed25519,
                ..facts(1)
            },
            "Ed25519 key",
        ),
        (
            NodeKeyFacts {
                node_id: other.node_id,
                ..facts(1)
            },
            "node ID",
        ),
        (
            NodeKeyFacts {
                virtual_ip: other.virtual_ip,
                ..facts(1)
            },
            "virtual IP",
        ),
    ];
    for (hub_sent, field) in swaps {
        assert_eq!(
            lock.check(&hub_sent, &encoded, NOW),
            Err(LockRefusal::KeysMismatch { field })
        );
    }
    // A substituted key with the victim's signature of another node's record: refused.
    let signed_other = signed(2, &op).encode();
    assert!(matches!(
        lock.check(&facts(1), &signed_other, NOW),
        Err(LockRefusal::KeysMismatch { .. })
    ));
}

#[test]
fn a_tampered_field_breaks_the_signature() {
    let op = operator(9);
    let record = signed(1, &op);
    let lock = lock(&op);
    // Every byte of the record and of the signature (not the version or the key).
    let encoded = record.encode();
    for i in 1..SIGNED_LEN {
        if (1 + RECORD_LEN..1 + RECORD_LEN + 32).contains(&i) {
            continue;
        }
        let mut bad = encoded.clone();
        bad[i] ^= 0x01;
        let outcome = lock.check(&facts(1), &bad, NOW);
        assert!(
            matches!(
                outcome,
                Err(LockRefusal::BadSignature)
                    | Err(LockRefusal::Malformed(KeyRecordRejected::NodeIdMismatch(_)))
            ),
            "byte {i}: {outcome:?}"
        );
    }
    // A longer expiry, re-encoded by an attacker without the key, does not verify.
    let mut extended = record;
    extended.record.not_after = u64::MAX;
    assert_eq!(
        lock.check(&facts(1), &extended.encode(), NOW),
        Err(LockRefusal::BadSignature)
    );
}

#[test]
fn a_wrong_or_untrusted_key_is_refused() {
    let (trusted, rogue) = (operator(9), operator(10));
    let by_rogue = signed(1, &rogue).encode();
    assert!(matches!(
        lock(&trusted).check(&facts(1), &by_rogue, NOW),
        Err(LockRefusal::UnknownOperator(_))
    ));
    // The rogue names the trusted key but signs with its own.
    let mut forged = signed(1, &rogue);
    forged.operator = trusted.verifying_key().to_bytes();
    assert_eq!(
        lock(&trusted).check(&facts(1), &forged.encode(), NOW),
        Err(LockRefusal::BadSignature)
    );
    // Either of two pinned keys will do.
    let both = OperatorLock::new(vec![
        trusted.verifying_key().to_bytes(),
        rogue.verifying_key().to_bytes(),
    ]);
    assert!(both.check(&facts(1), &by_rogue, NOW).is_ok());
}

#[test]
fn expired_unsigned_and_malformed_are_refused() {
    let op = operator(9);
    let lock = lock(&op);
    let record = signed(1, &op).encode();
    assert!(lock.check(&facts(1), &record, NOW + 3599).is_ok());
    assert_eq!(
        lock.check(&facts(1), &record, NOW + 3600),
        Err(LockRefusal::Expired {
            not_after: NOW + 3600
        })
    );
    assert_eq!(lock.check(&facts(1), &[], NOW), Err(LockRefusal::Unsigned));
    assert_eq!(
        LockRefusal::Unsigned.to_string().split(" (").next(),
        Some("key not signed by operator")
    );
    assert!(matches!(
        lock.check(&facts(1), &record[..100], NOW),
        Err(LockRefusal::Malformed(KeyRecordRejected::Length { .. }))
    ));
    let mut v2 = record.clone();
    v2[0] = 2;
    assert_eq!(
        lock.check(&facts(1), &v2, NOW),
        Err(LockRefusal::Malformed(KeyRecordRejected::Version(2)))
    );
}

#[test]
fn text_forms_round_trip_and_refuse_other_text() {
    let op = operator(9);
    let record = signed(1, &op);
    assert_eq!(
        SignedKeyRecord::from_text(&record.to_text()).unwrap(),
        record
    );
    assert_eq!(
        NodeKeyFacts::from_text(&facts(3).to_text()).unwrap(),
        facts(3)
    );
    assert!(matches!(
        SignedKeyRecord::from_text(&facts(3).to_text()),
        Err(KeyRecordRejected::Prefix { .. })
    ));
    let upper = record.to_text().to_uppercase().replace("BXOP1.", "bxop1.");
    assert_eq!(
        SignedKeyRecord::from_text(&upper),
        Err(KeyRecordRejected::Hex)
    );
    // A request whose node ID does not derive from its key.
    let mut lying = facts(3);
    lying.node_id = facts(4).node_id;
    assert!(matches!(
        NodeKeyFacts::from_text(&lying.to_text()),
        Err(KeyRecordRejected::NodeIdMismatch(_))
    ));
}

#[test]
fn operator_key_files_list_keys_with_comments() {
    let (a, b) = (operator(1).verifying_key(), operator(2).verifying_key());
    let text = format!(
        "# fleet operators\n{}\n\n{}  # backup key\n{}\n",
        hex::encode(a.as_bytes()),
        hex::encode(b.as_bytes()),
        hex::encode(a.as_bytes())
    );
    assert_eq!(
        parse_operator_keys(&text).unwrap(),
        vec![a.to_bytes(), b.to_bytes()]
    );
    assert_eq!(
        parse_operator_keys("# none\n"),
        Err(KeyRecordRejected::NoOperatorKey)
    );
    assert_eq!(parse_operator_keys("abcd\n"), Err(KeyRecordRejected::Hex));
    // The identity point is a weak key: never an operator.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    assert_eq!(
        parse_operator_keys(&hex::encode(weak)),
        Err(KeyRecordRejected::BadOperatorKey)
    );
}

proptest! {
    /// The parser never panics and accepts exactly the encoder's output.
    #[test]
    fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
        if let Ok(record) = SignedKeyRecord::parse(&bytes) {
            prop_assert_eq!(&record.encode(), &bytes);
        }
        let _ = NodeKeyFacts::from_bytes(&bytes);
        let _ = SignedKeyRecord::from_text(&String::from_utf8_lossy(&bytes));
    }

    /// Any record encodes and parses back to itself, and verifies after the round trip.
    #[test]
    fn records_round_trip(seed in 1u8..200, not_after: u64, serial: u64, op in any::<[u8; 32]>()) {
        let record = KeyRecord { facts: facts(seed), not_after, serial }.sign(&SigningKey::from_bytes(&op));
        let parsed = SignedKeyRecord::parse(&record.encode()).unwrap();
        prop_assert_eq!(parsed, record);
        prop_assert!(parsed.verify_signature().is_ok());
        prop_assert_eq!(SignedKeyRecord::from_text(&record.to_text()).unwrap(), record);
    }

    /// One flipped bit anywhere in a valid encoding is never accepted by the lock.
    #[test]
    fn a_flipped_bit_is_never_accepted(bit in 0usize..SIGNED_LEN * 8) {
        let op = operator(9);
        let mut bytes = signed(1, &op).encode();
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(lock(&op).check(&facts(1), &bytes, NOW).is_err());
    }
}
