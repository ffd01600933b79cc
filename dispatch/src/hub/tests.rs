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

/// A provisioning request for `name` with keys derived from `seed`, proving possession
/// (also used by the admin UI's view tests).
pub(crate) fn named_request(token: &JoinToken, seed: u8, name: &str) -> ProvisionInput {
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

/// Both phases: register, then confirm (as `bauxite join` does).
fn join(hub: &Hub, at: UnixTime, req: ProvisionInput) -> Provisioned {
    let done = hub.provision(at, req).unwrap();
    hub.confirm(at, done.record.id).unwrap();
    done
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
    let a = join(&hub, T0, request(&t, 1));
    let b = join(&hub, T0, request(&t, 2));
    assert_ne!(a.record.virtual_ip, b.record.virtual_ip);
    assert!(matches!(
        hub.provision(T0, request(&t, 1)),
        Err(Error::ProvisionRejected(
            crate::ProvisionRejected::AlreadyJoined(_)
        ))
    ));
    assert_eq!(hub.subscribe_topology().borrow().snapshot().peers.len(), 2);
}

#[test]
fn revocation_refuses_calls_and_leaves_topology() {
    let hub = hub();
    let t = token(&hub, 3600, 2, 1);
    let a = join(&hub, T0, request(&t, 1));
    join(&hub, T0, request(&t, 2));
    let der = crate::pki::pem_to_der(&a.cert_pem).unwrap();
    assert_eq!(
        hub.authorize(Some(&der)).unwrap(),
        Caller::Node(a.record.id)
    );
    let feed = hub.subscribe_topology();
    let version = feed.borrow().version();
    hub.revoke(T0.plus(5), Caller::Admin, &a.record.id.to_string())
        .unwrap();
    assert!(matches!(
        hub.authorize(Some(&der)),
        Err(Error::CallRefused(CallRefused::Revoked { .. }))
    ));
    let snapshot = feed.borrow().snapshot();
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

#[test]
fn a_registration_is_pending_until_confirmed_and_then_in_the_topology() {
    let hub = hub();
    let t = token(&hub, 3600, 1, 1);
    let done = hub.provision(T0, request(&t, 1)).unwrap();
    assert_eq!(done.confirm_by, T0.plus(DEFAULT_CONFIRM_WINDOW_SECS));
    let id = done.record.id;
    assert!(hub.nodes().is_empty(), "pending is not a node yet");
    assert_eq!(hub.pending().len(), 1);
    assert!(
        hub.subscribe_topology()
            .borrow()
            .snapshot()
            .peers
            .is_empty()
    );
    // The new certificate may confirm, and nothing else.
    let der = crate::pki::pem_to_der(&done.cert_pem).unwrap();
    assert!(matches!(
        hub.authorize(Some(&der)),
        Err(Error::CallRefused(CallRefused::NotConfirmed(_)))
    ));
    assert_eq!(hub.authorize_confirm(Some(&der)).unwrap(), Caller::Node(id));
    hub.confirm(T0.plus(5), id).unwrap();
    assert_eq!(hub.authorize(Some(&der)).unwrap(), Caller::Node(id));
    assert!(hub.pending().is_empty());
    let peers = hub.subscribe_topology().borrow().snapshot().peers.clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id, id.to_string());
    // Confirming again changes nothing; expiry later touches nothing.
    let head = hub.store.audit_head().unwrap();
    hub.confirm(T0.plus(6), id).unwrap();
    assert!(hub.expire_pending(T0.plus(10_000)).unwrap().is_empty());
    assert_eq!(hub.store.audit_head().unwrap(), head);
    let actions: Vec<_> = hub
        .audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.body.action)
        .collect();
    assert!(actions.ends_with(&["node.provision".into(), "node.confirm".into()]));
}

#[test]
fn an_unconfirmed_registration_expires_frees_its_address_and_returns_the_token_use() {
    let hub = hub().with_confirm_window(60);
    let t = token(&hub, 3600, 1, 1);
    let ghost = hub.provision(T0, request(&t, 1)).unwrap();
    assert_eq!(hub.next_expiry(), Some(T0.plus(60)));
    // The single use is spent while the registration is pending.
    assert!(matches!(
        hub.provision(T0.plus(1), request(&t, 2)),
        Err(Error::TokenRejected(TokenRejected::UsedUp { .. }))
    ));
    assert!(hub.expire_pending(T0.plus(59)).unwrap().is_empty());
    assert_eq!(
        hub.expire_pending(T0.plus(60)).unwrap(),
        vec![ghost.record.id]
    );
    assert!(hub.pending().is_empty() && hub.nodes().is_empty());
    assert_eq!(hub.next_expiry(), None);
    // A late confirmation is refused: the node must join again.
    assert!(matches!(
        hub.confirm(T0.plus(61), ghost.record.id),
        Err(Error::CallRefused(CallRefused::UnknownNode(_)))
    ));
    let der = crate::pki::pem_to_der(&ghost.cert_pem).unwrap();
    assert!(hub.authorize_confirm(Some(&der)).is_err());
    // The token got its use back and the address is free again.
    let again = join(&hub, T0.plus(70), request(&t, 2));
    assert_eq!(again.record.virtual_ip, ghost.record.virtual_ip);
    let actions: Vec<_> = hub
        .audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.body.action)
        .collect();
    assert_eq!(
        actions,
        [
            "hub.start",
            "token.create",
            "node.provision",
            "node.expire",
            "node.provision",
            "node.confirm"
        ]
    );
}

