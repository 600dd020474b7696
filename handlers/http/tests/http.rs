//! The http handler against real local HTTP servers (wiremock).

use std::time::Duration;

use wardhook_handler_http::HttpFactory;
use wardhook_sdk::testing::{self, ResultExt};
use wardhook_sdk::{Context, Event};
use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn event() -> Event {
    testing::event_from_json(
        r#"{
            "delivery_id": "dlv_7",
            "event_type": "call.ended",
            "call_id": "call_42",
            "caller": {"phone": "+1 (555) 123-4567", "name": "\"; DROP TABLE patients; --"},
            "data": {"duration_seconds": 135, "ai_summary": "wants a quote"}
        }"#,
    )
}

fn secret_file(dir: &tempfile_dir::TempDir, name: &str, value: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, value).expect("write secret");
    format!("file:{}", p.display())
}

mod tempfile_dir {
    pub use tempfile_impl::TempDir;
    mod tempfile_impl {
        /// A throwaway folder for secret files, removed on drop.
        #[derive(Debug)]
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new(tag: &str) -> Self {
                let p = std::env::temp_dir()
                    .join(format!("wardhook-http-test-{tag}-{}", std::process::id()));
                std::fs::create_dir_all(&p).expect("mkdir");
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

#[tokio::test]
async fn templated_request_is_sent_as_configured() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api/leads/call_42"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "L-1"})))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile_dir::TempDir::new("templated");
    let token = secret_file(&dir, "token", "tok-123\n");
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            r#"
            phi = "full"
            baa = true
            method = "put"
            url = "{uri}/api/leads/{{{{ call_id }}}}"
            query = {{ phone = "{{{{ caller.phone }}}}", kind = "[caller_number]x" }}
            headers = {{ "X-Event" = "{{{{ event_type }}}}" }}
            auth = {{ type = "bearer", token = "{token}" }}
            body = '{{"name": "{{{{ caller.name }}}}", "seconds": {{{{ data.duration_seconds }}}}, "notes": "{{{{ data.ai_summary }}}}"}}'
            "#,
            uri = server.uri()
        ),
    );

    let outcome = testing::run(&*handler, &event()).await.expect_ok();

    assert_eq!(outcome.status, Some(201));
    assert_eq!(outcome.data, Some(serde_json::json!({"id": "L-1"})));
    assert_eq!(outcome.destination.as_deref(), Some("127.0.0.1"));
    let requests = server.received_requests().await.expect("recording");
    let req: &Request = &requests[0];
    let h = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(req.method.as_str(), "PUT");
    assert_eq!(req.url.path(), "/api/leads/call_42");
    assert_eq!(
        req.url.query(),
        Some("kind=%2B1%20%28555%29%20123-4567x&phone=%2B1%20%28555%29%20123-4567")
    );
    assert_eq!(h("authorization").as_deref(), Some("Bearer tok-123"));
    assert_eq!(h("idempotency-key").as_deref(), Some("dlv_7:crm"));
    assert_eq!(h("x-event").as_deref(), Some("call.ended"));
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("valid JSON body");
    assert_eq!(
        body,
        serde_json::json!({"name": "\"; DROP TABLE patients; --", "seconds": 135, "notes": "wants a quote"})
    );
}

