//! The storage contract, run against both backends through the [`Storage`] trait: each
//! scenario below is one async function taking a [`Harness`], and `both_backends!` turns it
//! into a SQLite test (a temp file) and a PostgreSQL test (a fresh database; skipped without
//! `WARDHOOK_TEST_POSTGRES_URL`, failed under CI). "Two nodes" are two stores opened on the
//! same database: two writer threads on one file for SQLite, two pools for PostgreSQL.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::console::{AuditCheck, HandlerQueue, Role, StoredToken, TokenInfo, TokenInsert};
use super::postgres::testdb::TestDb;
use super::postgres::PgStore;
use super::sqlite::tests::{keyring, nextphone};
use super::types::{
    AttemptRecord, AttemptResult, ClaimedJob, DeadFilter, IntakeOutcome, JobSpec, ListFilter,
    NextStep, Predecessors, Requester,
};
use super::{Storage, Store, StoreError, StoreOptions};
use crate::audit::commands::SearchArgs;
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, Outcome};
use crate::normalize::{normalize, Envelope, IntakeInput};

/// One database and the means to open nodes on it and inspect it.
pub(super) enum Harness {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        db: TestDb,
    },
}

impl Harness {
    pub(super) fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        Self::Sqlite { _dir: dir, path }
    }

    pub(super) async fn postgres() -> Option<Self> {
        TestDb::create().await.map(|db| Self::Postgres { db })
    }

    /// A store on this database acting as node `node_id`.
    pub(super) async fn node(&self, node_id: &str) -> Arc<dyn Storage> {
        match self {
            Self::Sqlite { path, .. } => Arc::new(
                Store::open(path, keyring(), StoreOptions::default()).expect("open sqlite"),
            ),
            Self::Postgres { db } => Arc::new(
                PgStore::open(&db.settings(node_id), keyring())
                    .await
                    .expect("open postgres"),
            ),
        }
    }

    /// A single number from SQL that reads the same in both dialects.
    pub(super) async fn count(&self, sql: &str) -> i64 {
        match self {
            Self::Sqlite { path, .. } => count_in(Err(path), sql).await,
            Self::Postgres { db } => count_in(Ok(db), sql).await,
        }
    }

    /// Verify the audit log; the number of records verified, or the failure's text.
    pub(super) async fn verify_audit(&self) -> Result<u64, String> {
        match self {
            Self::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open");
                crate::audit::verify_db(&conn, &keyring(), None)
                    .map(|r| r.records)
                    .map_err(|e| e.to_string())
            }
            Self::Postgres { db } => {
                let pg = PgStore::open(&db.settings("verifier"), keyring())
                    .await
                    .expect("open");
                super::postgres::verify_audit(&pg)
                    .await
                    .map(|nodes| nodes.iter().map(|n| n.report.records).sum())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Rewrite the detail of the second audit record, as someone with database access could.
    async fn tamper_with_second_audit_record(&self) {
        match self {
            Self::Sqlite { path, .. } => {
                rusqlite::Connection::open(path)
                    .expect("open")
                    .execute_batch(
                        "DROP TRIGGER audit_log_no_update;
                         UPDATE audit_log SET detail = '{\"count\":99}' WHERE seq = 2;",
                    )
                    .expect("tamper");
            }
            Self::Postgres { db } => {
                db.client()
                    .await
                    .batch_execute(
                        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
                         UPDATE audit_log SET detail = '{\"count\":99}' WHERE seq = 2;",
                    )
                    .await
                    .expect("tamper");
            }
        }
    }
}

async fn submit(
    store: &dyn Storage,
    input: IntakeInput,
    jobs: &[&str],
) -> Result<IntakeOutcome, StoreError> {
    super::sqlite::tests::submit_at(store, input, jobs, Utc::now()).await
}

fn no_predecessors() -> Arc<Predecessors> {
    Arc::new(Predecessors::none())
}

/// `second` runs after `first` in one route of the test source.
fn chained(first: &'static str, second: &'static str) -> Arc<Predecessors> {
    let mut plan = Predecessors::none();
    plan.insert("nextphone", second, vec![first.to_owned()]);
    Arc::new(plan)
}

const LEASE: Duration = Duration::from_secs(60);

fn ok_attempt(output: serde_json::Value) -> AttemptRecord {
    AttemptRecord {
        http_status: Some(200),
        destination: Some("crm.example".into()),
        ..failed_attempt(AttemptResult::Ok {
            output,
            caller_phone: None,
        })
    }
}

fn failed_attempt(result: AttemptResult) -> AttemptRecord {
    AttemptRecord {
        started_at: Utc::now(),
        latency: Duration::from_millis(3),
        http_status: None,
        destination: None,
        result,
    }
}

async fn claim(store: &dyn Storage, predecessors: Arc<Predecessors>) -> Option<ClaimedJob> {
    store
        .claim_next(Vec::new(), LEASE, predecessors)
        .await
        .expect("claim")
}

// ---- scenarios ----

async fn retried_delivery_returns_duplicate_with_the_first_id(h: Harness) {
    let store = h.node("node-a").await;
    let first = submit(&*store, nextphone("call.ended", "c1"), &["crm", "slack"])
        .await
        .expect("first");
    assert!(matches!(first, IntakeOutcome::Accepted { .. }), "{first:?}");
    let retry = submit(&*store, nextphone("call.ended", "c1"), &["crm", "slack"])
        .await
        .expect("retry");
    assert_eq!(
        retry,
        IntakeOutcome::Duplicate {
            delivery_id: first.delivery_id().to_owned()
        }
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs").await,
        2,
        "no second set of jobs"
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'delivery_duplicate'")
            .await,
        1
    );
}

async fn two_events_of_one_call_are_both_accepted(h: Harness) {
    let store = h.node("node-a").await;
    let answered = submit(&*store, nextphone("call.answered", "c1"), &["crm"])
        .await
        .expect("answered");
    let ended = submit(&*store, nextphone("call.ended", "c1"), &["crm"])
        .await
        .expect("ended");
    assert!(matches!(answered, IntakeOutcome::Accepted { .. }));
    assert!(matches!(ended, IntakeOutcome::Accepted { .. }));
    assert_ne!(answered.delivery_id(), ended.delivery_id());
}

async fn identical_deliveries_racing_on_two_nodes_get_one_accepted_and_one_duplicate(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    for i in 0..20 {
        let call = format!("race-{i}");
        let (x, y) = tokio::join!(
            submit(&*a, nextphone("call.ended", &call), &["crm"]),
            submit(&*b, nextphone("call.ended", &call), &["crm"]),
        );
        let (x, y) = (x.expect("node a"), y.expect("node b"));
        assert_eq!(
            x.delivery_id(),
            y.delivery_id(),
            "round {i}: one delivery id"
        );
        let accepted = [&x, &y]
            .iter()
            .filter(|o| matches!(o, IntakeOutcome::Accepted { .. }))
            .count();
        assert_eq!(accepted, 1, "round {i}: exactly one accepted: {x:?} {y:?}");
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries").await, 20);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs").await,
        20,
        "no job enqueued twice"
    );
}

