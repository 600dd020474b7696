//! Console alerts in a real headless Chromium, on SQLite and on PostgreSQL: a handler starts
//! failing, an alert opens, is notified once to a real SMTP server (aiosmtpd) and a local http
//! sink, shows in the banner on the overview, is acknowledged from the alerts page (notified
//! again), and resolves itself when the handler recovers (notified a third time).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use wardhook::admin::Role;
use wardhook::dispatch::worker::TaskOutcome;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::adapters_flow::sink::{SinkTls, SmtpSink};
use crate::admin::{
    admin_url, call, console_app_with, console_options, create_token, deliver_to, drain,
    ConsoleApp, Db,
};
use crate::browser::Browser;
use crate::helpers::*;

const FAILING: &str = "Handler crm: the last 3 attempts failed.";

/// The console app with two notifiers (e-mail to `smtp_port`, http to `hook`) and thresholds
/// that leave only the failing-handler rule able to fire.
async fn alerting_app(db: Db, crm: &str, smtp_port: u16, hook: &str) -> Option<ConsoleApp> {
    let mut opts = console_options("demo", "crm", crm, "");
    opts.extra.push_str(&format!(
        r#"
[[handlers]]
name = "ops-mail"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "wardhook <wardhook@clinic.example>"
to = ["oncall@clinic.example"]
subject = "wardhook {{{{ event_type }}}}"
text = "{{{{ data.status }}}}"

[[handlers]]
name = "ops-hook"
kind = "http"
url = "{hook}/alerts"
body = '{{"text": "{{{{ data.status }}}}", "alert": "{{{{ delivery_id }}}}"}}'

[alerts]
interval = "1s"
notify = ["ops-mail", "ops-hook"]
handler_failures_in_a_row = 3
handler_min_attempts = 1000
dead_letters = 1000
disk_used_percent = 100
"#
    ));
    console_app_with(db, opts).await
}

/// Load `url` again until its page contains (or, with `present = false`, no longer contains)
/// `text`; panics with the page after 20 s.
async fn reload_until(b: &Browser, url: &str, text: &str, present: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        b.goto(url).await;
        let page = b.source().await;
        if page.contains(text) == present {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never {}: {page}",
            if present { "appeared" } else { "went away" }
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The bodies the http sink received, once there are `n`.
async fn hook_bodies(hook: &MockServer, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<Value> = hook
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/alerts")
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the http sink got {} of {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_failing_handler_opens_an_alert_notified_once_acknowledged_and_resolved_on(db: Db) {
    // Arrange: the CRM refuses three leads, then takes every later one.
    let crm = destination_answering(400, 3, 201).await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    let Some(app) = alerting_app(db, &crm.uri(), smtp.port, &hook.uri()).await else {
        return;
    };
    let (operator, _) = create_token(&app, "ops-alice", Role::Operator);
    let (auditor, _) = create_token(&app, "audit-bob", Role::Auditor);
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    b.sign_in(&app, &operator).await;
    assert!(
        !b.source().await.contains("open alert"),
        "no banner while all is well"
    );

    // Act: three leads fail in a row.
    for call_id in ["alert-1", "alert-2", "alert-3"] {
        deliver_to(&app, "demo", call_id).await;
        assert!(matches!(drain(&app).await[..], [TaskOutcome::Dead { .. }]));
    }

    // Assert: the overview's banner shows the alert; it was notified once to each notifier.
    let overview = admin_url(&app, "/");
    let page = reload_until(&b, &overview, FAILING, true).await;
    assert!(page.contains("1 open alert"), "banner count");
    b.screenshot("alerts-banner").await;
    let mails = smtp.wait_for(1);
    assert_eq!(mails[0].headers["subject"], "wardhook alert.opened");
    assert!(mails[0]
        .text
        .as_deref()
        .unwrap_or_default()
        .contains(&format!("Opened: {FAILING}")));
    let bodies = hook_bodies(&hook, 1).await;
    assert_eq!(bodies[0]["text"], format!("Opened: {FAILING}"));
    let alert_id = bodies[0]["alert"].as_str().unwrap().to_owned();
    // Several evaluation rounds later the condition still holds: nothing is sent again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "notified once by e-mail");
    assert_eq!(
        hook_bodies(&hook, 1).await.len(),
        1,
        "notified once by http"
    );
    for mail in smtp.messages() {
        assert!(!mail.raw.contains(crate::admin::CANARY_NAME), "no PHI");
    }

    // An auditor may not acknowledge; the operator does, from the alerts page.
    let (status, _) = call(
        &app,
        Some(&auditor),
        "POST",
        &format!("/api/alerts/{alert_id}/acknowledge"),
    )
    .await;
    assert_eq!(status, 403);
    b.goto(&admin_url(&app, "/alerts")).await;
    b.screenshot("alerts").await;
    b.click(&format!("button.acknowledge[data-alert=\"{alert_id}\"]"))
        .await;
    let page = b.wait_for("Alert acknowledged").await;
    assert!(page.contains("… acknowledged"), "state in words");
    let mails = smtp.wait_for(2);
    assert!(mails
        .iter()
        .any(|m| m.headers["subject"] == "wardhook alert.acknowledged"));
    let (status, body) = call(
        &app,
        Some(&operator),
        "POST",
        &format!("/api/alerts/{alert_id}/acknowledge"),
    )
    .await;
    assert_eq!(status, 409, "already acknowledged: {body}");

    // The CRM recovers: the next lead goes through and the alert resolves itself.
    deliver_to(&app, "demo", "alert-4").await;
    assert!(matches!(drain(&app).await[..], [TaskOutcome::Done { .. }]));
    reload_until(&b, &overview, "open alert", false).await;
    let page = reload_until(&b, &admin_url(&app, "/alerts"), "✓ resolved", true).await;
    assert!(page.contains("No open alerts."));
    b.screenshot("alerts-resolved").await;
    let mails = smtp.wait_for(3);
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.headers["subject"] == "wardhook alert.opened")
            .count(),
        1,
        "opened once"
    );
    assert!(mails
        .iter()
        .any(|m| m.headers["subject"] == "wardhook alert.resolved"));
    let texts: Vec<String> = hook_bodies(&hook, 3)
        .await
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        vec![
            format!("Opened: {FAILING}"),
            format!("Acknowledged: {FAILING}"),
            format!("Resolved: {FAILING}"),
        ]
    );

    // The API shows it resolved, acknowledged by the operator's token.
    let (status, body) = call(&app, Some(&operator), "GET", "/api/alerts").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let listed = &v["alerts"][0];
    assert_eq!(
        (listed["id"].as_str(), listed["state"].as_str()),
        (Some(alert_id.as_str()), Some("resolved"))
    );
    assert!(listed["acknowledged_by"].is_string());
    let (status, _) = call(
        &app,
        Some(&operator),
        "POST",
        "/api/alerts/alr_unknown0/acknowledge",
    )
    .await;
    assert_eq!(status, 404);
    b.close().await;
}

crate::on_both_backends! {
    a_failing_handler_opens_an_alert_notified_once_acknowledged_and_resolved_on =>
        a_failing_handler_opens_an_alert_notified_once_acknowledged_and_resolved,
        a_failing_handler_opens_an_alert_notified_once_acknowledged_and_resolved_on_postgres;
}
