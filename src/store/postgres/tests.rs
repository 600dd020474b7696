//! What only the PostgreSQL backend has: leases taken over across nodes, migrations under the
//! advisory lock, connection failures answered as unavailable. The behaviour both backends
//! share is tested in `store::conformance`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::testdb::TestDb;
use super::{PgSettings, PgStore, PgTls};
use crate::store::sqlite::tests::{found_by_phone, keyring, nextphone};
use crate::store::types::{AttemptRecord, AttemptResult, NextStep};
use crate::store::Predecessors;
use crate::store::{IntakeOutcome, JobSpec, Storage, StoreError};

fn none() -> Arc<Predecessors> {
    Arc::new(Predecessors::none())
}

fn ok() -> AttemptRecord {
    AttemptRecord {
        started_at: Utc::now(),
        latency: Duration::from_millis(1),
        http_status: Some(200),
        destination: None,
        result: AttemptResult::Ok {
            output: serde_json::json!({}),
            caller_phone: None,
        },
    }
}

/// The schema version the database records.
async fn schema_version(db: &TestDb) -> usize {
    let version: i32 = db
        .client()
        .await
        .query_one("SELECT version FROM wardhook_schema", &[])
        .await
        .expect("version")
        .get(0);
    usize::try_from(version).expect("a version")
}

