//! The maintenance contract, run against both backends through the [`Maintenance`] trait, the
//! way `conformance.rs` runs the storage contract: each scenario is one async function taking a
//! [`Harness`], and `both_backends!` makes a SQLite test (a temp file) and a PostgreSQL test (a
//! fresh database; skipped without `WARDHOOK_TEST_POSTGRES_URL`) of it.
//!
//! A maintenance object is synchronous and the PostgreSQL one owns a runtime, so scenarios use
//! it on a blocking thread ([`Harness::maintain`]), as an offline command would.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use super::conformance::{both_backends, count_in, exec_in, operator as who};
use super::maintenance::{AuditVerdict, Maintenance, VerifyOptions};
use super::phone_backfill::PhoneIndexReport;
use super::postgres::testdb::TestDb;
use super::postgres::{PgMaintenance, PgStore};
use super::sqlite::tests::{keyring, nextphone, submit_at};
use super::sqlite::SqliteMaintenance;
use super::{IntakeOutcome, JobSpec, Storage, Store, StoreOptions};
use crate::audit::commands::{checkpoint_path, SearchArgs};
use crate::audit::{ExportFormat, Mirror};
use crate::normalize::{normalize, Envelope, IntakeInput};

/// One database, with an `[audit] dir` per node.
struct Harness {
    dir: tempfile::TempDir,
    db: Option<TestDb>,
}

impl Harness {
    fn sqlite() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            db: None,
        }
    }

    async fn postgres() -> Option<Self> {
        Some(Self {
            dir: tempfile::tempdir().expect("tempdir"),
            db: Some(TestDb::create().await?),
        })
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("w.db")
    }

    fn audit_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("audit-{node}"))
    }

    /// A serving node with its mirror and signed checkpoints, as the server opens it.
    async fn node(&self, node: &str) -> Arc<dyn Storage> {
        let dir = self.audit_dir(node);
        let mirror = Arc::new(Mirror::new(&dir).expect("mirror").with_checkpoints(
            checkpoint_path(&dir),
            100,
            &keyring(),
        ));
        match &self.db {
            None => Arc::new(
                Store::open(
                    &self.db_path(),
                    keyring(),
                    StoreOptions {
                        audit_mirror: Some(mirror),
                        ..StoreOptions::default()
                    },
                )
                .expect("open sqlite"),
            ),
            Some(db) => Arc::new(
                PgStore::open_with_mirror(&db.settings(node), keyring(), Some(mirror))
                    .await
                    .expect("open postgres"),
            ),
        }
    }

    /// Run `work` with node `node`'s maintenance object, on a blocking thread.
    async fn maintain<T: Send + 'static>(
        &self,
        node: &str,
        work: impl FnOnce(&dyn Maintenance) -> T + Send + 'static,
    ) -> T {
        let audit_dir = self.audit_dir(node);
        let sqlite = self.db_path();
        let pg = self.db.as_ref().map(|db| db.settings(node));
        tokio::task::spawn_blocking(move || {
            let maintenance: Box<dyn Maintenance> = match pg {
                None => Box::new(
                    SqliteMaintenance::new(&sqlite, keyring(), &audit_dir).expect("sqlite"),
                ),
                Some(settings) => Box::new(
                    PgMaintenance::open(&settings, keyring(), &audit_dir).expect("postgres"),
                ),
            };
            work(maintenance.as_ref())
        })
        .await
        .expect("maintenance task")
    }

    /// A single number from SQL that reads the same in both dialects.
    async fn count(&self, sql: &str) -> i64 {
        let path = self.db_path();
        count_in(self.db.as_ref().ok_or(path.as_path()), sql).await
    }

    /// Run `sql`, which reads the same in both dialects and returns no rows.
    async fn exec(&self, sql: &str) {
        let path = self.db_path();
        exec_in(self.db.as_ref().ok_or(path.as_path()), sql).await;
    }

    /// Every delivery's id and caller index, in id order.
    async fn caller_refs(&self) -> Vec<(String, Option<String>)> {
        const SQL: &str = "SELECT id, caller_ref FROM deliveries ORDER BY id";
        match &self.db {
            None => rusqlite::Connection::open(self.db_path())
                .expect("open")
                .prepare(SQL)
                .expect("prepare")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows"),
            Some(db) => db
                .client()
                .await
                .query(SQL, &[])
                .await
                .expect("rows")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }

    /// Delete `node`'s newest `n` audit records as someone with database access would, leaving
    /// a valid shorter chain (on PostgreSQL with the node's head row rewritten to match).
    async fn cut_tail(&self, node: &str, n: i64) {
        match &self.db {
            None => rusqlite::Connection::open(self.db_path())
                .expect("open")
                .execute_batch(&format!(
                    "DROP TRIGGER audit_log_no_delete;
                     DELETE FROM audit_log WHERE seq > (SELECT max(seq) - {n} FROM audit_log);"
                ))
                .expect("cut"),
            Some(db) => db
                .client()
                .await
                .batch_execute(&format!(
                    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
                     DELETE FROM audit_log WHERE node_id = '{node}'
                       AND seq > (SELECT seq - {n} FROM audit_heads WHERE node_id = '{node}');
                     UPDATE audit_heads h SET seq = l.seq, mac = l.mac, ts = l.ts
                       FROM (SELECT seq, mac, ts FROM audit_log WHERE node_id = '{node}'
                             ORDER BY seq DESC LIMIT 1) l
                       WHERE h.node_id = '{node}';"
                ))
                .await
                .expect("cut"),
        }
    }
}

