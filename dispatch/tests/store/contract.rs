//! What every [`Store`] promises: reads in key order, atomic commits, and the two
//! compare-and-swap guards (the redeemed token, the audit head), each refusal writing
//! nothing at all.

use bauxite_conduit::{PeerId, VirtualIp};
use bauxite_dispatch::Error;
use bauxite_dispatch::audit::{self, AuditEntry, AuditHead};
use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch::store::{
    AssignmentRecord, Change, MemoryStore, NodeRecord, PackageImage, PackageRecord, PendingRecord,
    PolicyRecord, RedbStore, Store, UpdateReportRecord,
};
use bauxite_dispatch::token::{TokenId, TokenRecord};

const T0: UnixTime = UnixTime(1_780_000_000);

fn token(seed: u8, uses: u32) -> TokenRecord {
    TokenRecord {
        id: TokenId([seed; 8]),
        name: format!("robot-{seed}"),
        secret_hash: [seed; 32],
        created_at: T0,
        expires_at: UnixTime(T0.0 + 3600),
        uses_left: uses,
        uses_total: uses,
    }
}

fn node(seed: u8) -> NodeRecord {
    NodeRecord {
        id: PeerId([seed; 16]),
        name: format!("robot-{seed}"),
        virtual_ip: VirtualIp(0x6440_0000 + u32::from(seed)),
        ed25519: [seed; 32],
        x25519: [seed.wrapping_add(1); 32],
        tls_key: [seed.wrapping_add(2); 32],
        cert_sha256: [seed.wrapping_add(3); 32],
        joined_at: T0,
        token: TokenId([seed; 8]),
        revoked_at: None,
        endpoint: Some(format!("192.0.2.{seed}:51820")),
    }
}

fn package(name: &str, version: &str) -> PackageRecord {
    PackageRecord {
        name: name.into(),
        version: version.into(),
        target: format!("{name}/{version}.img"),
        image: PackageImage::Virtual {
            size: 1 << 20,
            seed: 7,
        },
        length: 1 << 20,
        chunk_count: 16,
        index_digest: [9; 32],
        created_at: T0,
        revoked_at: None,
    }
}

/// Appends an audited `change` on top of `head`; returns the new head.
fn audited(store: &dyn Store, head: &AuditHead, action: &str, mut change: Change) -> AuditHead {
    let entry = AuditEntry::next(head, T0, "test", action, String::new());
    change.audit = Some(entry.clone());
    store.commit(&change).unwrap();
    entry.head()
}