async fn status_result(
    status: ResponseTemplate,
) -> Result<wardhook_sdk::Outcome, wardhook_sdk::HandlerError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(status)
        .mount(&server)
        .await;
    let handler =
        testing::build::<HttpFactory>("crm", &format!(r#"url = "{}/hook""#, server.uri()));
    testing::run(&*handler, &event()).await
}

#[tokio::test]
async fn a_503_is_retryable() {
    let result =
        status_result(ResponseTemplate::new(503).set_body_string("down for patient +1555")).await;
    let err = result.as_ref().expect_err("503");
    assert_eq!(err.reason(), "HTTP 503 from 127.0.0.1");
    assert_eq!(result.expect_retryable(), None);
}

#[tokio::test]
async fn a_429_with_retry_after_is_retryable_with_that_delay() {
    let result = status_result(ResponseTemplate::new(429).insert_header("Retry-After", "42")).await;
    assert_eq!(result.expect_retryable(), Some(Duration::from_secs(42)));
}

#[tokio::test]
async fn a_400_is_permanent() {
    let reason = status_result(ResponseTemplate::new(400).set_body_string("bad phone +1555"))
        .await
        .expect_permanent();
    assert_eq!(reason, "HTTP 400 from 127.0.0.1");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let reason = status_result(
        ResponseTemplate::new(302).insert_header("Location", "https://elsewhere.example/"),
    )
    .await
    .expect_permanent();
    assert_eq!(reason, "HTTP 302 from 127.0.0.1");
}

#[tokio::test]
async fn a_refused_connection_and_a_timeout_are_retryable() {
    // Port 9 on loopback: nothing listens there.
    let handler = testing::build::<HttpFactory>("crm", r#"url = "http://127.0.0.1:9/hook""#);
    testing::run(&*handler, &event()).await.expect_retryable();

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!("url = \"{}/slow\"\ntimeout_secs = 1", server.uri()),
    );
    let result = testing::run(&*handler, &event()).await;
    assert_eq!(
        result.as_ref().expect_err("timeout").reason(),
        "timeout talking to 127.0.0.1"
    );
}

#[tokio::test]
async fn oauth2_token_is_fetched_once_and_refreshed_once_on_401() {
    let server = MockServer::start().await;
    let dir = tempfile_dir::TempDir::new("oauth");
    let secret = secret_file(&dir, "client_secret", "s3cret");
    // Token endpoint: first tok-1, then tok-2; exactly two fetches over three deliveries.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string(
            "grant_type=client_credentials&client_id=wardhook&client_secret=s3cret&scope=leads.write",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "tok-1", "token_type": "bearer", "expires_in": 3600}),
        ))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "tok-2", "expires_in": 3600})),
        )
        .expect(1)
        .mount(&server)
        .await;
    // The API accepts tok-1 once, then rejects it (revoked); tok-2 always works.
    Mock::given(path("/api"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            r#"
            url = "{uri}/api"
            auth = {{ type = "oauth2", token_url = "{uri}/oauth/token", client_id = "wardhook", client_secret = "{secret}", scope = "leads.write" }}
            "#,
            uri = server.uri()
        ),
    );

    for _ in 0..3 {
        testing::run(&*handler, &event()).await.expect_ok();
    }
    // `expect` counts are verified when the server drops.
}

#[tokio::test]
async fn a_second_401_after_refresh_is_permanent() {
    let server = MockServer::start().await;
    let dir = tempfile_dir::TempDir::new("oauth401");
    let secret = secret_file(&dir, "client_secret", "s3cret");
    Mock::given(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "t"})),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/api"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            r#"
            url = "{uri}/api"
            auth = {{ type = "oauth2", token_url = "{uri}/oauth/token", client_id = "c", client_secret = "{secret}" }}
            "#,
            uri = server.uri()
        ),
    );
    let reason = testing::run(&*handler, &event()).await.expect_permanent();
    assert_eq!(reason, "HTTP 401 from 127.0.0.1");
}

#[tokio::test]
async fn chaining_passes_an_earlier_handlers_response_to_a_later_url_and_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/leads"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "CUST-9"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/tickets/CUST-9"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let crm = testing::build::<HttpFactory>(
        "crm",
        &format!(
            "phi = \"full\"\nbaa = true\nurl = \"{}/crm/leads\"\nbody = '{{\"phone\": \"{{{{ caller.phone }}}}\"}}'",
            server.uri()
        ),
    );
    let tickets = testing::build::<HttpFactory>(
        "tickets",
        &format!(
            "phi = \"full\"\nbaa = true\nurl = \"{}/tickets/{{{{ app_data.crm.data.id }}}}\"\nbody = '{{\"customer\": \"{{{{ app_data.crm.data.id }}}}\", \"status\": {{{{ app_data.crm.status }}}}}}'",
            server.uri()
        ),
    );
    let event = event();
    // What the dispatcher does between the handlers of one route.
    let mut ctx = Context::new(&event.delivery_id, crm.name(), 1);
    let first = crm.handle(&event, &mut ctx).await.expect_ok();
    let mut ctx2 =
        Context::new(&event.delivery_id, tickets.name(), 1).with_app_data(ctx.app_data().clone());
    ctx2.record_output(crm.name(), &first);
    tickets.handle(&event, &mut ctx2).await.expect_ok();

    let requests = server.received_requests().await.expect("recording");
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"customer": "CUST-9", "status": 201})
    );
}

#[tokio::test]
async fn form_and_text_bodies_are_encoded_for_their_content_type() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let form = testing::build::<HttpFactory>(
        "form",
        &format!(
            "url = \"{}/form\"\nform = {{ event = \"{{{{ event_type }}}}\", secs = \"{{{{ data.duration_seconds }}}} s&more\" }}",
            server.uri()
        ),
    );
    testing::run(&*form, &event()).await.expect_ok();
    let text = testing::build::<HttpFactory>(
        "text",
        &format!(
            "url = \"{}/text\"\nbody_format = \"text\"\nbody = \"Callback requested ({{{{ event_type }}}})\"",
            server.uri()
        ),
    );
    testing::run(&*text, &event()).await.expect_ok();

    let requests = server.received_requests().await.expect("recording");
    assert_eq!(
        requests[0]
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        std::str::from_utf8(&requests[0].body).expect("utf8"),
        "event=call.ended&secs=135+s%26more"
    );
    assert_eq!(
        std::str::from_utf8(&requests[1].body).expect("utf8"),
        "Callback requested (call.ended)"
    );
}

