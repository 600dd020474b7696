//! The auditor's commands on a database the real server wrote: verify, search by call id,
//! export; tampering is reported with exit code 3 and the sequence number.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use crate::helpers::*;

fn wardhook(app: &TestApp, args: &[&str]) -> Output {
    Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .output()
        .unwrap()
}

async fn deliver(app: &TestApp, call_id: &str) {
    let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"{call_id}"}}}}"#);
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
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn audit_verify_search_and_export_work_on_a_live_database() {
    let app = spawn_app().await;
    deliver(&app, "audit-call-a").await;
    deliver(&app, "audit-call-b").await;
    deliver(&app, "audit-call-a").await; // a duplicate: its own record, same call

    let verify = wardhook(&app, &["audit", "verify", "--skip-mirror"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let search = wardhook(&app, &["audit", "search", "--call-id", "audit-call-a"]);
    assert!(search.status.success());
    let out = String::from_utf8_lossy(&search.stdout);
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains('\t'))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows.iter().any(|r| r.contains("delivery_accepted")),
        "{out}"
    );
    assert!(
        rows.iter().any(|r| r.contains("delivery_duplicate")),
        "{out}"
    );
    assert!(
        !out.contains("audit-call-a"),
        "the call id itself is never printed"
    );

    let export = wardhook(&app, &["audit", "export", "--format", "csv"]);
    assert!(export.status.success());
    assert!(String::from_utf8_lossy(&export.stdout).lines().count() >= 4);
}

#[tokio::test]
async fn audit_verify_exits_3_naming_the_first_tampered_record() {
    let app = spawn_app().await;
    for i in 0..3 {
        deliver(&app, &format!("tamper-{i}")).await;
    }
    app.stop().await;
    let db = app.dir.path().join("data/wardhook.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        // An attacker with file access drops the append-only triggers and edits a record.
        let triggers: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for t in triggers {
            conn.execute(&format!("DROP TRIGGER {t}"), []).unwrap();
        }
        let changed = conn
            .execute("UPDATE audit_log SET outcome = 'failure' WHERE seq = 2", [])
            .unwrap();
        assert_eq!(changed, 1);
    }
    let verify = wardhook(&app, &["audit", "verify", "--skip-mirror"]);
    assert_eq!(verify.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("sequence 2"), "{stderr}");
}

#[tokio::test]
async fn doctor_passes_a_healthy_setup_and_flags_a_world_readable_key() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    deliver(&app, "doctor-1").await;
    let ok = wardhook(&app, &["doctor"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let key = app.dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = wardhook(&app, &["doctor"]);
    assert!(!bad.status.success());
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("FAIL"), "{out}");
}

