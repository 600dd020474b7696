//! Dispatch: routes, templated requests to real local HTTP servers, retries, `Retry-After`,
//! dead letters and their retry, chaining, filters, the circuit breaker, and a crash mid-attempt.
//! Worker steps are driven with `try_execute_task` (no sleeping) wherever timing is not the
//! point.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use wardhook::dispatch::worker::{CircuitState, TaskOutcome};
use wardhook::store::admin::Requester;
use wardhook::store::jobs::{self, DeadFilter};
use wardhook::store::{Store, StoreOptions};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;

/// An app with `handlers_and_routes` appended and background workers off, so the test drives
/// every step.
async fn app_with(handlers_and_routes: &str, dispatch: &str) -> TestApp {
    spawn_app_with(AppOptions {
        extra: format!("[dispatch]\nworkers = 0\n{dispatch}\n{handlers_and_routes}"),
        ..AppOptions::default()
    })
    .await
}

fn call_ended(call: &str, call_type: &str) -> String {
    format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call}","call_type":"{call_type}","caller":{{"name":"Dana \"Quote\" Smith","phone":"+15550100"}},"ai_summary":"wants a quote"}}}}"#
    )
}

/// Run steps until the queue is idle; return what each step did.
async fn drain(app: &TestApp) -> Vec<TaskOutcome> {
    let mut out = Vec::new();
    for _ in 0..50 {
        match app.dispatcher.try_execute_task().await.unwrap() {
            TaskOutcome::Idle => return out,
            o => out.push(o),
        }
    }
    panic!("queue never went idle: {out:?}");
}

fn crm_handler(url: &str) -> String {
    format!(
        r#"
[[handlers]]
name = "crm"
kind = "http"
phi = "full"
baa = true
url = "{url}/api/leads"
body = '{{"phone": "{{{{ caller.phone }}}}", "name": "{{{{ caller.name }}}}", "notes": "{{{{ data.ai_summary }}}}"}}'
capture_response = true

[[routes]]
source = "demo"
events = ["call.ended"]
handlers = ["crm"]
"#
    )
}

fn open_store(app: &TestApp) -> Store {
    let key = wardhook::crypto::MasterKey::load(&app.dir.path().join("master.key")).unwrap();
    Store::open(
        &app.dir.path().join("data/wardhook.db"),
        wardhook::crypto::Keyring::from_master(&key),
        StoreOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_routed_event_reaches_the_crm_as_configured_with_an_idempotency_key() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/leads"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "C-1"})))
        .expect(1)
        .mount(&crm)
        .await;
    let app = app_with(&crm_handler(&crm.uri()), "").await;
    let delivery_id = deliver(&app, &call_ended("call-1", "quote_request")).await;

    assert_eq!(drain(&app).await.len(), 1);
    let requests = crm.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent["phone"], "+15550100");
    assert_eq!(
        sent["name"], "Dana \"Quote\" Smith",
        "JSON-escaped, document intact"
    );
    assert_eq!(sent["notes"], "wants a quote");
    assert_eq!(
        requests[0].headers.get("idempotency-key").unwrap(),
        format!("{delivery_id}:crm").as_str()
    );
}

