//! The operator console's API over real TLS: each role's allowed and forbidden calls (403 with
//! nothing leaked, and an `access_denied` record), audited reveals and retries, failed sign-in
//! limits, the dashboard's cookie and CSRF rules, and `/metrics` after a known sequence.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use wardhook::admin::{tokens, Role};
use wardhook::dispatch::worker::TaskOutcome;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// A caller name that must never appear in a refused response.
pub const CANARY_NAME: &str = "Zebulon Quartermaine";

/// An app whose source `source` routes `call.ended` to an http handler `handler` at `crm`,
/// with background workers off so the test drives dispatch.
pub async fn console_app(source: &str, handler: &str, crm: &str, admin_extra: &str) -> TestApp {
    spawn_app_with(AppOptions {
        sources: Some(format!(
            "[[sources]]\nname = \"{source}\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\n"
        )),
        admin: admin_extra.to_owned(),
        extra: format!(
            r#"
[dispatch]
workers = 0

[[handlers]]
name = "{handler}"
kind = "http"
phi = "full"
baa = true
url = "{crm}/api/leads"
body = '{{"phone": "{{{{ caller.phone }}}}"}}'

[[routes]]
source = "{source}"
events = ["call.ended"]
handlers = ["{handler}"]
"#
        ),
        ..AppOptions::default()
    })
    .await
}

/// Create a token directly in the app's database; returns (token text, token id).
pub fn create_token(app: &TestApp, name: &str, role: Role) -> (String, String) {
    let conn = tokens::open(&app.dir.path().join("data/wardhook.db")).unwrap();
    let t = tokens::create(&conn, name, role, None).unwrap();
    (t.token, t.info.id)
}

pub fn admin_url(app: &TestApp, path: &str) -> String {
    format!("https://localhost:{}{path}", app.admin_port)
}

/// A signed `call.ended` for `source` with the canary caller name.
pub async fn deliver_to(app: &TestApp, source: &str, call: &str) -> (u16, Value) {
    let body = format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call}","caller":{{"name":"{CANARY_NAME}","phone":"+15550199"}}}}}}"#
    );
    send_signed(app, source, &body, true).await
}

