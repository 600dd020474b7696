//! The Slack adapter against a local server that answers like a Slack incoming webhook.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use wardhook_handler_slack::SlackFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::Event;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const HOOK: &str = "/services/T000/B000/XXXX";

/// Each test its own variable: tests run in parallel in one process.
fn webhook_env(var: &str, server: &MockServer) -> String {
    std::env::set_var(var, format!("{}{HOOK}", server.uri()));
    format!("env:{var}")
}

fn event() -> Event {
    testing::event_from_json(
        r#"{
            "delivery_id": "dlv_42",
            "source": "nextphone",
            "event_type": "call.ended",
            "call_id": "call_abc123",
            "caller": {"phone": "+15551234567", "name": "Dana <@here> Smith", "email": "dana@example.com"},
            "data": {"call_type": "quote_request", "duration_seconds": 180, "status": "completed",
                     "ai_summary": "Wants a quote & <b>whitening</b>", "transcript": "secret words"}
        }"#,
    )
}

async fn slack_ok(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(server)
        .await;
}

async fn sent(server: &MockServer) -> Value {
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].headers.get("content-type").unwrap(),
        "application/json"
    );
    serde_json::from_slice(&reqs[0].body).unwrap()
}

#[tokio::test]
async fn by_default_only_non_identifying_fields_reach_slack_even_without_a_baa() {
    let slack = MockServer::start().await;
    slack_ok(&slack).await;
    let url = webhook_env("WARDHOOK_SLACK_TEST_MINIMAL", &slack);
    let handler = testing::build::<SlackFactory>(
        "front-desk",
        &format!("webhook_url = \"{url}\"\nadmin_url = \"https://wardhook.clinic.internal:9443/\""),
    );

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.destination.as_deref(), Some("127.0.0.1"));
    let body = sent(&slack).await;
    assert_eq!(
        body,
        json!({
            "text": "New call: call.ended",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "New call: call.ended"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Caller*\n_withheld (minimum necessary)_"},
                    {"type": "mrkdwn", "text": "*Event*\ncall.ended"}
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Summary*\n_Details withheld from Slack: open the delivery in wardhook._"}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "source `nextphone` · call `call_abc123` · duration 180 s · status completed"}]},
                {"type": "section", "text": {"type": "mrkdwn", "text": "<https://wardhook.clinic.internal:9443/deliveries/dlv_42|Open delivery dlv_42> in wardhook"}}
            ]
        })
    );
    let text = body.to_string();
    for phi in [
        "+15551234567",
        "Dana",
        "dana@example.com",
        "whitening",
        "secret words",
        "quote_request",
    ] {
        assert!(!text.contains(phi), "{phi} leaked into Slack");
    }
}

#[tokio::test]
async fn with_minimal_phi_off_and_a_baa_the_caller_and_summary_are_sent_escaped() {
    let slack = MockServer::start().await;
    slack_ok(&slack).await;
    let url = webhook_env("WARDHOOK_SLACK_TEST_FULL", &slack);
    let handler = testing::build::<SlackFactory>(
        "front-desk",
        &format!("phi = \"full\"\nbaa = true\nminimal_phi = false\nwebhook_url = \"{url}\"\ntitle = \"{{{{ caller.name }}}} called\""),
    );

    testing::run(&*handler, &event()).await.expect_ok();

    let body = sent(&slack).await;
    assert_eq!(
        body["text"], "Dana <@here> Smith called",
        "plain text: Slack does not parse it"
    );
    assert_eq!(
        body["blocks"][1]["fields"],
        json!([
            {"type": "mrkdwn", "text": "*Caller*\nDana &lt;@here&gt; Smith · +15551234567 · dana@example.com"},
            {"type": "mrkdwn", "text": "*Event*\ncall.ended (quote_request)"}
        ])
    );
    assert_eq!(
        body["blocks"][2]["text"]["text"],
        "*Summary*\nWants a quote &amp; &lt;b&gt;whitening&lt;/b&gt;"
    );
    assert_eq!(body["blocks"][4]["text"]["text"], "Delivery `dlv_42`");
    assert!(
        !body.to_string().contains("secret words"),
        "the transcript is never sent"
    );
}

