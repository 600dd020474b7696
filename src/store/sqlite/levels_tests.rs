//! The index levels on real files: keys merged through every level still dedup, after a
//! restart too; a second store on the file, a restored database behind its index file, an
//! upgraded version 5 database; call searches through levels and tail.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::join_all;

use super::levels::{index_path, IndexShape, LEVELS};
use super::tests::{keyring, nextphone, submit_at};
use super::*;
use crate::audit::{CallRef, Filter};
use crate::store::types::IntakeOutcome;

/// Levels of 4, 8, 16 … keys, merged as soon as one row waits: a few hundred deliveries go
/// through every level.
const TINY: IndexShape = IndexShape {
    l0_keys: 4,
    ratio: 2,
    merge_keys: 1,
};

fn open_with(path: &Path, shape: IndexShape) -> Store {
    Store::open(
        path,
        keyring(),
        StoreOptions {
            index_shape: shape,
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

fn who() -> crate::store::Requester {
    crate::store::Requester {
        user: "tester".into(),
        via: "cli",
    }
}

fn query_i64(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open")
        .query_row(sql, [], |r| r.get(0))
        .expect(sql)
}

fn meta(db: &Path, name: &str) -> i64 {
    rusqlite::Connection::open(index_path(db))
        .expect("open index")
        .query_row(
            "SELECT coalesce((SELECT value FROM meta WHERE name = ?1), 0)",
            [name],
            |r| r.get(0),
        )
        .expect("meta")
}

/// Wait until the merger has taken every delivery and audit record.
fn wait_merged(db: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = query_i64(db, "SELECT coalesce(max(rowid), 0) FROM deliveries");
        let records = query_i64(db, "SELECT coalesce(max(seq), 0) FROM audit_log");
        if meta(db, "dedup_pos") == deliveries && meta(db, "callref_pos") == records {
            return;
        }
        assert!(Instant::now() < deadline, "the merger did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn submit_calls(store: &Store, calls: impl Iterator<Item = String>) -> Vec<IntakeOutcome> {
    join_all(calls.map(|c| async move {
        submit_at(store, nextphone("call.ended", &c), &["crm"], Utc::now())
            .await
            .expect("intake")
    }))
    .await
}

fn accepted_ids(outcomes: &[IntakeOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| match o {
            IntakeOutcome::Accepted { delivery_id } => delivery_id.clone(),
            other => panic!("expected accepted: {other:?}"),
        })
        .collect()
}

fn assert_all_duplicates_of(outcomes: &[IntakeOutcome], ids: &[String]) {
    assert_eq!(outcomes.len(), ids.len());
    for (o, id) in outcomes.iter().zip(ids) {
        assert_eq!(
            o,
            &IntakeOutcome::Duplicate {
                delivery_id: id.clone()
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_merged_through_every_level_still_dedup_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open_with(&db, TINY);
    let mut ids = Vec::new();
    // In rounds, so the merger cascades many times rather than once.
    for round in 0..10 {
        let outcomes = submit_calls(&store, (0..30).map(|i| format!("lv-{round}-{i}"))).await;
        ids.extend(accepted_ids(&outcomes));
        wait_merged(&db);
    }
    let deepest = (0..LEVELS)
        .rev()
        .find(|l| meta(&db, &format!("dedup_count_{l}")) > 0)
        .expect("keys in some level");
    assert!(
        deepest >= 4,
        "300 keys reach level 4 of 4·2ⁱ (deepest {deepest})"
    );
    let calls = || (0..10).flat_map(|r| (0..30).map(move |i| format!("lv-{r}-{i}")));
    assert_all_duplicates_of(&submit_calls(&store, calls()).await, &ids);
    drop(store);
    let store = open_with(&db, TINY);
    assert_all_duplicates_of(&submit_calls(&store, calls()).await, &ids);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM deliveries"), 300);
    // The index file holds blind indexes only, and is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(index_path(&db))
        .expect("index file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_file_answers_the_firsts_deliveries_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let a = open_with(&db, TINY);
    let b = open_with(&db, TINY);
    let first = accepted_ids(&submit_calls(&a, (0..40).map(|i| format!("two-{i}"))).await);
    // Some merged by now, some not: b finds both kinds.
    let again = submit_calls(&b, (0..40).map(|i| format!("two-{i}"))).await;
    assert_all_duplicates_of(&again, &first);
    let second = accepted_ids(&submit_calls(&b, (40..60).map(|i| format!("two-{i}"))).await);
    let back = submit_calls(&a, (40..60).map(|i| format!("two-{i}"))).await;
    assert_all_duplicates_of(&back, &second);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM deliveries"), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_database_behind_its_index_file_is_indexed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open_with(&db, TINY);
    let early = accepted_ids(&submit_calls(&store, (0..20).map(|i| format!("early-{i}"))).await);
    let backup = dir.path().join("backup.db");
    backup_to(&store, &backup, None, &who()).expect("backup");
    let late = accepted_ids(&submit_calls(&store, (0..30).map(|i| format!("late-{i}"))).await);
    wait_merged(&db);
    drop(store);
    // Restored over the live file; the index file stays, merged 30 rows past the backup.
    std::fs::copy(&backup, &db).expect("restore");
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    assert!(meta(&db, "dedup_pos") > 20);
    let store = open_with(&db, TINY);
    assert_all_duplicates_of(
        &submit_calls(&store, (0..20).map(|i| format!("early-{i}"))).await,
        &early,
    );
    // Not in the restored database: accepted again, with new ids.
    let again = accepted_ids(&submit_calls(&store, (0..30).map(|i| format!("late-{i}"))).await);
    assert!(again.iter().all(|id| !late.contains(id)));
    assert_eq!(query_i64(&db, "SELECT count(*) FROM deliveries"), 50);
}

/// Turn the database back into what schema version 5 wrote: the dedup constraint and the
/// audit log's call-ref index, no index file.
fn downgrade_to_version_5(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE deliveries_v5 (
            id TEXT PRIMARY KEY, source TEXT NOT NULL, event_type TEXT NOT NULL,
            dedup_kind TEXT NOT NULL, dedup_index TEXT NOT NULL, call_ref TEXT,
            received_at TEXT NOT NULL, status TEXT NOT NULL,
            key_id INTEGER REFERENCES data_keys(key_id), nonce BLOB, ciphertext BLOB,
            purged_at TEXT, caller_ref TEXT,
            UNIQUE (source, dedup_index));
         INSERT INTO deliveries_v5 (rowid, id, source, event_type, dedup_kind, dedup_index,
            call_ref, received_at, status, key_id, nonce, ciphertext, purged_at, caller_ref)
            SELECT rowid, id, source, event_type, dedup_kind, dedup_index, call_ref,
            received_at, status, key_id, nonce, ciphertext, purged_at, caller_ref
            FROM deliveries;
         DROP TABLE deliveries;
         ALTER TABLE deliveries_v5 RENAME TO deliveries;
         CREATE INDEX deliveries_received ON deliveries (received_at);
         CREATE INDEX deliveries_key ON deliveries (key_id);
         CREATE INDEX deliveries_caller_ref ON deliveries (caller_ref) WHERE caller_ref IS NOT NULL;
         CREATE INDEX audit_log_call_ref ON audit_log(call_ref) WHERE call_ref IS NOT NULL;
         PRAGMA user_version = 5;",
    )
    .expect("downgrade");
    drop(conn);
    super::levels::remove_index(db).expect("remove index file");
}

fn rows(db: &Path) -> Vec<(i64, String, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT rowid, id, dedup_index, ciphertext FROM deliveries ORDER BY rowid")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("read")
}

fn records_ref(store: &Store, call_id: &str) -> CallRef {
    CallRef::from_call_id(store.keyring(), call_id)
}

fn call_records(store: &Store, call_id: &str) -> Vec<u64> {
    let conn = store.connection().expect("connection");
    let filter = Filter {
        call_ref: Some(CallRef::from_call_id(store.keyring(), call_id)),
        ..Filter::default()
    };
    let mut found = Vec::new();
    crate::audit::for_each_record(&conn, &filter, |r| {
        found.push(r.seq);
        Ok(())
    })
    .expect("search");
    found
}

async fn call_deliveries(store: &Store, call_id: &str) -> Vec<String> {
    let query = crate::store::console_calls::CallQuery {
        call_id: Some(call_id.to_owned()),
        ..Default::default()
    };
    let mut ids = super::tests::found(store, query).await;
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_5_database_is_upgraded_keeping_every_row_and_rowid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open_with(&db, IndexShape::DEFAULT);
    let ids = accepted_ids(&submit_calls(&store, (0..25).map(|i| format!("old-{i}"))).await);
    drop(store);
    downgrade_to_version_5(&db);
    let before = rows(&db);
    assert_eq!(before.len(), 25);
    let store = open_with(&db, IndexShape::DEFAULT);
    assert_eq!(
        query_i64(&db, "PRAGMA user_version") as usize,
        SCHEMA_VERSION
    );
    assert_eq!(rows(&db), before, "every row, rowid and ciphertext kept");
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    // Every old delivery still dedups, reads, and is found by its call.
    assert_all_duplicates_of(
        &submit_calls(&store, (0..25).map(|i| format!("old-{i}"))).await,
        &ids,
    );
    for id in &ids {
        crate::store::admin::show_delivery(&store, id, &who()).expect("the old delivery reads");
    }
    assert_eq!(call_deliveries(&store, "old-7").await, vec![ids[7].clone()]);
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name IN ('audit_log_call_ref', 'sqlite_autoindex_deliveries_2')"
        ),
        0,
        "no random-key index left in the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_found_through_the_levels_and_in_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    // Merged only after a second of quiet, so the last delivery below is still in the tail.
    let shape = IndexShape {
        merge_keys: i64::MAX,
        ..TINY
    };
    let store = open_with(&db, shape);
    // Other calls around the one searched, so the levels hold more than its keys.
    accepted_ids(&submit_calls(&store, (0..12).map(|i| format!("other-{i}"))).await);
    let answered = submit_at(&store, nextphone("call.answered", "c-1"), &[], Utc::now())
        .await
        .expect("answered");
    accepted_ids(&submit_calls(&store, (12..20).map(|i| format!("other-{i}"))).await);
    wait_merged(&db);
    let merged_to = meta(&db, "callref_pos");
    let ended = submit_at(&store, nextphone("call.ended", "c-1"), &[], Utc::now())
        .await
        .expect("ended");
    let records = call_records(&store, "c-1");
    let mut expected = vec![
        answered.delivery_id().to_owned(),
        ended.delivery_id().to_owned(),
    ];
    expected.sort();
    assert_eq!(call_deliveries(&store, "c-1").await, expected);
    assert_eq!(
        records.len(),
        2,
        "one delivery_accepted record per delivery"
    );
    // Through the levels and a seq range, not a scan of the audit log.
    let conn = store.connection().expect("connection");
    let cond = super::levels::call_ref_condition(&conn, "?1", records_ref(&store, "c-1").as_str());
    assert!(cond.contains("idx.callref_0"), "{cond}");
    let plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN SELECT seq FROM audit_log WHERE {cond}"
        ))
        .expect("plan")
        .query_map([records_ref(&store, "c-1").as_str()], |r| r.get(3))
        .expect("plan rows")
        .collect::<Result<_, _>>()
        .expect("plan read");
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN audit_log")),
        "{plan:?}"
    );
    drop(conn);
    assert!(
        records.iter().filter(|s| **s as i64 > merged_to).count() == 1,
        "the newest record was past the merged position when searched ({records:?}, {merged_to})"
    );
    // Without the index file the answer is the same (a scan).
    drop(store);
    super::levels::remove_index(&db).expect("remove");
    let conn = rusqlite::Connection::open(&db).expect("plain connection");
    let filter = Filter {
        call_ref: Some(CallRef::from_call_id(&keyring(), "c-1")),
        ..Filter::default()
    };
    assert_eq!(crate::audit::count(&conn, &filter).expect("count"), 2);
}