fn refused(store: &dyn Store, change: &Change) -> &'static str {
    match store.commit(change) {
        Err(Error::Conflict(what)) => what,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// The contract; `store` must be empty.
pub(crate) fn keeps_the_contract(store: &dyn Store) {
    assert!(store.tokens().unwrap().is_empty());
    assert!(store.nodes().unwrap().is_empty());
    assert!(store.pending().unwrap().is_empty());
    assert_eq!(store.policy().unwrap(), None);
    assert_eq!(store.topology_version().unwrap(), 0);
    assert_eq!(store.audit_head().unwrap(), AuditHead::default());
    assert_eq!(
        store.audit_snapshot().unwrap(),
        (AuditHead::default(), Vec::new())
    );
    assert!(store.packages().unwrap().is_empty());
    assert!(store.assignments().unwrap().is_empty());
    assert!(store.update_reports().unwrap().is_empty());
    assert_eq!(store.hub_node().unwrap(), None);
    assert!(store.operator_signatures().unwrap().is_empty());

    // Records come back in key order whatever order they were written in.
    let (t1, t2) = (token(1, 1), token(2, 3));
    let change = Change {
        tokens: vec![t2.clone(), t1.clone()],
        nodes: vec![node(9), node(3)],
        ..Change::default()
    };
    let head = audited(store, &AuditHead::default(), "token.create", change);
    assert_eq!(store.tokens().unwrap(), [t1.clone(), t2.clone()]);
    assert_eq!(store.token(t2.id).unwrap(), Some(t2.clone()));
    assert_eq!(store.token(TokenId([7; 8])).unwrap(), None);
    assert_eq!(store.nodes().unwrap(), [node(3), node(9)]);

    // Redeeming spends a use once: a second redemption of the same checked record is
    // refused, and nothing else in that change is written.
    let change = Change {
        redeem: Some((t1.clone(), t1.redeemed())),
        ..Change::default()
    };
    let head = audited(store, &head, "node.provision", change);
    assert_eq!(store.token(t1.id).unwrap().unwrap().uses_left, 0);
    let stale = Change {
        redeem: Some((t1.clone(), t1.redeemed())),
        nodes: vec![node(5)],
        policy: Some(PolicyRecord {
            version: 1,
            json: "{}".into(),
            set_at: T0,
        }),
        audit: Some(AuditEntry::next(
            &head,
            T0,
            "test",
            "node.provision",
            String::new(),
        )),
        ..Change::default()
    };
    assert_eq!(refused(store, &stale), "token");
    assert_eq!(store.nodes().unwrap(), [node(3), node(9)]);
    assert_eq!(store.policy().unwrap(), None);
    assert_eq!(store.audit_head().unwrap(), head);

    // An audit entry that does not extend the head (a writer on an old view) is refused.
    let behind = Change {
        nodes: vec![node(5)],
        audit: Some(AuditEntry::next(
            &AuditHead::default(),
            T0,
            "test",
            "x",
            String::new(),
        )),
        ..Change::default()
    };
    assert_eq!(refused(store, &behind), "audit log");
    assert_eq!(store.nodes().unwrap(), [node(3), node(9)]);

    // Every other kind of record, written together.
    let pending = PendingRecord {
        node: node(4),
        expires_at: UnixTime(T0.0 + 600),
    };
    let policy = PolicyRecord {
        version: 1,
        json: r#"{"rules":[]}"#.into(),
        set_at: T0,
    };
    let assignment = AssignmentRecord {
        node: PeerId([3; 16]),
        sequence: 1,
        name: "fw".into(),
        version: "1.0".into(),
        target: "fw/1.0.img".into(),
        rollback: false,
        assigned_at: T0,
    };
    let report = UpdateReportRecord {
        sequence: 1,
        state: "VALID".into(),
        ..Default::default()
    };
    let change = Change {
        pending: vec![pending.clone()],
        policy: Some(policy.clone()),
        topology_version: Some(2),
        packages: vec![package("fw", "2.0"), package("fw", "1.0")],
        assignments: vec![assignment.clone()],
        update_reports: vec![(PeerId([3; 16]), report.clone())],
        hub_node: Some(PeerId([9; 16])),
        operator_signatures: vec![(PeerId([9; 16]), vec![1, 2]), (PeerId([3; 16]), vec![3])],
        ..Change::default()
    };
    let head = audited(store, &head, "mixed", change);
    assert_eq!(store.pending().unwrap(), [pending]);
    assert_eq!(store.policy().unwrap(), Some(policy));
    assert_eq!(store.topology_version().unwrap(), 2);
    assert_eq!(
        store.packages().unwrap(),
        [package("fw", "1.0"), package("fw", "2.0")]
    );
    assert_eq!(store.assignments().unwrap(), [assignment]);
    assert_eq!(store.update_reports().unwrap(), [(PeerId([3; 16]), report)]);
    assert_eq!(store.hub_node().unwrap(), Some(PeerId([9; 16])));
    assert_eq!(
        store.operator_signatures().unwrap(),
        [(PeerId([3; 16]), vec![3]), (PeerId([9; 16]), vec![1, 2])]
    );

    // Confirming moves a registration out of pending; overwriting keeps one record.
    let mut revoked = node(9);
    revoked.revoked_at = Some(T0);
    let change = Change {
        unpending: vec![PeerId([4; 16])],
        nodes: vec![node(4), revoked.clone()],
        ..Change::default()
    };
    let head = audited(store, &head, "node.confirm", change);
    assert!(store.pending().unwrap().is_empty());
    assert_eq!(store.nodes().unwrap(), [node(3), node(4), revoked]);

    // The stored chain verifies against the stored head.
    let (stored_head, raw) = store.audit_snapshot().unwrap();
    assert_eq!(stored_head, head);
    let verified = audit::verify(raw.iter().map(|(k, v)| (*k, v.as_slice())), &head);
    assert_eq!(verified, Ok(head));
    assert_eq!(head.len, 4);
    assert_eq!(store.audit_head().unwrap(), head);
}

#[test]
fn memory_store_keeps_the_contract() {
    keeps_the_contract(&MemoryStore::new());
}

#[test]
fn redb_store_keeps_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    keeps_the_contract(&RedbStore::open(&tmp.path().join("hub.db")).unwrap());
}