#[tokio::test]
async fn a_variable_the_event_lacks_is_permanent_and_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            "phi = \"full\"\nbaa = true\nurl = \"{}/x\"\nbody = '{{\"email\": \"{{{{ caller.email }}}}\"}}'",
            server.uri()
        ),
    );
    let reason = testing::run(&*handler, &event()).await.expect_permanent();
    assert_eq!(
        reason,
        "body: template variable `caller.email` is undefined for this event"
    );
}

#[tokio::test]
async fn a_phi_none_handler_sees_no_phi_even_through_safe_looking_templates() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    // `data | tojson` would be rejected; a safe key is allowed and the rest is gone anyway.
    let slack = testing::build::<HttpFactory>(
        "slack",
        &format!(
            "url = \"{}/slack\"\nbody = '{{\"text\": \"Callback requested from a new caller ({{{{ data.duration_seconds }}}} s)\"}}'",
            server.uri()
        ),
    );
    testing::run(&*slack, &event()).await.expect_ok();
    let requests = server.received_requests().await.expect("recording");
    let body = std::str::from_utf8(&requests[0].body).expect("utf8");
    assert_eq!(
        body,
        r#"{"text": "Callback requested from a new caller (135 s)"}"#
    );
}

#[test]
fn config_problems_carry_key_paths() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"url = "https://hooks.slack.example/x"
               body = '{"text": "{{ caller.phone }}"}'"#,
            "body",
            "references the PHI field `caller.phone`",
        ),
        (
            r#"url = "https://crm.example/{{ event.calling_number }}""#,
            "url",
            "references the PHI field `event.calling_number`",
        ),
        (
            r#"url = "http://crm.example/leads""#,
            "url",
            "must use https://",
        ),
        (
            r#"url = "https://crm.example/leads"
               auth = { type = "bearer", token = "plaintext-token" }"#,
            "auth.token",
            "env:NAME",
        ),
        (
            r#"url = "https://crm.example/leads"
               auth = { type = "bearer", token = "env:WARDHOOK_HTTP_TEST_UNSET" }"#,
            "auth.token",
            "env var WARDHOOK_HTTP_TEST_UNSET is not set",
        ),
        (
            r#"url = "https://crm.example/leads"
               bodyy = "x""#,
            "bodyy",
            "unknown field `bodyy`",
        ),
        (
            r#"phi = "full"
               url = "https://crm.example/leads""#,
            "phi",
            "requires baa = true",
        ),
        (
            r#"url = "https://crm.example/{{ caller.fone }}""#,
            "url",
            "unknown variable `caller.fone`",
        ),
        (
            r#"url = "https://crm.example/leads"
               ca_file = "/nonexistent/ca.pem""#,
            "ca_file",
            "cannot read",
        ),
    ];
    for (toml, want_path, want_msg) in cases {
        let problems = match testing::try_build::<HttpFactory>("h", toml) {
            Ok(_) => panic!("expected a problem for {toml}"),
            Err(p) => p,
        };
        assert!(
            problems
                .iter()
                .any(|p| p.path == *want_path && p.message.contains(want_msg)),
            "{toml}\n got {problems:?}"
        );
    }
}

/// The path of a request as the destination saw it, one decoded string per segment.
fn decoded_segments(req: &Request) -> Vec<String> {
    req.url
        .path_segments()
        .expect("a path")
        .map(|s| {
            let bytes = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("utf-8")
        })
        .collect()
}

