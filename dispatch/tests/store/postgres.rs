//! The PostgreSQL store on a real throwaway cluster: the shared contract, migrations, and
//! several writers (stores, whole hubs) on one database at once.

use std::sync::{Arc, Barrier};

use bauxite_dispatch::Error;
use bauxite_dispatch::audit::{AuditEntry, AuditHead};
use bauxite_dispatch::clock::UnixTime;
use bauxite_dispatch::hub::{Caller, Hub, NewToken};
use bauxite_dispatch::ipam::MeshCidr;
use bauxite_dispatch::pki::HubCa;
use bauxite_dispatch::store::{Change, PgStore, Store, postgres};
use zeroize::Zeroizing;

use crate::contract::keeps_the_contract;
use crate::pg_cluster::PgCluster;

const T0: UnixTime = UnixTime(1_780_000_000);

#[test]
fn postgres_store_keeps_the_contract() {
    let Some(pg) = PgCluster::start() else { return };
    let store = PgStore::open(&pg.create_db("contract")).unwrap();
    keeps_the_contract(&store);
}

#[test]
fn migrations_run_once_and_the_state_survives_a_reopen() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("reopen");
    let applied = postgres::migrate(&url).unwrap();
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(
        postgres::migrate(&url).unwrap().is_empty(),
        "nothing left to apply"
    );
    let entry = AuditEntry::next(&AuditHead::default(), T0, "test", "x", "y".into());
    {
        let store = PgStore::open(&url).unwrap();
        let change = Change {
            topology_version: Some(5),
            audit: Some(entry.clone()),
            ..Change::default()
        };
        store.commit(&change).unwrap();
    }
    let store = PgStore::open(&url).unwrap();
    assert_eq!(store.audit_head().unwrap(), entry.head());
    assert_eq!(store.topology_version().unwrap(), 5);
    // The topology version never goes back, whoever writes it.
    let back = Change {
        topology_version: Some(4),
        ..Change::default()
    };
    assert!(matches!(
        store.commit(&back),
        Err(Error::Conflict("topology version"))
    ));
}

#[test]
fn a_bad_url_is_an_error_that_does_not_repeat_the_password() {
    let err = PgStore::open("postgresql://robot:hunter22@127.0.0.1:1/none")
        .err()
        .expect("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("could not connect to PostgreSQL"), "{text}");
    assert!(!text.contains("hunter22"), "{text}");
}

#[test]
fn two_writers_on_one_head_append_exactly_once() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("race");
    let stores: Vec<Arc<PgStore>> = (0..2)
        .map(|_| Arc::new(PgStore::open(&url).unwrap()))
        .collect();
    for round in 0..20u64 {
        let head = stores[0].audit_head().unwrap();
        assert_eq!(head.len, round);
        let barrier = Arc::new(Barrier::new(2));
        let writers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let entry = AuditEntry::next(&head, T0, "test", "race", format!("writer {i}"));
                    let change = Change {
                        audit: Some(entry),
                        ..Change::default()
                    };
                    barrier.wait();
                    store.commit(&change)
                })
            })
            .collect();
        let outcomes: Vec<_> = writers.into_iter().map(|t| t.join().unwrap()).collect();
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Err(Error::Conflict("audit log")))),
            "{outcomes:?}"
        );
    }
    let (head, raw) = stores[1].audit_snapshot().unwrap();
    let verified =
        bauxite_dispatch::audit::verify(raw.iter().map(|(k, v)| (*k, v.as_slice())), &head);
    assert_eq!(verified, Ok(head));
}

fn new_token(replica: u8, n: u8) -> NewToken {
    NewToken {
        ttl_secs: 3600,
        uses: 1,
        name: format!("replica-{replica}-{n}"),
        id: [replica, n, 0, 0, 0, 0, 0, 1],
        secret: Zeroizing::new([n; 32]),
    }
}

#[test]
fn hubs_writing_at_once_on_one_database_keep_one_chain_and_every_version() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("replicas");
    let keys = tempfile::tempdir().unwrap();
    let open = || {
        let ca = HubCa::load_or_create(keys.path(), T0).unwrap();
        Arc::new(
            Hub::open(
                Box::new(PgStore::open(&url).unwrap()),
                ca,
                MeshCidr::default(),
                T0,
            )
            .unwrap(),
        )
    };
    let hubs = [open(), open()];
    const EACH: u8 = 15;
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = hubs
        .iter()
        .enumerate()
        .map(|(i, hub)| {
            let (hub, barrier) = (hub.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut versions = Vec::new();
                for n in 0..EACH {
                    hub.create_token(T0, Caller::Admin, new_token(i as u8, n))
                        .unwrap();
                    let policy = format!(
                        r#"{{"rules": [{{"protocol": "udp", "ports": "{}"}}]}}"#,
                        1000 + u32::from(n)
                    );
                    versions.push(hub.set_policy(T0, Caller::Admin, &policy).unwrap().version);
                }
                versions
            })
        })
        .collect();
    let mut versions: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=2 * u64::from(EACH)).collect();
    assert_eq!(versions, expected, "every policy version handed out once");
    for hub in &hubs {
        let (entries, verified) = hub.verify_audit().unwrap();
        // Two starts, then a token and a policy per round on each hub.
        assert_eq!(entries, 2 + 4 * u64::from(EACH));
        assert!(verified.is_ok(), "{verified:?}");
        hub.sync().unwrap();
        assert_eq!(hub.policy().version, 2 * u64::from(EACH));
    }
    assert_eq!(hubs[0].tokens().unwrap().len(), 2 * usize::from(EACH));
}

/// The backend PIDs of every connection waiting in `LISTEN`.
fn listeners(admin: &mut ::postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' ORDER BY pid",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Polls `f` every 20 ms until it holds, or panics after 30 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_replica_follows_the_others_and_resyncs_after_losing_its_listen_connection() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_db("follow");
    let keys = tempfile::tempdir().unwrap();
    let open = || {
        let ca = HubCa::load_or_create(keys.path(), T0).unwrap();
        Arc::new(
            Hub::open(
                Box::new(PgStore::open(&url).unwrap()),
                ca,
                MeshCidr::default(),
                T0,
            )
            .unwrap(),
        )
    };
    let (writer, follower) = (open(), open());
    let mut feed = follower.subscribe_policy();
    let following = follower.clone();
    let _listener =
        postgres::listen::Listener::start(&url, move || following.sync().map(drop)).unwrap();
    let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    eventually("the listener to LISTEN", || {
        listeners(&mut admin).len() == 1
    });

    // A commit on the writer reaches the follower's subscribers, without any call on it.
    writer.set_policy(T0, Caller::Admin, "{}").unwrap();
    eventually("policy 1 on the follower's feed", || {
        feed.borrow_and_update().version == 1
    });

    // The listener's connection dies; a commit made meanwhile is not announced to it, and
    // still reaches the follower once it has reconnected.
    let before = listeners(&mut admin);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&before[0]])
        .unwrap();
    writer
        .set_policy(T0, Caller::Admin, r#"{"rules": []}"#)
        .unwrap();
    eventually("a new LISTEN connection", || {
        let now = listeners(&mut admin);
        now.len() == 1 && now != before
    });
    eventually("policy 2 on the follower's feed", || {
        feed.borrow_and_update().version == 2
    });
    assert_eq!(follower.policy().version, 2);
}