#[test]
fn an_expired_token_does_not_get_its_use_back_and_a_late_confirm_expires_now() {
    let hub = hub().with_confirm_window(600);
    let t = token(&hub, 100, 1, 1);
    let ghost = hub.provision(T0, request(&t, 1)).unwrap();
    // Confirming after the window expires the registration on the spot.
    assert!(matches!(
        hub.confirm(T0.plus(600), ghost.record.id),
        Err(Error::CallRefused(CallRefused::RegistrationExpired { .. }))
    ));
    assert!(hub.pending().is_empty());
    let record = hub.store.token(t.id).unwrap().unwrap();
    assert_eq!(record.uses_left, 0, "the token itself expired at T0+100");
    let detail = hub.audit_entries().unwrap().pop().unwrap().body.detail;
    assert!(detail.contains("not restored"), "{detail}");
}

#[test]
fn a_pending_registration_can_be_revoked() {
    let hub = hub();
    let t = token(&hub, 3600, 1, 1);
    let pending = hub.provision(T0, request(&t, 1)).unwrap();
    let id = pending.record.id.to_string();
    let revoked = hub.revoke(T0.plus(1), Caller::Admin, &id).unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(hub.pending().is_empty());
    assert!(matches!(
        hub.confirm(T0.plus(2), pending.record.id),
        Err(Error::CallRefused(CallRefused::Revoked { .. }))
    ));
    let der = crate::pki::pem_to_der(&pending.cert_pem).unwrap();
    assert!(matches!(
        hub.authorize_confirm(Some(&der)),
        Err(Error::CallRefused(CallRefused::Revoked { .. }))
    ));
    assert!(
        hub.subscribe_topology()
            .borrow()
            .snapshot()
            .peers
            .is_empty()
    );
}

#[test]
fn candidates_reach_the_topology_after_the_endpoint_and_are_not_audited() {
    let hub = hub();
    let t = token(&hub, 3600, 1, 1);
    let a = join(&hub, T0, request(&t, 1));
    let id = a.record.id;
    let head = hub.store.audit_head().unwrap();
    let observed: std::net::SocketAddr = "10.0.0.7:51820".parse().unwrap();
    let local: std::net::SocketAddr = "192.168.1.7:51820".parse().unwrap();
    use super::candidates::Candidate;
    use bauxite_dispatch_api::proto::node::CandidateKind;
    let list = vec![
        Candidate::new(observed, CandidateKind::Observed),
        Candidate::new(local, CandidateKind::Host),
    ];
    let (version, published) = hub.set_candidates(id, list.clone()).unwrap();
    assert_eq!(published, vec![observed, local]);
    let snapshot = hub.subscribe_topology().borrow().snapshot();
    assert_eq!(snapshot.version, version);
    assert_eq!(snapshot.peers[0].endpoint, "");
    assert_eq!(
        snapshot.peers[0].candidates,
        vec![
            "10.0.0.7:51820".to_string(),
            "192.168.1.7:51820".to_string()
        ]
    );
    assert_eq!(
        snapshot.peers[0].candidate_kinds,
        vec![
            i32::from(CandidateKind::Observed),
            i32::from(CandidateKind::Host)
        ]
    );
    assert_eq!(
        hub.store.audit_head().unwrap(),
        head,
        "observations are not audited"
    );
    assert_eq!(
        hub.store.topology_version().unwrap(),
        version,
        "versions only grow"
    );
    // The same report again changes nothing.
    assert_eq!(hub.set_candidates(id, list.clone()).unwrap().0, version);
    // An advertised endpoint comes first and is not repeated among the candidates.
    hub.set_endpoint(T0, id, Some(local.to_string())).unwrap();
    let (_, published) = hub.set_candidates(id, list).unwrap();
    assert_eq!(published, vec![local, observed]);
    let peer = hub.subscribe_topology().borrow().snapshot().peers[0].clone();
    assert_eq!(peer.endpoint, local.to_string());
    assert_eq!(peer.candidates, vec![observed.to_string()]);
    assert_eq!(
        peer.candidate_kinds,
        vec![i32::from(CandidateKind::Observed)]
    );
    // A revoked node's candidates go with it.
    hub.revoke(T0.plus(1), Caller::Admin, &id.to_string())
        .unwrap();
    assert!(
        hub.subscribe_topology()
            .borrow()
            .snapshot()
            .peers
            .is_empty()
    );
}