#[tokio::test]
async fn a_payload_value_never_leaves_its_path_segment() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            "phi = \"full\"\nbaa = true\nurl = \"{}/api/patients/{{{{ data.id }}}}/notes\"",
            server.uri()
        ),
    );
    // (value, sent?) — a value that would make the segment empty, `.` or `..` is refused
    // permanently and nothing is sent; every other value arrives as exactly itself, in place.
    let cases: &[(&str, bool)] = &[
        (".", false),
        ("..", false),
        ("", false),
        ("/", true),
        ("%2e", true),
        ("%2e%2e", true),
        (".%2E", true),
        ("...", true),
        ("../../admin", true),
        ("a/b", true),
        ("?x=1", true),
        ("#frag", true),
        ("\\..\\admin", true),
        ("ünïcødé ☎", true),
        ("@127.0.0.1:9", true),
        ("//127.0.0.1:9/x", true),
        ("1 OR 1=1", true),
    ];
    for (value, sent) in cases {
        let before = server.received_requests().await.expect("recording").len();
        let event =
            testing::event_from_json(&serde_json::json!({"data": {"id": value}}).to_string());
        let result = testing::run(&*handler, &event).await;
        let requests = server.received_requests().await.expect("recording");
        if *sent {
            result.expect_ok();
            assert_eq!(requests.len(), before + 1, "{value:?}");
            let req = requests.last().expect("a request");
            assert_eq!(
                decoded_segments(req),
                ["api", "patients", value, "notes"],
                "{value:?} arrived as {}",
                req.url
            );
            assert_eq!(req.url.query(), None, "{value:?}");
        } else {
            let reason = result.expect_permanent();
            assert!(reason.contains("path segment 3"), "{value:?}: {reason}");
            assert_eq!(requests.len(), before, "{value:?} must not be sent");
        }
    }
}

#[test]
fn a_url_whose_scheme_or_host_is_templated_is_refused_at_config_time() {
    for url in [
        "{{ data.callback_url }}",
        "https://{{ data.host }}/notes",
        "http://127.0.0.1:{{ data.port }}/notes",
        "https://crm.example{{ data.path }}",
    ] {
        let problems = match testing::try_build::<HttpFactory>("h", &format!("url = {url:?}")) {
            Ok(_) => panic!("{url} must be refused"),
            Err(p) => p,
        };
        assert!(
            problems
                .iter()
                .any(|p| p.path == "url" && p.message.contains("scheme and host")),
            "{url}: {problems:?}"
        );
    }
}

#[tokio::test]
async fn a_handler_cannot_be_steered_to_another_host_by_a_payload_value_or_a_redirect() {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/redirect"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("Location", format!("{}/hook", b.uri())),
        )
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&b)
        .await;
    let b_port = b.address().port();
    let handler = testing::build::<HttpFactory>(
        "crm",
        &format!(
            "phi = \"full\"\nbaa = true\nurl = \"{}/hook/{{{{ data.target }}}}\"",
            a.uri()
        ),
    );
    for target in [
        b.uri(),
        format!("@127.0.0.1:{b_port}"),
        format!("//127.0.0.1:{b_port}/hook"),
        format!("127.0.0.1:{b_port}"),
        format!("..%2F..%2F@127.0.0.1:{b_port}"),
    ] {
        let event =
            testing::event_from_json(&serde_json::json!({"data": {"target": target}}).to_string());
        testing::run(&*handler, &event).await.expect_ok();
        let last = a.received_requests().await.expect("recording");
        let last = last.last().expect("A got it");
        assert_eq!(decoded_segments(last), ["hook", target.as_str()]);
    }
    let redirecting =
        testing::build::<HttpFactory>("crm", &format!("url = \"{}/redirect\"", a.uri()));
    let reason = testing::run(&*redirecting, &testing::event_from_json("{}"))
        .await
        .expect_permanent();
    assert!(reason.contains("HTTP 307"), "{reason}");
    assert!(
        b.received_requests().await.expect("recording").is_empty(),
        "host B was reached"
    );
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_permanently_unless_listed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    // `localhost` is a name that resolves to 127.0.0.1: a private (loopback) address.
    let url = format!("http://localhost:{}/hook", server.address().port());
    let build = |allow: &str| {
        testing::build::<HttpFactory>("crm", &format!("url = \"{url}\"\nallow_hosts = [{allow}]"))
    };
    for allow in ["", r#""10.0.0.0/8""#, r#""crm.internal""#] {
        let reason = testing::run(&*build(allow), &testing::event_from_json("{}"))
            .await
            .expect_permanent();
        assert!(
            reason.starts_with("egress to localhost refused") && reason.contains("allow_hosts"),
            "{allow}: {reason}"
        );
    }
    assert!(server
        .received_requests()
        .await
        .expect("recording")
        .is_empty());

    for allow in [
        r#""127.0.0.0/8""#,
        r#""localhost""#,
        r#""127.0.0.1", "::1""#,
    ] {
        testing::run(&*build(allow), &testing::event_from_json("{}"))
            .await
            .expect_ok();
    }
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        3
    );
}

#[test]
fn allow_hosts_entries_are_checked_at_config_time() {
    let problems = testing::try_build::<HttpFactory>(
        "crm",
        r#"url = "https://crm.example/leads"
           allow_hosts = ["crm.internal", "https://crm.internal/", "10.0.0.0/8", "*.internal", "0.0.0.0/0"]"#,
    )
    .expect_err("bad entries");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["allow_hosts[1]", "allow_hosts[3]", "allow_hosts[4]"]
    );
}
