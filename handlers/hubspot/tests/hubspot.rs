//! The HubSpot adapter against a local server that answers like HubSpot's CRM v3 API.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use wardhook_handler_hubspot::HubSpotFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::Event;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn config(uri: &str, extra: &str) -> String {
    format!(
        "phi = \"full\"\nbaa = true\nbase_url = \"{uri}\"\ntoken = \"file:tests/fixtures/token\"\n{extra}"
    )
}

fn event() -> Event {
    testing::event_from_file("tests/fixtures/call_ended.json")
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

async fn search_finds(server: &MockServer, results: Value) {
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": results.as_array().map_or(0, Vec::len), "results": results
        })))
        .mount(server)
        .await;
}

/// The reference line the adapter ends every note with: the job's idempotency key.
fn reference() -> String {
    format!("<p>wardhook ref {}:hubspot</p>", event().delivery_id)
}

/// The contact's associated notes, as HubSpot's v4 associations API lists them, and their
/// bodies for the batch read.
async fn contact_has_notes(server: &MockServer, notes: &[(&str, String)]) {
    Mock::given(method("GET"))
        .and(path("/crm/v4/objects/contacts/512/associations/notes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": notes.iter().map(|(id, _)| json!({
                "toObjectId": id.parse::<u64>().unwrap(),
                "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 202, "label": null}]
            })).collect::<Vec<_>>()
        })))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes/batch/read"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE",
            "results": notes.iter().map(|(id, body)| json!({
                "id": id, "properties": {"hs_note_body": body}
            })).collect::<Vec<_>>()
        })))
        .mount(server)
        .await;
}

async fn note_created(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "9001"})))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_new_caller_becomes_a_contact_with_the_summary_as_a_note() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([])).await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "512", "properties": {}})),
        )
        .expect(1)
        .mount(&hs)
        .await;
    note_created(&hs).await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(
        outcome.data,
        Some(
            json!({"contact_id": "512", "created": true, "matched_by": "email", "note_id": "9001"})
        )
    );
    assert_eq!(outcome.status, Some(201));
    assert_eq!(outcome.destination.as_deref(), Some("127.0.0.1"));
    let reqs = requests(&hs).await;
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(
            r.headers.get("authorization").unwrap(),
            "Bearer pat-na1-test-token"
        );
        assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    }
    // 1. search by e-mail
    assert_eq!(reqs[0].url.path(), "/crm/v3/objects/contacts/search");
    assert_eq!(
        body(&reqs[0]),
        json!({
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "john@example.com"}]}],
            "properties": ["email", "phone"],
            "limit": 1
        })
    );
    // 2. create, with the default property mapping
    assert_eq!(reqs[1].method.as_str(), "POST");
    assert_eq!(
        body(&reqs[1]),
        json!({"properties": {
            "firstname": "John",
            "lastname": "Q Doe",
            "phone": "+15551234567",
            "email": "john@example.com",
            "company": "Doe Dental Supply",
            "lead_source": "AI Receptionist"
        }})
    );
    // 3. the note, associated to the contact, HTML-escaped
    let note = body(&reqs[2]);
    assert_eq!(
        note["properties"]["hs_timestamp"],
        "2026-11-22T15:30:00.000Z"
    );
    assert_eq!(
        note["properties"]["hs_note_body"],
        format!(
            "<p><strong>AI call summary</strong> (call.ended, call call_abc123)</p>\
             <p>Wants a quote for &lt;whitening&gt; &amp; a cleaning</p>{}",
            reference()
        )
    );
    assert_eq!(
        note["associations"],
        json!([{"to": {"id": "512"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}])
    );
}

#[tokio::test]
async fn a_known_caller_is_updated_not_duplicated_and_mapping_applies() {
    let hs = MockServer::start().await;
    search_finds(
        &hs,
        json!([{"id": "77", "properties": {"email": "john@example.com"}}]),
    )
    .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/77"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "77"})))
        .expect(1)
        .mount(&hs)
        .await;
    let extra = r#"note = false
lead_source = "NextPhone"
lead_source_property = "hs_lead_source_custom"
[properties]
company = ""
service_type = "{{ data.custom_fields.service_type }}"
budget = "{{ data.custom_fields.budget | default('') }}"
"#;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), extra));

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(outcome.data.as_ref().unwrap()["contact_id"], "77");
    assert_eq!(outcome.data.as_ref().unwrap()["created"], false);
    let reqs = requests(&hs).await;
    assert_eq!(reqs.len(), 2, "search + patch, no create, no note");
    assert_eq!(
        body(&reqs[1]),
        json!({"properties": {
            "firstname": "John",
            "lastname": "Q Doe",
            "phone": "+15551234567",
            "email": "john@example.com",
            "hs_lead_source_custom": "NextPhone",
            "service_type": "whitening"
        }}),
        "empty renders are left out, company dropped by mapping"
    );
}

