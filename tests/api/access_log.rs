//! The access log at the default level: one line per request, naming a stored delivery and its
//! outcome, no second "delivery accepted" line unless asked for, every line written out at exit
//! (the writer is buffered and runs on its own thread), and no payload value in any line.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const CANARIES: &[&str] = &[
    "Zyxwvut Canaryperson",
    "canary.zyx@example.org",
    "+15559876543",
    "canary-call-access-1",
];

fn canary_body() -> String {
    serde_json::json!({
        "event": "call.ended",
        "timestamp": "2026-11-22T10:00:00Z",
        "data": {
            "call_id": CANARIES[3],
            "caller": { "name": CANARIES[0], "email": CANARIES[1], "phone": CANARIES[2] },
        }
    })
    .to_string()
}

/// Start a server logging at `level` to `data/logs`, send an accepted delivery, its retry, a
/// forged one and a health check, stop it with SIGTERM, and return every log line.
async fn run_and_collect(level: &str) -> (Vec<Value>, String) {
    let fixture = write_fixture(&AppOptions {
        extra: format!("[log]\nformat = \"json\"\nlevel = \"{level}\"\ndir = \"data/logs\"\n"),
        ..AppOptions::default()
    });
    let (mut server, port) = start_server(&fixture);
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let body = canary_body();
    let url = format!("https://localhost:{port}/hooks/demo");
    let mut delivery_id = String::new();
    for signature in [
        nextphone_signature(DEMO_SECRET, body.as_bytes()),
        nextphone_signature(DEMO_SECRET, body.as_bytes()),
        "sha256=00".to_owned(),
    ] {
        let res = http
            .post(&url)
            .header("X-NextPhone-Signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let v: Value = res.json().await.unwrap();
            delivery_id = v["delivery_id"].as_str().unwrap().to_owned();
        }
    }
    let health = http
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = fixture.dir.path().join("data/logs");
    let mut raw = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        raw.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert_no_canary(&raw, &dir);
    let lines = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, delivery_id)
}

fn assert_no_canary(text: &str, dir: &Path) {
    for c in CANARIES {
        assert!(!text.contains(c), "{} contains {c:?}", dir.display());
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_has_one_access_line_naming_its_delivery_and_none_is_lost_at_exit() {
    let (lines, delivery_id) = run_and_collect("info").await;
    let requests: Vec<&Value> = lines.iter().filter(|l| message(l) == "request").collect();
    assert_eq!(requests.len(), 4, "one line per request: {requests:#?}");
    let on_hook: Vec<&&Value> = requests
        .iter()
        .filter(|l| l["fields"]["path"] == "/hooks/demo")
        .collect();
    let outcomes: Vec<(u64, &str, &str)> = on_hook
        .iter()
        .map(|l| {
            (
                l["fields"]["status"].as_u64().unwrap(),
                l["fields"]["outcome"].as_str().unwrap_or("-"),
                l["fields"]["delivery_id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (200, "accepted", delivery_id.as_str()),
            (200, "duplicate", delivery_id.as_str()),
            (401, "-", "-"),
        ]
    );
    for l in &requests {
        assert!(l["fields"]["request_id"].as_str().unwrap().len() == 32);
        assert!(l["fields"]["latency_us"].as_u64().is_some());
        assert!(l["fields"].get("trace_id").is_none(), "traces are off: {l}");
    }
    // Lines logged inside the hook handler name their source themselves: at INFO the request's
    // span is disabled, so there is none to carry it.
    let rejected: Vec<&Value> = lines
        .iter()
        .filter(|l| message(l) == "delivery rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["fields"]["source"], "demo");
    assert!(rejected[0].get("span").is_none(), "no request span at INFO");
    assert!(
        !lines
            .iter()
            .any(|l| matches!(message(l), "delivery accepted" | "duplicate delivery")),
        "no second line per delivery by default"
    );
    // The process's last line made it to the file: the writer was flushed at exit.
    assert!(lines.iter().any(|l| message(l) == "wardhook stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_delivery_lines_come_back_when_their_target_is_asked_for() {
    let (lines, delivery_id) = run_and_collect("info,wardhook::delivery=debug").await;
    let accepted: Vec<&Value> = lines
        .iter()
        .filter(|l| message(l) == "delivery accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["fields"]["delivery_id"], delivery_id.as_str());
    assert_eq!(accepted[0]["target"], "wardhook::delivery");
    assert_eq!(
        lines
            .iter()
            .filter(|l| message(l) == "duplicate delivery")
            .count(),
        1
    );
}