async fn unparseable_delivery_is_quarantined_once_even_when_retried(h: Harness) {
    let store = h.node("node-a").await;
    let body = b"{\"event\": \"call.ended\", \"data\": {\"caller\": \"Zqxgarbage\"";
    let input = IntakeInput::for_test("nextphone", Envelope::NextPhone, body);
    let err = normalize(&input, Utc::now()).expect_err("garbage");
    let first = store
        .quarantine(input.clone(), &err)
        .await
        .expect("quarantined");
    let again = store.quarantine(input, &err).await.expect("retry");
    assert_eq!(first, again, "a retry gets the existing entry");
    let listed = store
        .list_quarantine(ListFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].status.as_str()),
        (first.0.as_str(), "quarantined")
    );
    let entry = store
        .show_quarantine(first.0.clone(), operator())
        .await
        .expect("show");
    assert_eq!(entry.body, body.to_vec(), "the body as received");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'payload_read'")
            .await,
        1,
        "the read is audited"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM quarantine").await, 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM quarantine WHERE ciphertext IS NOT NULL")
            .await,
        1,
        "the body is kept, encrypted"
    );
}

async fn two_nodes_claiming_at_once_never_claim_a_job_twice(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    for i in 0..30 {
        submit(&*a, nextphone("call.ended", &format!("c{i}")), &["crm"])
            .await
            .expect("submit");
    }
    let drain = |store: Arc<dyn Storage>| async move {
        let mut mine = Vec::new();
        while let Some(job) = claim(&*store, no_predecessors()).await {
            mine.push(job.id);
            store
                .finish_attempt(job, ok_attempt(serde_json::json!({})), NextStep::Done)
                .await
                .expect("finish");
        }
        mine
    };
    let (x, y) = tokio::join!(tokio::spawn(drain(a)), tokio::spawn(drain(b)));
    let (x, y) = (x.expect("node a"), y.expect("node b"));
    let unique: HashSet<i64> = x.iter().chain(&y).copied().collect();
    assert_eq!(x.len() + y.len(), 30, "every job claimed exactly once");
    assert_eq!(unique.len(), 30);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'done'")
            .await,
        30
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM attempts").await, 30);
}