/// The renewal proof node `seed` of [`named_request`] makes for `cert_pem`.
fn renew_proof(hub: &Hub, seed: u8, cert_pem: &str) -> (Vec<u8>, Vec<u8>) {
    let id = Identity::from_secrets([seed; 32], [seed.wrapping_add(100); 32]);
    let tls = Identity::from_secrets([seed.wrapping_add(50); 32], [0; 32])
        .public()
        .signing_public;
    let keys = NodeKeys {
        ed25519: id.public().signing_public,
        x25519: id.public().static_public,
        tls,
    };
    let der = crate::pki::pem_to_der(cert_pem).unwrap();
    let presented = CaFingerprint::of_der(&der);
    let proof = id.sign(&proof::renew_challenge(
        &hub.ca().fingerprint(),
        &keys,
        &presented,
    ));
    (der, proof.to_vec())
}

#[test]
fn renewal_is_decided_at_now_and_only_for_active_nodes() {
    let hub = hub().with_node_cert_validity(1000);
    let t = token(&hub, 3600, 2, 1);
    let a = join(&hub, T0, request(&t, 1));
    let (der, good) = renew_proof(&hub, 1, &a.cert_pem);
    let old = crate::pki::LeafFacts::from_der(&der).unwrap();
    assert_eq!(old.not_after, T0.0 + 1000);

    let renewed = hub.renew(T0.plus(700), Some(&der), &good).unwrap();
    assert_eq!(renewed.not_after, T0.plus(1700));
    assert_eq!(renewed.record.virtual_ip, a.record.virtual_ip);
    // Only the new certificate is accepted for ordinary calls from now on...
    let new_der = crate::pki::pem_to_der(&renewed.cert_pem).unwrap();
    assert_eq!(
        hub.authorize(Some(&new_der)).unwrap(),
        Caller::Node(a.record.id)
    );
    assert!(matches!(
        hub.authorize(Some(&der)),
        Err(Error::CallRefused(CallRefused::NotIssued(_)))
    ));
    // ...but the old one may still renew while unexpired (a lost answer is no lockout),
    // and not once it has expired.
    assert!(hub.renew(T0.plus(800), Some(&der), &good).is_ok());
    assert!(matches!(
        hub.renew(T0.plus(1000), Some(&der), &good),
        Err(Error::CallRefused(CallRefused::CertificateExpired { .. }))
    ));
    // A proof by another identity is refused.
    let (_, other) = renew_proof(&hub, 2, &a.cert_pem);
    assert!(hub.renew(T0.plus(800), Some(&der), &other).is_err());

    hub.revoke(T0.plus(900), Caller::Admin, &a.record.id.to_string())
        .unwrap();
    let before = hub.verify_audit().unwrap().0;
    assert!(matches!(
        hub.renew(T0.plus(901), Some(&new_der), &good),
        Err(Error::CallRefused(CallRefused::Revoked { .. }))
    ));
    assert_eq!(
        hub.verify_audit().unwrap().0,
        before,
        "nothing issued or audited"
    );
}

#[test]
fn a_reported_discovery_server_is_in_the_topology_until_it_stops() {
    use super::ros::RosDiscovery;
    let hub = hub();
    let t = token(&hub, 3600, 1, 1);
    let id = join(&hub, T0, request(&t, 1)).record.id;
    let head = hub.store.audit_head().unwrap();
    let before = hub.subscribe_topology().borrow().version();
    let role = RosDiscovery {
        port: 11811,
        server_id: 1,
    };
    hub.set_ros_discovery(id, Some(role)).unwrap();
    let snapshot = hub.subscribe_topology().borrow().snapshot();
    assert_eq!(snapshot.version, before + 1);
    assert_eq!(snapshot.peers[0].ros_discovery_port, 11811);
    assert_eq!(snapshot.peers[0].ros_discovery_server_id, 1);
    // The same report again is no new topology; no report is audited.
    hub.set_ros_discovery(id, Some(role)).unwrap();
    assert_eq!(hub.subscribe_topology().borrow().version(), before + 1);
    assert_eq!(hub.store.audit_head().unwrap(), head);
    hub.set_ros_discovery(id, None).unwrap();
    assert_eq!(
        hub.subscribe_topology().borrow().snapshot().peers[0].ros_discovery_port,
        0
    );
    let stranger = bauxite_conduit::PeerId::from_signing_public(&[9; 32]);
    assert!(hub.set_ros_discovery(stranger, Some(role)).is_err());
}
