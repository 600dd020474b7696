//! The example adapter, tested offline with the SDK harness and a local HTTP server.

use wardhook_handler_example_crm::ExampleCrmFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(uri: &str) -> String {
    format!("phi = \"full\"\nbaa = true\nbase_url = \"{uri}\"\napi_key = \"file:tests/fixtures/api_key\"")
}

#[tokio::test]
async fn creates_a_lead_and_passes_its_id_on() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/leads"))
        .and(header("x-api-key", "test-key"))
        .and(header("idempotency-key", "dlv_test:crm"))
        .and(body_json(serde_json::json!({
            "phone": "+15551234567", "name": "Pat Doe", "call_id": "call_1", "reason": "call.ended"
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "L-77"})))
        .expect(1)
        .mount(&crm)
        .await;
    let handler = testing::build::<ExampleCrmFactory>("crm", &config(&crm.uri()));
    let event = testing::event_from_file("tests/fixtures/call_ended.json");

    let outcome = testing::run(&*handler, &event).await.expect_ok();

    assert_eq!(outcome.data, Some(serde_json::json!({"lead_id": "L-77"})));
}

#[tokio::test]
async fn a_crm_outage_is_retryable() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "30"))
        .mount(&crm)
        .await;
    let handler = testing::build::<ExampleCrmFactory>("crm", &config(&crm.uri()));
    let event = testing::event_from_file("tests/fixtures/call_ended.json");

    let delay = testing::run(&*handler, &event).await.expect_retryable();

    assert_eq!(delay, Some(std::time::Duration::from_secs(30)));
}

#[test]
fn refuses_to_run_without_a_baa() {
    let problems = testing::try_build::<ExampleCrmFactory>(
        "crm",
        "base_url = \"https://crm.example\"\napi_key = \"file:tests/fixtures/api_key\"",
    )
    .expect_err("phi = none");
    assert!(
        problems[0].message.contains("`caller.phone`"),
        "{problems:?}"
    );
}
