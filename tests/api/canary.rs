//! No plaintext PHI on disk: canary values sent through the real binary appear in no file it
//! wrote — database, WAL, shm, operational logs, audit mirror — raw or JSON-escaped. The
//! caller's phone number is also searched for through the console, spelled another way: neither
//! spelling nor its bare digits land anywhere either.
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
        extra: format!(
            "[log]\nformat = \"json\"\nlevel = \"debug\"\ndir = \"{}/logs\"\n",
            "data"
        ),
        storage: "phone_country = \"1\"\n".to_owned(),
        ..AppOptions::default()
    });
    let (child, port, admin_port) = start_server_with_console(&fixture);
    let token = fixture_token(&fixture, "ops", "operator");
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
        let res = http
            .post(format!("https://localhost:{port}/hooks/demo"))
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, b.as_bytes()),
            )
            .body(b.clone())
            .send()
            .await
            .unwrap();
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
        let res = http
            .post(format!("https://localhost:{admin_port}{path}"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "caller_phone": CANARIES[7] }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let v: serde_json::Value = res.json().await.unwrap();
        let found = v["deliveries"].as_array().or(v["entries"].as_array());
        assert!(!found.unwrap().is_empty(), "{path} found the call: {v}");
    }

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
    let needles: Vec<Vec<u8>> = CANARIES
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
