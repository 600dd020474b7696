//! Environment proxy variables are not used: a proxy would resolve the destination itself, out
//! of reach of the egress allowlist. Its own test binary, because it sets process-wide
//! environment variables.

use wardhook_handler_http::HttpFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn proxy_environment_variables_are_ignored() {
    let proxy = MockServer::start().await;
    let destination = MockServer::start().await;
    for server in [&proxy, &destination] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, proxy.uri());
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    // Built after the variables are set: reqwest reads them when a client is built.
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            "url = \"http://localhost:{}/hook\"\nallow_hosts = [\"localhost\"]",
            destination.address().port()
        ),
    );

    testing::run(&*handler, &testing::event_from_json("{}"))
        .await
        .expect_ok();

    assert_eq!(
        destination
            .received_requests()
            .await
            .expect("recording")
            .len(),
        1
    );
    assert!(proxy
        .received_requests()
        .await
        .expect("recording")
        .is_empty());
}
