//! The operator console's API over real TLS: each role's allowed and forbidden calls (403 with
//! nothing leaked, and an `access_denied` record), audited reveals and retries, failed sign-in
//! limits, the dashboard's cookie and CSRF rules, a busy session ending at its lifetime, and
//! `/metrics` after a known sequence — each on
//! SQLite and on PostgreSQL (skipped only when `WARDHOOK_TEST_POSTGRES_URL` is unset outside CI),
//! and on a two-node PostgreSQL cluster, one node's console showing what the other took.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wardhook::admin::Role;
use wardhook::dispatch::worker::TaskOutcome;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::postgres::PgTestDb;

/// The database a console test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A console app and, on PostgreSQL, its database (dropped after the app).
pub struct ConsoleApp {
    pub app: TestApp,
    pub pg: Option<PgTestDb>,
}

impl std::ops::Deref for ConsoleApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Generates, from one `async fn case(db: Db)`, a test on SQLite and one on PostgreSQL.
///
/// The tests run on a multi-threaded runtime: they call the `wardhook` CLI synchronously while
/// the in-process server runs, and on PostgreSQL the server's connection tasks (which its audit
/// mirror waits on while it holds the mirror's file lock, the lock the CLI also takes) must keep
/// running while the test's own thread waits for the CLI.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $case($crate::admin::Db::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $case($crate::admin::Db::Postgres).await;
        }
    )*};
}

/// A caller name that must never appear in a refused response.
pub const CANARY_NAME: &str = "Zebulon Quartermaine";

/// The options of an app whose source `source` routes `call.ended` to an http handler
/// `handler` at `crm`, with background workers off so the test drives dispatch.
pub fn console_options(source: &str, handler: &str, crm: &str, admin_extra: &str) -> AppOptions {
    AppOptions {
        sources: Some(format!(
            "[[sources]]\nname = \"{source}\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\n"
        )),
        admin: admin_extra.to_owned(),
        // Callers' national numbers are North American: "(555) 010-1234" is +15550101234.
        storage: "phone_country = \"1\"\n".to_owned(),
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
    }
}

/// [`console_options`] served on `db`; `None` when PostgreSQL tests are skipped.
pub async fn console_app_on(
    db: Db,
    source: &str,
    handler: &str,
    crm: &str,
    admin_extra: &str,
) -> Option<ConsoleApp> {
    console_app_with(db, console_options(source, handler, crm, admin_extra)).await
}

/// An app with `opts` served on `db`; `None` when PostgreSQL tests are skipped.
pub async fn console_app_with(db: Db, opts: AppOptions) -> Option<ConsoleApp> {
    Some(match db {
        Db::Sqlite => ConsoleApp {
            app: spawn_app_with(opts).await,
            pg: None,
        },
        Db::Postgres => {
            let pg = PgTestDb::create().await?;
            let app = spawn_from_fixture(pg.fixture("node-a", opts, None)).await;
            ConsoleApp { app, pg: Some(pg) }
        }
    })
}