async fn submit(store: &dyn Storage, input: IntakeInput) -> String {
    let mut n = normalize(&input, Utc::now()).expect("normalizes");
    match store
        .intake(input, &mut n, vec![JobSpec::new("crm")])
        .await
        .expect("intake")
    {
        IntakeOutcome::Accepted { delivery_id } => delivery_id,
        other => panic!("expected a new delivery, got {other:?}"),
    }
}

// ---- scenarios ----

async fn key_rotation_reencrypts_everything_and_destroys_the_old_keys(h: Harness) {
    let store = h.node("node-a").await;
    let id = submit(&*store, nextphone("call.ended", "c1")).await;
    let report = h
        .maintain("node-a", |m| m.rotate_keys(&who(), &mut |_| {}))
        .await
        .expect("rotate");
    assert!(!report.resumed);
    assert_eq!(report.reencrypted, 1, "{report:?}");
    assert!(report.keys_destroyed >= 1, "{report:?}");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM data_keys WHERE wrapped IS NULL")
            .await,
        i64::try_from(report.keys_destroyed).expect("count")
    );
    // The payload reads under the new key, on a node opened after the rotation.
    let fresh = h.node("node-b").await;
    let event = fresh.show_delivery(id, who()).await.expect("show");
    assert_eq!(event.call_id.as_deref(), Some("c1"));
    let again = h
        .maintain("node-a", |m| m.rotate_keys(&who(), &mut |_| {}))
        .await
        .expect("rotate again");
    assert_eq!(again.generation, report.generation + 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'key_rotated'")
            .await,
        4,
        "started and completed, twice"
    );
}