async fn a_later_handler_waits_for_the_earlier_one_and_sees_its_output(h: Harness) {
    let store = h.node("node-a").await;
    let accepted = submit(&*store, nextphone("call.ended", "c1"), &["lookup", "crm"])
        .await
        .expect("submit");
    let first = claim(&*store, chained("lookup", "crm"))
        .await
        .expect("a job is due");
    assert_eq!(first.handler, "lookup", "crm waits for lookup");
    assert!(
        claim(&*store, chained("lookup", "crm")).await.is_none(),
        "crm is parked while lookup runs"
    );
    store
        .finish_attempt(
            first,
            ok_attempt(serde_json::json!({"data": {"customer": "42"}, "status": 200})),
            NextStep::Done,
        )
        .await
        .expect("finish");
    let second = claim(&*store, chained("lookup", "crm"))
        .await
        .expect("crm is due now");
    assert_eq!(second.handler, "crm");
    let (event, app_data) = store.load_for_dispatch(&second).await.expect("load");
    assert_eq!(event.delivery_id, accepted.delivery_id());
    assert_eq!(event.event_type, "call.ended");
    assert_eq!(
        app_data.get("lookup"),
        Some(&serde_json::json!({"data": {"customer": "42"}, "status": 200}))
    );
}

async fn retries_are_rescheduled_and_permanent_failures_dead_lettered(h: Harness) {
    let store = h.node("node-a").await;
    submit(&*store, nextphone("call.ended", "c1"), &["crm"])
        .await
        .expect("submit");
    let job = claim(&*store, no_predecessors()).await.expect("due");
    let later = Utc::now() + chrono::Duration::hours(1);
    store
        .finish_attempt(
            job,
            failed_attempt(AttemptResult::Retryable {
                reason: "http 503".into(),
            }),
            NextStep::RetryAt(later),
        )
        .await
        .expect("retry");
    assert!(claim(&*store, no_predecessors()).await.is_none(), "not due");
    let (depth, _) = store.queue_stats().await.expect("stats");
    assert_eq!(depth, 1);
    submit(&*store, nextphone("call.ended", "c2"), &["crm"])
        .await
        .expect("submit");
    let job = claim(&*store, no_predecessors()).await.expect("due");
    assert_eq!(job.attempt, 1);
    store
        .finish_attempt(
            job,
            failed_attempt(AttemptResult::Permanent {
                reason: "http 400".into(),
            }),
            NextStep::Dead,
        )
        .await
        .expect("dead");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'dead'")
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'dead_lettered'")
            .await,
        1
    );
    let dead = store
        .list_dead(DeadFilter::default())
        .await
        .expect("list dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].handler, "crm");
    assert_eq!(dead[0].last_error.as_deref(), Some("http 400"));
    let attempts = store.job_attempts(dead[0].job_id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt, attempts[0].result.as_str()),
        (1, "permanent")
    );
    let who = operator();
    let retried = store
        .retry_dead(
            DeadFilter {
                job_id: Some(dead[0].job_id),
                ..DeadFilter::default()
            },
            who,
        )
        .await
        .expect("retry");
    assert_eq!(retried, 1);
    let again = claim(&*store, no_predecessors())
        .await
        .expect("the retried dead letter is due");
    assert_eq!(again.id, dead[0].job_id);
    assert_eq!(again.attempt, 2, "its first attempt stays on record");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'retried'")
            .await,
        1
    );
}

