use bauxite_conduit::identity::Identity;
use zeroize::Zeroizing;

use super::*;
use crate::Error;
use crate::error::{CallRefused, TokenRejected};
use crate::proof::{self, NodeKeys};
use crate::store::MemoryStore;
use crate::token::{CaFingerprint, JoinToken};

const T0: UnixTime = UnixTime(1_780_000_000);

fn hub() -> Hub {
    let ca = HubCa::generate(T0).unwrap();
    Hub::open(Box::new(MemoryStore::new()), ca, MeshCidr::default(), T0).unwrap()
}

fn token(hub: &Hub, ttl: u64, uses: u32, seed: u8) -> JoinToken {
    let new = NewToken {
        ttl_secs: ttl,
        uses,
        name: "robot".into(),
        id: [seed; 8],
        secret: Zeroizing::new([seed; 32]),
    };
    hub.create_token(T0, Caller::Admin, new).unwrap().0
}

fn request(token: &JoinToken, seed: u8) -> ProvisionInput {
    named_request(token, seed, "robot")
}

fn named_request(token: &JoinToken, seed: u8, name: &str) -> ProvisionInput {
    let id = Identity::from_secrets([seed; 32], [seed.wrapping_add(100); 32]);
    let tls = Identity::from_secrets([seed.wrapping_add(50); 32], [0; 32])
        .public()
        .signing_public;
    let keys = NodeKeys {
        ed25519: id.public().signing_public,
        x25519: id.public().static_public,
        tls,
    };
    let proof = id
        .sign(&proof::challenge(token.id, &token.ca, &keys, name))
        .to_vec();
    ProvisionInput {
        token_id: token.id,
        secret: token.secret.clone(),
        ca: token.ca,
        keys,
        name: name.into(),
        proof,
    }
}

#[test]
fn a_node_without_a_name_takes_the_tokens_name() {
    let hub = hub();
    let named = token(&hub, 3600, 2, 1);
    let done = hub
        .provision(T0.plus(1), named_request(&named, 1, ""))
        .unwrap();
    assert_eq!(done.record.name, "robot", "the token's --name");
    let own = hub
        .provision(T0.plus(1), named_request(&named, 2, "arm-3"))
        .unwrap();
    assert_eq!(own.record.name, "arm-3", "a name the node sent wins");
    let new = NewToken {
        ttl_secs: 3600,
        uses: 1,
        name: String::new(),
        id: [9; 8],
        secret: Zeroizing::new([9; 32]),
    };
    let unnamed = hub.create_token(T0, Caller::Admin, new).unwrap().0;
    let done = hub
        .provision(T0.plus(1), named_request(&unnamed, 3, ""))
        .unwrap();
    let id = done.record.id.to_string();
    assert_eq!(done.record.name, format!("node-{}", &id[..8]));
}

/// A refused request must leave tokens, nodes and the audit log exactly as they were.
fn assert_refused_changes_nothing(hub: &Hub, req: ProvisionInput, at: UnixTime, expected: &str) {
    let before = (
        hub.nodes(),
        hub.store.audit_head().unwrap(),
        hub.store.token(req.token_id).unwrap(),
    );
    let err = hub.provision(at, req).unwrap_err();
    assert!(err.to_string().contains(expected), "{err}");
    let after = (
        hub.nodes(),
        hub.store.audit_head().unwrap(),
        hub.store
            .token(
                before
                    .2
                    .as_ref()
                    .map(|t| t.id)
                    .unwrap_or(crate::token::TokenId([0; 8])),
            )
            .unwrap(),
    );
    assert_eq!(before, after);
}

#[test]
fn single_use_token_joins_once() {
    let hub = hub();
    let t = token(&hub, 3600, 1, 1);
    let done = hub.provision(T0.plus(1), request(&t, 1)).unwrap();
    assert_eq!(done.record.virtual_ip.to_string(), "100.64.0.1");
    assert!(matches!(
        hub.provision(T0.plus(2), request(&t, 2)),
        Err(Error::TokenRejected(TokenRejected::UsedUp { uses: 1, .. }))
    ));
    assert_refused_changes_nothing(&hub, request(&t, 3), T0.plus(2), "already used");
}

