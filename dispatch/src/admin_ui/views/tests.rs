use zeroize::Zeroizing;

use super::*;
use crate::hub::tests::named_request;
use crate::hub::{Caller, NewToken};
use crate::ipam::MeshCidr;
use crate::pki::HubCa;
use crate::store::MemoryStore;
use crate::token::JoinToken;

const T0: UnixTime = UnixTime(1_780_000_000);

fn hub() -> Hub {
    let ca = HubCa::generate(T0).unwrap();
    Hub::open(Box::new(MemoryStore::new()), ca, MeshCidr::default(), T0).unwrap()
}

fn token(hub: &Hub, ttl: u64, uses: u32, seed: u8, name: &str) -> JoinToken {
    let new = NewToken {
        ttl_secs: ttl,
        uses,
        name: name.into(),
        id: [seed; 8],
        secret: Zeroizing::new([seed; 32]),
    };
    hub.create_token(T0, Caller::AdminUi, new).unwrap().0
}

fn status_of<'a>(rows: &'a [NodeRow], name: &str) -> &'a str {
    rows.iter().find(|r| r.name == name).unwrap().status
}

#[test]
fn node_status_follows_reports_pending_and_revocation() {
    let hub = hub();
    let tok = token(&hub, 3600, 3, 1, "t");
    let arm = hub
        .provision(T0, named_request(&tok, 1, "arm"))
        .unwrap()
        .record;
    hub.confirm(T0, arm.id).unwrap();
    hub.provision(T0, named_request(&tok, 2, "cart")).unwrap();
    let (rows, online) = nodes(&hub, T0);
    assert_eq!(status_of(&rows, "arm"), "no report");
    assert_eq!(status_of(&rows, "cart"), "pending");
    assert_eq!(online, 0);

    hub.metrics().record_seen(arm.id, T0.plus(10));
    hub.metrics().record_report(
        arm.id,
        [("tx_packets".to_owned(), 12.0), ("x".to_owned(), 1.5)],
    );
    let (rows, online) = nodes(&hub, T0.plus(10 + ONLINE_SECS - 1));
    assert_eq!(status_of(&rows, "arm"), "online");
    assert_eq!(online, 1);
    let arm_row = rows.iter().find(|r| r.name == "arm").unwrap();
    assert_eq!(arm_row.metrics, vec![("tx_packets".into(), "12".into())]);
    assert_eq!(arm_row.last_seen, T0.plus(10).to_string());
    let (rows, _) = nodes(&hub, T0.plus(10 + ONLINE_SECS));
    assert_eq!(status_of(&rows, "arm"), "offline");

    hub.revoke(T0.plus(100), Caller::AdminUi, &arm.id.to_string())
        .unwrap();
    let (rows, _) = nodes(&hub, T0.plus(100));
    assert_eq!(status_of(&rows, "arm"), "revoked");
    // The revoke is audited under the UI's actor.
    let audit = audit(&hub, None, 0).unwrap();
    assert!(audit.verified.is_ok());
    assert_eq!(audit.rows[0].action, "node.revoke");
    assert_eq!(audit.rows[0].actor, "admin:web-ui");
}

#[test]
fn token_rows_say_active_used_up_or_expired_newest_first() {
    let hub = hub();
    let short = token(&hub, 60, 1, 1, "short");
    token(&hub, 3600, 5, 2, "long");
    let rows = tokens(&hub, T0.plus(59)).unwrap();
    assert!(rows.iter().all(|r| r.state == "active"), "{:?}", rows.len());
    let rows = tokens(&hub, T0.plus(60)).unwrap();
    let by = |name: &str| rows.iter().find(|r| r.name == name).unwrap().state;
    assert_eq!(by("short"), "expired");
    assert_eq!(by("long"), "active");

    let node = hub
        .provision(T0.plus(1), named_request(&short, 3, "n"))
        .unwrap();
    hub.confirm(T0.plus(1), node.record.id).unwrap();
    let rows = tokens(&hub, T0.plus(2)).unwrap();
    let row = rows.iter().find(|r| r.name == "short").unwrap();
    assert_eq!(
        (row.state, row.uses_left, row.uses_total),
        ("used up", 0, 1)
    );
}

#[test]
fn the_topology_lists_who_sees_whom() {
    let hub = hub();
    let tok = token(&hub, 3600, 3, 1, "t");
    for (seed, name) in [(1, "a"), (2, "b"), (3, "c")] {
        let rec = hub
            .provision(T0, named_request(&tok, seed, name))
            .unwrap()
            .record;
        hub.confirm(T0, rec.id).unwrap();
    }
    let (version, rows) = topology(&hub);
    assert!(version >= 3);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.sees.len(), 2);
        assert!(!row.sees.contains(&row.name), "{} sees itself", row.name);
    }
}