#[tokio::test]
async fn rejections_server_life_and_config_loads_are_audited() {
    let app = spawn_app().await;
    let forged = app
        .client()
        .post(app.url("/hooks/demo"))
        .header("X-NextPhone-Signature", "sha256=00")
        .body(r#"{"event":"call.ended"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    app.reloader.reload_audited(&app.config_path).await.unwrap();
    // The rejection's record is written beside the answer; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = wardhook(&app, &["audit", "search", "--action", "delivery_rejected"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("bad_signature") {
            assert!(text.contains("127.0.0.1"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rejection record: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let all = wardhook(&app, &["audit", "search"]);
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(text.contains("server_started"), "{text}");
    assert_eq!(
        text.matches("config_loaded").count(),
        2,
        "start and reload: {text}"
    );
}

#[tokio::test]
async fn creating_and_revoking_a_console_token_are_audited_without_the_token() {
    let app = spawn_app().await;
    let created = wardhook(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "ops-alice",
            "--role",
            "operator",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let revoked = wardhook(&app, &["tokens", "revoke", "ops-alice"]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let out = wardhook(&app, &["audit", "search"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("token_created") && text.contains("\"result\":\"operator\""),
        "{text}"
    );
    assert!(text.contains("token_revoked"), "{text}");
    assert!(
        !text.contains(&token),
        "the token itself never reaches the audit log"
    );
}

#[tokio::test]
async fn a_checkpoint_at_stop_makes_cutting_the_newest_records_detectable() {
    let app = spawn_app().await;
    deliver(&app, "cp-1").await;
    deliver(&app, "cp-2").await;
    app.stop().await;
    // The stop checkpoint is written once the server has drained.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = wardhook(&app, &["audit", "verify"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Two checkpoints: the one written at start and the one after the stop record.
        if out.status.success() && text.contains("2 checkpoints matched") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint at stop: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    {
        let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
        let triggers: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for t in triggers {
            conn.execute(&format!("DROP TRIGGER {t}"), []).unwrap();
        }
        conn.execute(
            "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
            [],
        )
        .unwrap();
    }
    let verify = wardhook(&app, &["audit", "verify", "--skip-mirror"]);
    assert_eq!(
        verify.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(String::from_utf8_lossy(&verify.stderr).contains("truncated"));
}

/// A handler whose endpoint refuses everything with 422: every delivery's job dead-letters,
/// so the dispatch workers write audit records too.
fn refusing_crm(url: &str) -> String {
    format!(
        r#"
[[handlers]]
name = "crm"
kind = "http"
phi = "full"
baa = true
url = "{url}/api/leads"

[[routes]]
source = "demo"
events = ["call.ended"]
handlers = ["crm"]
"#
    )
}

fn cli_beside(fixture: &Fixture, args: &[String]) -> Output {
    Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap()
}

/// The server (intake, dispatch workers) and CLI commands each append to the JSONL mirror
/// while deliveries keep arriving; `audit verify` then finds every record once and in order.
/// Each process used to keep its own "last sequence written", and an untouched log was
/// reported as `inserted` or `missing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_after_cli_commands_wrote_the_mirror_beside_a_busy_server() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&crm)
        .await;
    let fixture = write_fixture(&AppOptions {
        extra: format!(
            "[log]\nformat = \"json\"\nlevel = \"warn,wardhook::cli=info\"\n{}",
            refusing_crm(&crm.uri())
        ),
        ..AppOptions::default()
    });
    let (mut server, port) = start_server(&fixture);
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    // Deliveries keep arriving until the commands are done (at most 2000 of them).
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (ids, stop) = (ids.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"busy-{i}"}}}}"#);
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
                let v: serde_json::Value = res.json().await.unwrap();
                ids.lock()
                    .unwrap()
                    .push(v["delivery_id"].as_str().unwrap().to_owned());
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ids.lock().unwrap().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no delivery accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Commands that write audit records, one after another, each its own process.
    for round in 0..8 {
        let id = ids.lock().unwrap().last().unwrap().clone();
        let commands: [Vec<String>; 3] = [
            vec!["deliveries".into(), "show".into(), id],
            vec!["dlq".into(), "retry".into(), "--all".into()],
            vec![
                "tokens".into(),
                "create".into(),
                "--name".into(),
                format!("busy-{round}"),
                "--role".into(),
                "auditor".into(),
            ],
        ];
        for args in commands {
            let f = fixture.config_path.clone();
            let dir = fixture.dir.path().to_owned();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(wardhook_bin())
                    .args(&args)
                    .arg("--config")
                    .arg(&f)
                    .current_dir(&dir)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    assert!(sent >= 3);

    // Verified while the server still runs and writes, then again after it stopped.
    let check = |when: &str| {
        let verify = cli_beside(&fixture, &["audit".into(), "verify".into()]);
        let stdout = String::from_utf8_lossy(&verify.stdout);
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert_eq!(verify.status.code(), Some(0), "{when}: {stdout}\n{stderr}");
        assert!(stdout.contains("mirror: OK"), "{when}: {stdout}");
        for alarm in ["inserted", "missing", "reordered", "modified"] {
            assert!(
                !stdout.contains(alarm) && !stderr.contains(alarm),
                "{when}: {stdout}\n{stderr}"
            );
        }
        stdout.into_owned()
    };
    check("while serving");
    let pid = server.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = check("after stop");
    assert!(
        !after.contains("not mirrored yet"),
        "the server mirrors everything before it exits: {after}"
    );
}