#[tokio::test]
async fn without_an_email_the_contact_is_matched_by_phone() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([{"id": "88"}])).await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/88"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "88"})))
        .mount(&hs)
        .await;
    note_created(&hs).await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));
    let event = testing::event_from_json(
        r#"{"caller": {"phone": "+15550100", "name": "Ann"}, "data": {"summary": "callback"}}"#,
    );

    let outcome = testing::run(&*handler, &event).await.expect_ok();

    assert_eq!(outcome.data.as_ref().unwrap()["matched_by"], "phone");
    let reqs = requests(&hs).await;
    assert_eq!(
        body(&reqs[0])["filterGroups"][0]["filters"][0],
        json!({"propertyName": "phone", "operator": "EQ", "value": "+15550100"})
    );
    assert_eq!(
        body(&reqs[1]),
        json!({"properties": {"firstname": "Ann", "phone": "+15550100", "lead_source": "AI Receptionist"}})
    );
    assert_eq!(reqs[2].url.path(), "/crm/v3/objects/notes");
}

#[tokio::test]
async fn a_create_that_races_another_becomes_an_update() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([])).await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "status": "error", "message": "Contact already exists. Existing ID: 4242", "category": "CONFLICT"
        })))
        .mount(&hs)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/4242"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "4242"})))
        .expect(1)
        .mount(&hs)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), "note = false"));

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(outcome.data.unwrap()["contact_id"], "4242");
}

#[tokio::test]
async fn a_validation_error_is_permanent_and_names_no_payload() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([])).await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "error", "category": "VALIDATION_ERROR",
            "message": "Property values were not valid: john@example.com"
        })))
        .mount(&hs)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert_eq!(
        reason,
        "HTTP 400 from 127.0.0.1: validation error (check the property mapping)"
    );
}

#[tokio::test]
async fn a_revoked_token_is_permanent_with_a_clear_reason() {
    let hs = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer pat-na1-test-token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "status": "error", "category": "INVALID_AUTHENTICATION", "message": "Authentication credentials not found."
        })))
        .expect(1)
        .mount(&hs)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(reason.starts_with("HTTP 401 from 127.0.0.1"), "{reason}");
    assert!(reason.contains("do not refresh"), "{reason}");
}

#[tokio::test]
async fn a_rate_limit_is_retryable_after_hubspots_window() {
    let hs = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7").set_body_json(json!({
            "status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"
        })))
        .up_to_n_times(1)
        .mount(&hs)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));
    assert_eq!(
        testing::run(&*handler, &event()).await.expect_retryable(),
        Some(Duration::from_secs(7))
    );

    // Without Retry-After: one 10-second window.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&hs)
        .await;
    assert_eq!(
        testing::run(&*handler, &event()).await.expect_retryable(),
        Some(Duration::from_secs(10))
    );
}

#[tokio::test]
async fn a_contact_id_that_would_climb_the_api_path_is_never_used() {
    let server = MockServer::start().await;
    search_finds(&server, json!([{"id": ".."}])).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "512"})))
        .mount(&server)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&server.uri(), ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(reason.contains("contact id"), "{reason}");
    let sent = requests(&server).await;
    assert!(
        sent.iter().all(|r| r.method.as_str() != "PATCH"),
        "nothing may be sent to /crm/v3/objects: {:?}",
        sent.iter()
            .map(|r| r.url.path().to_owned())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_server_error_is_retryable() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([])).await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&hs)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));

    let err = testing::run(&*handler, &event()).await;
    assert!(
        matches!(&err, Err(e) if e.reason() == "HTTP 502 from 127.0.0.1"),
        "{err:?}"
    );
    assert_eq!(err.expect_retryable(), None);
}

#[tokio::test]
async fn an_unreachable_api_is_retryable() {
    let handler = testing::build::<HubSpotFactory>("hubspot", &config("http://127.0.0.1:9", ""));
    let err = testing::run(&*handler, &event()).await;
    assert!(
        matches!(&err, Err(e) if e.reason() == "network error talking to 127.0.0.1"),
        "{err:?}"
    );
    err.expect_retryable();
}