async fn reverify_and_emergency_export_read_payloads_and_audit_it(h: Harness) {
    let store = h.node("node-a").await;
    let id = submit(&*store, nextphone("call.ended", "c1")).await;
    let wanted = id.clone();
    let stored = h
        .maintain("node-a", move |m| m.load_stored_request(&wanted, &who()))
        .await
        .expect("load");
    assert_eq!(stored.source, "nextphone");
    assert!(String::from_utf8_lossy(&stored.body).contains("John Doe"));

    let (export, archive) = h
        .maintain("node-a", |m| {
            let mut archive = Vec::new();
            // The extras see the exported deliveries and add their records after them.
            let mut seen = Vec::new();
            let mut extras = |ids: &[String],
                              sink: super::archive::ArchiveRecords<'_>|
             -> Result<u64, super::StoreError> {
                seen.extend_from_slice(ids);
                sink(
                    &serde_json::json!({"artifact": {"id": "art_extra", "note": "extra-record"}}),
                )?;
                Ok(1)
            };
            let export = m.emergency_export(
                Utc::now() - chrono::Duration::days(1),
                Utc::now() + chrono::Duration::days(1),
                "conformance: records needed",
                &who(),
                &mut archive,
                &mut |_| {},
                Some(&mut extras),
            );
            (export.map(|e| (e, seen)), archive)
        })
        .await;
    let (export, seen) = export.expect("export");
    assert_eq!((export.count, export.purged, export.extras), (1, 0, 1));
    assert_eq!(
        seen,
        vec![id.clone()],
        "the extras see the exported delivery"
    );
    let mut opened = Vec::new();
    let n = super::emergency::open_archive(
        export.archive_key_b64.as_str(),
        &mut archive.as_slice(),
        &mut opened,
    )
    .expect("open the archive");
    assert_eq!(n, 1, "deliveries, the extra record not counted");
    let text = String::from_utf8_lossy(&opened);
    assert!(text.contains("John Doe"));
    assert!(
        text.trim_end()
            .ends_with(r#"{"artifact":{"id":"art_extra","note":"extra-record"}}"#),
        "the extra record follows the deliveries: {text}"
    );
    for action in ["delivery_reverified", "emergency_access"] {
        assert_eq!(
            h.count(&format!(
                "SELECT COUNT(*) FROM audit_log WHERE action = '{action}'"
            ))
            .await,
            1,
            "{action}"
        );
    }
}

async fn audit_search_and_export_stream_the_matching_records(h: Harness) {
    let store = h.node("node-a").await;
    let id = submit(&*store, nextphone("call.ended", "c1")).await;
    submit(&*store, nextphone("call.ended", "c2")).await;
    let args = SearchArgs {
        delivery_id: Some(id.clone()),
        ..SearchArgs::default()
    };
    let (found, text) = h
        .maintain("node-a", move |m| {
            let mut out = Vec::new();
            (m.audit_search(&args, &mut out), out)
        })
        .await;
    assert_eq!(found.expect("search"), 1);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(&id) && text.contains("delivery_accepted"),
        "{text}"
    );
    let (n, jsonl) = h
        .maintain("node-a", |m| {
            let mut out = Vec::new();
            let n = m.audit_export(
                ExportFormat::Jsonl,
                &SearchArgs::default(),
                &mut out,
                &mut std::io::sink(),
            );
            (n, out)
        })
        .await;
    let n = n.expect("export");
    assert_eq!(
        i64::try_from(n).expect("n"),
        h.count("SELECT COUNT(*) FROM audit_log").await
    );
    assert_eq!(String::from_utf8_lossy(&jsonl).lines().count() as u64, n);
}

async fn each_node_mirrors_and_checkpoints_its_chain_and_a_cut_tail_is_found(h: Harness) {
    let store = h.node("node-a").await;
    for i in 0..4 {
        submit(&*store, nextphone("call.ended", &format!("c{i}"))).await;
    }
    store.checkpoint_audit().await.expect("checkpoint");
    let verify = |skip_mirror| {
        move |m: &dyn Maintenance| {
            m.audit_verify(
                VerifyOptions {
                    audit_dir: None,
                    skip_mirror,
                    allow_partial_mirror: false,
                },
                &mut std::io::sink(),
            )
        }
    };
    match h.maintain("node-a", verify(false)).await.expect("verify") {
        AuditVerdict::Intact(summary) => {
            assert!(summary.database.checkpoints_matched >= 1, "{summary:?}");
            assert!(summary
                .mirror
                .is_some_and(|m| m.records == summary.database.records));
        }
        AuditVerdict::Tampered(reason) => panic!("the untouched log failed: {reason}"),
    }
    h.cut_tail("node-a", 2).await;
    // The database alone is a valid shorter chain; the signed checkpoint says otherwise.
    match h.maintain("node-a", verify(true)).await.expect("verify") {
        AuditVerdict::Tampered(reason) => {
            assert!(reason.contains("truncated after checkpoint"), "{reason}")
        }
        AuditVerdict::Intact(_) => panic!("a cut-off tail went unnoticed"),
    }
}

/// A NextPhone event of call `call_id`, naming `phone` as the caller's number if given.
fn call_from(call_id: &str, phone: Option<&str>) -> IntakeInput {
    let caller = phone
        .map(|p| format!(r#","caller":{{"phone":"{p}"}}"#))
        .unwrap_or_default();
    let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"{call_id}"{caller}}}}}"#);
    IntakeInput::for_test("nextphone", Envelope::NextPhone, body.as_bytes())
}