async fn open(db: &TestDb, node: &str) -> PgStore {
    PgStore::open(&db.settings(node), keyring())
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_expired_is_taken_over_and_the_late_finish_changes_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (open(&db, "node-a").await, open(&db, "node-b").await);
    let input = nextphone("call.ended", "c1");
    let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
    a.intake(input, &mut n, vec![JobSpec::new("crm")])
        .await
        .expect("intake");
    // Node A claims with a lease that is over at once: as if it died mid-attempt.
    let lost = a
        .claim_next(Vec::new(), Duration::ZERO, none())
        .await
        .expect("claim")
        .expect("due");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = b
        .claim_next(Vec::new(), Duration::from_secs(60), none())
        .await
        .expect("claim")
        .expect("the expired lease is claimable by another node");
    assert_eq!(taken.id, lost.id);
    assert_eq!(taken.delivery_id, lost.delivery_id, "same idempotency key");
    assert_eq!(taken.attempt, 1, "the lost attempt was never recorded");
    assert!(
        a.claim_next(Vec::new(), Duration::from_secs(60), none())
            .await
            .expect("claim")
            .is_none(),
        "a live lease is not claimable"
    );
    // Node A was only slow: its late result is recorded but does not touch B's job.
    a.finish_attempt(lost, ok(), NextStep::Dead)
        .await
        .expect("late finish");
    let client = db.client().await;
    let status: String = client
        .query_one("SELECT status FROM jobs", &[])
        .await
        .expect("job")
        .get(0);
    assert_eq!(status, "running", "still B's");
    b.finish_attempt(taken, ok(), NextStep::Done)
        .await
        .expect("finish");
    let row = client
        .query_one(
            "SELECT j.status, (SELECT COUNT(*) FROM attempts) FROM jobs j",
            &[],
        )
        .await
        .expect("job");
    assert_eq!(row.get::<_, String>(0), "done");
    assert_eq!(row.get::<_, i64>(1), 2, "both attempts are on record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarting_releases_only_its_own_leases() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (open(&db, "node-a").await, open(&db, "node-b").await);
    for call in ["c1", "c2"] {
        let input = nextphone("call.ended", call);
        let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
        a.intake(input, &mut n, vec![JobSpec::new("crm")])
            .await
            .expect("intake");
    }
    let lease = Duration::from_secs(600);
    a.claim_next(Vec::new(), lease, none())
        .await
        .expect("a")
        .expect("job");
    b.claim_next(Vec::new(), lease, none())
        .await
        .expect("b")
        .expect("job");
    assert_eq!(a.recover_orphaned().await.expect("recover"), 1);
    assert!(
        b.claim_next(Vec::new(), lease, none())
            .await
            .expect("claim")
            .is_some(),
        "A's released job is due again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let opened = futures_util::future::join_all(
        ["n1", "n2", "n3", "n4"].map(|n| PgStore::open_settings_for_test(&db, n)),
    )
    .await;
    for store in opened {
        store.expect("every node opens");
    }
    assert_eq!(schema_version(&db).await, super::schema::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_upgraded_with_the_console_tokens_table() {
    use crate::store::Storage as _;
    let Some(db) = TestDb::create().await else {
        return;
    };
    open(&db, "n1").await;
    // As the release before the console's tokens (and the caller-phone index and the relay
    // buffer) left it.
    db.client()
        .await
        .batch_execute(
            "DROP TABLE admin_tokens, relay_sealed, relay_dedup, relay_size;
             DROP INDEX deliveries_caller_ref;
             ALTER TABLE deliveries DROP COLUMN caller_ref;
             INSERT INTO store_meta (name, value) VALUES ('kept', 'yes');
             UPDATE wardhook_schema SET version = 1;",
        )
        .await
        .expect("downgrade");
    let store = open(&db, "n1").await;
    let client = db.client().await;
    let version: i32 = client
        .query_one("SELECT version FROM wardhook_schema", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version as usize, super::schema::SCHEMA_VERSION);
    let kept: String = client
        .query_one("SELECT value FROM store_meta WHERE name = 'kept'", &[])
        .await
        .expect("existing rows survive")
        .get(0);
    assert_eq!(kept, "yes");
    assert!(store
        .console()
        .list_tokens()
        .await
        .expect("the tokens table exists")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    open(&db, "n1").await;
    db.client()
        .await
        .execute("UPDATE wardhook_schema SET version = version + 1", &[])
        .await
        .expect("bump");
    let err = PgStore::open(&db.settings("n1"), keyring())
        .await
        .expect_err("newer schema");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_answers_unavailable_and_readiness_recovers() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut settings = db.settings("n1");
    settings.pool_size = 1;
    settings.wait_timeout = Duration::from_millis(200);
    let store = PgStore::open(&settings, keyring()).await.expect("open");
    let held = store.client().await.expect("the only connection");
    let input = nextphone("call.ended", "c1");
    let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
    let err = store
        .intake(input, &mut n, Vec::new())
        .await
        .expect_err("no connection is free");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        store.check_ready().await.is_err(),
        "not ready while saturated"
    );
    drop(held);
    store.check_ready().await.expect("ready again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_drops_are_unavailable_then_replaced() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    store.check_ready().await.expect("ready");
    // What a database restart or failover does to every open connection. Termination is
    // asynchronous: wait until the server has no other connection to the database.
    terminate_other_connections(&db.client().await).await;
    let first = store.check_ready().await;
    assert!(
        first
            .as_ref()
            .map_or_else(StoreError::is_unavailable, |()| true),
        "a dropped connection is unavailable, not a bug: {first:?}"
    );
    store
        .check_ready()
        .await
        .expect("a fresh connection serves");
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_an_error() {
    let settings = PgSettings {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        url: zeroize::Zeroizing::new("postgres://wardhook@127.0.0.1:1/wardhook".into()),
        tls: PgTls::Disable,
        pool_size: 1,
        node_id: "n1".into(),
        wait_timeout: Duration::from_secs(2),
    };
    let err = PgStore::open(&settings, keyring())
        .await
        .expect_err("no server");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        !err.to_string().contains("wardhook@"),
        "no URL in the message: {err}"
    );
}

#[tokio::test]
async fn tls_without_a_readable_ca_file_is_refused_at_start() {
    let settings = PgSettings {
        url: zeroize::Zeroizing::new("postgres://wardhook@db.example:5432/wardhook".into()),
        tls: PgTls::Require {
            ca_file: "/nonexistent/ca.pem".into(),
        },
        pool_size: 1,
        node_id: "n1".into(),
        wait_timeout: Duration::from_secs(2),
    };
    let err = PgStore::open(&settings, keyring())
        .await
        .expect_err("no CA");
    assert!(err.to_string().contains("ca_file"), "{err}");
}

impl PgStore {
    async fn open_settings_for_test(db: &TestDb, node: &str) -> Result<Self, StoreError> {
        Self::open(&db.settings(node), keyring()).await
    }
}

/// The test server's TLS CA (`WARDHOOK_TEST_POSTGRES_CA`, set up by
/// `deploy/ci/start-test-postgres.sh`); skipped without it, except under CI.
fn test_server_ca() -> Option<std::path::PathBuf> {
    match std::env::var_os("WARDHOOK_TEST_POSTGRES_CA") {
        Some(path) => Some(path.into()),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the TLS test needs WARDHOOK_TEST_POSTGRES_CA (.ci/run sets it)"
            );
            eprintln!("SKIPPED: WARDHOOK_TEST_POSTGRES_CA is not set");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_verifies_the_server_certificate() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(ca) = test_server_ca() else {
        return;
    };
    // The test server's certificate names `localhost`.
    let mut settings = db.settings("n1");
    settings.url = zeroize::Zeroizing::new(settings.url.replace("@127.0.0.1:", "@localhost:"));
    settings.tls = PgTls::Require { ca_file: ca };
    let store = PgStore::open(&settings, keyring())
        .await
        .expect("TLS with the server's CA");
    let ssl: bool = store
        .client()
        .await
        .expect("client")
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the connection is encrypted");

    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other-ca.crt");
    std::fs::write(
        &other,
        crate::certs::DevCa::generate().expect("ca").cert_pem(),
    )
    .expect("write");
    settings.tls = PgTls::Require { ca_file: other };
    let err = PgStore::open(&settings, keyring())
        .await
        .expect_err("a certificate from another CA is refused");
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_node_of_a_cut_off_tail_and_of_a_deleted_record() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = (open(&db, "node-a").await, open(&db, "node-b").await);
    for store in [&a, &b] {
        for _ in 0..5 {
            store
                .record_audit(crate::audit::lifecycle_record(
                    crate::audit::Action::ServerStarted,
                    None,
                ))
                .await
                .expect("record");
        }
    }
    let nodes = super::verify_audit(&a)
        .await
        .expect("untouched log verifies");
    assert_eq!(
        nodes.iter().map(|n| n.report.records).sum::<u64>(),
        10,
        "{nodes:?}"
    );
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
             DELETE FROM audit_log WHERE node_id = 'node-b' AND seq = 5;",
        )
        .await
        .expect("cut node-b's tail");
    let err = super::verify_audit(&a).await.expect_err("tail cut");
    let text = err.to_string();
    assert!(
        text.contains("node node-b") && text.contains("head is at 5"),
        "{text}"
    );
    client
        .batch_execute("DELETE FROM audit_log WHERE node_id = 'node-a' AND seq = 3")
        .await
        .expect("delete from node-a");
    let text = super::verify_audit(&a).await.expect_err("gap").to_string();
    assert!(
        text.contains("node node-a") && text.contains("sequence 3"),
        "the first node's first bad record: {text}"
    );
}

/// The committer's view of `store`, to run batches directly instead of racing requests into one.
fn committer_context(store: &PgStore) -> super::committer::Context {
    super::committer::Context {
        pool: store.inner.pool.clone(),
        keyring: Arc::clone(&store.inner.keyring),
        node_id: store.node_id().to_owned(),
        generation: Arc::clone(&store.inner.keys.generation),
        panic_after_insert: Arc::default(),
    }
}

async fn prepared(store: &PgStore, call: &str) -> super::committer::PreparedIntake {
    let input = nextphone("call.ended", call);
    let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
    super::intake::prepare(store, &input, &mut n, vec!["crm".to_owned()])
        .await
        .expect("prepare")
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Close every other connection to the test database and wait until the server has, so the
/// pool opens new ones (which pick up per-database settings).
async fn terminate_other_connections(admin: &tokio_postgres::Client) {
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
    while count(
        admin,
        "SELECT COUNT(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await
        > 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holding_one_delivery_twice_accepts_the_first_and_answers_the_second_with_its_id() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let (first, again) = (prepared(&store, "c1").await, prepared(&store, "c1").await);
    let other = prepared(&store, "c2").await;
    let first_id = first.id.clone();

    let answers =
        super::committer::commit_or_isolate(&committer_context(&store), &[first, again, other])
            .await;

    let outcomes: Vec<IntakeOutcome> = answers
        .into_iter()
        .map(|a| a.expect("stored").expect("current key generation"))
        .collect();
    assert_eq!(
        outcomes[0],
        IntakeOutcome::Accepted {
            delivery_id: first_id.clone()
        }
    );
    assert_eq!(
        outcomes[1],
        IntakeOutcome::Duplicate {
            delivery_id: first_id
        },
        "the second copy answers duplicate with the first's id"
    );
    assert!(matches!(outcomes[2], IntakeOutcome::Accepted { .. }));
    let client = db.client().await;
    assert_eq!(count(&client, "SELECT COUNT(*) FROM deliveries").await, 2);
    assert_eq!(
        count(&client, "SELECT COUNT(*) FROM jobs").await,
        2,
        "the duplicate enqueued nothing"
    );
    assert_eq!(
        count(
            &client,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'delivery_duplicate'"
        )
        .await,
        1
    );
    let nodes = super::verify_audit(&store).await.expect("chain verifies");
    assert_eq!(nodes[0].report.records, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_intakes_are_all_answered_with_one_row_each_and_a_chain_that_verifies(
) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    // Interleave one standalone record, which takes the head lock in its own transaction.
    let intakes = (0..200).map(|i| {
        let store = store.clone();
        async move {
            let input = nextphone("call.ended", &format!("c{i}"));
            let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
            store.intake(input, &mut n, vec![JobSpec::new("crm")]).await
        }
    });
    let standalone = store.record_audit(crate::audit::lifecycle_record(
        crate::audit::Action::ServerStarted,
        None,
    ));
    let (answers, recorded) = tokio::join!(futures_util::future::join_all(intakes), standalone);
    recorded.expect("standalone record");

    for answer in answers {
        assert!(
            matches!(answer, Ok(IntakeOutcome::Accepted { .. })),
            "{answer:?}"
        );
    }
    let client = db.client().await;
    assert_eq!(count(&client, "SELECT COUNT(*) FROM deliveries").await, 200);
    assert_eq!(count(&client, "SELECT COUNT(*) FROM jobs").await, 200);
    let nodes = super::verify_audit(&store).await.expect("chain verifies");
    assert_eq!(nodes[0].report.records, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_transaction_fails_answers_every_member_unavailable_and_stores_none() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let context = committer_context(&store);
    // Prepared while writable: the period's data key exists and is cached.
    let mut batch = Vec::new();
    for call in ["c1", "c2", "c3"] {
        batch.push(prepared(&store, call).await);
    }
    let admin = db.client().await;
    // What a failover to a read-only standby looks like to new connections.
    let read_only = |on: &str| {
        format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only \
             = {on}', current_database()); END $$"
        )
    };
    admin.batch_execute(&read_only("on")).await.expect("alter");
    terminate_other_connections(&admin).await;

    let answers = super::committer::commit_or_isolate(&context, &batch).await;

    for answer in &answers {
        let err = answer.as_ref().expect_err("the database is read-only");
        assert!(err.is_unavailable(), "{err}");
    }
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM deliveries").await, 0);
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM audit_log").await, 0);

    // Writable again: the next batch (the same deliveries, as the senders retry) is stored.
    admin.batch_execute(&read_only("off")).await.expect("alter");
    terminate_other_connections(&admin).await;
    let mut answers = super::committer::commit_or_isolate(&context, &batch).await;
    if answers[0].as_ref().is_err_and(StoreError::is_unavailable) {
        // The pool may hand out a connection it has not yet seen closed, once.
        answers = super::committer::commit_or_isolate(&context, &batch).await;
    }
    for answer in answers {
        assert!(
            matches!(answer, Ok(Some(IntakeOutcome::Accepted { .. }))),
            "{answer:?}"
        );
    }
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM deliveries").await, 3);
    super::verify_audit(&store).await.expect("chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_another_node_applies_to_the_next_intake_sealed_under_the_cached_key() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let input = nextphone("call.ended", "c1");
    let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
    store
        .intake(input, &mut n, Vec::new())
        .await
        .expect("intake");
    let admin = db.client().await;
    // What `keys rotate` on another node does; this node still caches generation 1's key.
    admin
        .execute(
            "UPDATE store_meta SET value = '2' WHERE name = 'key_generation'",
            &[],
        )
        .await
        .expect("rotate");

    let input = nextphone("call.ended", "c2");
    let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
    let outcome = store
        .intake(input, &mut n, Vec::new())
        .await
        .expect("intake");

    let IntakeOutcome::Accepted { delivery_id } = outcome else {
        panic!("{outcome:?}");
    };
    let generation: i64 = admin
        .query_one(
            "SELECT k.generation FROM deliveries d JOIN data_keys k USING (key_id)
             WHERE d.id = $1",
            &[&delivery_id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(generation, 2, "sealed again under the new generation");
    store
        .show_delivery(delivery_id, crate::store::Requester::cli_user())
        .await
        .expect("reads back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_on_its_own_does_not_spoil_the_rest_of_its_batch() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let (before, mut bad, after) = (
        prepared(&store, "c1").await,
        prepared(&store, "c2").await,
        prepared(&store, "c3").await,
    );
    // A key that does not exist: the foreign key refuses this row, and only this row.
    bad.key_id = i64::MAX;

    let answers =
        super::committer::commit_or_isolate(&committer_context(&store), &[before, bad, after])
            .await;

    assert!(matches!(
        answers[0],
        Ok(Some(IntakeOutcome::Accepted { .. }))
    ));
    let err = answers[1].as_ref().expect_err("the bad row fails");
    assert!(!err.is_unavailable(), "a bug, not a condition: {err}");
    assert!(matches!(
        answers[2],
        Ok(Some(IntakeOutcome::Accepted { .. }))
    ));
    let client = db.client().await;
    assert_eq!(count(&client, "SELECT COUNT(*) FROM deliveries").await, 2);
    let nodes = super::verify_audit(&store).await.expect("chain verifies");
    assert_eq!(nodes[0].report.records, 2);
}

/// `n` deliveries submitted at once through the store's committer, each answer within a bound:
/// a waiting request never hangs.
async fn submit_concurrently(
    store: &PgStore,
    tag: &str,
    n: usize,
) -> Vec<Result<IntakeOutcome, StoreError>> {
    let intakes = (0..n).map(|i| {
        let store = store.clone();
        let call = format!("{tag}{i}");
        async move {
            let input = nextphone("call.ended", &call);
            let mut n = crate::normalize::normalize(&input, Utc::now()).expect("normalizes");
            tokio::time::timeout(
                Duration::from_secs(20),
                store.intake(input, &mut n, vec![JobSpec::new("crm")]),
            )
            .await
            .expect("answered, not left waiting")
        }
    });
    futures_util::future::join_all(intakes).await
}

/// As on SQLite (`a_panic_inside_a_group_commit_costs_that_batch_not_the_writer`): a panic
/// inside the batch's open transaction answers every waiting request unavailable (503), stores
/// nothing of the batch, and the committer takes the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_panicking_mid_batch_answers_every_waiting_request_unavailable_and_stores_none()
{
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    store
        .inner
        .committer
        .panic_after_insert
        .store(true, std::sync::atomic::Ordering::Release);

    let answers = submit_concurrently(&store, "p", 8).await;

    // The first batch panicked; requests queued behind it may have formed a later batch.
    let failed = answers.iter().filter(|a| a.is_err()).count();
    assert!(failed >= 1, "{answers:?}");
    for answer in &answers {
        match answer {
            Err(e) => assert!(e.is_unavailable(), "{e}"),
            Ok(outcome) => assert!(matches!(outcome, IntakeOutcome::Accepted { .. })),
        }
    }
    let client = db.client().await;
    let accepted = answers.iter().filter(|a| a.is_ok()).count() as i64;
    assert_eq!(
        count(&client, "SELECT COUNT(*) FROM deliveries").await,
        accepted,
        "only what was answered accepted is stored"
    );
    assert_eq!(count(&client, "SELECT COUNT(*) FROM jobs").await, accepted);
    // The committer survived: the senders' retries are stored.
    for answer in submit_concurrently(&store, "p", 8).await {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert_eq!(count(&client, "SELECT COUNT(*) FROM deliveries").await, 8);
    super::verify_audit(&store).await.expect("chain verifies");
}

/// A batch stuck mid-commit: the audit head row of node `n1` held by another session, and
/// intakes waiting in the committer behind it.
struct StuckBatch<'a> {
    /// The other session's transaction holding the head row.
    hold: tokio_postgres::Transaction<'a>,
    /// The submitters (see [`submit_concurrently`]).
    waiting: tokio::task::JoinHandle<Vec<Result<IntakeOutcome, StoreError>>>,
    /// A session for checks.
    admin: tokio_postgres::Client,
}

/// After one warm-up intake (the period's data key exists, so the batch's only wait is in the
/// commit), lock `n1`'s audit head on `holder`, submit `n` intakes tagged `tag`, and return
/// once the committer's transaction waits on the lock, having run `SELECT COUNT(on_waiting)`
/// over the sessions waiting on a lock (`*`, or `pg_terminate_backend(pid)` to cut them off).
async fn stuck_on_the_head_row<'a>(
    db: &TestDb,
    store: &PgStore,
    holder: &'a mut tokio_postgres::Client,
    tag: &str,
    n: usize,
    on_waiting: &str,
) -> StuckBatch<'a> {
    submit_concurrently(store, "warm", 1).await[0]
        .as_ref()
        .expect("warm-up");
    let hold = holder.transaction().await.expect("begin");
    hold.execute(
        "SELECT seq FROM audit_heads WHERE node_id = 'n1' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock the head");
    let waiting = tokio::spawn({
        let (store, tag) = (store.clone(), tag.to_owned());
        async move { submit_concurrently(&store, &tag, n).await }
    });
    let admin = db.client().await;
    let sessions = format!(
        "SELECT COUNT({on_waiting}) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'"
    );
    let mut found = 0;
    for _ in 0..500 {
        found = count(&admin, &sessions).await;
        if found > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(found > 0, "the committer never waited on the head row");
    StuckBatch {
        hold,
        waiting,
        admin,
    }
}

/// The committer's connection dies while its transaction waits mid-batch (here on the audit
/// head row, held by another session): every waiting request is answered unavailable, none
/// hangs, none is answered accepted, nothing is stored, and the next batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_losing_its_connection_mid_batch_answers_unavailable_and_stores_none() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let mut holder = db.client().await;
    // Once the committer's transaction is blocked on the head lock, cut it off.
    let stuck = stuck_on_the_head_row(
        &db,
        &store,
        &mut holder,
        "cut",
        6,
        "pg_terminate_backend(pid)",
    )
    .await;
    let (hold, waiting, admin) = (stuck.hold, stuck.waiting, stuck.admin);

    let answers = waiting.await.expect("task");
    hold.rollback().await.expect("release");

    let failed = answers.iter().filter(|a| a.is_err()).count();
    assert!(failed >= 1, "{answers:?}");
    for answer in &answers {
        if let Err(e) = answer {
            assert!(e.is_unavailable(), "{e}");
        }
    }
    let accepted = answers.iter().filter(|a| a.is_ok()).count() as i64;
    assert_eq!(
        count(&admin, "SELECT COUNT(*) FROM deliveries").await,
        1 + accepted,
        "nothing answered unavailable was stored"
    );
    // The next batch gets a fresh connection and commits.
    let mut retried = submit_concurrently(&store, "cut", 6).await;
    if retried.iter().any(Result::is_err) {
        // The pool may hand out a connection it has not yet seen closed, once.
        retried = submit_concurrently(&store, "cut", 6).await;
    }
    for answer in retried {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM deliveries").await, 7);
    super::verify_audit(&store).await.expect("chain verifies");
}

/// The committer task itself dies (here ended while its batch's transaction waits on the
/// node's audit head row, as a crash of the task would): every waiting request is answered
/// unavailable (503) at once, none hangs and none was stored, and the next intake starts a new
/// committer that stores it: the node does not answer 503 from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_task_that_dies_answers_unavailable_and_the_next_intake_gets_a_new_one() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let mut holder = db.client().await;
    let stuck = stuck_on_the_head_row(&db, &store, &mut holder, "dead", 6, "*").await;
    let (hold, waiting, admin) = (stuck.hold, stuck.waiting, stuck.admin);

    store.inner.committer.kill();
    let answers = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered at once, not when the head row is released")
        .expect("task");
    hold.rollback().await.expect("release");

    for answer in &answers {
        let e = answer
            .as_ref()
            .expect_err("nothing is acknowledged by a dead committer");
        assert!(e.is_unavailable(), "{e}");
    }
    assert_eq!(
        count(&admin, "SELECT COUNT(*) FROM deliveries").await,
        1,
        "nothing answered unavailable was stored"
    );
    // The senders' retries reach a new committer and are stored.
    for answer in submit_concurrently(&store, "dead", 6).await {
        assert!(
            matches!(answer, Ok(IntakeOutcome::Accepted { .. })),
            "{answer:?}"
        );
    }
    assert_eq!(count(&admin, "SELECT COUNT(*) FROM deliveries").await, 7);
    super::verify_audit(&store).await.expect("chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_is_upgraded_with_the_caller_phone_index() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = open(&db, "n1").await;
    let old = crate::store::sqlite::tests::submit_at(
        &store,
        nextphone("call.ended", "before"),
        &[],
        Utc::now(),
    )
    .await
    .expect("old delivery");
    drop(store);
    // As the release before the caller-phone index (and the relay buffer) left it.
    db.client()
        .await
        .batch_execute(
            "DROP TABLE relay_sealed, relay_dedup, relay_size;
             DROP INDEX deliveries_caller_ref;
             ALTER TABLE deliveries DROP COLUMN caller_ref;
             UPDATE wardhook_schema SET version = 2;",
        )
        .await
        .expect("downgrade");
    let store = open(&db, "n1").await;
    assert_eq!(schema_version(&db).await, super::schema::SCHEMA_VERSION);
    assert!(
        found_by_phone(&store, "+15551234567").await.is_empty(),
        "a delivery stored before the index has none"
    );
    let new = crate::store::sqlite::tests::submit_at(
        &store,
        nextphone("call.ended", "after"),
        &[],
        Utc::now(),
    )
    .await
    .expect("new delivery");
    assert_eq!(
        found_by_phone(&store, "(555) 123-4567").await,
        vec![new.delivery_id().to_owned()]
    );
    assert_ne!(old.delivery_id(), new.delivery_id());
}
