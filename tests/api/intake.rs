//! Durable intake over real TLS: accepted, duplicate, distinct events of one call, quarantine.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

use crate::helpers::*;

/// POST `body` signed as the demo source; the status and the JSON answer.
pub(crate) async fn post_signed(app: &TestApp, body: &str) -> (u16, Value) {
    let res = app
        .client()
        .post(app.url("/hooks/demo"))
        .header("Content-Type", "application/json")
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn nextphone_event(event: &str, call_id: &str) -> String {
    format!(
        r#"{{"event":"{event}","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call_id}","caller":{{"name":"Test Caller","phone":"+15550100"}}}}}}"#
    )
}

#[tokio::test]
async fn a_signed_delivery_is_accepted_and_its_retry_is_a_duplicate_with_the_first_id() {
    let app = spawn_app().await;
    let body = nextphone_event("call.ended", "call-1");
    let (status, first) = post_signed(&app, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "accepted");
    let id = first["delivery_id"].as_str().unwrap().to_owned();

    let (status, again) = post_signed(&app, &body).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["delivery_id"], id.as_str());
}

#[tokio::test]
async fn two_events_of_one_call_are_both_accepted() {
    let app = spawn_app().await;
    let (_, answered) = post_signed(&app, &nextphone_event("call.answered", "call-2")).await;
    let (_, ended) = post_signed(&app, &nextphone_event("call.ended", "call-2")).await;
    assert_eq!(answered["status"], "accepted");
    assert_eq!(ended["status"], "accepted");
    assert_ne!(answered["delivery_id"], ended["delivery_id"]);
}

#[tokio::test]
async fn authentic_garbage_is_quarantined_with_400_and_an_id() {
    let app = spawn_app().await;
    let (status, answer) = post_signed(&app, "this is not json {").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["quarantine_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(
        !answer["error"].as_str().unwrap().contains("this is not"),
        "the error must not echo the body"
    );
    let first_id = answer["quarantine_id"].as_str().unwrap().to_owned();
    let (status, again) = post_signed(&app, "this is not json {").await;
    assert_eq!(status, 400);
    assert_eq!(
        again["quarantine_id"],
        first_id.as_str(),
        "a retried unparseable body gets the same quarantine entry"
    );
    let (status, answer) = post_signed(&app, r#"{"data":{"call_id":"c"}}"#).await;
    assert_eq!(status, 400, "missing event type: {answer}");
    assert_ne!(answer["quarantine_id"], first_id.as_str());
}

#[tokio::test]
async fn readiness_reports_the_store() {
    let app = spawn_app().await;
    let res = app.client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_copies_sent_at_once_are_stored_once() {
    let app = spawn_app().await;
    // Some deliveries first, so the copies' key is looked up beside others already indexed.
    for i in 0..20 {
        let (status, _) =
            post_signed(&app, &nextphone_event("call.ended", &format!("pre-{i}"))).await;
        assert_eq!(status, 200);
    }
    let body = nextphone_event("call.ended", "race-40");
    let answers = futures_util::future::join_all((0..40).map(|_| post_signed(&app, &body))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 200, "{answer}");
            answer["delivery_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one delivery id for all forty: {ids:?}");
    let accepted = answers
        .iter()
        .filter(|(_, a)| a["status"] == "accepted")
        .count();
    assert_eq!(accepted, 1, "exactly one accepted");
    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 21);
}