/// The ids of the deliveries the console finds by the caller's `phone`, sorted.
async fn found_by_phone(store: &dyn Storage, phone: &str) -> Vec<String> {
    let mut ids = super::conformance::console_calls::found_by_phone(store, phone).await;
    ids.sort();
    ids
}

async fn deliveries_stored_before_the_caller_index_get_the_one_intake_gives(h: Harness) {
    let store = h.node("node-a").await;
    // Received two days ago and purged since: it keeps no index and is never read.
    let old = Utc::now() - chrono::Duration::days(2);
    submit_at(&*store, call_from("bf-old", Some("+15551234567")), &[], old)
        .await
        .expect("old intake");
    store
        .purge(Utc::now() - chrono::Duration::days(1), who())
        .await
        .expect("purge");
    let mut ids = Vec::new();
    for (call, phone) in [
        ("bf-1", Some("+15551234567")),
        ("bf-2", None),
        ("bf-3", Some("(555) 999-0000")),
        ("bf-4", Some("anonymous")),
        ("bf-5", Some("+1 555 123 4567")),
    ] {
        ids.push(submit(&*store, call_from(call, phone)).await);
    }
    let at_intake = h.caller_refs().await;
    assert_eq!(
        at_intake.iter().filter(|(_, r)| r.is_some()).count(),
        3,
        "{at_intake:?}"
    );
    // As the deliveries of a database from before the caller index are.
    h.exec("UPDATE deliveries SET caller_ref = NULL").await;
    assert!(found_by_phone(&*store, "555-123-4567").await.is_empty());

    // Batches of two: a batch of callers naming no number is passed, not read again.
    let (report, seen) = h
        .maintain("node-a", |m| {
            let mut seen = Vec::new();
            let report = m.index_caller_phones(2, &who(), &mut |done, total| {
                seen.push((done, total));
            });
            (report, seen)
        })
        .await;
    let report = report.expect("index");
    assert_eq!(
        report,
        PhoneIndexReport {
            read: 5,
            indexed: 3
        }
    );
    assert_eq!(seen, vec![(0, 5), (2, 5), (4, 5), (5, 5)]);
    assert_eq!(
        h.caller_refs().await,
        at_intake,
        "exactly the index intake gave, and none for the purged delivery"
    );
    let mut same_caller = vec![ids[0].clone(), ids[4].clone()];
    same_caller.sort();
    assert_eq!(found_by_phone(&*store, "555-123-4567").await, same_caller);
    assert_eq!(
        found_by_phone(&*store, "+15559990000").await,
        vec![ids[2].clone()]
    );

    // A rerun reads only what still has no index (the callers naming no number) and changes
    // nothing.
    let again = h
        .maintain("node-a", |m| {
            m.index_caller_phones(super::phone_backfill::DEFAULT_BATCH, &who(), &mut |_, _| {})
        })
        .await
        .expect("index again");
    assert_eq!(
        again,
        PhoneIndexReport {
            read: 2,
            indexed: 0
        }
    );
    assert_eq!(h.caller_refs().await, at_intake);

    // Two records a run, counts only: no delivery, call or number.
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'callers_indexed'")
            .await,
        4
    );
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'callers_indexed'
             AND detail LIKE '%\"indexed\":3%' AND detail LIKE '%\"count\":5%'"
        )
        .await,
        1,
        "the first run's end names what it read and indexed"
    );
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'callers_indexed'
             AND (delivery_id IS NOT NULL OR call_ref IS NOT NULL OR detail LIKE '%555%')"
        )
        .await,
        0
    );
    let verdict = h
        .maintain("node-a", |m| {
            m.audit_verify(VerifyOptions::default(), &mut std::io::sink())
        })
        .await
        .expect("verify");
    assert!(matches!(verdict, AuditVerdict::Intact(_)), "{verdict:?}");
}

both_backends!(
    key_rotation_reencrypts_everything_and_destroys_the_old_keys,
    deliveries_stored_before_the_caller_index_get_the_one_intake_gives,
    reverify_and_emergency_export_read_payloads_and_audit_it,
    audit_search_and_export_stream_the_matching_records,
    each_node_mirrors_and_checkpoints_its_chain_and_a_cut_tail_is_found,
);