#[tokio::test]
async fn a_503_is_retried_then_succeeds() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let app = app_with(
        &crm_handler(&crm.uri()),
        r#"retry_schedule = ["0s", "0s", "0s"]"#,
    )
    .await;
    deliver(&app, &call_ended("call-2", "x")).await;
    let steps = drain(&app).await;
    assert!(matches!(steps[0], TaskOutcome::Retry { .. }), "{steps:?}");
    assert!(matches!(steps[1], TaskOutcome::Done { .. }), "{steps:?}");
    assert_eq!(crm.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_429_retry_after_is_respected() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "42"))
        .mount(&crm)
        .await;
    let app = app_with(&crm_handler(&crm.uri()), "").await;
    deliver(&app, &call_ended("call-3", "x")).await;
    let steps = drain(&app).await;
    match steps.as_slice() {
        [TaskOutcome::Retry { after, .. }] => {
            assert!(*after >= Duration::from_secs(42), "{after:?}");
            assert!(
                *after <= Duration::from_secs(51),
                "jitter is at most 20 %: {after:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A destination asking for a delay no calendar can hold (`Retry-After: 99999999999999`, about
/// three million years) once panicked the worker that scheduled the retry, and the loop was gone:
/// the next delivery was never sent. The request is clamped to a day and the loop goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_is_clamped_and_the_worker_goes_on_to_the_next_job() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "99999999999999"))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let app = spawn_app_with(AppOptions {
        extra: format!("[dispatch]\nworkers = 1\n{}", crm_handler(&crm.uri())),
        ..AppOptions::default()
    })
    .await;
    let wait_for_requests = |n: usize| {
        let crm = &crm;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while crm.received_requests().await.unwrap().len() < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the worker stopped after {} request(s)",
                    crm.received_requests().await.unwrap().len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let first = deliver(&app, &call_ended("absurd-1", "x")).await;
    wait_for_requests(1).await;
    let second = deliver(&app, &call_ended("absurd-2", "x")).await;
    wait_for_requests(2).await;

    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    let job = |delivery: &str| -> (String, String) {
        conn.query_row(
            "SELECT status, next_attempt_at FROM jobs WHERE delivery_id = ?1",
            [delivery],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while job(&second).0 != "done" {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", job(&second));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, next) = job(&first);
    assert_eq!(status, "pending", "retryable, waiting for its next attempt");
    let next = chrono::DateTime::parse_from_rfc3339(&next).unwrap();
    let wait = next.signed_duration_since(chrono::Utc::now());
    assert!(
        wait > chrono::TimeDelta::hours(23) && wait <= chrono::TimeDelta::hours(29),
        "a day plus at most 20 % jitter, not three million years: {wait:?}"
    );
}

/// A destination whose name resolves to a private address nobody listed in `allow_hosts` is
/// refused at connect time: one attempt, straight to the dead letters, the reason naming the
/// host — and nothing reaches the server.
#[tokio::test]
async fn an_egress_refusal_is_a_dead_letter_after_one_attempt_naming_the_host() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let by_name = format!("http://localhost:{}", crm.address().port());
    let app = app_with(&crm_handler(&by_name), "").await;
    deliver(&app, &call_ended("egress-1", "x")).await;

    let steps = drain(&app).await;

    assert!(
        matches!(steps.as_slice(), [TaskOutcome::Dead { .. }]),
        "{steps:?}"
    );
    assert!(crm.received_requests().await.unwrap().is_empty());
    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    let (attempts, error): (i64, String) = conn
        .query_row("SELECT attempts, last_error FROM jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.starts_with("egress to localhost refused"), "{error}");
}

#[tokio::test]
async fn a_400_goes_straight_to_the_dead_letters_and_dlq_retry_redelivers() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let app = app_with(&crm_handler(&crm.uri()), "").await;
    let delivery_id = deliver(&app, &call_ended("call-4", "x")).await;
    let steps = drain(&app).await;
    assert!(
        matches!(steps.as_slice(), [TaskOutcome::Dead { .. }]),
        "{steps:?}"
    );

    let store = open_store(&app);
    let dead = jobs::list_dead(&store, &DeadFilter::default()).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_id, delivery_id);
    assert!(dead[0].last_error.as_deref().unwrap().contains("400"));

    let n = jobs::retry_dead(
        &store,
        &DeadFilter {
            job_id: Some(dead[0].job_id),
            ..DeadFilter::default()
        },
        &Requester::cli_user(),
    )
    .unwrap();
    assert_eq!(n, 1);
    let steps = drain(&app).await;
    assert!(
        matches!(steps.as_slice(), [TaskOutcome::Done { .. }]),
        "{steps:?}"
    );
    assert!(jobs::list_dead(&store, &DeadFilter::default())
        .unwrap()
        .is_empty());
    let attempts = jobs::job_attempts(&store, dead[0].job_id).unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.result.as_str())
            .collect::<Vec<_>>(),
        ["permanent", "ok"]
    );
    assert_eq!(
        attempts[1].attempt, 2,
        "attempt numbers continue across a retry"
    );
}