async fn audit_chain_verifies_and_a_tampered_record_is_found(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    for i in 0..5 {
        submit(&*a, nextphone("call.ended", &format!("a{i}")), &["crm"])
            .await
            .expect("a");
        submit(&*b, nextphone("call.ended", &format!("b{i}")), &["crm"])
            .await
            .expect("b");
    }
    let records = h.verify_audit().await.expect("the untouched log verifies");
    assert_eq!(records, 10);
    h.tamper_with_second_audit_record().await;
    let err = h
        .verify_audit()
        .await
        .expect_err("a modified record is detected");
    assert!(
        err.contains("sequence 2"),
        "names the first bad record: {err}"
    );
}

async fn readiness_is_green_on_a_writable_database(h: Harness) {
    let store = h.node("node-a").await;
    store.check_ready().await.expect("ready");
    store
        .record_audit(crate::audit::lifecycle_record(
            crate::audit::Action::ServerStarted,
            None,
        ))
        .await
        .expect("standalone audit record");
}

async fn purge_removes_old_payloads_and_audits_it(h: Harness) {
    let store = h.node("node-a").await;
    submit(&*store, nextphone("call.ended", "c1"), &["crm"])
        .await
        .expect("submit");
    let report = store.purge(Utc::now(), operator()).await.expect("purge");
    assert_eq!(report.deliveries, 1);
    assert_eq!(report.jobs, 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE ciphertext IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'purged'")
            .await,
        4
    );
}

async fn replay_requeues_finished_jobs_and_creates_a_missing_one(h: Harness) {
    let store = h.node("node-a").await;
    let accepted = submit(&*store, nextphone("call.ended", "c1"), &["crm"])
        .await
        .expect("submit");
    let id = accepted.delivery_id().to_owned();
    let who = operator;
    let job = claim(&*store, no_predecessors()).await.expect("due");
    store
        .finish_attempt(job, ok_attempt(serde_json::json!({})), NextStep::Done)
        .await
        .expect("finish");
    assert_eq!(
        store.replay(id.clone(), None, who()).await.expect("replay"),
        1
    );
    let again = claim(&*store, no_predecessors()).await.expect("due again");
    assert_eq!(again.handler, "crm");
    store
        .finish_attempt(again, ok_attempt(serde_json::json!({})), NextStep::Done)
        .await
        .expect("finish");
    let created = store
        .replay(id.clone(), Some("slack".into()), who())
        .await
        .expect("replay one handler");
    assert_eq!(created, 1, "a job for a handler the delivery never had");
    let slack = claim(&*store, no_predecessors()).await.expect("slack due");
    assert_eq!(
        (slack.handler.as_str(), slack.delivery_id.as_str()),
        ("slack", id.as_str())
    );
    let missing = store
        .replay(uuid::Uuid::now_v7().to_string(), None, who())
        .await
        .expect_err("no such delivery");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'replayed'")
            .await,
        2
    );
}

