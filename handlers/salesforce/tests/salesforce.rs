//! The Salesforce adapter against a local server that answers like Salesforce's OAuth2 token
//! endpoint and REST API.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use wardhook_handler_salesforce::SalesforceFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::Event;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const API: &str = "/services/data/v60.0";

fn client_credentials(uri: &str, extra: &str) -> String {
    format!(
        r#"phi = "full"
baa = true
instance_url = "{uri}"
{extra}
[auth]
flow = "client_credentials"
token_url = "{uri}/services/oauth2/token"
client_id = "3MVG9-consumer-key"
client_secret = "file:tests/fixtures/client_secret"
"#
    )
}

fn refresh_token(uri: &str) -> String {
    format!(
        r#"phi = "full"
baa = true
instance_url = "{uri}"
[auth]
flow = "refresh_token"
token_url = "{uri}/services/oauth2/token"
client_id = "3MVG9-consumer-key"
refresh_token = "file:tests/fixtures/refresh_token"
"#
    )
}

fn event() -> Event {
    testing::event_from_file("tests/fixtures/call_ended.json")
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn form(r: &Request) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = r.url.clone().query_pairs().into_owned().collect();
    pairs.clear();
    for pair in String::from_utf8(r.body.clone()).unwrap().split('&') {
        let (k, v) = pair.split_once('=').unwrap();
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            let bytes = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        };
        pairs.push((decode(k), decode(v)));
    }
    pairs.sort();
    pairs
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

async fn token(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": token, "instance_url": server.uri(), "token_type": "Bearer",
            "issued_at": "1795359600000", "signature": "x"
        })))
        .up_to_n_times(times)
        .mount(server)
        .await;
}

async fn query_finds(server: &MockServer, records: Value) {
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": records.as_array().map_or(0, Vec::len), "done": true, "records": records
        })))
        .mount(server)
        .await;
}

async fn lead_created(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("{API}/sobjects/Lead")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "00Q5e00000AbCdE", "success": true, "errors": []
        })))
        .mount(server)
        .await;
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

#[tokio::test]
async fn a_new_caller_becomes_a_lead() {
    let sf = MockServer::start().await;
    token(&sf, "tok-1", 1).await;
    query_finds(&sf, json!([])).await;
    lead_created(&sf).await;
    let handler = testing::build::<SalesforceFactory>("sf", &client_credentials(&sf.uri(), ""));

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(
        outcome.data,
        Some(json!({"lead_id": "00Q5e00000AbCdE", "created": true}))
    );
    assert_eq!(outcome.status, Some(201));
    let reqs = received(&sf).await;
    assert_eq!(reqs.len(), 3);
    // 1. client-credentials token
    assert_eq!(
        reqs[0].headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        form(&reqs[0]),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("client_id", "3MVG9-consumer-key"),
            ("client_secret", "sf-consumer-secret"),
        ])
    );
    // 2. duplicate check, the quote in the e-mail escaped
    assert_eq!(reqs[1].url.path(), format!("{API}/query"));
    assert_eq!(
        reqs[1].headers.get("authorization").unwrap(),
        "Bearer tok-1"
    );
    let q: Vec<(String, String)> = reqs[1].url.query_pairs().into_owned().collect();
    assert_eq!(
        q,
        [(
            "q".to_owned(),
            "SELECT Id FROM Lead WHERE IsConverted = false AND (Email = 'john.o\\'doe@example.com' OR Phone = '+15551234567') ORDER BY LastModifiedDate DESC LIMIT 1".to_owned()
        )]
    );
    // 3. the Lead
    assert_eq!(
        reqs[2].headers.get("authorization").unwrap(),
        "Bearer tok-1"
    );
    assert_eq!(
        body(&reqs[2]),
        json!({
            "FirstName": "John",
            "LastName": "Doe",
            "Phone": "+15551234567",
            "Email": "john.o'doe@example.com",
            "Company": "Doe Dental Supply",
            "Description": "Wants a quote for whitening",
            "LeadSource": "AI Receptionist"
        })
    );
}