#[tokio::test]
async fn chaining_passes_the_crm_id_to_the_next_handler() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/leads"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": "C-77"})))
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/customers/C-77/tickets"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&crm)
        .await;
    let config = format!(
        r#"
[[handlers]]
name = "crm"
kind = "http"
phi = "full"
baa = true
url = "{uri}/api/leads"
body = '{{"phone": "{{{{ caller.phone }}}}"}}'
capture_response = true

[[handlers]]
name = "tickets"
kind = "http"
phi = "full"
baa = true
url = "{uri}/api/customers/{{{{ app_data.crm.data.id }}}}/tickets"
body = '{{"customer": "{{{{ app_data.crm.data.id }}}}"}}'

[[routes]]
source = "demo"
handlers = ["crm", "tickets"]
"#,
        uri = crm.uri()
    );
    let app = app_with(&config, "").await;
    deliver(&app, &call_ended("call-5", "x")).await;
    let steps = drain(&app).await;
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, TaskOutcome::Done { .. }))
            .count(),
        2,
        "{steps:?}"
    );
    let requests = crm.received_requests().await.unwrap();
    let ticket: &Request = requests
        .iter()
        .find(|r| r.url.path().contains("tickets"))
        .unwrap();
    let body: Value = serde_json::from_slice(&ticket.body).unwrap();
    assert_eq!(body["customer"], "C-77");
}