async fn operators_list_metadata_and_read_a_delivery_with_an_audit_record(h: Harness) {
    let store = h.node("node-a").await;
    let first = submit(&*store, nextphone("call.answered", "c1"), &["crm"])
        .await
        .expect("first");
    let second = submit(&*store, nextphone("call.ended", "c1"), &[])
        .await
        .expect("second");
    let listed = store
        .list_deliveries(ListFilter::default())
        .await
        .expect("list");
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [second.delivery_id(), first.delivery_id()],
        "newest first"
    );
    assert_eq!((listed[1].jobs, listed[1].status.as_str()), (1, "accepted"));
    let who = operator();
    let event = store
        .show_delivery(first.delivery_id().to_owned(), who.clone())
        .await
        .expect("show");
    assert_eq!(event.event_type, "call.answered");
    assert_eq!(event.call_id.as_deref(), Some("c1"));
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'payload_read'")
            .await,
        1,
        "the read is audited"
    );
    let missing = store
        .show_delivery(uuid::Uuid::now_v7().to_string(), who)
        .await
        .expect_err("no such delivery");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
}

async fn the_event_handed_to_intake_is_the_one_stored_and_carries_its_id(h: Harness) {
    let store = h.node("node-a").await;
    let input = nextphone("call.ended", "c7");
    let mut n = normalize(&input, Utc::now()).expect("normalizes");
    assert_eq!(
        n.event().delivery_id,
        "",
        "no id before the store assigns one"
    );
    let outcome = store
        .intake(input, &mut n, vec![JobSpec::new("crm")])
        .await
        .expect("intake");
    assert_eq!(n.event().delivery_id, outcome.delivery_id());
    let who = operator();
    let stored = store
        .show_delivery(outcome.delivery_id().to_owned(), who)
        .await
        .expect("show");
    assert_eq!(&stored, n.event(), "the sealed event is the normalized one");
    // A retry's event carries the first delivery's id.
    let retry = nextphone("call.ended", "c7");
    let mut again = normalize(&retry, Utc::now()).expect("normalizes");
    let duplicate = store
        .intake(retry, &mut again, vec![JobSpec::new("crm")])
        .await
        .expect("retry");
    assert!(
        matches!(duplicate, IntakeOutcome::Duplicate { .. }),
        "{duplicate:?}"
    );
    assert_eq!(again.event().delivery_id, outcome.delivery_id());
}

async fn a_job_whose_lease_expired_is_taken_over_and_the_late_finish_changes_nothing(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    submit(&*a, nextphone("call.ended", "lease-1"), &["crm"])
        .await
        .expect("submit");
    // A claims with a lease that is over at once: as if its worker step failed after the claim.
    let lost = a
        .claim_next(Vec::new(), Duration::ZERO, no_predecessors())
        .await
        .expect("claim")
        .expect("due");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = claim(&*b, no_predecessors())
        .await
        .expect("the expired lease is claimable");
    assert_eq!(taken.id, lost.id);
    assert_eq!(taken.delivery_id, lost.delivery_id, "same idempotency key");
    assert!(
        claim(&*a, no_predecessors()).await.is_none(),
        "a live lease is not claimable"
    );
    // A was only slow: its late result is recorded but does not touch B's job.
    a.finish_attempt(lost, ok_attempt(serde_json::json!({})), NextStep::Dead)
        .await
        .expect("late finish");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'running'")
            .await,
        1,
        "still B's"
    );
    b.finish_attempt(taken, ok_attempt(serde_json::json!({})), NextStep::Done)
        .await
        .expect("finish");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'done'")
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM attempts").await,
        2,
        "both on record"
    );
}

// ---- the operator console ([`super::Console`]) ----

fn token_row(id: &str, name: &str) -> StoredToken {
    StoredToken {
        info: TokenInfo {
            id: id.to_owned(),
            name: name.to_owned(),
            role: Role::Operator,
            created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            expires_at: None,
            revoked_at: None,
        },
        hash: vec![7; 32],
    }
}

fn token_record(action: Action) -> AuditRecord {
    AuditRecord::new(Actor::System, action, Outcome::Success)
}

