//! Real-time routes: a CRM lookup answers the sender within the deadline; a hung CRM yields the
//! fallback on time; a retried request gets the identical reply without a second lookup; the
//! cache answers a repeat caller without an outbound request; replies to a non-BAA sender cannot
//! use PHI.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

pub(crate) fn realtime_config(crm: &str, deadline_ms: u64, cache: bool) -> String {
    let cache = if cache {
        "cache = { key = \"{{ caller.phone }}\", ttl_secs = 60, max_entries = 100 }\n"
    } else {
        ""
    };
    format!(
        r#"
[[handlers]]
name = "lookup"
kind = "http"
phi = "full"
baa = true
method = "GET"
url = "{crm}/contacts"
query = {{ phone = "{{{{ caller.phone }}}}" }}
capture_response = true
timeout_secs = 5

[[routes]]
source = "demo"
events = ["call.incoming"]
mode = "realtime"
handlers = ["lookup"]
baa = true
deadline_ms = {deadline_ms}
respond = '{{"greeting": "Hello {{{{ app_data.lookup.data.first_name }}}}", "vip": "{{{{ app_data.lookup.data.vip }}}}"}}'
fallback = '{{"greeting": "Hello, thanks for calling"}}'
{cache}"#
    )
}

pub(crate) async fn ring(app: &TestApp, call: &str, phone: &str) -> (u16, Value, String, Duration) {
    let body = format!(
        r#"{{"event":"call.incoming","data":{{"call_id":"{call}","caller":{{"phone":"{phone}"}}}}}}"#
    );
    let t0 = Instant::now();
    let res = app
        .client()
        .post(app.url("/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("x-wardhook-reply")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let v: Value = res.json().await.unwrap();
    (status, v, kind, t0.elapsed())
}

pub(crate) async fn crm_answering(delay: Duration) -> MockServer {
    let crm = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(query_param("phone", "+15555550142"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"first_name": "Dana", "vip": "yes"}))
                .set_delay(delay),
        )
        .mount(&crm)
        .await;
    crm
}

