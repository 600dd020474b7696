//! OpenTelemetry traces exported over OTLP/HTTP to a real receiver on loopback
//! (`otlp_receiver.py`, built on the `opentelemetry-proto` package): the span tree of a
//! delivery, its handler attempt in the same trace, the trace id in log lines, and a canary scan
//! of every exported span.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// Values planted in the delivery; none may appear in any exported span.
const CANARIES: &[&str] = &[
    "Zyxwvut Canaryperson",
    "canary.zyx@example.org",
    "+15559876543",
    "canary transcript about chest pain qqq",
    "canary-call-otlp-1",
];

/// The interpreter with `opentelemetry-proto`: `WARDHOOK_TEST_PYTHON`, else the CI virtualenv.
/// Under CI a missing one is a failure; elsewhere the test says it skipped.
fn python() -> Option<String> {
    let candidate = std::env::var("WARDHOOK_TEST_PYTHON")
        .unwrap_or_else(|_| "/opt/wardhook-test-venv/bin/python".to_owned());
    let ok = Command::new(&candidate)
        .args([
            "-c",
            "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the OTLP test needs {candidate} with opentelemetry-proto \
         (bash deploy/ci/python-fixtures.sh creates it)"
    );
    eprintln!("SKIPPED: no Python with opentelemetry-proto at {candidate}");
    None
}

/// The receiver process; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(python: &str, dir: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/otlp_receiver.py");
        let out = dir.join("spans.jsonl");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver said {line:?}"));
        Self { child, port, out }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn crm_route(url: &str) -> String {
    format!(
        r#"
[[handlers]]
name = "crm"
kind = "http"
phi = "full"
baa = true
url = "{url}/api/leads"
body = '{{"phone": "{{{{ caller.phone }}}}", "name": "{{{{ caller.name }}}}"}}'

[[routes]]
source = "demo"
events = ["call.ended"]
handlers = ["crm"]
"#
    )
}

fn stop(mut server: ServerProcess) {
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_one_trace_from_receipt_to_handler_attempt_with_no_phi_in_any_span() {
    let Some(python) = python() else { return };
    let work = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&python, work.path());
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&crm)
        .await;
    let fixture = write_fixture(&AppOptions {
        extra: format!(
            "[log]\nformat = \"json\"\nlevel = \"info\"\ndir = \"data/logs\"\n\n\
             [traces]\nendpoint = \"http://127.0.0.1:{}/v1/traces\"\nservice_name = \"wardhook-test\"\n{}",
            receiver.port,
            crm_route(&crm.uri())
        ),
        ..AppOptions::default()
    });
    let (server, port) = start_server(&fixture);
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let body = serde_json::json!({
        "event": "call.ended",
        "timestamp": "2026-11-22T10:00:00Z",
        "data": {
            "call_id": CANARIES[4],
            "caller": { "name": CANARIES[0], "email": CANARIES[1], "phone": CANARIES[2] },
            "transcript": CANARIES[3],
        }
    })
    .to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let res = http
            .post(format!("https://localhost:{port}/hooks/demo"))
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, body.as_bytes()),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        ids.push((
            v["status"].as_str().unwrap().to_owned(),
            v["delivery_id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(ids[0].0, "accepted");
    assert_eq!(ids[1].0, "duplicate");
    assert_eq!(ids[0].1, ids[1].1);
    let delivery_id = ids[0].1.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while crm.received_requests().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRM was never called"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the worker a moment to record the attempt, then stop: shutdown flushes the spans.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(server);

    let trace_id = delivery_id.replace('-', "");
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "nothing was exported");
    let trace: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == trace_id.as_str())
        .collect();
    let by_name = |name: &str| -> Vec<&Value> {
        trace
            .iter()
            .copied()
            .filter(|s| s["name"] == name)
            .collect()
    };
    // Two receipts in the delivery's trace: the first (accepted) and the retry (duplicate).
    let receipts = by_name("receipt");
    assert_eq!(receipts.len(), 2, "{trace:#?}");
    let first = receipts
        .iter()
        .find(|s| attr(s, "wardhook.outcome") == "accepted")
        .unwrap();
    assert!(receipts
        .iter()
        .any(|s| attr(s, "wardhook.outcome") == "duplicate"));
    for r in &receipts {
        assert_eq!(r["parent_span_id"], "", "a receipt is a root span");
        assert_eq!(r["kind"], 2, "server span");
        assert_eq!(attr(r, "wardhook.source"), "demo");
        assert_eq!(attr(r, "wardhook.delivery_id"), delivery_id.as_str());
        assert_eq!(attr(r, "http.response.status_code"), 200);
        assert_eq!(r["resource"]["service.name"], "wardhook-test");
    }
    let root = first["span_id"].as_str().unwrap();
    // receipt → verify, normalize, commit (children of the first receipt) …
    let children: HashMap<&str, &Value> = trace
        .iter()
        .filter(|s| s["parent_span_id"] == root)
        .map(|s| (s["name"].as_str().unwrap(), *s))
        .collect();
    for stage in ["read body", "verify", "normalize", "route", "commit"] {
        let span = children
            .get(stage)
            .unwrap_or_else(|| panic!("no {stage} span under the receipt: {trace:#?}"));
        assert!(span["start_ns"].as_u64() <= span["end_ns"].as_u64());
        assert!(span["start_ns"].as_u64() >= first["start_ns"].as_u64());
        assert!(span["end_ns"].as_u64() <= first["end_ns"].as_u64());
    }
    let commit = children["commit"];
    assert_eq!(attr(commit, "wardhook.outcome"), "accepted");
    // … → handler attempt (a child of the commit span, exported by the dispatch worker).
    let attempts = by_name("handler attempt");
    assert_eq!(attempts.len(), 1, "{trace:#?}");
    let attempt = attempts[0];
    assert_eq!(attempt["parent_span_id"], commit["span_id"]);
    assert_eq!(attr(attempt, "wardhook.handler"), "crm");
    assert_eq!(attr(attempt, "wardhook.attempt"), 1);
    assert_eq!(attr(attempt, "wardhook.result"), "ok");
    assert_eq!(attr(attempt, "http.response.status_code"), 201);
    assert_eq!(attempt["status_code"], 1, "status OK");
    // The job exists once the commit is durable; a worker may claim it before the request's
    // task has woken up to close the commit span, so the attempt starts after the commit began.
    assert!(attempt["start_ns"].as_u64() >= commit["start_ns"].as_u64());
    assert!(attempt["end_ns"].as_u64() >= attempt["start_ns"].as_u64());

    // No canary value in any exported span: neither in the decoded spans nor in the raw
    // protobuf bodies the exporter sent.
    let decoded = std::fs::read(&receiver.out).unwrap();
    let raw = std::fs::read(receiver.out.with_extension("jsonl.raw")).unwrap();
    for canary in CANARIES {
        for (what, bytes) in [("decoded spans", &decoded), ("raw OTLP bodies", &raw)] {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{what} contain {canary:?}"
            );
        }
    }

    // Log lines carry the trace id: the access lines of both requests and the attempt's line.
    let logs = read_logs(&fixture.dir.path().join("data/logs"));
    let with_trace = logs
        .iter()
        .filter(|l| l["fields"]["trace_id"] == trace_id.as_str())
        .map(|l| l["fields"]["message"].as_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>();
    assert_eq!(
        with_trace.iter().filter(|m| *m == "request").count(),
        2,
        "{with_trace:?}"
    );
    assert!(
        with_trace.iter().any(|m| m == "handler succeeded"),
        "{with_trace:?}"
    );
}

/// Every JSON line of every file in `dir`.
fn read_logs(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    out
}

#[test]
fn a_collector_off_loopback_over_plain_http_is_refused_at_start_up() {
    let fixture = write_fixture(&AppOptions {
        extra: "[traces]\nendpoint = \"http://192.0.2.7:4318/v1/traces\"\ntimeout = \"90s\"\n"
            .into(),
        ..AppOptions::default()
    });
    let out = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("traces.endpoint") && text.contains("loopback"),
        "{text}"
    );
    assert!(text.contains("traces.timeout"), "{text}");
}