async fn tokens_are_shared_by_every_node_and_each_change_is_audited(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    a.console().prepare_console().await.expect("prepare");
    a.console().prepare_console().await.expect("prepare twice");
    b.console().prepare_console().await.expect("prepare on b");
    let created = a
        .console()
        .create_token(
            token_row("tk0000000001", "ops"),
            token_record(Action::TokenCreated),
        )
        .await
        .expect("create");
    assert_eq!(created, TokenInsert::Created);
    let taken = b
        .console()
        .create_token(
            token_row("tk0000000002", "ops"),
            token_record(Action::TokenCreated),
        )
        .await
        .expect("create again");
    assert_eq!(taken, TokenInsert::NameTaken, "one active token per name");
    let seen = b
        .console()
        .token_by_id("tk0000000001".into())
        .await
        .expect("lookup")
        .expect("node b sees node a's token");
    assert_eq!(
        (seen.info.name.as_str(), seen.info.role),
        ("ops", Role::Operator)
    );
    assert_eq!(seen.hash, vec![7; 32]);
    assert!(b
        .console()
        .token_by_id("tk0000000002".into())
        .await
        .expect("lookup")
        .is_none());
    let revoked = b
        .console()
        .revoke_token(
            "ops".into(),
            Box::new(|_| token_record(Action::TokenRevoked)),
        )
        .await
        .expect("revoke");
    assert_eq!(revoked.as_deref(), Some("tk0000000001"));
    let again = a
        .console()
        .revoke_token(
            "ops".into(),
            Box::new(|_| token_record(Action::TokenRevoked)),
        )
        .await
        .expect("revoke again");
    assert_eq!(again, None, "nothing active left to revoke");
    let after = a
        .console()
        .token_by_id("tk0000000001".into())
        .await
        .expect("lookup")
        .expect("kept for the record");
    assert!(after.info.revoked_at.is_some());
    let reused = a
        .console()
        .create_token(
            token_row("tk0000000003", "ops"),
            token_record(Action::TokenCreated),
        )
        .await
        .expect("create after revoke");
    assert_eq!(reused, TokenInsert::Created, "a revoked name may be reused");
    let listed = b.console().list_tokens().await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].id, "tk0000000003", "newest first");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'token_created'")
            .await,
        2
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'token_revoked'")
            .await,
        1
    );
    h.verify_audit().await.expect("the chain still verifies");
}