/// Run `wardhook tokens …` against the app's config (SQLite file or PostgreSQL alike).
fn tokens_cli(app: &TestApp, args: &[&str]) -> String {
    let out = Command::new(wardhook_bin())
        .arg("tokens")
        .args(args)
        .arg("--config")
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tokens {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Create a token with `wardhook tokens create`; returns (token text, token id).
pub fn create_token(app: &TestApp, name: &str, role: Role) -> (String, String) {
    let out = tokens_cli(app, &["create", "--name", name, "--role", role.as_str()]);
    let token = out.lines().next().unwrap().trim().to_owned();
    let id = wardhook::admin::tokens::id_of(&token).unwrap().to_owned();
    (token, id)
}

/// Revoke a token with `wardhook tokens revoke`.
pub fn revoke_token(app: &TestApp, name: &str) {
    tokens_cli(app, &["revoke", name]);
}

/// A client of the console that trusts its CA and shows redirects instead of following them.
pub fn console_client(app: &TestApp) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(app.ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sign in on the dashboard's form with `token`: the session cookie (`name=value`).
async fn dashboard_session(client: &reqwest::Client, app: &TestApp, token: &str) -> String {
    let res = client
        .post(admin_url(app, "/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    set_cookie_pair(&res)
}

pub fn admin_url(app: &TestApp, path: &str) -> String {
    format!("https://localhost:{}{path}", app.admin_port)
}

/// A signed `call.ended` for `source` with the canary caller name.
pub async fn deliver_to(app: &TestApp, source: &str, call: &str) -> (u16, Value) {
    deliver_from(app, source, call, "+15550199").await
}

/// A signed `call.ended` of call `call` from the caller phone `phone`.
pub async fn deliver_from(app: &TestApp, source: &str, call: &str, phone: &str) -> (u16, Value) {
    let body = format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call}","caller":{{"name":"{CANARY_NAME}","phone":"{phone}"}}}}}}"#
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

pub async fn call(app: &TestApp, token: Option<&str>, method: &str, path: &str) -> (u16, String) {
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

/// (actor, outcome, detail) of every audit record of `action`, in order (every node's).
pub async fn audit_rows(app: &ConsoleApp, action: &str) -> Vec<(String, String, String)> {
    if let Some(pg) = &app.pg {
        let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        return client
            .query(
                "SELECT actor, outcome, detail FROM audit_log WHERE action = $1
                 ORDER BY ts, node_id, seq",
                &[&action],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    }
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
pub async fn app_with_a_dead_letter(db: Db) -> Option<(ConsoleApp, MockServer, String)> {
    let crm = destination_answering(400, 1, 201).await;
    let app = console_app_on(db, "demo", "crm", &crm.uri(), "").await?;
    let (status, v) = deliver_to(&app, "demo", "call-admin-1").await;
    assert_eq!(status, 200);
    let id = v["delivery_id"].as_str().unwrap().to_owned();
    assert!(matches!(drain(&app).await[..], [TaskOutcome::Dead { .. }]));
    Some((app, crm, id))
}

async fn each_role_gets_exactly_its_calls_and_refusals_leak_nothing_on(db: Db) {
    let Some((app, _crm, id)) = app_with_a_dead_letter(db).await else {
        return;
    };
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

    let denied = audit_rows(&app, "access_denied").await;
    assert!(
        denied.iter().any(
            |(actor, outcome, detail)| actor == &format!("admin_token:{auditor_id}")
                && outcome == "denied"
                && detail.contains("insufficient_role")
                && detail.contains("delivery")
        ),
        "the auditor's refused reveal is on record: {denied:?}"
    );
    let all = format!("{:?}", audit_rows(&app, "access_denied").await);
    assert!(!all.contains(CANARY_NAME));
}

async fn an_operator_reveal_is_a_payload_read_record_under_the_token_on(db: Db) {
    let Some((app, _crm, id)) = app_with_a_dead_letter(db).await else {
        return;
    };
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
    let reads = audit_rows(&app, "payload_read").await;
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

async fn retrying_a_dead_letter_over_the_api_delivers_it_and_is_audited_on(db: Db) {
    let Some((app, crm, id)) = app_with_a_dead_letter(db).await else {
        return;
    };
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
    let retried = audit_rows(&app, "retried").await;
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

async fn bad_tokens_get_401_and_repeated_failures_are_limited_and_audited_on(db: Db) {
    let Some((app, _crm, _id)) = app_with_a_dead_letter(db).await else {
        return;
    };
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
    let denied = audit_rows(&app, "access_denied").await;
    assert_eq!(
        denied
            .iter()
            .filter(|(actor, _, d)| actor == "system" && d.contains("bad_token"))
            .count(),
        5
    );
    assert!(!format!("{denied:?}").contains(&admin));
}

async fn revoked_tokens_stop_working_at_once_on(db: Db) {
    let Some((app, _crm, _id)) = app_with_a_dead_letter(db).await else {
        return;
    };
    let (t, _) = create_token(&app, "temp", Role::Operator);
    assert_eq!(call(&app, Some(&t), "GET", "/api/whoami").await.0, 200);
    revoke_token(&app, "temp");
    assert_eq!(call(&app, Some(&t), "GET", "/api/whoami").await.0, 401);
    assert!(audit_rows(&app, "access_denied")
        .await
        .iter()
        .any(|(_, _, d)| d.contains("token_revoked")));
}

async fn audit_export_downloads_csv_and_jsonl_and_records_the_export_on(db: Db) {
    let Some((app, _crm, _id)) = app_with_a_dead_letter(db).await else {
        return;
    };
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
    let exported = audit_rows(&app, "audit_exported").await;
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

async fn the_openapi_document_and_config_summary_are_served_without_secrets_on(db: Db) {
    let Some((app, _crm, _id)) = app_with_a_dead_letter(db).await else {
        return;
    };
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

async fn dashboard_sessions_use_strict_cookies_and_forms_need_the_csrf_token_on(db: Db) {
    let Some((app, _crm, _id)) = app_with_a_dead_letter(db).await else {
        return;
    };
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    let client = console_client(&app);
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
        .await
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

async fn a_busy_session_ends_at_its_lifetime_on(db: Db) {
    let crm = MockServer::start().await;
    let admin = "idle_timeout = \"3s\"\nsession_lifetime = \"4s\"\n";
    let Some(app) = console_app_on(db, "demo", "crm", &crm.uri(), admin).await else {
        return;
    };
    let (operator, _) = create_token(&app, "ops-busy", Role::Operator);
    let client = console_client(&app);
    let began = std::time::Instant::now();
    let session = dashboard_session(&client, &app, &operator).await;
    // Used twice a second — never idle — until the server ends it.
    let ended = loop {
        let res = client
            .get(admin_url(&app, "/deliveries"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            break res;
        }
        assert!(began.elapsed() < Duration::from_secs(8), "never ended");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        began.elapsed() >= Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(ended.status(), 303);
    assert_eq!(ended.headers()["location"], "/login?expired=lifetime");
    let page = client
        .get(admin_url(&app, "/login?expired=lifetime"))
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Your session reached its limit of 4 seconds"),
        "{page}"
    );
    assert!(page.contains("and 4 seconds after signing in"), "{page}");
    // The session is gone for good; signing in again starts a new one.
    let again = client
        .get(admin_url(&app, "/deliveries"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["location"], "/login");
    let fresh = dashboard_session(&client, &app, &operator).await;
    let res = client
        .get(admin_url(&app, "/deliveries"))
        .header("cookie", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.parse().ok())
}

async fn metrics_have_the_expected_names_and_labels_after_a_known_sequence_on(db: Db) {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&crm)
        .await;
    // Names unique to this test: the registry is per process and tests run in parallel.
    let (msrc, mcrm) = match db {
        Db::Sqlite => ("msrc", "mcrm"),
        Db::Postgres => ("pgmsrc", "pgmcrm"),
    };
    let Some(app) = console_app_on(db, msrc, mcrm, &crm.uri(), "").await else {
        return;
    };
    assert_eq!(deliver_to(&app, msrc, "m-1").await.0, 200);
    assert_eq!(deliver_to(&app, msrc, "m-2").await.0, 200);
    assert_eq!(deliver_to(&app, msrc, "m-2").await.1["status"], "duplicate");
    let (status, _) = send_signed(&app, msrc, r#"{"event":"call.ended"}"#, false).await;
    assert_eq!(status, 401);
    let (status, _) = send_signed(&app, msrc, r#"{"data":{}}"#, true).await;
    assert_eq!(status, 400);
    assert_eq!(drain(&app).await.len(), 2);

    let (admin, _) = create_token(&app, "prom", Role::Auditor);
    let (status, text) = call(&app, Some(&admin), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let expect = [
        (
            format!(r#"wardhook_deliveries_total{{source="{msrc}",outcome="accepted"}}"#),
            2.0,
        ),
        (
            format!(r#"wardhook_deliveries_total{{source="{msrc}",outcome="duplicate"}}"#),
            1.0,
        ),
        (
            format!(r#"wardhook_deliveries_total{{source="{msrc}",outcome="rejected"}}"#),
            1.0,
        ),
        (
            format!(r#"wardhook_deliveries_total{{source="{msrc}",outcome="quarantined"}}"#),
            1.0,
        ),
        (
            format!(r#"wardhook_ack_latency_seconds_count{{source="{msrc}"}}"#),
            5.0,
        ),
        (
            format!(r#"wardhook_ack_latency_seconds_bucket{{source="{msrc}",le="+Inf"}}"#),
            5.0,
        ),
        (
            format!(r#"wardhook_handler_attempts_total{{handler="{mcrm}",result="permanent"}}"#),
            2.0,
        ),
        (
            format!(r#"wardhook_handler_latency_seconds_count{{handler="{mcrm}"}}"#),
            2.0,
        ),
        (
            format!(r#"wardhook_dead_letters_total{{handler="{mcrm}"}}"#),
            2.0,
        ),
        (format!(r#"wardhook_dead_letters{{handler="{mcrm}"}}"#), 2.0),
        (
            format!(r#"wardhook_circuit_state{{handler="{mcrm}"}}"#),
            0.0,
        ),
        ("wardhook_queue_depth".to_owned(), 0.0),
        ("wardhook_queue_oldest_due_age_seconds".to_owned(), 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(metric(&text, &series), Some(want), "{series}\n{text}");
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

    // A delivery left in the queue shows in the depth, read from the database (every node's
    // jobs on PostgreSQL).
    assert_eq!(deliver_to(&app, msrc, "m-3").await.0, 200);
    let (status, text) = call(&app, Some(&admin), "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "wardhook_queue_depth"), Some(1.0), "{text}");
}

on_both_backends! {
    each_role_gets_exactly_its_calls_and_refusals_leak_nothing_on => each_role_gets_exactly_its_calls_and_refusals_leak_nothing, each_role_gets_exactly_its_calls_and_refusals_leak_nothing_on_postgres;
    an_operator_reveal_is_a_payload_read_record_under_the_token_on => an_operator_reveal_is_a_payload_read_record_under_the_token, an_operator_reveal_is_a_payload_read_record_under_the_token_on_postgres;
    retrying_a_dead_letter_over_the_api_delivers_it_and_is_audited_on => retrying_a_dead_letter_over_the_api_delivers_it_and_is_audited, retrying_a_dead_letter_over_the_api_delivers_it_and_is_audited_on_postgres;
    bad_tokens_get_401_and_repeated_failures_are_limited_and_audited_on => bad_tokens_get_401_and_repeated_failures_are_limited_and_audited, bad_tokens_get_401_and_repeated_failures_are_limited_and_audited_on_postgres;
    revoked_tokens_stop_working_at_once_on => revoked_tokens_stop_working_at_once, revoked_tokens_stop_working_at_once_on_postgres;
    audit_export_downloads_csv_and_jsonl_and_records_the_export_on => audit_export_downloads_csv_and_jsonl_and_records_the_export, audit_export_downloads_csv_and_jsonl_and_records_the_export_on_postgres;
    the_openapi_document_and_config_summary_are_served_without_secrets_on => the_openapi_document_and_config_summary_are_served_without_secrets, the_openapi_document_and_config_summary_are_served_without_secrets_on_postgres;
    dashboard_sessions_use_strict_cookies_and_forms_need_the_csrf_token_on => dashboard_sessions_use_strict_cookies_and_forms_need_the_csrf_token, dashboard_sessions_use_strict_cookies_and_forms_need_the_csrf_token_on_postgres;
    metrics_have_the_expected_names_and_labels_after_a_known_sequence_on => metrics_have_the_expected_names_and_labels_after_a_known_sequence, metrics_have_the_expected_names_and_labels_after_a_known_sequence_on_postgres;
    a_busy_session_ends_at_its_lifetime_on => a_busy_session_ends_at_its_lifetime, a_busy_session_ends_at_its_lifetime_on_postgres;
}

/// Two nodes on one PostgreSQL database: node A's console lists and details a delivery node B
/// accepted and dispatched, searches B's audit records, and a token made on one node works —
/// and is revoked — on both.
// Multi-threaded for the reason given at `on_both_backends`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_on_one_node_shows_what_another_node_took() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&crm)
        .await;
    let opts = console_options("twosrc", "twocrm", &crm.uri(), "");
    let fixture_a = db.fixture("node-a", opts.clone(), None);
    let key = std::fs::read(fixture_a.dir.path().join("master.key")).unwrap();
    let fixture_b = db.fixture("node-b", opts, Some(&key));
    let a = spawn_from_fixture(fixture_a).await;
    let b = spawn_from_fixture(fixture_b).await;

    let (status, v) = deliver_to(&b, "twosrc", "call-two-nodes").await;
    assert_eq!(status, 200);
    let id = v["delivery_id"].as_str().unwrap().to_owned();
    assert!(matches!(drain(&b).await[..], [TaskOutcome::Done { .. }]));

    let (admin, _) = create_token(&a, "root", Role::Admin);
    let (status, body) = call(&a, Some(&admin), "GET", "/api/deliveries").await;
    assert_eq!(status, 200);
    assert!(body.contains(&id), "node A lists node B's delivery: {body}");
    let (status, body) = call(&a, Some(&admin), "GET", &format!("/api/deliveries/{id}")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["jobs"][0]["handler"], "twocrm");
    assert_eq!(v["jobs"][0]["status"], "done");
    assert_eq!(v["jobs"][0]["timeline"].as_array().unwrap().len(), 1);
    let (status, body) = call(&a, Some(&admin), "GET", "/api/health").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    let twocrm = health["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "twocrm")
        .unwrap();
    assert_eq!(twocrm["attempts"], 1, "{body}");
    let (status, body) = call(
        &a,
        Some(&admin),
        "GET",
        &format!("/api/audit?delivery_id={id}&action=delivery_accepted"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["count"], 1);
    let (status, body) = call(&a, Some(&admin), "GET", "/api/audit/verify").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ok"], true);

    // Tokens are the cluster's: made on A, usable on B; revoked on B, refused on A.
    let (ops, _) = create_token(&a, "ops", Role::Operator);
    assert_eq!(call(&b, Some(&ops), "GET", "/api/whoami").await.0, 200);
    revoke_token(&b, "ops");
    assert_eq!(call(&a, Some(&ops), "GET", "/api/whoami").await.0, 401);
    assert_eq!(call(&b, Some(&ops), "GET", "/api/whoami").await.0, 401);
    drop((a, b));
}