#[tokio::test]
async fn missing_required_fields_get_the_configured_fallbacks() {
    let sf = MockServer::start().await;
    token(&sf, "tok-1", 1).await;
    query_finds(&sf, json!([])).await;
    lead_created(&sf).await;
    let handler = testing::build::<SalesforceFactory>(
        "sf",
        &client_credentials(
            &sf.uri(),
            "fallback_last_name = \"Caller\"\nfallback_company = \"Patient\"\nlead_source = \"Phone\"\n[fields]\nService_Type__c = \"{{ data.custom_fields.service_type | default('') }}\"",
        ),
    );
    let event = testing::event_from_json(
        r#"{"caller": {"phone": "+15550100"}, "data": {"custom_fields": {}}}"#,
    );

    testing::run(&*handler, &event).await.expect_ok();

    let reqs = received(&sf).await;
    let q: Vec<(String, String)> = reqs[1].url.query_pairs().into_owned().collect();
    assert!(q[0].1.contains("AND (Phone = '+15550100')"), "{q:?}");
    assert_eq!(
        body(&reqs[2]),
        json!({"LastName": "Caller", "Company": "Patient", "Phone": "+15550100", "LeadSource": "Phone"})
    );
}

#[tokio::test]
async fn a_duplicate_lead_is_updated_without_placeholders() {
    let sf = MockServer::start().await;
    token(&sf, "tok-1", 1).await;
    query_finds(
        &sf,
        json!([{"attributes": {"type": "Lead", "url": "/services/data/v60.0/sobjects/Lead/00Q1"}, "Id": "00Q1"}]),
    )
    .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{API}/sobjects/Lead/00Q1")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&sf)
        .await;
    let handler = testing::build::<SalesforceFactory>("sf", &client_credentials(&sf.uri(), ""));
    let event = testing::event_from_json(
        r#"{"caller": {"email": "ann@example.com", "name": "Ann"}, "data": {"ai_summary": "follow-up"}}"#,
    );

    let outcome = testing::run(&*handler, &event).await.expect_ok();

    assert_eq!(
        outcome.data,
        Some(json!({"lead_id": "00Q1", "created": false}))
    );
    assert_eq!(outcome.status, Some(204));
    let reqs = received(&sf).await;
    assert_eq!(reqs.len(), 3, "token, query, patch: no create");
    assert_eq!(
        body(&reqs[2]),
        json!({"LastName": "Ann", "Email": "ann@example.com", "Description": "follow-up", "LeadSource": "AI Receptionist"}),
        "no fallback Company over the real one"
    );
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_then_succeeds() {
    let sf = MockServer::start().await;
    token(&sf, "tok-old", 1).await;
    token(&sf, "tok-new", 1).await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(header("authorization", "Bearer tok-old"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!([
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ])))
        .mount(&sf)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/query")))
        .and(header("authorization", "Bearer tok-new"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"totalSize": 0, "done": true, "records": []})),
        )
        .mount(&sf)
        .await;
    lead_created(&sf).await;
    let handler = testing::build::<SalesforceFactory>("sf", &refresh_token(&sf.uri()));

    testing::run(&*handler, &event()).await.expect_ok();
    // The new token stays cached for the next delivery.
    testing::run(&*handler, &event()).await.expect_ok();

    let reqs = received(&sf).await;
    let tokens: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.url.path() == "/services/oauth2/token")
        .collect();
    assert_eq!(
        tokens.len(),
        2,
        "one initial fetch, one refresh, then cached"
    );
    assert_eq!(
        form(tokens[1]),
        pairs(&[
            ("grant_type", "refresh_token"),
            ("client_id", "3MVG9-consumer-key"),
            ("refresh_token", "sf-refresh-token"),
        ])
    );
    let creates: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/Lead"))
        .collect();
    assert_eq!(creates.len(), 2);
    for c in creates {
        assert_eq!(c.headers.get("authorization").unwrap(), "Bearer tok-new");
    }
}

#[tokio::test]
async fn a_token_refused_after_refresh_is_permanent() {
    let sf = MockServer::start().await;
    token(&sf, "tok", 5).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!([
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ])))
        .expect(2)
        .mount(&sf)
        .await;
    let handler = testing::build::<SalesforceFactory>("sf", &client_credentials(&sf.uri(), ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert!(
        reason.starts_with("HTTP 401 from 127.0.0.1 with a freshly issued token"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_refused_refresh_token_is_permanent() {
    let sf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "expired access/refresh token"
        })))
        .mount(&sf)
        .await;
    let handler = testing::build::<SalesforceFactory>("sf", &refresh_token(&sf.uri()));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert_eq!(
        reason,
        "OAuth2 token endpoint 127.0.0.1 refused the credentials (HTTP 400: invalid_grant)"
    );
}

