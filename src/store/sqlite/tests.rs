//! Intake behaviour against a real SQLite file: dedup, encryption at rest, quarantine,
//! disk-full, rotation, purge and backup.

use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, Utc};
use rusqlite::params;

use super::*;
use super::{jobs, realtime};
use crate::crypto::MasterKey;
use crate::normalize::{normalize, Envelope, IntakeInput};
use crate::store::admin;
use crate::store::*;

/// The tests' keyring: national caller numbers are taken to be North American (code 1).
pub(crate) fn keyring() -> Keyring {
    Keyring::from_master(&MasterKey::from_bytes([42; 32])).with_phone_country(Some(
        crate::crypto::PhoneCountry::parse("1").expect("calling code 1"),
    ))
}

fn open(path: &Path) -> Store {
    Store::open(path, keyring(), StoreOptions::default()).expect("open store")
}

fn who() -> Requester {
    Requester {
        user: "tester".into(),
        via: "cli",
    }
}

async fn submit(
    store: &Store,
    input: IntakeInput,
    jobs: &[&str],
) -> Result<IntakeOutcome, StoreError> {
    submit_at(store, input, jobs, Utc::now()).await
}

/// Normalize `input` as received at `at` and hand it to `store` with one job per handler named.
pub(crate) async fn submit_at(
    store: &dyn crate::store::Storage,
    input: IntakeInput,
    jobs: &[&str],
    at: chrono::DateTime<Utc>,
) -> Result<IntakeOutcome, StoreError> {
    let mut n = normalize(&input, at).expect("normalizes");
    store
        .intake(
            input,
            &mut n,
            jobs.iter().map(|h| JobSpec::new(*h)).collect(),
        )
        .await
}

pub(crate) fn nextphone(event: &str, call_id: &str) -> IntakeInput {
    let body = format!(
        r#"{{"event":"{event}","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call_id}","caller":{{"phone":"+15551234567","name":"John Doe"}}}}}}"#
    );
    IntakeInput::for_test("nextphone", Envelope::NextPhone, body.as_bytes())
}

fn count(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

#[tokio::test]
async fn retried_delivery_returns_duplicate_with_the_first_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let first = submit(&store, nextphone("call.ended", "c1"), &["crm", "slack"])
        .await
        .expect("first");
    let IntakeOutcome::Accepted { delivery_id } = &first else {
        panic!("first delivery should be accepted: {first:?}");
    };
    let retry = submit(&store, nextphone("call.ended", "c1"), &["crm", "slack"])
        .await
        .expect("retry");
    assert_eq!(
        retry,
        IntakeOutcome::Duplicate {
            delivery_id: delivery_id.clone()
        }
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 1);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM jobs"),
        2,
        "duplicates enqueue nothing"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'delivery_duplicate'"
        ),
        1
    );
}

#[tokio::test]
async fn call_answered_and_call_ended_of_one_call_are_both_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("w.db"));
    let a = submit(&store, nextphone("call.answered", "c1"), &[])
        .await
        .expect("a");
    let b = submit(&store, nextphone("call.ended", "c1"), &[])
        .await
        .expect("b");
    assert!(matches!(a, IntakeOutcome::Accepted { .. }));
    assert!(matches!(b, IntakeOutcome::Accepted { .. }));
    assert_ne!(a.delivery_id(), b.delivery_id());
}

#[tokio::test]
async fn the_same_dedup_key_on_two_sources_is_not_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("w.db"));
    let body = br#"{"event":"call.ended","data":{"call_id":"c1"}}"#;
    let a = submit(
        &store,
        IntakeInput::for_test("np-a", Envelope::NextPhone, body),
        &[],
    )
    .await
    .expect("a");
    let b = submit(
        &store,
        IntakeInput::for_test("np-b", Envelope::NextPhone, body),
        &[],
    )
    .await
    .expect("b");
    assert!(matches!(b, IntakeOutcome::Accepted { .. }), "{a:?} {b:?}");
}

