//! No plaintext PHI on disk: canary values sent through the real binary appear in no file it
//! wrote — database, WAL, shm, operational logs, audit mirror — raw or JSON-escaped. The
//! caller's phone number is also searched for through the console, spelled another way: neither
//! spelling nor its bare digits land anywhere either; nor does a number a CRM's answer names
//! (`caller_phone_from`), once the call is found by it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

const CANARIES: &[&str] = &[
    "Zyxwvut Canaryperson",
    "canary.zyx@example.org",
    "+15559876543",
    "canary transcript about chest pain qqq",
    "O'Canary \"Quoted\" Zyx",
    "Ünïcode Canäry Ždenka",
    // Sent as the event type, which is stored in plaintext: a sentence must go to quarantine.
    "Zyxwvut Roe DOB 1980 positive",
    // The canary phone as an operator types it into "find a call", and its bare digits.
    "(555) 987-6543",
    "5559876543",
];

fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

fn ascii_escaped(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect()
}

fn scan(dir: &Path, needles: &[Vec<u8>], hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, needles, hits);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                hits.push(format!(
                    "{} contains {:?}",
                    path.display(),
                    String::from_utf8_lossy(n)
                ));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_values_appear_in_no_file_wardhook_wrote() {
    let fixture = write_fixture(&AppOptions {
        extra: DEBUG_LOG.to_owned(),
        storage: "phone_country = \"1\"\n".to_owned(),
        ..AppOptions::default()
    });
    let (child, port, admin_port) = start_server_with_console(&fixture);
    let token = fixture_token(&fixture, "ops", "operator");
    let http = client_for(&fixture);
    let body = serde_json::json!({
        "event": "call.ended",
        "timestamp": "2026-11-22T10:00:00Z",
        "data": {
            "call_id": "canary-call-1",
            "caller": { "name": CANARIES[0], "email": CANARIES[1], "phone": CANARIES[2] },
            "transcript": CANARIES[3],
            "ai_summary": CANARIES[4],
            "custom_fields": { "notes": CANARIES[5] }
        }
    })
    .to_string();
    let garbage = format!("not json {} {}", CANARIES[0], CANARIES[3]);
    let sentence_as_event = serde_json::json!({
        "event": CANARIES[6],
        "data": { "call_id": "canary-call-2" }
    })
    .to_string();
    let mut statuses = Vec::new();
    for b in [&body, &body, &garbage, &sentence_as_event] {
        let res = post_demo(&http, port, b.clone()).await.unwrap();
        statuses.push(res.status().as_u16());
    }
    // A forged one too: rejections must not log the body either.
    let forged = http
        .post(format!("https://localhost:{port}/hooks/demo"))
        .header("X-NextPhone-Signature", "sha256=00")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    statuses.push(forged.status().as_u16());
    assert_eq!(statuses, [200, 200, 400, 400, 401]);

    // An operator finds the call by the caller's number, spelled nationally.
    for path in ["/api/calls/search", "/api/calls/timeline"] {
        let v = by_phone(&http, admin_port, &token, path, CANARIES[7]).await;
        let found = v["deliveries"].as_array().or(v["entries"].as_array());
        assert!(!found.unwrap().is_empty(), "{path} found the call: {v}");
    }

    stop_and_scan(child, &fixture, CANARIES);
}

/// Stop the server with SIGTERM (so it flushes what it writes on the way out), then assert no
/// file under the fixture's data folder holds any of `canaries`, raw or escaped.
fn stop_and_scan(child: ServerProcess, fixture: &Fixture, canaries: &[&str]) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut child = child;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    let data = fixture.dir.path().join("data");
    let logs: Vec<_> = std::fs::read_dir(data.join("logs")).unwrap().collect();
    assert!(!logs.is_empty(), "the log dir must have been written");
    let needles: Vec<Vec<u8>> = canaries
        .iter()
        .flat_map(|c| [c.to_string(), json_escaped(c), ascii_escaped(c)])
        .map(String::into_bytes)
        .collect();
    let mut hits = Vec::new();
    scan(&data, &needles, &mut hits);
    assert!(
        hits.is_empty(),
        "plaintext PHI on disk:\n{}",
        hits.join("\n")
    );
}

/// What the console's `path` (search or timeline) answers an operator asking by `phone`.
async fn by_phone(
    http: &reqwest::Client,
    admin_port: u16,
    token: &str,
    path: &str,
    phone: &str,
) -> serde_json::Value {
    let res = http
        .post(format!("https://localhost:{admin_port}{path}"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "caller_phone": phone }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "{path}");
    res.json().await.unwrap()
}

/// A client trusting the fixture's CA.
fn client_for(fixture: &Fixture) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap()
}

/// The log settings both scenarios use: JSON at debug level, into the data folder.
const DEBUG_LOG: &str = "[log]\nformat = \"json\"\nlevel = \"debug\"\ndir = \"data/logs\"\n";

/// The caller's phone a CRM answers with, in the spellings that must not reach the disk.
const CRM_PHONES: &[&str] = &[
    "+1 555 444 3322",
    "+15554443322",
    "(555) 444-3322",
    "5554443322",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_a_handlers_output_names_appears_in_no_file_wardhook_wrote() {
    let crm = crate::admin_calls::crm_answering_with(CRM_PHONES[0]).await;
    let mut opts = crate::admin_calls::crm_naming_the_caller(&crm.uri());
    assert!(opts.extra.contains("workers = 0"));
    opts.extra = format!(
        "{}\n{DEBUG_LOG}",
        opts.extra.replacen("workers = 0", "workers = 1", 1)
    );
    let fixture = write_fixture(&opts);
    let (child, port, admin_port) = start_server_with_console(&fixture);
    let token = fixture_token(&fixture, "ops", "operator");
    let http = client_for(&fixture);
    let body = r#"{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"canary-crm-1"}}"#;
    let res = post_demo(&http, port, body.to_owned()).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);

    // The worker delivers to the CRM; then the operator finds the call by its answer's number.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = by_phone(
            &http,
            admin_port,
            &token,
            "/api/calls/search",
            CRM_PHONES[2],
        )
        .await;
        if !v["deliveries"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call was never found by the CRM's number"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_and_scan(child, &fixture, CRM_PHONES);
}