#[tokio::test]
async fn route_filters_decide_which_events_get_jobs() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let config = crm_handler(&crm.uri()).replace(
        "handlers = [\"crm\"]",
        "when = 'data.call_type == \"quote_request\"'\nhandlers = [\"crm\"]",
    );
    let app = app_with(&config, "").await;
    deliver(&app, &call_ended("call-6a", "quote_request")).await;
    deliver(&app, &call_ended("call-6b", "emergency")).await;
    // An event without the field the filter names: no route, and no error for the sender.
    deliver(
        &app,
        r#"{"event":"call.ended","data":{"call_id":"call-6c"}}"#,
    )
    .await;
    assert_eq!(drain(&app).await.len(), 1);
    assert_eq!(crm.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_circuit_opens_after_consecutive_failures_and_recovers() {
    let crm = MockServer::start().await;
    let failing = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&crm)
        .await;
    let app = app_with(
        &crm_handler(&crm.uri()),
        "retry_schedule = [\"0s\", \"0s\", \"0s\", \"0s\", \"0s\", \"0s\"]\ncircuit_failures = 2\ncircuit_open_secs = 1",
    )
    .await;
    deliver(&app, &call_ended("call-7", "x")).await;
    let d = &app.dispatcher;
    assert!(matches!(
        d.try_execute_task().await.unwrap(),
        TaskOutcome::Retry { .. }
    ));
    assert!(matches!(
        d.try_execute_task().await.unwrap(),
        TaskOutcome::Retry { .. }
    ));
    assert_eq!(d.circuit_state("crm"), CircuitState::Open);
    assert_eq!(
        d.try_execute_task().await.unwrap(),
        TaskOutcome::Idle,
        "held back while open"
    );
    assert_eq!(crm.received_requests().await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(d.circuit_state("crm"), CircuitState::HalfOpen);
    assert!(
        matches!(
            d.try_execute_task().await.unwrap(),
            TaskOutcome::Retry { .. }
        ),
        "failed probe"
    );
    assert_eq!(d.circuit_state("crm"), CircuitState::Open);

    drop(failing);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        matches!(
            d.try_execute_task().await.unwrap(),
            TaskOutcome::Done { .. }
        ),
        "probe succeeds"
    );
    assert_eq!(d.circuit_state("crm"), CircuitState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_workers_deliver_without_being_driven() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let app = spawn_app_with(AppOptions {
        extra: crm_handler(&crm.uri()),
        ..AppOptions::default()
    })
    .await;
    for i in 0..5 {
        deliver(&app, &call_ended(&format!("bg-{i}"), "x")).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while crm.received_requests().await.unwrap().len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not deliver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_sigkill_runs_again_after_restart_with_the_same_idempotency_key() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&crm)
        .await;
    let fixture = write_fixture(&AppOptions {
        extra: format!(
            "[log]\nformat = \"json\"\nlevel = \"warn,wardhook::cli=info\"\n{}",
            crm_handler(&crm.uri())
        ),
        ..AppOptions::default()
    });
    let (mut child, port) = start_server(&fixture);
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let body = call_ended("call-kill", "x");
    let res = http
        .post(format!("https://localhost:{port}/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Wait until the attempt is in flight at the CRM, then kill the server mid-attempt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while crm.received_requests().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, _port) = start_server(&fixture);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let store_path = fixture.dir.path().join("data/wardhook.db");
    loop {
        let requests = crm.received_requests().await.unwrap();
        let done = {
            let conn = rusqlite::Connection::open(&store_path).unwrap();
            conn.query_row("SELECT status FROM jobs", [], |r| r.get::<_, String>(0))
                .unwrap()
        };
        if requests.len() >= 2 && done == "done" {
            let keys: Vec<_> = requests
                .iter()
                .map(|r| r.headers.get("idempotency-key").unwrap().clone())
                .collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job was not re-run: {done}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn wardhook_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_cli_lists_shows_and_retries_while_the_server_runs() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let app = spawn_app_with(AppOptions {
        extra: crm_handler(&crm.uri()),
        ..AppOptions::default()
    })
    .await;
    let delivery_id = deliver(&app, &call_ended("call-dlq", "x")).await;
    let store = open_store(&app);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while jobs::list_dead(&store, &DeadFilter::default())
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let list = wardhook_cli(&app, &["dlq", "list", "--format", "json"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let rows: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["delivery_id"], delivery_id.as_str());
    let job = rows[0]["job_id"].as_i64().unwrap().to_string();

    let show = wardhook_cli(&app, &["dlq", "show", &job]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("permanent") && shown.contains("422"),
        "{shown}"
    );

    let retry = wardhook_cli(&app, &["dlq", "retry", &job]);
    assert!(retry.status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while crm.received_requests().await.unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retry not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let replay = wardhook_cli(&app, &["deliveries", "replay", &delivery_id]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while crm.received_requests().await.unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replay not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_never_runs_more_often_at_once_than_its_limit() {
    let crm = MockServer::start().await;
    let arrivals: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>> = Default::default();
    let seen = arrivals.clone();
    Mock::given(method("POST"))
        .respond_with(move |_: &Request| {
            seen.lock().unwrap().push(std::time::Instant::now());
            ResponseTemplate::new(200).set_delay(Duration::from_millis(300))
        })
        .mount(&crm)
        .await;
    let app = spawn_app_with(AppOptions {
        extra: format!(
            "[dispatch]\nworkers = 4\nmax_concurrency_per_handler = 1\n{}",
            crm_handler(&crm.uri())
        ),
        ..AppOptions::default()
    })
    .await;
    for i in 0..3 {
        deliver(&app, &call_ended(&format!("limit-{i}"), "x")).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while arrivals.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let times = arrivals.lock().unwrap().clone();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(250),
            "two attempts overlapped ({gap:?} apart) despite max_concurrency_per_handler = 1"
        );
    }
}

#[tokio::test]
async fn handler_attempts_dead_letters_retries_and_replays_each_leave_their_audit_record() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let app = app_with(&crm_handler(&crm.uri()), "").await;
    let delivery_id = deliver(&app, &call_ended("call-audit", "x")).await;
    drain(&app).await;
    let store = open_store(&app);
    jobs::retry_dead(&store, &DeadFilter::default(), &Requester::cli_user()).unwrap();
    drain(&app).await;
    jobs::replay(&store, &delivery_id, None, &Requester::cli_user()).unwrap();
    drain(&app).await;
    app.stop().await;

    let out = wardhook_cli(&app, &["audit", "search", "--delivery-id", &delivery_id]);
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |action: &str| text.lines().filter(|l| l.contains(action)).count();
    assert_eq!(count("delivery_accepted"), 1, "{text}");
    assert_eq!(
        count("handler_attempt"),
        3,
        "400, retried 200, replayed 200: {text}"
    );
    assert_eq!(count("dead_lettered"), 1, "{text}");
    assert_eq!(count("retried"), 1, "{text}");
    assert_eq!(count("replayed"), 1, "{text}");
    assert!(
        text.contains("crm.") || text.contains("127.0.0.1"),
        "destination host recorded: {text}"
    );
    assert!(!text.contains("Dana"), "no payload in the audit log");
    // The stop record is written once the server has drained, just after `stop` returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let all = wardhook_cli(&app, &["audit", "search", "--action", "server_stopped"]);
        if String::from_utf8_lossy(&all.stdout).contains("server_stopped") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no server_stopped record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
