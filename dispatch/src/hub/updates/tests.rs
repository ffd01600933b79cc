use bauxite_conduit::identity::Identity;
use zeroize::Zeroizing;

use super::*;
use crate::hub::{Deploy, DeployTo};
use crate::hub::{NewToken, ProvisionInput};
use crate::ipam::MeshCidr;
use crate::pki::HubCa;
use crate::proof::{self, NodeKeys};
use crate::store::{MemoryStore, PackageImage};

const T0: UnixTime = UnixTime(1_780_000_000);

fn hub_with_nodes(n: u8) -> (Hub, Vec<PeerId>) {
    let ca = HubCa::generate(T0).unwrap();
    let hub = Hub::open(Box::new(MemoryStore::new()), ca, MeshCidr::default(), T0).unwrap();
    let mesh = Identity::from_secrets([200; 32], [201; 32]);
    hub.register_hub_node(T0, &mesh.public(), None).unwrap();
    let new = NewToken {
        ttl_secs: 3600,
        uses: u32::from(n.max(1)),
        name: "robot".into(),
        id: [1; 8],
        secret: Zeroizing::new([1; 32]),
    };
    let token = hub.create_token(T0, Caller::Admin, new).unwrap().0;
    let mut ids = Vec::new();
    for seed in 1..=n {
        let id = Identity::from_secrets([seed; 32], [seed + 100; 32]);
        let keys = NodeKeys {
            ed25519: id.public().signing_public,
            x25519: id.public().static_public,
            tls: Identity::from_secrets([seed + 50; 32], [0; 32])
                .public()
                .signing_public,
        };
        let proof = id.sign(&proof::challenge(token.id, &token.ca, &keys, "r"));
        let input = ProvisionInput {
            token_id: token.id,
            secret: token.secret.clone(),
            ca: token.ca,
            keys,
            name: "r".into(),
            proof: proof.to_vec(),
        };
        let id = hub.provision(T0, input).unwrap().record.id;
        hub.confirm(T0, id).unwrap();
        ids.push(id);
    }
    (hub, ids)
}

fn package(name: &str, version: &str) -> PackageRecord {
    PackageRecord {
        name: name.into(),
        version: version.into(),
        target: target_name(name, version),
        image: PackageImage::Virtual {
            size: 1 << 20,
            seed: 1,
        },
        length: 1 << 20,
        chunk_count: 16,
        index_digest: [7; 32],
        created_at: T0,
        revoked_at: None,
    }
}

fn audit_actions(hub: &Hub) -> Vec<String> {
    hub.audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.body.action)
        .collect()
}