#[tokio::test]
async fn a_caller_without_email_or_phone_is_permanent() {
    let handler = testing::build::<HubSpotFactory>("hubspot", &config("http://127.0.0.1:9", ""));
    let event = testing::event_from_json(r#"{"caller": {"name": "Nobody"}}"#);
    let reason = testing::run(&*handler, &event).await.expect_permanent();
    assert!(
        reason.contains("neither an e-mail address nor a phone number"),
        "{reason}"
    );
}

#[test]
fn config_problems_carry_key_paths() {
    let problems = testing::try_build::<HubSpotFactory>(
        "hubspot",
        "phi = \"full\"\nbaa = true\nbase_url = \"http://api.hubapi.com\"\ntoken = \"env:WARDHOOK_HS_TEST_SURELY_UNSET\"\ntimeout_secs = 0\n[properties]\nx = \"{{ caller.fone }}\"",
    )
    .expect_err("problems");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["base_url", "token", "properties.x", "timeout_secs"],
        "{problems:?}"
    );
    assert!(problems[1]
        .message
        .contains("WARDHOOK_HS_TEST_SURELY_UNSET"));

    let problems = testing::try_build::<HubSpotFactory>(
        "hubspot",
        "phi = \"full\"\nbaa = true\ntoken = \"pat-literal\"",
    )
    .expect_err("literal");
    assert_eq!(problems[0].path, "token");
    assert!(problems[0].message.contains("env:NAME"), "{problems:?}");

    let problems = testing::try_build::<HubSpotFactory>(
        "hubspot",
        "token = \"file:tests/fixtures/token\"\ntokn = 1",
    )
    .expect_err("typo");
    assert!(
        problems[0].message.contains("unknown field `tokn`"),
        "{problems:?}"
    );
}

#[test]
fn without_a_baa_it_refuses_to_build() {
    let problems =
        testing::try_build::<HubSpotFactory>("hubspot", "token = \"file:tests/fixtures/token\"")
            .expect_err("phi none");
    assert!(
        problems[0].message.contains("phi = \"none\""),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_retry_reuses_the_note_an_earlier_attempt_created() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([{"id": "512", "properties": {}}])).await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/512"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "512"})))
        .mount(&hs)
        .await;
    // Attempt 1 created note 9001, but its answer was lost; another job's note is there too.
    contact_has_notes(
        &hs,
        &[
            (
                "8000",
                "<p>an older note</p><p>wardhook ref other:hubspot</p>".to_owned(),
            ),
            ("9001", format!("<p>summary</p>{}", reference())),
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "9002"})))
        .expect(0)
        .mount(&hs)
        .await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));

    let outcome = testing::run_attempt(&*handler, &event(), 2)
        .await
        .expect_ok();

    assert_eq!(outcome.data.unwrap()["note_id"], "9001");
    let read = requests(&hs)
        .await
        .into_iter()
        .find(|r| r.url.path() == "/crm/v3/objects/notes/batch/read")
        .unwrap();
    assert_eq!(
        body(&read),
        json!({"properties": ["hs_note_body"], "inputs": [{"id": "8000"}, {"id": "9001"}]})
    );
}

#[tokio::test]
async fn a_retry_without_an_earlier_note_creates_one_and_a_first_attempt_does_not_look() {
    let hs = MockServer::start().await;
    search_finds(&hs, json!([{"id": "512", "properties": {}}])).await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/512"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "512"})))
        .mount(&hs)
        .await;
    contact_has_notes(&hs, &[("8000", "<p>an older note</p>".to_owned())]).await;
    note_created(&hs).await;
    let handler = testing::build::<HubSpotFactory>("hubspot", &config(&hs.uri(), ""));

    let retry = testing::run_attempt(&*handler, &event(), 3)
        .await
        .expect_ok();
    assert_eq!(retry.data.unwrap()["note_id"], "9001");
    let looked = |reqs: &[Request]| {
        reqs.iter()
            .filter(|r| r.url.path().starts_with("/crm/v4/"))
            .count()
    };
    assert_eq!(looked(&requests(&hs).await), 1);

    let first = testing::run(&*handler, &event()).await.expect_ok();
    assert_eq!(first.data.unwrap()["note_id"], "9001");
    assert_eq!(
        looked(&requests(&hs).await),
        1,
        "a first attempt creates its note without looking"
    );
}

#[tokio::test]
async fn an_api_host_resolving_to_a_private_address_is_refused_permanently_unless_listed() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let base = format!("http://localhost:{}", server.address().port());

    let refused = testing::build::<HubSpotFactory>("hubspot", &config(&base, ""));
    let reason = testing::run(&*refused, &event()).await.expect_permanent();
    assert!(
        reason.starts_with("egress to localhost refused") && reason.contains("allow_hosts"),
        "{reason}"
    );
    assert!(requests(&server).await.is_empty());

    let listed = testing::build::<HubSpotFactory>(
        "hubspot",
        &config(&base, "allow_hosts = [\"127.0.0.0/8\"]"),
    );
    testing::run(&*listed, &event()).await.expect_retryable();
    assert!(
        !requests(&server).await.is_empty(),
        "the listed range is reached"
    );
}
