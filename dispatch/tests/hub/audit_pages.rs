//! The audit log paged over the admin RPC and the CLI, on a real hub process: pages of
//! any size add up to the whole log in order, `audit show` pages through it (`--limit`,
//! `--after`), a cursor past the end is a clear INVALID_ARGUMENT, and a page of entries
//! after an edited one is not called verified.

use bauxite_dispatch::audit::AuditEntry as StoredEntry;
use bauxite_dispatch::store::redb_store::AUDIT;
use bauxite_dispatch_api::client::HubClient;
use bauxite_dispatch_api::proto::admin::{self as proto, ShowAuditRequest};
use redb::{Database, ReadableTable};
use tonic::Code;

use crate::common::{HubProc, within};

type Admin = proto::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

/// Every entry, paged with `limits` in turn; checks each page's verification and cursor.
async fn walk(admin: &mut Admin, limits: &[u32]) -> Vec<proto::AuditEntry> {
    let mut all = Vec::new();
    let mut after = None;
    for step in 0..1000 {
        let page = within(admin.show_audit(ShowAuditRequest {
            after,
            limit: limits[step % limits.len()],
        }))
        .await
        .unwrap()
        .into_inner();
        assert!(page.verified, "{}", page.problem);
        assert_eq!(page.head.len(), 64);
        all.extend(page.entries);
        match page.next_after {
            Some(next) => {
                assert_eq!(all.last().map(|e| e.index), Some(next));
                after = Some(next);
            }
            None => return all,
        }
    }
    panic!("no end of the log after 1000 pages")
}

/// The indices `audit show` printed (its first column).
fn indices(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_over_the_rpc_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let hub = HubProc::start(&dir);
    let mut admin = HubClient::connect_admin(&hub.dir, None)
        .await
        .unwrap()
        .admin();
    for i in 0..20 {
        within(admin.create_token(proto::CreateTokenRequest {
            ttl_seconds: 3600,
            uses: 1,
            name: format!("t{i}"),
        }))
        .await
        .unwrap();
    }
    // hub.start, hub.mesh, then 20 token.create.
    let whole = walk(&mut admin, &[0]).await;
    assert_eq!(whole.len(), 22);
    let expected: Vec<u64> = (0..22).collect();
    assert_eq!(whole.iter().map(|e| e.index).collect::<Vec<_>>(), expected);
    for limits in [&[1][..], &[3], &[7, 1, 2], &[21], &[22], &[100_000]] {
        assert_eq!(walk(&mut admin, limits).await, whole, "limits {limits:?}");
    }
    // The total is the whole log's, whatever the page.
    let page = admin
        .show_audit(ShowAuditRequest {
            after: Some(10),
            limit: 4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.total, page.next_after), (22, Some(14)));

    // A cursor at the last entry is an empty page; past it, a clear error.
    let at_end = admin
        .show_audit(ShowAuditRequest {
            after: Some(21),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(at_end.entries.is_empty() && at_end.next_after.is_none());
    let bad = admin
        .show_audit(ShowAuditRequest {
            after: Some(22),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message()
            .contains("audit cursor 22 is outside the log (22 entries)"),
        "{}",
        bad.message()
    );

    // The CLI: everything by default, or a window.
    assert_eq!(indices(&hub.admin_ok(&["audit", "show"])), expected);
    let window = hub.admin_ok(&["audit", "show", "--after", "2", "--limit", "5"]);
    assert_eq!(indices(&window), [3, 4, 5, 6, 7]);
    assert!(window.contains("token.create"), "{window}");
    let out = hub.cli(&["audit", "show", "--after", "99"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("outside the log"), "{stderr}");
    hub.stop();

    // An entry edited in the database: a later page of the log is not verified either.
    {
        let db = Database::open(dir.join("hub.db")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AUDIT).unwrap();
            let bytes = table.get(3).unwrap().unwrap().value().to_vec();
            let mut e: StoredEntry = postcard::from_bytes(&bytes).unwrap();
            e.body.detail.push_str(" (edited)");
            table.insert(3, e.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let hub = HubProc::start(&dir);
    let mut admin = HubClient::connect_admin(&hub.dir, None)
        .await
        .unwrap()
        .admin();
    let later = admin
        .show_audit(ShowAuditRequest {
            after: Some(10),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!later.verified);
    assert!(later.head.is_empty());
    assert!(
        later.problem.contains("entry 3 (id ") && later.problem.contains("edited"),
        "{}",
        later.problem
    );
    let out = hub.cli(&["audit", "show"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit log TAMPERED: entry 3"), "{stderr}");
    hub.stop();
}