#[tokio::test]
async fn a_standard_webhooks_webhook_id_replay_is_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("w.db"));
    let body =
        br#"{"type":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"c9"}}"#;
    let input = || {
        IntakeInput::for_test("sw", Envelope::StandardWebhooks, body)
            .with_sender_delivery_id("msg_p5jXN8AQM9LWM0D4loKWxJek")
    };
    let first = submit(&store, input(), &[]).await.expect("first");
    let replay = submit(&store, input(), &[]).await.expect("replay");
    assert_eq!(
        replay,
        IntakeOutcome::Duplicate {
            delivery_id: first.delivery_id().to_owned()
        }
    );
    // A different webhook-id is a different event, even with the same body.
    let other = submit(
        &store,
        IntakeInput::for_test("sw", Envelope::StandardWebhooks, body)
            .with_sender_delivery_id("msg_other"),
        &[],
    )
    .await
    .expect("other");
    assert!(matches!(other, IntakeOutcome::Accepted { .. }));
}

#[tokio::test]
async fn concurrent_deliveries_are_all_committed_and_retries_inside_one_batch_dedup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        // Every call id twice: some pairs land in the same group-commit batch.
        tasks.push(tokio::spawn(async move {
            submit(
                &store,
                nextphone("call.ended", &format!("c{}", i / 2)),
                &["crm"],
            )
            .await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        if let IntakeOutcome::Accepted { .. } = t.await.expect("join").expect("intake") {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 100);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 100);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs"), 100);
}

#[tokio::test]
async fn authentic_garbage_lands_in_quarantine_encrypted_and_readable_by_an_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let body = b"{\"event\": \"call.ended\", \"data\": {\"caller\": \"Zqxgarbage\"";
    let input = IntakeInput::for_test("nextphone", Envelope::NextPhone, body);
    let err = normalize(&input, Utc::now()).expect_err("garbage");
    let qid = store.quarantine(input, &err).await.expect("quarantined");
    let listed = admin::list_quarantine(&store, &ListFilter::default()).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, qid.0);
    assert!(listed[0].reason.contains("not valid JSON"));
    let entry = admin::show_quarantine(&store, &qid.0, &who()).expect("show");
    assert_eq!(entry.body, body);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM audit_log WHERE action IN ('delivery_quarantined', 'payload_read')"),
        2
    );
}

#[tokio::test]
async fn show_decrypts_the_event_and_audits_the_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let id = submit(&store, nextphone("call.ended", "c1"), &[])
        .await
        .expect("intake");
    let event = admin::show_delivery(&store, id.delivery_id(), &who()).expect("show");
    assert_eq!(event.delivery_id, id.delivery_id());
    assert_eq!(event.call_id.as_deref(), Some("c1"));
    assert_eq!(event.caller.name.as_deref(), Some("John Doe"));
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM audit_log WHERE action = 'payload_read' AND actor = 'cli_user:tester'"),
        1
    );
    let listed = admin::list_deliveries(
        &store,
        &ListFilter {
            source: Some("nextphone".into()),
            ..ListFilter::default()
        },
    )
    .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_type, "call.ended");
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_row_fails_to_decrypt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let a = submit(&store, nextphone("call.ended", "c1"), &[])
        .await
        .expect("a");
    let b = submit(&store, nextphone("call.ended", "c2"), &[])
        .await
        .expect("b");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute(
        "UPDATE deliveries SET nonce = (SELECT nonce FROM deliveries WHERE id = ?1),
                               ciphertext = (SELECT ciphertext FROM deliveries WHERE id = ?1)
         WHERE id = ?2",
        params![a.delivery_id(), b.delivery_id()],
    )
    .expect("copy");
    assert!(admin::show_delivery(&store, a.delivery_id(), &who()).is_ok());
    assert!(matches!(
        admin::show_delivery(&store, b.delivery_id(), &who()),
        Err(StoreError::Crypto(_))
    ));
}

/// Canary values full of characters that JSON escapes differently from their raw form.
const CANARIES: &[&str] = &[
    "Zqxwv \"Canary\" O'Brien-Ångström",
    "canary.zqxwv@example.org",
    "+15550199871",
    "zqxwv transcript line one\nline two: my date of birth is 1970-01-02",
    "ZQXWV-SUMMARY kitchen remodel for \\ patient",
];

