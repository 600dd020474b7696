//! Bulk actions by filter and the per-source and per-handler activity over the console API,
//! on both backends: the dead letters of one handler in a time window are counted and sampled
//! without change, retried once on record in batches with progress, and delivered; error
//! classes and windows narrow; auditors are refused; the activity numbers come from stored
//! attempts and intake records.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::{Duration as TimeDelta, SecondsFormat, Utc};
use serde_json::{json, Value};
use wardhook::admin::Role;
use wardhook::dispatch::worker::TaskOutcome;
use wiremock::MockServer;

use crate::admin::{
    admin_url, audit_rows, call, console_app_on, create_token, deliver_to, drain, ConsoleApp, Db,
};
use crate::helpers::*;

async fn post_json(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .client()
        .post(admin_url(app, path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// An app whose CRM refused the first `dead` leads (each a dead letter) and takes the rest.
pub async fn app_with_dead_letters(db: Db, dead: u64) -> Option<(ConsoleApp, MockServer)> {
    let crm = destination_answering(400, dead, 201).await;
    let app = console_app_on(db, "demo", "crm", &crm.uri(), "").await?;
    for i in 0..dead {
        assert_eq!(
            deliver_to(&app, "demo", &format!("call-bulk-{i}")).await.0,
            200
        );
    }
    let outcomes = drain(&app).await;
    assert_eq!(outcomes.len() as u64, dead);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, TaskOutcome::Dead { .. })));
    Some((app, crm))
}

fn at(offset: TimeDelta) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn dead_letters_of_one_handler_in_a_window_are_retried_once_on_record_on(db: Db) {
    let Some((app, crm)) = app_with_dead_letters(db, 3).await else {
        return;
    };
    let (operator, op_id) = create_token(&app, "ops", Role::Operator);
    let (auditor, _) = create_token(&app, "aud", Role::Auditor);
    let window = json!({ "handler": "crm", "since": at(-TimeDelta::hours(1)),
                         "until": at(TimeDelta::hours(1)) });

    let (status, _) = post_json(&app, &auditor, "/api/bulk/preview", window.clone()).await;
    assert_eq!(status, 403, "auditors do not re-queue");
    let (status, v) = post_json(&app, &operator, "/api/bulk/preview", window.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["count"], 3, "{v}");
    assert_eq!(v["sample"].as_array().unwrap().len(), 3);
    assert_eq!(v["sample"][0]["handler"], "crm");
    for (narrower, expected) in [
        (
            json!({ "handler": "crm", "since": at(TimeDelta::hours(1)) }),
            0,
        ),
        (
            json!({ "handler": "crm", "until": at(-TimeDelta::hours(1)) }),
            0,
        ),
        (json!({ "handler": "crm", "error_class": "http_4xx" }), 3),
        (json!({ "handler": "crm", "error_class": "http_5xx" }), 0),
        (json!({ "source": "demo" }), 3),
        (json!({ "kind": "replay", "handler": "crm" }), 0),
    ] {
        let (_, v) = post_json(&app, &operator, "/api/bulk/preview", narrower.clone()).await;
        assert_eq!(v["count"], expected, "{narrower}: {v}");
    }
    for bad in [
        json!({ "kind": "delete" }),
        json!({ "error_class": "made_up" }),
        json!({ "since": "yesterday-ish" }),
    ] {
        let (status, _) = post_json(&app, &operator, "/api/bulk/preview", bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert!(
        audit_rows(&app, "bulk_requeued").await.is_empty(),
        "a preview changes nothing"
    );

    let (status, v) = post_json(&app, &operator, "/api/bulk/run", window).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["count"], 3);
    let id = v["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let progress = loop {
        let (_, body) = call(
            &app,
            Some(&operator),
            "GET",
            &format!("/api/bulk/runs/{id}"),
        )
        .await;
        let p: Value = serde_json::from_str(&body).unwrap();
        if p["finished"] == true {
            break p;
        }
        assert!(Instant::now() < deadline, "the run finishes: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(progress["requeued"], 3, "{progress}");
    assert_eq!(progress["failed"], false);
    assert!(progress["batches"].as_u64().unwrap() >= 1);
    let outcomes = drain(&app).await;
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, TaskOutcome::Done { .. })));
    assert_eq!(crm.received_requests().await.unwrap().len(), 6);

    let records = audit_rows(&app, "bulk_requeued").await;
    assert_eq!(
        records.len(),
        1,
        "one record for the whole action: {records:?}"
    );
    let (actor, outcome, detail) = &records[0];
    assert_eq!(actor, &format!("admin_token:{op_id}"));
    assert_eq!(outcome, "success");
    let detail: Value = serde_json::from_str(detail).unwrap();
    assert_eq!(detail["count"], 3, "{detail}");
    assert_eq!(detail["handler"], "crm");
    assert_eq!(detail["object_kind"], "retry");
    assert!(detail["since_unix"].is_i64() && detail["cutoff_unix"].is_i64());
    let (status, _) = call(&app, Some(&operator), "GET", "/api/bulk/runs/unknown").await;
    assert_eq!(status, 404);

    // Now they are finished, a replay of the same handler matches them.
    let (_, v) = post_json(
        &app,
        &operator,
        "/api/bulk/preview",
        json!({ "kind": "replay", "handler": "crm" }),
    )
    .await;
    assert_eq!(v["count"], 3);

    // The handler's and the source's activity, from stored attempts and intake records.
    let (status, body) = call(&app, Some(&auditor), "GET", "/api/handlers/crm/activity").await;
    assert_eq!(status, 200, "{body}");
    let a: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (a["day"]["total"].as_u64(), a["day"]["failed"].as_u64()),
        (Some(6), Some(3))
    );
    assert_eq!(a["week"]["total"], 6);
    assert_eq!(a["day"]["buckets"].as_array().unwrap().len(), 24);
    assert_eq!(a["week"]["buckets"].as_array().unwrap().len(), 28);
    assert!(a["day"]["p95_ms"].is_i64());
    assert_eq!(a["errors"][0]["class"], "http_4xx");
    assert_eq!(a["errors"][0]["count"], 3);
    let (_, body) = call(&app, Some(&auditor), "GET", "/api/sources/demo/activity").await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s["day"]["total"].as_u64(), s["day"]["failed"].as_u64()),
        (Some(3), Some(0))
    );
    let (status, _) = call(&app, Some(&auditor), "GET", "/api/handlers/nope/activity").await;
    assert_eq!(status, 404);

    // The OpenAPI document describes every new endpoint.
    let (_, body) = call(&app, None, "GET", "/api/openapi.json").await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    for p in [
        "/api/calls/search",
        "/api/calls/timeline",
        "/api/bulk/preview",
        "/api/bulk/run",
        "/api/bulk/runs/{id}",
        "/api/sources/{name}/activity",
        "/api/handlers/{name}/activity",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
}

crate::on_both_backends! {
    dead_letters_of_one_handler_in_a_window_are_retried_once_on_record_on =>
        dead_letters_of_one_handler_in_a_window_are_retried_once_on_record,
        dead_letters_of_one_handler_in_a_window_are_retried_once_on_record_on_postgres;
}