async fn health_numbers_count_every_nodes_deliveries_attempts_and_dead_letters(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    let since = Utc::now() - chrono::Duration::hours(1);
    submit(&*a, nextphone("call.ended", "h1"), &["crm"])
        .await
        .expect("on a");
    submit(&*b, nextphone("call.ended", "h2"), &["crm"])
        .await
        .expect("on b");
    let mut tally = AuditRecord::new(Actor::System, Action::DeliveryRejected, Outcome::Denied);
    tally.source = Some(Code::parse("nextphone").expect("code"));
    tally.detail.insert(DetailKey::Count, 5_i64);
    b.record_audit(tally).await.expect("tally");
    let job = claim(&*b, no_predecessors()).await.expect("due");
    b.finish_attempt(job, ok_attempt(serde_json::json!({})), NextStep::Done)
        .await
        .expect("done");
    let job = claim(&*b, no_predecessors()).await.expect("due");
    b.finish_attempt(
        job,
        failed_attempt(AttemptResult::Permanent {
            reason: "http 400".into(),
        }),
        NextStep::Dead,
    )
    .await
    .expect("dead");

    let data = a.console().health_data(since).await.expect("health");
    let accepted: Vec<_> = data
        .source_events
        .iter()
        .filter(|e| e.action == "delivery_accepted")
        .collect();
    assert_eq!(accepted.len(), 2, "both nodes' deliveries: {data:?}");
    assert!(accepted
        .iter()
        .all(|e| e.source == "nextphone" && e.count == 1));
    let rejected: Vec<_> = data
        .source_events
        .iter()
        .filter(|e| e.action == "delivery_rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].count, 5, "a tally stands for its count");
    assert_eq!(data.attempts.len(), 2);
    assert_eq!(data.attempts.iter().filter(|s| s.ok).count(), 1);
    assert!(data
        .attempts
        .iter()
        .all(|s| s.handler == "crm" && s.started_at >= since));
    assert_eq!(
        data.queues,
        vec![HandlerQueue {
            handler: "crm".into(),
            queued: 0,
            dead: 1
        }]
    );
    assert_eq!((data.queue_depth, data.dead_letters), (0, 1));
    assert_eq!(data.oldest_pending, None);

    submit(&*b, nextphone("call.ended", "h3"), &["crm"])
        .await
        .expect("queued");
    let data = a.console().health_data(since).await.expect("health");
    assert_eq!(data.queue_depth, 1, "queue depth is the cluster's");
    assert!(data.oldest_pending.is_some());
    let later = a
        .console()
        .health_data(Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("health");
    assert!(later.source_events.is_empty() && later.attempts.is_empty());
    assert_eq!(later.queue_depth, 1, "the queue is now, not a window");
}

async fn a_delivery_taken_by_one_node_is_detailed_by_another(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    let accepted = submit(&*b, nextphone("call.ended", "d1"), &["lookup", "crm"])
        .await
        .expect("on b");
    let id = accepted.delivery_id().to_owned();
    let meta = a
        .console()
        .delivery_meta(id.clone())
        .await
        .expect("meta")
        .expect("found on a");
    assert_eq!(
        (meta.id.as_str(), meta.source.as_str(), meta.status.as_str()),
        (id.as_str(), "nextphone", "accepted")
    );
    assert_eq!(meta.event_type, "call.ended");
    assert!(meta.received_at.ends_with('Z'), "{}", meta.received_at);
    let jobs = a.console().delivery_jobs(id).await.expect("jobs");
    let handlers: Vec<_> = jobs.iter().map(|j| j.handler.as_str()).collect();
    assert_eq!(handlers, ["lookup", "crm"], "route order");
    assert!(jobs
        .iter()
        .all(|j| j.status == "pending" && j.attempts == 0));
    assert!(a
        .console()
        .delivery_meta("no-such-delivery".into())
        .await
        .expect("meta")
        .is_none());
}

async fn audit_reads_search_verify_and_export_every_nodes_records(h: Harness) {
    let (a, b) = (h.node("node-a").await, h.node("node-b").await);
    for i in 0..3 {
        submit(&*a, nextphone("call.ended", &format!("a{i}")), &["crm"])
            .await
            .expect("a");
        submit(&*b, nextphone("call.ended", &format!("b{i}")), &["crm"])
            .await
            .expect("b");
    }
    let accepted = SearchArgs {
        action: Some("delivery_accepted".into()),
        ..SearchArgs::default()
    };
    let all = a
        .console()
        .audit_records(accepted.clone(), 100)
        .await
        .expect("search");
    assert_eq!(all.len(), 6, "both nodes' records");
    assert!(all.windows(2).all(|w| w[0].ts <= w[1].ts), "oldest first");
    let newest = a
        .console()
        .audit_records(accepted.clone(), 2)
        .await
        .expect("search");
    assert_eq!(newest, all[4..].to_vec(), "the newest, oldest first");
    let by_call = a
        .console()
        .audit_records(
            SearchArgs {
                call_id: Some("b1".into()),
                ..SearchArgs::default()
            },
            100,
        )
        .await
        .expect("by call");
    assert_eq!(by_call.len(), 1, "found by the call id's blind index");
    let bad = a
        .console()
        .audit_records(
            SearchArgs {
                since: Some("yesterday".into()),
                ..SearchArgs::default()
            },
            10,
        )
        .await
        .expect_err("a bad time");
    assert!(
        matches!(&bad, StoreError::InvalidArgument(m) if m == super::console::BAD_AUDIT_FILTER),
        "{bad:?}"
    );
    // The export reads page by page: two pages of four and two give the six records once
    // each, in the search's order, each tagged with its node on PostgreSQL.
    let first = b
        .console()
        .audit_page(accepted.clone(), None, 4)
        .await
        .expect("first page");
    assert_eq!(first.len(), 4);
    let rest = b
        .console()
        .audit_page(accepted, first.last().map(|r| r.cursor()), 4)
        .await
        .expect("next page");
    assert_eq!(rest.len(), 2, "the page after the first four");
    let paged: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|r| r.record.clone())
        .collect();
    assert_eq!(paged, all, "every record once, in order");
    let nodes: Vec<Option<&str>> = first
        .iter()
        .chain(&rest)
        .map(|r| r.node.as_deref())
        .collect();
    match h {
        Harness::Sqlite { .. } => assert!(nodes.iter().all(Option::is_none), "{nodes:?}"),
        Harness::Postgres { .. } => {
            assert!(
                nodes.contains(&Some("node-a")) && nodes.contains(&Some("node-b")),
                "{nodes:?}"
            );
        }
    }
    let dir = tempfile::tempdir().expect("audit dir");
    match a
        .console()
        .audit_check(dir.path().to_owned())
        .await
        .expect("check")
    {
        AuditCheck::Ok { records, .. } => assert_eq!(records, 6),
        failed => panic!("the untouched log verifies: {failed:?}"),
    }
    h.tamper_with_second_audit_record().await;
    match a
        .console()
        .audit_check(dir.path().to_owned())
        .await
        .expect("check")
    {
        AuditCheck::Failed { problem, .. } => assert!(!problem.is_empty()),
        ok => panic!("a modified record is found: {ok:?}"),
    }
}

/// A single number from `sql` (read the same in both dialects), on the PostgreSQL test
/// database or the SQLite file.
pub(super) async fn count_in(db: Result<&TestDb, &std::path::Path>, sql: &str) -> i64 {
    match db {
        Err(path) => rusqlite::Connection::open(path)
            .expect("open")
            .query_row(sql, [], |r| r.get(0))
            .expect("count"),
        Ok(db) => db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .expect("count")
            .get(0),
    }
}

/// Run `sql` (no rows, the same in both dialects) on a scenario's database.
pub(super) async fn exec_in(db: Result<&TestDb, &std::path::Path>, sql: &str) {
    match db {
        Err(path) => rusqlite::Connection::open(path)
            .expect("open")
            .execute_batch(sql)
            .expect("exec"),
        Ok(db) => db.client().await.batch_execute(sql).await.expect("exec"),
    }
}

/// The operator every audited scenario acts as.
pub(super) fn operator() -> Requester {
    Requester {
        user: "tester".into(),
        via: "cli",
    }
}

/// A SQLite test (a temp file) and a PostgreSQL test (a fresh database) of each scenario
/// named; `super::Harness` is the calling module's harness. Shared by every conformance file,
/// so a scenario cannot be added for one backend only.
macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Harness::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(h) = super::Harness::postgres().await {
                        super::$scenario(h).await;
                    }
                }
            )*
        }
    };
}
pub(super) use both_backends;