#[test]
fn expiry_uses_the_injected_clock() {
    let hub = hub();
    let t = token(&hub, 60, 1, 1);
    assert_refused_changes_nothing(&hub, request(&t, 1), T0.plus(60), "expired");
    assert!(hub.provision(T0.plus(59), request(&t, 1)).is_ok());
}

#[test]
fn forged_unknown_and_wrong_hub_tokens_are_refused() {
    let hub = hub();
    let t = token(&hub, 3600, 1, 1);
    let mut forged = request(&t, 1);
    forged.secret = Zeroizing::new([9; 32]);
    assert_refused_changes_nothing(&hub, forged.clone(), T0, "no join token with this ID");
    let mut wrong_hub = request(&t, 1);
    wrong_hub.ca = CaFingerprint([7; 32]);
    assert_refused_changes_nothing(&hub, wrong_hub, T0, "issued for the hub CA");
    let mut bad_proof = request(&t, 1);
    bad_proof.proof[0] ^= 1;
    assert_refused_changes_nothing(&hub, bad_proof, T0, "proof of possession");
    let unknown = JoinToken {
        id: crate::token::TokenId([5; 8]),
        ..t.clone()
    };
    let unknown_err = hub.provision(T0, request(&unknown, 1));
    assert!(matches!(
        unknown_err,
        Err(Error::TokenRejected(TokenRejected::Unknown(_)))
    ));
    // The same words for an unknown ID and a wrong secret: nothing to probe IDs with.
    let forged_err = hub.provision(T0, forged).unwrap_err();
    assert_eq!(unknown_err.unwrap_err().to_string(), forged_err.to_string());
}

#[test]
fn multi_use_token_assigns_distinct_addresses_and_refuses_rejoin() {
    let hub = hub();
    let t = token(&hub, 3600, 3, 1);
    let a = hub.provision(T0, request(&t, 1)).unwrap();
    let b = hub.provision(T0, request(&t, 2)).unwrap();
    assert_ne!(a.record.virtual_ip, b.record.virtual_ip);
    assert!(matches!(
        hub.provision(T0, request(&t, 1)),
        Err(Error::ProvisionRejected(
            crate::ProvisionRejected::AlreadyJoined(_)
        ))
    ));
    assert_eq!(hub.subscribe_topology().borrow().peers.len(), 2);
}

#[test]
fn revocation_refuses_calls_and_leaves_topology() {
    let hub = hub();
    let t = token(&hub, 3600, 2, 1);
    let a = hub.provision(T0, request(&t, 1)).unwrap();
    hub.provision(T0, request(&t, 2)).unwrap();
    let der = crate::pki::pem_to_der(&a.cert_pem).unwrap();
    assert_eq!(
        hub.authorize(Some(&der)).unwrap(),
        Caller::Node(a.record.id)
    );
    let feed = hub.subscribe_topology();
    let version = feed.borrow().version;
    hub.revoke(T0.plus(5), Caller::Admin, &a.record.id.to_string())
        .unwrap();
    assert!(matches!(
        hub.authorize(Some(&der)),
        Err(Error::CallRefused(CallRefused::Revoked { .. }))
    ));
    let snapshot = feed.borrow().clone();
    assert!(snapshot.version > version);
    assert!(
        snapshot
            .peers
            .iter()
            .all(|p| p.node_id != a.record.id.to_string())
    );
    assert!(matches!(
        hub.authorize(None),
        Err(Error::CallRefused(CallRefused::NoClientCertificate))
    ));
}

#[test]
fn policy_is_validated_versioned_and_audited() {
    let hub = hub();
    assert!(hub.set_policy(T0, Caller::Admin, "{\"rules\": 5}").is_err());
    let bad_ports = r#"{"rules":[{"protocol":"icmp","ports":{"start":1,"end":2}}]}"#;
    assert!(matches!(
        hub.set_policy(T0, Caller::Admin, bad_ports),
        Err(Error::InvalidPolicy(_))
    ));
    let p = hub
        .set_policy(T0, Caller::Admin, r#"{"rules":[],"default":"allow"}"#)
        .unwrap();
    assert_eq!(p.version, 1);
    assert_eq!(hub.policy().version, 1);
    let (count, result) = hub.verify_audit().unwrap();
    assert_eq!(count, 2, "hub.start + policy.set");
    assert!(result.is_ok());
}