async fn app(extra: String) -> TestApp {
    spawn_app_with(AppOptions {
        extra: format!("[dispatch]\nworkers = 0\n{extra}"),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_lookup_answers_the_sender_within_the_deadline() {
    let crm = crm_answering(Duration::ZERO).await;
    let app = app(realtime_config(&crm.uri(), 2000, false)).await;
    let (status, reply, kind, elapsed) = ring(&app, "rt-1", "+15555550142").await;
    assert_eq!(status, 200);
    assert_eq!(kind, "computed");
    assert_eq!(reply["greeting"], "Hello Dana");
    assert_eq!(reply["vip"], "yes");
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_crm_yields_the_fallback_on_time() {
    let crm = crm_answering(Duration::from_secs(10)).await;
    let app = app(realtime_config(&crm.uri(), 400, false)).await;
    let (status, reply, kind, elapsed) = ring(&app, "rt-2", "+15555550142").await;
    assert_eq!(status, 200);
    assert_eq!(kind, "fallback");
    assert_eq!(reply["greeting"], "Hello, thanks for calling");
    // 400 ms budget; allow generous scheduling margin on a loaded 2-core machine.
    assert!(
        elapsed < Duration::from_millis(900),
        "fallback late: {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "fallback too early: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_gets_the_identical_reply_without_a_second_lookup() {
    let crm = crm_answering(Duration::ZERO).await;
    let app = app(realtime_config(&crm.uri(), 2000, false)).await;
    let first = ring(&app, "rt-3", "+15555550142").await;
    let again = ring(&app, "rt-3", "+15555550142").await;
    assert_eq!(first.1, again.1);
    assert_eq!(again.2, "computed", "the stored reply keeps its kind");
    assert_eq!(crm.received_requests().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_a_repeat_caller_without_an_outbound_request() {
    let crm = crm_answering(Duration::ZERO).await;
    let app = app(realtime_config(&crm.uri(), 2000, true)).await;
    let (_, first, _, _) = ring(&app, "rt-4a", "+15555550142").await;
    let (_, second, kind, elapsed) = ring(&app, "rt-4b", "+15555550142").await;
    assert_eq!(first, second);
    assert_eq!(kind, "computed");
    assert_eq!(
        crm.received_requests().await.unwrap().len(),
        1,
        "second call served from cache"
    );
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
}

#[test]
fn a_reply_to_a_sender_without_a_baa_cannot_use_phi() {
    let fixture = write_fixture(&AppOptions {
        extra: realtime_config("http://127.0.0.1:9", 2000, false)
            .replace("baa = true\ndeadline_ms", "deadline_ms"),
        ..AppOptions::default()
    });
    let err = wardhook::config::Config::load_with_base(&fixture.config_path, fixture.dir.path())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("routes[0].respond: uses PHI field app_data.lookup.data.first_name"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_misses_and_reply_kinds_are_in_the_metrics() {
    let crm = crm_answering(Duration::ZERO).await;
    let app = app(realtime_config(&crm.uri(), 2000, true)).await;
    ring(&app, "rt-m1", "+15555550142").await;
    ring(&app, "rt-m2", "+15555550142").await;
    let text = wardhook::metrics::render(&[]);
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // The registry is process-wide and other tests use the cache too: at least this test's.
    assert!(
        value("wardhook_realtime_cache_total{result=\"hit\"}") >= 1.0,
        "{text}"
    );
    assert!(
        value("wardhook_realtime_cache_total{result=\"miss\"}") >= 1.0,
        "{text}"
    );
    assert!(value("wardhook_realtime_replies_total{source=\"demo\",reply=\"computed\"}") >= 2.0);
}

#[test]
fn a_retell_route_falls_back_to_its_documented_empty_reply_others_must_say() {
    let route = |source: &str| {
        format!(
            "[[handlers]]\nname = \"lookup\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n\n[[routes]]\nsource = \"{source}\"\nmode = \"realtime\"\nhandlers = [\"lookup\"]\nrespond = '{{\"ok\": \"yes\"}}'\n"
        )
    };
    let sources = "[[sources]]\nname = \"demo\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\n\n[[sources]]\nname = \"retell\"\npreset = \"retell\"\nsecrets = [\"file:demo.secret\"]\n";
    let fixture = write_fixture(&AppOptions {
        sources: Some(sources.into()),
        extra: route("retell"),
        ..AppOptions::default()
    });
    let config =
        wardhook::config::Config::load_with_base(&fixture.config_path, fixture.dir.path()).unwrap();
    let rt = config.routes[0].realtime.as_ref().unwrap();
    assert_eq!(rt.fallback, r#"{"call_inbound": {}}"#);

    let fixture = write_fixture(&AppOptions {
        sources: Some(sources.into()),
        extra: route("demo"),
        ..AppOptions::default()
    });
    let err = wardhook::config::Config::load_with_base(&fixture.config_path, fixture.dir.path())
        .unwrap_err();
    assert!(err.to_string().contains("routes[0].fallback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_handler_of_the_same_call_still_runs_after_a_real_time_reply() {
    let crm = crm_answering(Duration::ZERO).await;
    Mock::given(method("POST"))
        .and(path("/notes"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&crm)
        .await;
    let background = format!(
        r#"
[[handlers]]
name = "notes"
kind = "http"
phi = "full"
baa = true
url = "{}/notes"

[[routes]]
source = "demo"
events = ["call.incoming"]
handlers = ["notes"]
"#,
        crm.uri()
    );
    let app = app(format!(
        "{}{background}",
        realtime_config(&crm.uri(), 2000, false)
    ))
    .await;
    let (status, _, kind, _) = ring(&app, "rt-bg", "+15555550142").await;
    assert_eq!((status, kind.as_str()), (200, "computed"));
    // The stored reply sits beside the background job; loading the job's app_data must not
    // try to open the reply as a handler output.
    let step = app.dispatcher.try_execute_task().await.unwrap();
    assert!(
        matches!(step, wardhook::dispatch::worker::TaskOutcome::Done { .. }),
        "{step:?}"
    );
}