both_backends!(
    retried_delivery_returns_duplicate_with_the_first_id,
    two_events_of_one_call_are_both_accepted,
    identical_deliveries_racing_on_two_nodes_get_one_accepted_and_one_duplicate,
    unparseable_delivery_is_quarantined_once_even_when_retried,
    two_nodes_claiming_at_once_never_claim_a_job_twice,
    a_job_whose_lease_expired_is_taken_over_and_the_late_finish_changes_nothing,
    a_later_handler_waits_for_the_earlier_one_and_sees_its_output,
    retries_are_rescheduled_and_permanent_failures_dead_lettered,
    audit_chain_verifies_and_a_tampered_record_is_found,
    readiness_is_green_on_a_writable_database,
    purge_removes_old_payloads_and_audits_it,
    replay_requeues_finished_jobs_and_creates_a_missing_one,
    operators_list_metadata_and_read_a_delivery_with_an_audit_record,
    the_event_handed_to_intake_is_the_one_stored_and_carries_its_id,
    tokens_are_shared_by_every_node_and_each_change_is_audited,
    health_numbers_count_every_nodes_deliveries_attempts_and_dead_letters,
    a_delivery_taken_by_one_node_is_detailed_by_another,
    audit_reads_search_verify_and_export_every_nodes_records,
);

mod console_bulk;
pub(super) mod console_calls;