#[tokio::test]
async fn a_validation_error_is_permanent_with_the_error_code_only() {
    let sf = MockServer::start().await;
    token(&sf, "tok-1", 1).await;
    query_finds(&sf, json!([])).await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/sobjects/Lead")))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([
            {"message": "Email: invalid email address: john.o'doe@example.com", "errorCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"]}
        ])))
        .mount(&sf)
        .await;
    let handler = testing::build::<SalesforceFactory>("sf", &client_credentials(&sf.uri(), ""));

    let reason = testing::run(&*handler, &event()).await.expect_permanent();

    assert_eq!(reason, "HTTP 400 from 127.0.0.1: INVALID_EMAIL_ADDRESS");
}

#[tokio::test]
async fn rate_limits_and_outages_are_retryable() {
    let sf = MockServer::start().await;
    token(&sf, "tok-1", 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!([
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ])))
        .up_to_n_times(1)
        .mount(&sf)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "20"))
        .up_to_n_times(1)
        .mount(&sf)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "120"))
        .mount(&sf)
        .await;
    let handler = testing::build::<SalesforceFactory>("sf", &client_credentials(&sf.uri(), ""));

    let first = testing::run(&*handler, &event()).await;
    assert!(
        matches!(&first, Err(e) if e.reason() == "HTTP 403 from 127.0.0.1: REQUEST_LIMIT_EXCEEDED"),
        "{first:?}"
    );
    first.expect_retryable();
    assert_eq!(
        testing::run(&*handler, &event()).await.expect_retryable(),
        Some(Duration::from_secs(20))
    );
    let third = testing::run(&*handler, &event()).await;
    assert!(
        matches!(&third, Err(e) if e.reason() == "HTTP 503 from 127.0.0.1"),
        "{third:?}"
    );
    assert_eq!(third.expect_retryable(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn a_token_endpoint_outage_is_retryable() {
    let sf = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sf)
        .await;
    let handler = testing::build::<SalesforceFactory>("sf", &client_credentials(&sf.uri(), ""));
    testing::run(&*handler, &event()).await.expect_retryable();
}

#[test]
fn config_problems_carry_key_paths() {
    let problems = testing::try_build::<SalesforceFactory>(
        "sf",
        r#"phi = "full"
baa = true
instance_url = "http://clinic.my.salesforce.com"
api_version = "60"
fallback_company = " "
[fields]
"Bad Name" = "x"
[auth]
flow = "client_credentials"
token_url = "https://login.salesforce.com/services/oauth2/token"
client_id = "id"
client_secret = "env:WARDHOOK_SF_TEST_SURELY_UNSET"
"#,
    )
    .expect_err("problems");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "instance_url",
            "api_version",
            "fallback_company",
            "fields.Bad Name",
            "auth.client_secret"
        ],
        "{problems:?}"
    );

    let problems = testing::try_build::<SalesforceFactory>(
        "sf",
        "phi = \"full\"\nbaa = true\ninstance_url = \"https://x.my.salesforce.com\"\n[auth]\nflow = \"password\"",
    )
    .expect_err("unknown flow");
    assert_eq!(problems[0].path, "auth.flow", "{problems:?}");
}

#[test]
fn without_a_baa_it_refuses_to_build() {
    let problems = testing::try_build::<SalesforceFactory>(
        "sf",
        &client_credentials("https://x.my.salesforce.com", ""),
    )
    .err()
    .map(|p| p.len());
    assert_eq!(problems, None, "phi = full + baa builds");
    let toml = client_credentials("https://x.my.salesforce.com", "")
        .replace("phi = \"full\"\nbaa = true\n", "");
    let problems = testing::try_build::<SalesforceFactory>("sf", &toml).expect_err("phi none");
    assert!(
        problems[0].message.contains("phi = \"none\""),
        "{problems:?}"
    );
}

#[tokio::test]
async fn an_instance_resolving_to_a_private_address_is_refused_permanently_unless_listed() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let base = format!("http://localhost:{}", server.address().port());

    let refused = testing::build::<SalesforceFactory>("sf", &client_credentials(&base, ""));
    let reason = testing::run(&*refused, &event()).await.expect_permanent();
    assert!(
        reason.starts_with("egress to localhost refused") && reason.contains("allow_hosts"),
        "{reason}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());

    let listed = testing::build::<SalesforceFactory>(
        "sf",
        &client_credentials(&base, "allow_hosts = [\"localhost\"]"),
    );
    testing::run(&*listed, &event()).await.expect_retryable();
    assert!(
        !server.received_requests().await.unwrap().is_empty(),
        "the listed name is reached"
    );
}
