//! Audit log tampering, done directly in the database file while the hub is stopped, is
//! detected by `audit verify`, which names the entry.

use std::path::Path;

use bauxite_dispatch::audit::AuditEntry;
use bauxite_dispatch::store::redb_store::AUDIT;
use redb::{Database, ReadableTable};

use crate::common::HubProc;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn tamper(dir: &Path, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = Database::open(dir.join("hub.db")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT).unwrap();
        f(&mut table);
    }
    txn.commit().unwrap();
}

fn read(table: &redb::Table<u64, &[u8]>, index: u64) -> Vec<u8> {
    table.get(index).unwrap().unwrap().value().to_vec()
}

fn verify(dir: &Path) -> (bool, String) {
    let hub = HubProc::start(dir);
    let out = hub.cli(&["audit", "verify"]);
    hub.stop();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_deleted_and_reordered_entries_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("hub");
    let hub = HubProc::start(&original);
    for name in ["a", "b", "c", "d"] {
        hub.token(&["--name", name]);
    }
    // Entries: 0 hub.start, 1 hub.mesh (the hub's mesh node), 2..=5 token.create.
    assert!(hub.admin_ok(&["audit", "verify"]).contains("OK: 6 entries"));
    hub.stop();

    let edited = tmp.path().join("edited");
    copy_dir(&original, &edited);
    tamper(&edited, |t| {
        let mut e: AuditEntry = postcard::from_bytes(&read(t, 3)).unwrap();
        e.body.detail = e.body.detail.replace("\"b\"", "\"evil\"");
        t.insert(3, e.encode().as_slice()).unwrap();
    });
    let (ok, out) = verify(&edited);
    assert!(!ok);
    assert!(
        out.contains("entry 3 (id ") && out.contains("edited"),
        "{out}"
    );

    let deleted = tmp.path().join("deleted");
    copy_dir(&original, &deleted);
    tamper(&deleted, |t| {
        t.remove(4).unwrap();
    });
    let (ok, out) = verify(&deleted);
    assert!(!ok);
    assert!(out.contains("entry 4 is missing"), "{out}");

    let reordered = tmp.path().join("reordered");
    copy_dir(&original, &reordered);
    tamper(&reordered, |t| {
        let (two, five) = (read(t, 2), read(t, 5));
        t.insert(2, five.as_slice()).unwrap();
        t.insert(5, two.as_slice()).unwrap();
    });
    let (ok, out) = verify(&reordered);
    assert!(!ok);
    assert!(out.contains("position 2 is entry 5"), "{out}");

    // The untouched original still verifies (and gained one hub.start per restart).
    let (ok, out) = verify(&original);
    assert!(ok, "{out}");
}