fn canary_bodies() -> Vec<IntakeInput> {
    let j = |s: &str| serde_json::to_string(s).expect("json");
    let (name, email, phone, transcript, summary) = (
        j(CANARIES[0]),
        j(CANARIES[1]),
        j(CANARIES[2]),
        j(CANARIES[3]),
        j(CANARIES[4]),
    );
    let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    vec![
        IntakeInput::for_test("np", Envelope::NextPhone, format!(
            r#"{{"event":"call.ended","data":{{"call_id":"cn1","caller":{{"phone":{phone},"name":{name},"email":{email}}},"transcript":{transcript},"ai_summary":{summary}}}}}"#).as_bytes()),
        IntakeInput::for_test("ps", Envelope::PhoneShield, format!(
            r#"{{"event_type":"call.completed","webhook_id":"whk_1","data":{{"call_id":"cn2","caller_number":{phone},"caller_name":{name},"summary":{summary}}}}}"#).as_bytes()),
        IntakeInput::for_test("rt", Envelope::Retell, format!(
            r#"{{"event":"call_ended","call":{{"call_id":"cn3","from_number":{phone},"transcript":{transcript},"retell_llm_dynamic_variables":{{"customer_name":{name}}}}}}}"#).as_bytes()),
        IntakeInput::for_test("vp", Envelope::Vapi, format!(
            r#"{{"message":{{"type":"end-of-call-report","call":{{"id":"cn4"}},"customer":{{"number":{phone}}},"artifact":{{"transcript":{transcript}}},"analysis":{{"summary":{summary}}}}}}}"#).as_bytes()),
        IntakeInput::for_test("tx", Envelope::Telnyx, format!(
            r#"{{"data":{{"event_type":"call.hangup","id":"ev-cn5","payload":{{"call_session_id":"cn5","from":{phone},"client_state":{email}}}}}}}"#).as_bytes()),
        IntakeInput::for_test("tw", Envelope::Twilio, format!(
            "CallSid=CAcn6&CallStatus=completed&From={}&CallerName={}&Digits={}",
            form(CANARIES[2]), form(CANARIES[0]), form(CANARIES[4])).as_bytes()),
        IntakeInput::for_test("sw", Envelope::StandardWebhooks, format!(
            r#"{{"type":"call.ended","data":{{"call_id":"cn7","caller":{{"name":{name},"email":{email}}},"notes":{transcript}}}}}"#).as_bytes())
            .with_sender_delivery_id("msg_cn7"),
        IntakeInput::for_test("gen", Envelope::Generic, format!(
            r#"{{"event":"lead","caller":{{"name":{name}}},"note":{summary}}}"#).as_bytes()),
    ]
}

fn scan_for_canaries(dir: &Path) -> Vec<String> {
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for c in CANARIES {
        needles.push((format!("raw {c:?}"), c.as_bytes().to_vec()));
        let escaped = serde_json::to_string(c).expect("json");
        let inner = &escaped[1..escaped.len() - 1];
        needles.push((format!("json {c:?}"), inner.as_bytes().to_vec()));
        let form: String = url::form_urlencoded::byte_serialize(c.as_bytes()).collect();
        needles.push((format!("form {c:?}"), form.into_bytes()));
    }
    // Distinctive fragments, in case a value is stored split or re-encoded.
    for frag in ["Zqxwv", "zqxwv", "ZQXWV", "5550199871"] {
        needles.push((format!("fragment {frag}"), frag.as_bytes().to_vec()));
    }
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read file");
            for (label, needle) in &needles {
                if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    found.push(format!("{label} in {}", path.display()));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn no_canary_value_appears_in_any_file_the_store_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/w.db");
    let mirror =
        Arc::new(crate::audit::Mirror::new(dir.path().join("data/audit")).expect("mirror"));
    let store = Store::open(
        &db,
        keyring(),
        StoreOptions {
            audit_mirror: Some(mirror),
            ..StoreOptions::default()
        },
    )
    .expect("open");
    // The scan itself must be able to see a planted canary (a test that cannot fail is none).
    let control = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        control.path().join("f"),
        serde_json::to_string(CANARIES[0]).expect("json"),
    )
    .expect("write");
    assert!(!scan_for_canaries(control.path()).is_empty());
    for input in canary_bodies() {
        let outcome = submit(&store, input, &["crm"]).await.expect("intake");
        assert!(
            matches!(outcome, IntakeOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
    // Garbage with canaries goes to quarantine: encrypted too.
    let garbage = format!(
        "{{\"event\":\"x\",\"data\":{}",
        serde_json::to_string(CANARIES[0]).expect("json")
    );
    let input = IntakeInput::for_test("np", Envelope::NextPhone, garbage.as_bytes());
    let err = normalize(&input, Utc::now()).expect_err("garbage");
    store.quarantine(input, &err).await.expect("quarantine");
    // Files are scanned while the WAL still holds every write (no checkpoint has run).
    assert!(dir.path().join("data/w.db-wal").exists());
    let found = scan_for_canaries(dir.path());
    assert!(found.is_empty(), "plaintext PHI on disk: {found:#?}");
    // And the data is really there: decryptable by an operator.
    let listed = admin::list_deliveries(&store, &ListFilter::default()).expect("list");
    assert_eq!(listed.len(), 8);
    for d in listed {
        admin::show_delivery(&store, &d.id, &who()).expect("decrypts");
    }
}

#[tokio::test]
async fn disk_full_answers_unavailable_and_loses_nothing_already_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let pages = {
        let store = open(&db);
        submit(&store, nextphone("call.ended", "warmup"), &[])
            .await
            .expect("warm up");
        drop(store);
        count(&db, "PRAGMA page_count")
    };
    let store = Store::open(
        &db,
        keyring(),
        StoreOptions {
            max_db_pages: Some(pages as u64 + 8),
            ..StoreOptions::default()
        },
    )
    .expect("open capped");
    let mut accepted = vec![];
    let mut unavailable = None;
    for i in 0..10_000 {
        match submit(&store, nextphone("call.ended", &format!("c{i}")), &["crm"]).await {
            Ok(IntakeOutcome::Accepted { delivery_id }) => accepted.push(delivery_id),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => {
                unavailable = Some(e);
                break;
            }
        }
    }
    let err = unavailable.expect("the cap is reached");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(!accepted.is_empty());
    assert!(
        store.check_ready().await.is_err(),
        "readyz is red while full"
    );
    drop(store);

    // Space is freed (cap lifted): everything acknowledged is there, once, and decryptable.
    let store = open(&db);
    for id in &accepted {
        admin::show_delivery(&store, id, &who()).expect("acknowledged delivery is readable");
    }
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM deliveries"),
        accepted.len() as i64 + 1
    );
    assert!(store.check_ready().await.is_ok());
    let again = submit(&store, nextphone("call.ended", "after"), &[]).await;
    assert!(matches!(again, Ok(IntakeOutcome::Accepted { .. })));
}

#[tokio::test]
async fn readiness_recovers_by_itself_once_the_probe_can_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("w.db"));
    store
        .shared
        .healthy
        .store(false, std::sync::atomic::Ordering::Release);
    assert!(store.check_ready().await.is_ok());
    assert!(store
        .shared
        .healthy
        .load(std::sync::atomic::Ordering::Acquire));
}

#[tokio::test]
async fn key_rotation_reencrypts_old_rows_and_destroys_old_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let mut ids = vec![];
    for i in 0..300 {
        ids.push(
            submit(&store, nextphone("call.ended", &format!("c{i}")), &[])
                .await
                .expect("intake"),
        );
    }
    let mut seen = vec![];
    let report = admin::rotate_keys(&store, &who(), &mut |p| seen.push(p)).expect("rotate");
    assert_eq!(report.generation, 2);
    assert!(!report.resumed);
    assert_eq!(report.reencrypted, 300);
    assert_eq!(report.keys_destroyed, 1);
    assert_eq!(seen.last().map(|p| p.done), Some(300));
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM deliveries d JOIN data_keys k USING (key_id) WHERE k.generation = 2"),
        300
    );
    for id in &ids {
        admin::show_delivery(&store, id.delivery_id(), &who()).expect("readable after rotation");
    }
    // New writes use the new generation at once.
    submit(&store, nextphone("call.ended", "new"), &[])
        .await
        .expect("intake");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM data_keys WHERE wrapped IS NOT NULL"
        ),
        1
    );
}

/// A value of every sealed kind: a delivery (with a finished handler's output and a real-time
/// reply) and a quarantined body. Returns the delivery id and the quarantine id.
async fn store_one_of_every_sealed_kind(store: &Store) -> (String, String) {
    let id = submit(store, nextphone("call.ended", "c-all"), &["crm"])
        .await
        .expect("intake")
        .delivery_id()
        .to_owned();
    let job = jobs::claim_next(
        store,
        &[],
        std::time::Duration::from_secs(60),
        &crate::store::Predecessors::none(),
    )
    .expect("claim")
    .expect("a job");
    jobs::finish_attempt(
        store,
        &job,
        &jobs::AttemptRecord {
            started_at: Utc::now(),
            latency: std::time::Duration::from_millis(2),
            http_status: Some(200),
            destination: Some("crm.example".into()),
            result: jobs::AttemptResult::Ok {
                output: serde_json::json!({"data": {"lead": "Zqx-lead-7"}, "status": 201}),
                caller_phone: None,
            },
        },
        jobs::NextStep::Done,
    )
    .expect("finish");
    realtime::record_reply(
        store,
        &id,
        "nextphone",
        &crate::store::Reply {
            status: 200,
            content_type: "application/json".into(),
            body: r#"{"greeting":"Zqx reply"}"#.into(),
            fallback: false,
        },
        4,
        None,
    )
    .await
    .expect("reply");
    let garbage = IntakeInput::for_test("nextphone", Envelope::NextPhone, b"{\"event\": 1");
    let err = normalize(&garbage, Utc::now()).expect_err("garbage");
    let quarantined = store.quarantine(garbage, &err).await.expect("quarantine");
    (id, quarantined.0)
}

/// Every sealed value decrypts through the path that reads it when serving.
fn read_every_sealed_kind(store: &Store, delivery_id: &str, quarantine_id: &str) {
    let event = admin::show_delivery(store, delivery_id, &who()).expect("delivery readable");
    assert_eq!(event.delivery_id, delivery_id);
    let entry = admin::show_quarantine(store, quarantine_id, &who()).expect("quarantine readable");
    assert_eq!(entry.body, b"{\"event\": 1".to_vec());
    let job = jobs::ClaimedJob {
        id: 0,
        delivery_id: delivery_id.to_owned(),
        handler: "next".into(),
        source: "nextphone".into(),
        schedule_index: 0,
        attempt: 1,
    };
    let (_, app_data) = jobs::load_for_dispatch(store, &job).expect("handler output readable");
    assert_eq!(
        app_data.get("crm").map(|v| v["data"]["lead"].clone()),
        Some(serde_json::json!("Zqx-lead-7"))
    );
    let reply = realtime::load_reply(store, delivery_id)
        .expect("reply readable")
        .expect("a reply");
    assert_eq!(reply.body, r#"{"greeting":"Zqx reply"}"#);
}

#[tokio::test]
async fn three_rotations_in_a_row_each_move_every_sealed_kind_and_destroy_the_old_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let (delivery_id, quarantine_id) = store_one_of_every_sealed_kind(&store).await;
    for round in 0..3i64 {
        let report = admin::rotate_keys(&store, &who(), &mut |_| {}).expect("rotate");
        assert_eq!(
            report.generation,
            2 + round,
            "round {round} starts a new generation"
        );
        assert!(
            !report.resumed,
            "round {round} is a new rotation, not a resume"
        );
        assert_eq!(
            report.reencrypted, 4,
            "round {round}: payload, quarantined body, handler output and real-time reply"
        );
        assert!(
            report.keys_destroyed >= 1,
            "round {round} destroys the old key"
        );
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM data_keys WHERE wrapped IS NOT NULL AND generation < {}",
                    report.generation
                )
            ),
            0,
            "round {round}: no older key survives"
        );
        read_every_sealed_kind(&store, &delivery_id, &quarantine_id);
    }
}

#[tokio::test]
async fn an_interrupted_rotation_is_resumed_not_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    for i in 0..10 {
        submit(&store, nextphone("call.ended", &format!("c{i}")), &[])
            .await
            .expect("intake");
    }
    // What a crash right after the generation bump leaves behind.
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute(
            "UPDATE store_meta SET value = '2' WHERE name = 'key_generation'",
            [],
        )
        .expect("bump");
    let report = admin::rotate_keys(&store, &who(), &mut |_| {}).expect("rotate");
    assert!(report.resumed);
    assert_eq!(report.generation, 2);
    assert_eq!(report.reencrypted, 10);
}

#[tokio::test]
async fn purge_deletes_old_payloads_keeps_metadata_and_shreds_period_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let old = submit_at(
        &store,
        nextphone("call.ended", "old"),
        &["crm"],
        Utc::now() - Duration::days(3),
    )
    .await
    .expect("old");
    let new = submit(&store, nextphone("call.ended", "new"), &["crm"])
        .await
        .expect("new");
    // The old delivery's job was attempted once (dispatch bookkeeping must not block purge).
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute(
            "INSERT INTO attempts (job_id, attempt, started_at, finished_at, result, latency_ms)
             SELECT id, 1, 'x', 'x', 'ok', 1 FROM jobs WHERE delivery_id = ?1",
            params![old.delivery_id()],
        )
        .expect("attempt");
    // Keep a copy of the old row's ciphertext, as a stale backup or WAL residue would.
    let (nonce, ct, key_id): (Vec<u8>, Vec<u8>, i64) = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row(
            "SELECT nonce, ciphertext, key_id FROM deliveries WHERE id = ?1",
            params![old.delivery_id()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    let report =
        admin::purge_older_than(&store, Utc::now() - Duration::days(1), &who()).expect("purge");
    assert_eq!(report.deliveries, 1);
    assert_eq!(report.jobs, 1);
    assert_eq!(report.keys_destroyed, 1);
    assert!(matches!(
        admin::show_delivery(&store, old.delivery_id(), &who()),
        Err(StoreError::KeyDestroyed)
    ));
    admin::show_delivery(&store, new.delivery_id(), &who()).expect("recent stays readable");
    let listed = admin::list_deliveries(
        &store,
        &ListFilter {
            status: Some("purged".into()),
            ..ListFilter::default()
        },
    )
    .expect("list");
    assert_eq!(listed.len(), 1, "metadata kept for the audit trail");
    // The saved copy cannot be decrypted: its key is gone.
    let conn = rusqlite::Connection::open(&db).expect("open");
    assert!(matches!(
        keys::key_for_read(&conn, &keyring(), key_id),
        Err(StoreError::KeyDestroyed)
    ));
    let _ = (nonce, ct);
    // A late retry of the purged delivery is still recognised.
    let retry = submit_at(&store, nextphone("call.ended", "old"), &[], Utc::now())
        .await
        .expect("retry");
    assert_eq!(
        retry,
        IntakeOutcome::Duplicate {
            delivery_id: old.delivery_id().to_owned()
        }
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'purged'"
        ),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_purge_commits_in_chunks_each_with_its_own_records_then_shreds_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let old = Utc::now() - Duration::days(3);
    let n = admin::PURGE_CHUNK * 2 + 200;
    let submitted = futures_util::future::join_all((0..n).map(|i| {
        let store = store.clone();
        async move {
            submit_at(
                &store,
                nextphone("call.ended", &format!("p{i}")),
                &["crm"],
                old,
            )
            .await
        }
    }))
    .await;
    assert!(submitted.iter().all(Result::is_ok));
    let mut seen = Vec::new();
    let report =
        admin::purge_with_progress(&store, Utc::now() - Duration::days(1), &who(), &mut |p| {
            seen.push(p)
        })
        .expect("purge");
    assert_eq!(report.deliveries, n as u64);
    assert_eq!(report.jobs, n as u64);
    assert_eq!(report.keys_destroyed, 1);
    assert_eq!(
        seen.last().map(|p| (p.done, p.total)),
        Some((n as u64, n as u64))
    );
    let per_chunk = |what: &str| {
        count(
            &db,
            &format!(
                "SELECT {what}(json_extract(detail, '$.count')) FROM audit_log
                 WHERE action = 'purged' AND json_extract(detail, '$.object_kind') = 'delivery'"
            ),
        )
    };
    assert_eq!(
        per_chunk("COUNT"),
        3,
        "three chunks, three delivery records"
    );
    assert_eq!(
        per_chunk("SUM"),
        n as i64,
        "the records add up to what was purged"
    );
    assert_eq!(
        per_chunk("MAX"),
        admin::PURGE_CHUNK as i64,
        "no chunk is larger"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'purged'
             AND json_extract(detail, '$.object_kind') = 'data_key'
             AND json_extract(detail, '$.cutoff_unix') IS NOT NULL"
        ),
        1,
        "one key record, after the rows, with the cutoff"
    );
}

#[tokio::test]
async fn backup_is_a_consistent_copy_and_never_lands_next_to_the_master_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/w.db");
    let store = open(&db);
    submit(&store, nextphone("call.ended", "c1"), &[])
        .await
        .expect("intake");
    let key_dir = dir.path().join("keys");
    std::fs::create_dir_all(&key_dir).expect("mkdir");
    let key_file = key_dir.join("master.key");
    std::fs::write(&key_file, b"x").expect("write");
    let refused = admin::backup_to(&store, &key_dir.join("b.db"), Some(&key_file), &who());
    assert!(matches!(refused, Err(StoreError::InvalidArgument(_))));
    let to = dir.path().join("backup/b.db");
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    let report = admin::backup_to(&store, &to, Some(&key_file), &who()).expect("backup");
    assert!(report.bytes > 0);
    assert_eq!(count(&to, "SELECT COUNT(*) FROM deliveries"), 1);
    assert!(!to.with_extension("db-wal").exists());
    let copy = Store::open(&to, keyring(), StoreOptions::default()).expect("open copy");
    let listed = admin::list_deliveries(&copy, &ListFilter::default()).expect("list");
    admin::show_delivery(&copy, &listed[0].id, &who())
        .expect("backup decrypts with the same master key");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'backup_taken'"
        ),
        1
    );
}

#[tokio::test]
async fn a_panic_inside_a_group_commit_costs_that_batch_not_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let panicking: super::writer::ApplyFn = Box::new(|_, _| panic!("a bug in a write"));
    let answer = store.apply(panicking).await;
    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "the batch is answered unavailable: {answer:?}"
    );
    // The writer thread is still there: the next delivery commits.
    let next = submit(&store, nextphone("call.ended", "after-panic"), &["crm"])
        .await
        .expect("the writer goes on");
    assert!(matches!(next, IntakeOutcome::Accepted { .. }), "{next:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 1);
}

/// What the upgrade tests ask of a store: the deliveries a caller phone finds.
pub(crate) async fn found_by_phone(store: &dyn Storage, phone: &str) -> Vec<String> {
    found(
        store,
        crate::store::console_calls::CallQuery {
            caller_phone: Some(phone.to_owned()),
            ..Default::default()
        },
    )
    .await
}

/// The ids of the deliveries "find a call" answers `query` with (the first 50).
pub(crate) async fn found(
    store: &dyn Storage,
    query: crate::store::console_calls::CallQuery,
) -> Vec<String> {
    store
        .console()
        .find_calls(crate::store::console_calls::CallQuery { limit: 50, ..query })
        .await
        .expect("find calls")
        .deliveries
        .into_iter()
        .map(|d| d.meta.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_database_is_upgraded_with_the_caller_phone_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = open(&db);
    let old = submit(&store, nextphone("call.ended", "before"), &["crm"])
        .await
        .expect("old delivery");
    drop(store);
    // As the release before the caller-phone index left it.
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute_batch(
            "DROP INDEX deliveries_caller_ref;
             ALTER TABLE deliveries DROP COLUMN caller_ref;
             PRAGMA user_version = 4;",
        )
        .expect("downgrade");
    let store = open(&db);
    assert_eq!(count(&db, "PRAGMA user_version") as usize, SCHEMA_VERSION);
    admin::show_delivery(&store, old.delivery_id(), &who()).expect("the old delivery reads");
    assert!(
        found_by_phone(&store, "+15551234567").await.is_empty(),
        "a delivery stored before the index has none"
    );
    let new = submit(&store, nextphone("call.ended", "after"), &["crm"])
        .await
        .expect("new delivery");
    assert_eq!(
        found_by_phone(&store, "(555) 123-4567").await,
        vec![new.delivery_id().to_owned()]
    );
}

/// The WAL header's checkpoint sequence number: SQLite adds one each time the WAL starts over
/// from its beginning.
fn wal_restarts(db: &Path) -> u32 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let header = std::fs::read(&wal).expect("read WAL");
    u32::from_be_bytes(header[12..16].try_into().expect("WAL header"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_continuous_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let store = Store::open(
        &db,
        keyring(),
        StoreOptions {
            wal_restart_frames: 64,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    // Sixteen senders without pause keep the writer busy, so the background checkpointer
    // never finds the WAL idle: the WAL starts over only because the writer makes it.
    let mut senders = Vec::new();
    for s in 0..16 {
        let store = store.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..100 {
                let call = format!("s{s}-c{i}");
                submit(&store, nextphone("call.ended", &call), &["crm"])
                    .await
                    .expect("intake");
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 1600);
    let restarts = wal_restarts(&db);
    let wal_bytes = std::fs::metadata(dir.path().join("w.db-wal"))
        .expect("WAL")
        .len();
    assert!(restarts >= 2, "the WAL started over {restarts} times");
    // It stays a fraction of what these writes leave when it never starts over (over 20 MB;
    // a restart waits for readers holding older snapshots, so it is not always on time).
    assert!(wal_bytes <= 8 << 20, "WAL of {wal_bytes} bytes");
}