#[test]
fn names_and_versions_are_checked() {
    for ok in ["firmware", "robot-7/arm", "fw_2.x"] {
        assert!(check_package_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "/abs", "a//b", "a/../b", "a b", "..", &"x".repeat(129)] {
        assert!(check_package_name(bad).is_err(), "{bad:?}");
    }
    for ok in ["1", "2.0.0", "10.20.30.40"] {
        assert!(check_version(ok).is_ok(), "{ok}");
    }
    for bad in ["", "v1", "1.2.3.4.5", "../1", "1.0-rc1", "-1"] {
        assert!(check_version(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn packages_are_unique_for_ever_and_revocation_is_audited() {
    let (hub, _) = hub_with_nodes(0);
    hub.record_package(T0, Caller::Admin, package("fw", "1.0.0"))
        .unwrap();
    assert!(matches!(
        hub.check_new_package("fw", "1.0.0"),
        Err(Error::PackageExists { .. })
    ));
    assert!(matches!(
        hub.record_package(T0, Caller::Admin, package("fw", "1.0.0")),
        Err(Error::PackageExists { .. })
    ));
    let revoked = hub
        .revoke_package(T0.plus(5), Caller::Admin, "fw", "1.0.0")
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(T0.plus(5)));
    // A revoked version still blocks its name and version.
    assert!(hub.check_new_package("fw", "1.0.0").is_err());
    assert!(matches!(
        hub.revoke_package(T0, Caller::Admin, "fw", "9.9"),
        Err(Error::UnknownPackage { .. })
    ));
    let actions = audit_actions(&hub);
    assert_eq!(actions.iter().filter(|a| *a == "package.create").count(), 1);
    assert_eq!(actions.iter().filter(|a| *a == "package.revoke").count(), 1);
}

#[test]
fn deploy_assigns_in_sequence_and_never_to_the_hub() {
    let (hub, ids) = hub_with_nodes(3);
    let hub_id = hub.hub_node().unwrap().id;
    hub.record_package(T0, Caller::Admin, package("fw", "1.0.0"))
        .unwrap();
    hub.record_package(T0, Caller::Admin, package("fw", "2.0.0"))
        .unwrap();
    let mut feed = hub.subscribe_assignments();
    feed.borrow_and_update();
    let deploy = |version: &str, to: DeployTo, rollback: bool| Deploy {
        name: "fw".into(),
        version: version.into(),
        to,
        rollback,
    };

    let all = hub
        .deploy(T0, Caller::Admin, &deploy("1.0.0", DeployTo::All, false))
        .unwrap();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(all, sorted, "every robot (in ID order), not the hub's node");
    assert!(feed.has_changed().unwrap());
    let msg = hub.assignment_message(ids[0]);
    assert_eq!((msg.sequence, msg.target.as_str()), (1, "fw/1.0.0.img"));
    assert_eq!(msg.version, "1.0.0");
    assert_eq!(msg.sources.len(), 1);
    assert_eq!(msg.sources[0].virtual_ip, "100.64.0.1");
    assert_eq!(msg.sources[0].port, 7450);

    // The same assignment again changes nothing.
    let again = hub
        .deploy(T0, Caller::Admin, &deploy("1.0.0", DeployTo::All, false))
        .unwrap();
    assert!(again.is_empty());
    let one = DeployTo::Nodes(vec![ids[1].to_string()]);
    assert_eq!(
        hub.deploy(T0, Caller::Admin, &deploy("2.0.0", one, false))
            .unwrap(),
        vec![ids[1]]
    );
    assert_eq!(hub.assignment_message(ids[1]).sequence, 2);
    assert_eq!(hub.assignment_message(ids[0]).sequence, 1);
    let back = DeployTo::Nodes(vec![ids[1].to_string()]);
    hub.deploy(T0, Caller::Admin, &deploy("2.0.0", back, true))
        .unwrap();
    let msg = hub.assignment_message(ids[1]);
    assert!(msg.rollback && msg.sequence == 3);

    let to_hub = DeployTo::Nodes(vec![hub_id.to_string()]);
    assert!(matches!(
        hub.deploy(T0, Caller::Admin, &deploy("1.0.0", to_hub, false)),
        Err(Error::HubNode(_))
    ));
    let unknown = DeployTo::Nodes(vec!["00".repeat(16)]);
    assert!(matches!(
        hub.deploy(T0, Caller::Admin, &deploy("1.0.0", unknown, false)),
        Err(Error::UnknownNode(_))
    ));
    assert!(
        hub.deploy(
            T0,
            Caller::Admin,
            &deploy("1.0.0", DeployTo::Nodes(vec![]), false)
        )
        .is_err()
    );
    hub.revoke_package(T0, Caller::Admin, "fw", "2.0.0")
        .unwrap();
    assert!(matches!(
        hub.deploy(T0, Caller::Admin, &deploy("2.0.0", DeployTo::All, false)),
        Err(Error::PackageRevoked { .. })
    ));
    // Nothing assigned: sequence 0, but the source is known.
    assert_eq!(hub.assignment_message(hub_id).sequence, 0);
    assert!(matches!(
        hub.revoke(T0, Caller::Admin, &hub_id.to_string()),
        Err(Error::HubNode(_))
    ));
    assert_eq!(hub.robots_active(), 3);
}

#[test]
fn reports_are_audited_on_state_changes_only() {
    let (hub, ids) = hub_with_nodes(1);
    let node = ids[0];
    let report = |state: &str, done: u64| UpdateReportRecord {
        sequence: 1,
        target: "fw/1.0.0.img".into(),
        version: "1.0.0".into(),
        state: state.into(),
        chunks_done: done,
        chunks_total: 100,
        ..UpdateReportRecord::default()
    };
    let count = |hub: &Hub| {
        audit_actions(hub)
            .iter()
            .filter(|a| *a == "update.state")
            .count()
    };
    assert!(
        hub.report_update(T0, node, report("PENDING_VALIDATION", 0))
            .unwrap()
    );
    for done in 1..50 {
        assert!(
            !hub.report_update(T0, node, report("PENDING_VALIDATION", done))
                .unwrap()
        );
    }
    assert!(hub.report_update(T0, node, report("VALID", 100)).unwrap());
    assert_eq!(count(&hub), 2);
    // Progress is kept in memory; the view shows the latest.
    let view = hub.update_view();
    assert_eq!(view.len(), 1, "the hub's own node is not in the view");
    assert_eq!(view[0].report.as_ref().unwrap().chunks_done, 100);
    // A new assignment sequence is a transition even in the same state.
    let mut next = report("VALID", 100);
    next.sequence = 2;
    assert!(hub.report_update(T0, node, next).unwrap());
    assert_eq!(count(&hub), 3);
    assert!(hub.report_update(T0, node, report("", 0)).is_err());
    // Control characters and overlong text never reach the audit log.
    let mut noisy = report("FAILED", 0);
    noisy.detail = format!("disk\nfull{}", "x".repeat(5000));
    hub.report_update(T0, node, noisy).unwrap();
    let last = hub.audit_entries().unwrap().pop().unwrap();
    assert!(!last.body.detail.contains('\n'));
    assert!(last.body.detail.len() < 1400);
}