#[test]
fn minimal_phi_off_needs_phi_full_and_a_baa() {
    std::env::set_var(
        "WARDHOOK_SLACK_TEST_CFG",
        "https://hooks.slack.com/services/T/B/X",
    );
    let problems = testing::try_build::<SlackFactory>(
        "front-desk",
        "minimal_phi = false\nwebhook_url = \"env:WARDHOOK_SLACK_TEST_CFG\"",
    )
    .expect_err("phi none");
    assert_eq!(problems[0].path, "minimal_phi");
    assert!(
        problems[0].message.contains("phi = \"none\""),
        "{problems:?}"
    );

    let problems = testing::try_build::<SlackFactory>(
        "front-desk",
        "phi = \"full\"\nminimal_phi = false\nwebhook_url = \"env:WARDHOOK_SLACK_TEST_CFG\"",
    )
    .expect_err("no baa");
    assert!(problems[0].message.contains("baa = true"), "{problems:?}");

    let problems = testing::try_build::<SlackFactory>(
        "front-desk",
        "webhook_url = \"env:WARDHOOK_SLACK_TEST_CFG\"\ntitle = \"call from {{ caller.phone }}\"",
    )
    .expect_err("phi in title");
    assert_eq!(problems[0].path, "title");
}

#[test]
fn config_problems_carry_key_paths_and_never_the_url() {
    std::env::set_var(
        "WARDHOOK_SLACK_TEST_PLAIN",
        "http://hooks.slack.com/services/T/B/SECRETPART",
    );
    let problems = testing::try_build::<SlackFactory>(
        "front-desk",
        "webhook_url = \"env:WARDHOOK_SLACK_TEST_PLAIN\"\nadmin_url = \"ftp://x\"\ntimeout_secs = 0",
    )
    .expect_err("problems");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["webhook_url", "admin_url", "timeout_secs"],
        "{problems:?}"
    );
    assert!(!format!("{problems:?}").contains("SECRETPART"));

    let problems = testing::try_build::<SlackFactory>(
        "front-desk",
        "webhook_url = \"https://hooks.slack.com/services/T/B/X\"",
    )
    .expect_err("literal");
    assert_eq!(problems[0].path, "webhook_url");
    assert!(problems[0].message.contains("env:NAME"));
}

#[tokio::test]
async fn slacks_refusals_are_permanent_with_its_error_code() {
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid_payload"))
        .up_to_n_times(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410).set_body_string("channel_is_archived"))
        .mount(&slack)
        .await;
    let url = webhook_env("WARDHOOK_SLACK_TEST_REFUSED", &slack);
    let handler = testing::build::<SlackFactory>("front-desk", &format!("webhook_url = \"{url}\""));

    assert_eq!(
        testing::run(&*handler, &event()).await.expect_permanent(),
        "HTTP 400 from 127.0.0.1: invalid_payload"
    );
    assert_eq!(
        testing::run(&*handler, &event()).await.expect_permanent(),
        "HTTP 410 from 127.0.0.1: channel_is_archived"
    );
}

#[tokio::test]
async fn rate_limits_and_outages_are_retryable() {
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_string("rate_limited"),
        )
        .up_to_n_times(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&slack)
        .await;
    let url = webhook_env("WARDHOOK_SLACK_TEST_RETRY", &slack);
    let handler = testing::build::<SlackFactory>("front-desk", &format!("webhook_url = \"{url}\""));

    assert_eq!(
        testing::run(&*handler, &event()).await.expect_retryable(),
        Some(Duration::from_secs(30))
    );
    let second = testing::run(&*handler, &event()).await;
    assert!(
        matches!(&second, Err(e) if e.reason() == "HTTP 503 from 127.0.0.1"),
        "{second:?}"
    );
    second.expect_retryable();
}

#[tokio::test]
async fn a_webhook_host_resolving_to_a_private_address_is_refused_permanently_unless_listed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let var = "WARDHOOK_SLACK_TEST_EGRESS";
    std::env::set_var(
        var,
        format!("http://localhost:{}{HOOK}", server.address().port()),
    );

    let refused =
        testing::build::<SlackFactory>("front-desk", &format!("webhook_url = \"env:{var}\""));
    let reason = testing::run(&*refused, &event()).await.expect_permanent();
    assert!(
        reason.starts_with("egress to localhost refused") && !reason.contains("XXXX"),
        "{reason}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());

    let listed = testing::build::<SlackFactory>(
        "front-desk",
        &format!("webhook_url = \"env:{var}\"\nallow_hosts = [\"127.0.0.1\", \"::1\"]"),
    );
    testing::run(&*listed, &event()).await.expect_retryable();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