pub async fn send_signed(app: &TestApp, source: &str, body: &str, good: bool) -> (u16, Value) {
    let sig = if good {
        nextphone_signature(DEMO_SECRET, body.as_bytes())
    } else {
        nextphone_signature("wrong secret", body.as_bytes())
    };
    let res = app
        .client()
        .post(app.url(&format!("/hooks/{source}")))
        .header("X-NextPhone-Signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Run dispatch steps until idle.
pub async fn drain(app: &TestApp) -> Vec<TaskOutcome> {
    let mut out = Vec::new();
    for _ in 0..50 {
        match app.dispatcher.try_execute_task().await.unwrap() {
            TaskOutcome::Idle => return out,
            o => out.push(o),
        }
    }
    panic!("queue never went idle");
}

async fn call(app: &TestApp, token: Option<&str>, method: &str, path: &str) -> (u16, String) {
    let client = app.client();
    let mut req = match method {
        "POST" => client.post(admin_url(app, path)),
        _ => client.get(admin_url(app, path)),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

fn audit_rows(app: &TestApp, action: &str) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT actor, outcome, detail FROM audit_log WHERE action = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([action], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// One dead letter (the CRM answers 400) and one quarantined delivery.
async fn app_with_a_dead_letter() -> (TestApp, MockServer, String) {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&crm)
        .await;
    let app = console_app("demo", "crm", &crm.uri(), "").await;
    let (status, v) = deliver_to(&app, "demo", "call-admin-1").await;
    assert_eq!(status, 200);
    let id = v["delivery_id"].as_str().unwrap().to_owned();
    assert!(matches!(drain(&app).await[..], [TaskOutcome::Dead { .. }]));
    (app, crm, id)
}

#[tokio::test]
async fn each_role_gets_exactly_its_calls_and_refusals_leak_nothing() {
    let (app, _crm, id) = app_with_a_dead_letter().await;
    let (admin, _) = create_token(&app, "root", Role::Admin);
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    let (auditor, auditor_id) = create_token(&app, "aud", Role::Auditor);

    let reads = [
        "/api/whoami".to_owned(),
        "/api/deliveries".to_owned(),
        format!("/api/deliveries/{id}"),
        "/api/dead-letters".to_owned(),
        "/api/quarantine".to_owned(),
        "/api/health".to_owned(),
        "/api/config".to_owned(),
        "/metrics".to_owned(),
    ];
    let audit = [
        "/api/audit".to_owned(),
        "/api/audit/verify".to_owned(),
        "/api/audit/export?format=csv".to_owned(),
    ];
    // (token, role name, may reveal/requeue, may read audit)
    let table = [
        (&admin, "admin", true, true),
        (&operator, "operator", true, false),
        (&auditor, "auditor", false, true),
    ];
    for (token, role, may_change, may_audit) in table {
        for path in &reads {
            let (status, _) = call(&app, Some(token), "GET", path).await;
            assert_eq!(status, 200, "{role} GET {path}");
        }
        for path in &audit {
            let (status, body) = call(&app, Some(token), "GET", path).await;
            let want = if may_audit { 200 } else { 403 };
            assert_eq!(status, want, "{role} GET {path}");
            if !may_audit {
                assert_eq!(
                    body, r#"{"error":"forbidden"}"#,
                    "{role} GET {path} leaked data"
                );
            }
        }
        let (status, body) = call(
            &app,
            Some(token),
            "POST",
            &format!("/api/deliveries/{id}/reveal"),
        )
        .await;
        if may_change {
            assert_eq!(status, 200, "{role} reveal");
            assert!(
                body.contains(CANARY_NAME),
                "{role} reveal shows the payload"
            );
        } else {
            assert_eq!(status, 403, "{role} reveal");
            assert_eq!(
                body, r#"{"error":"forbidden"}"#,
                "{role} reveal leaked data"
            );
            assert!(!body.contains(CANARY_NAME));
        }
        for path in [
            format!("/api/deliveries/{id}/replay"),
            "/api/dead-letters/retry?handler=nobody".to_owned(),
        ] {
            let (status, body) = call(&app, Some(token), "POST", &path).await;
            let want = if may_change { 200 } else { 403 };
            assert_eq!(status, want, "{role} POST {path}");
            if !may_change {
                assert_eq!(body, r#"{"error":"forbidden"}"#);
            }
        }
    }

    let denied = audit_rows(&app, "access_denied");
    assert!(
        denied.iter().any(
            |(actor, outcome, detail)| actor == &format!("admin_token:{auditor_id}")
                && outcome == "denied"
                && detail.contains("insufficient_role")
                && detail.contains("delivery")
        ),
        "the auditor's refused reveal is on record: {denied:?}"
    );
    let all = format!("{:?}", audit_rows(&app, "access_denied"));
    assert!(!all.contains(CANARY_NAME));
}

#[tokio::test]
async fn an_operator_reveal_is_a_payload_read_record_under_the_token() {
    let (app, _crm, id) = app_with_a_dead_letter().await;
    let (operator, op_id) = create_token(&app, "ops", Role::Operator);
    let (status, body) = call(
        &app,
        Some(&operator),
        "POST",
        &format!("/api/deliveries/{id}/reveal"),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"]["caller"]["name"], CANARY_NAME);
    let reads = audit_rows(&app, "payload_read");
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].0, format!("admin_token:{op_id}"));
    assert!(reads[0].2.contains("admin_api"));
    // The audit chain still verifies through the admin's writes.
    let (admin, _) = create_token(&app, "root", Role::Admin);
    let (status, body) = call(&app, Some(&admin), "GET", "/api/audit/verify").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{body}");
}

#[tokio::test]
async fn retrying_a_dead_letter_over_the_api_delivers_it_and_is_audited() {
    let (app, crm, id) = app_with_a_dead_letter().await;
    let (operator, op_id) = create_token(&app, "ops", Role::Operator);
    let (_, body) = call(&app, Some(&operator), "GET", "/api/dead-letters").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let job = v["dead_letters"][0]["job_id"].as_i64().unwrap();
    assert_eq!(v["dead_letters"][0]["delivery_id"], id.as_str());

    let (status, body) = call(
        &app,
        Some(&operator),
        "POST",
        &format!("/api/dead-letters/{job}/retry"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"retried":1}"#));
    assert!(matches!(drain(&app).await[..], [TaskOutcome::Done { .. }]));
    assert_eq!(crm.received_requests().await.unwrap().len(), 2);

    let (_, body) = call(
        &app,
        Some(&operator),
        "GET",
        &format!("/api/deliveries/{id}"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jobs"][0]["status"], "done");
    let timeline = v["jobs"][0]["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2);
    assert_eq!(timeline[0]["result"], "permanent");
    assert_eq!(timeline[1]["result"], "ok");
    assert!(!body.contains(CANARY_NAME), "metadata only");
    let retried = audit_rows(&app, "retried");
    assert_eq!(retried[0].0, format!("admin_token:{op_id}"));
    let (status, _) = call(
        &app,
        Some(&operator),
        "POST",
        &format!("/api/dead-letters/{job}/retry"),
    )
    .await;
    assert_eq!(status, 404, "nothing left to retry");
}

#[tokio::test]
async fn bad_tokens_get_401_and_repeated_failures_are_limited_and_audited() {
    let (app, _crm, _id) = app_with_a_dead_letter().await;
    let (admin, _) = create_token(&app, "root", Role::Admin);
    let (status, body) = call(&app, None, "GET", "/api/deliveries").await;
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"unauthorized"}"#)
    );
    let forged = format!("{admin}x");
    for i in 0..5 {
        let (status, _) = call(&app, Some(&forged), "GET", "/api/deliveries").await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, _) = call(&app, Some(&admin), "GET", "/api/deliveries").await;
    assert_eq!(
        status, 429,
        "even a good token waits out the lockout from this address"
    );
    let denied = audit_rows(&app, "access_denied");
    assert_eq!(
        denied
            .iter()
            .filter(|(actor, _, d)| actor == "system" && d.contains("bad_token"))
            .count(),
        5
    );
    assert!(!format!("{denied:?}").contains(&admin));
}

#[tokio::test]
async fn revoked_tokens_stop_working_at_once() {
    let (app, _crm, _id) = app_with_a_dead_letter().await;
    let (t, _) = create_token(&app, "temp", Role::Operator);
    assert_eq!(call(&app, Some(&t), "GET", "/api/whoami").await.0, 200);
    let conn = tokens::open(&app.dir.path().join("data/wardhook.db")).unwrap();
    tokens::revoke(&conn, "temp").unwrap();
    assert_eq!(call(&app, Some(&t), "GET", "/api/whoami").await.0, 401);
    assert!(audit_rows(&app, "access_denied")
        .iter()
        .any(|(_, _, d)| d.contains("token_revoked")));
}

#[tokio::test]
async fn audit_export_downloads_csv_and_jsonl_and_records_the_export() {
    let (app, _crm, _id) = app_with_a_dead_letter().await;
    let (auditor, aud_id) = create_token(&app, "aud", Role::Auditor);
    let res = app
        .client()
        .get(admin_url(&app, "/api/audit/export?format=csv"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("wardhook-audit.csv"));
    let csv = res.text().await.unwrap();
    assert!(csv.lines().next().unwrap().starts_with("seq,"));
    assert!(csv.contains("delivery_accepted"));
    let (status, jsonl) = call(&app, Some(&auditor), "GET", "/api/audit/export").await;
    assert_eq!(status, 200);
    for line in jsonl.lines() {
        let _: Value = serde_json::from_str(line).unwrap();
    }
    let exported = audit_rows(&app, "audit_exported");
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0].0, format!("admin_token:{aud_id}"));
    let (status, body) = call(
        &app,
        Some(&auditor),
        "GET",
        "/api/audit?action=payload_read",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["count"], 0);
}

#[tokio::test]
async fn the_openapi_document_and_config_summary_are_served_without_secrets() {
    let (app, _crm, _id) = app_with_a_dead_letter().await;
    let (status, body) = call(&app, None, "GET", "/api/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/api/deliveries",
        "/api/deliveries/{id}/reveal",
        "/api/dead-letters/{job}/retry",
        "/api/audit/verify",
        "/api/health",
        "/metrics",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    let (admin, _) = create_token(&app, "root", Role::Admin);
    let (status, body) = call(&app, Some(&admin), "GET", "/api/config").await;
    assert_eq!(status, 200);
    let master = std::fs::read_to_string(app.dir.path().join("master.key")).unwrap();
    assert!(!body.contains(DEMO_SECRET));
    assert!(!body.contains(master.trim()));
    assert!(body.contains("\"name\":\"demo\""));
}

#[tokio::test]
async fn dashboard_sessions_use_strict_cookies_and_forms_need_the_csrf_token() {
    let (app, _crm, _id) = app_with_a_dead_letter().await;
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(app.ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client
        .post(admin_url(&app, "/login"))
        .form(&[("token", operator.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = client
        .get(admin_url(&app, "/dead-letters"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    let job = html
        .split("data-job=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let res = client
        .post(admin_url(&app, &format!("/dead-letters/{job}/retry")))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(audit_rows(&app, "access_denied")
        .iter()
        .any(|(_, _, d)| d.contains("csrf_mismatch")));
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let res = client
        .post(admin_url(&app, &format!("/dead-letters/{job}/retry")))
        .header("cookie", &session)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/dead-letters?done=1");
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_have_the_expected_names_and_labels_after_a_known_sequence() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&crm)
        .await;
    // Names unique to this test: the registry is per process and tests run in parallel.
    let app = console_app("msrc", "mcrm", &crm.uri(), "").await;
    assert_eq!(deliver_to(&app, "msrc", "m-1").await.0, 200);
    assert_eq!(deliver_to(&app, "msrc", "m-2").await.0, 200);
    assert_eq!(
        deliver_to(&app, "msrc", "m-2").await.1["status"],
        "duplicate"
    );
    let (status, _) = send_signed(&app, "msrc", r#"{"event":"call.ended"}"#, false).await;
    assert_eq!(status, 401);
    let (status, _) = send_signed(&app, "msrc", r#"{"data":{}}"#, true).await;
    assert_eq!(status, 400);
    assert_eq!(drain(&app).await.len(), 2);

    let (admin, _) = create_token(&app, "prom", Role::Auditor);
    let (status, text) = call(&app, Some(&admin), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let expect = [
        (
            r#"wardhook_deliveries_total{source="msrc",outcome="accepted"}"#,
            2.0,
        ),
        (
            r#"wardhook_deliveries_total{source="msrc",outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"wardhook_deliveries_total{source="msrc",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"wardhook_deliveries_total{source="msrc",outcome="quarantined"}"#,
            1.0,
        ),
        (r#"wardhook_ack_latency_seconds_count{source="msrc"}"#, 5.0),
        (
            r#"wardhook_ack_latency_seconds_bucket{source="msrc",le="+Inf"}"#,
            5.0,
        ),
        (
            r#"wardhook_handler_attempts_total{handler="mcrm",result="permanent"}"#,
            2.0,
        ),
        (
            r#"wardhook_handler_latency_seconds_count{handler="mcrm"}"#,
            2.0,
        ),
        (r#"wardhook_dead_letters_total{handler="mcrm"}"#, 2.0),
        (r#"wardhook_dead_letters{handler="mcrm"}"#, 2.0),
        (r#"wardhook_circuit_state{handler="mcrm"}"#, 0.0),
        ("wardhook_queue_depth", 0.0),
        ("wardhook_queue_oldest_due_age_seconds", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(metric(&text, series), Some(want), "{series}\n{text}");
    }
    let days = metric(
        &text,
        r#"wardhook_tls_certificate_expiry_days{listener="hooks"}"#,
    )
    .unwrap();
    assert!((28.0..=31.0).contains(&days), "{days}");
    for name in [
        "wardhook_storage_errors_total",
        "wardhook_admin_login_failures_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} counter")));
    }
    assert!(!text.contains(CANARY_NAME));
}
