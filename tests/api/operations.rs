//! Operations over real data: re-verifying stored deliveries, backup and restore into a fresh
//! folder, the OAuth2 token endpoint, and storage that cannot commit.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::*;
use crate::intake::post_signed;

fn cli(app_dir: &std::path::Path, config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(app_dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn reverify_confirms_a_stored_delivery_and_catches_a_changed_secret() {
    let app = spawn_app().await;
    let body = "{\n  \"event\": \"call.ended\",\n  \"data\": {\"call_id\": \"rv-1\"}\n}";
    let id = deliver(&app, body).await;
    let ok = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "reverify", &id],
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("AUTHENTIC"), "{text}");

    // The secret that signed it is gone: the check can no longer vouch for it.
    std::fs::write(app.dir.path().join("demo.secret"), "another-secret").unwrap();
    let bad = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "reverify", &id],
    );
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("NOT VERIFIED"));

    let audit = cli(
        app.dir.path(),
        &app.config_path,
        &["audit", "search", "--action", "delivery_reverified"],
    );
    assert_eq!(
        String::from_utf8_lossy(&audit.stdout)
            .matches("delivery_reverified")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_fresh_folder_serves_the_old_deliveries() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            deliver(
                &app,
                &format!(r#"{{"event":"call.ended","data":{{"call_id":"bk-{i}"}}}}"#),
            )
            .await,
        );
    }
    std::fs::create_dir_all(app.dir.path().join("backups")).unwrap();
    let backup = app.dir.path().join("backups/backup.db");
    let out = cli(
        app.dir.path(),
        &app.config_path,
        &["backup", "--to", backup.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let beside: Vec<_> = std::fs::read_dir(app.dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("key"))
        .collect();
    assert!(
        beside.is_empty(),
        "the master key must not be written next to a backup: {beside:?}"
    );

    // A fresh host: new folder, new certificates, the same master key, the backup as database.
    let fresh = write_fixture(&AppOptions::default());
    std::fs::copy(
        app.dir.path().join("master.key"),
        fresh.dir.path().join("master.key"),
    )
    .unwrap();
    std::fs::create_dir_all(fresh.dir.path().join("data")).unwrap();
    std::fs::copy(&backup, fresh.dir.path().join("data/wardhook.db")).unwrap();
    let restored = spawn_from_fixture(fresh).await;
    for (i, id) in ids.iter().enumerate() {
        let show = cli(
            restored.dir.path(),
            &restored.config_path,
            &["deliveries", "show", id],
        );
        assert!(
            show.status.success(),
            "{}",
            String::from_utf8_lossy(&show.stderr)
        );
        let event: Value = serde_json::from_slice(&show.stdout).unwrap();
        assert_eq!(event["call_id"], format!("bk-{i}"));
    }
    // It keeps deduplicating against the restored history, and the audit chain still verifies.
    let again = restored
        .client()
        .post(restored.url("/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(
                DEMO_SECRET,
                br#"{"event":"call.ended","data":{"call_id":"bk-0"}}"#,
            ),
        )
        .body(r#"{"event":"call.ended","data":{"call_id":"bk-0"}}"#)
        .send()
        .await
        .unwrap();
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["status"], "duplicate");
    assert_eq!(v["delivery_id"], ids[0].as_str());
    let verify = cli(
        restored.dir.path(),
        &restored.config_path,
        &["audit", "verify", "--skip-mirror"],
    );
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test]
async fn oauth_clients_fetch_tokens_that_only_their_source_accepts() {
    let hash = wardhook::verify::oauth::hash_client_secret(b"ct-client-secret");
    let app = spawn_app_with(AppOptions {
        sources: Some(format!(
            r#"
[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:demo.secret"]

[[sources]]
name = "calltel"
preset = "calltelemetry"
scheme = {{ mode = "oauth2", oauth_clients = [{{ client_id = "ct", client_secret_sha256 = "{hash}" }}] }}
"#
        )),
        ..AppOptions::default()
    })
    .await;
    let client = app.client();
    let bad = client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ct"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let good = client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ct"),
            ("client_secret", "ct-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let token: Value = good.json().await.unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    let body = r#"{"event":"call.ended","data":{"call_id":"oauth-1"}}"#;
    let accepted = client
        .post(app.url("/hooks/calltel"))
        .bearer_auth(&access)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let elsewhere = client
        .post(app.url("/hooks/demo"))
        .bearer_auth(&access)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        401,
        "a token is good only for its own source"
    );
}

#[tokio::test]
async fn a_full_database_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    // A 1 MiB cap stands in for a full disk: SQLite fails the commit exactly as on ENOSPC.
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(
        &fixture.config_path,
        text.replace("[storage]\n", "[storage]\nmax_size_mb = 1\n"),
    )
    .unwrap();
    let app = spawn_from_fixture(fixture).await;
    let client = app.client();
    let filler = "x".repeat(16 * 1024);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let body = format!(
            r#"{{"event":"call.ended","data":{{"call_id":"full-{i}","transcript":"{filler}"}}}}"#
        );
        let res = client
            .post(app.url("/hooks/demo"))
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => {
                let v: Value = res.json().await.unwrap();
                acked.push(v["delivery_id"].as_str().unwrap().to_owned());
            }
            503 => {
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                refused = Some((retry, res.text().await.unwrap()));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let (retry_after, body) = refused.expect("the cap was never reached");
    assert!(retry_after.is_some(), "503 without Retry-After");
    assert_eq!(body, r#"{"error":"storage unavailable"}"#);
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        503,
        "readiness must go red while storage cannot commit"
    );
    assert!(!acked.is_empty());
    for id in &acked {
        let show = cli(
            app.dir.path(),
            &app.config_path,
            &["deliveries", "show", id],
        );
        assert!(
            show.status.success(),
            "acknowledged {id} lost: {}",
            String::from_utf8_lossy(&show.stderr)
        );
    }
}

#[tokio::test]
async fn emergency_export_decrypts_a_range_into_an_archive_only_its_key_opens() {
    let app = spawn_app().await;
    for i in 0..3 {
        deliver(&app, &format!(r#"{{"event":"call.ended","data":{{"call_id":"em-{i}","caller":{{"name":"Emergency Canary"}}}}}}"#)).await;
    }
    let archive = app.dir.path().join("export.whe");
    let out = cli(
        app.dir.path(),
        &app.config_path,
        &[
            "emergency-export",
            "--reason",
            "EHR outage, on-call physician needs yesterday's calls",
            "--since",
            "2000-01-01",
            "--out",
            archive.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap();
    let raw = std::fs::read(&archive).unwrap();
    assert!(
        !raw.windows(b"Emergency Canary".len())
            .any(|w| w == b"Emergency Canary"),
        "the archive must be encrypted"
    );
    let key_file = app.dir.path().join("archive.key");
    std::fs::write(&key_file, &key).unwrap();
    let opened = cli(
        app.dir.path(),
        &app.config_path,
        &[
            "emergency-open",
            archive.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&opened.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "header + 3 deliveries");
    assert!(lines[0]["reason"].as_str().unwrap().contains("EHR outage"));
    assert_eq!(lines[1]["caller"]["name"], "Emergency Canary");

    // A truncated archive is an error, not a shorter export.
    std::fs::write(&archive, &raw[..raw.len() - 10]).unwrap();
    let cut = cli(
        app.dir.path(),
        &app.config_path,
        &[
            "emergency-open",
            archive.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(!cut.status.success());

    let audit = cli(
        app.dir.path(),
        &app.config_path,
        &["audit", "search", "--action", "emergency_access"],
    );
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("\"count\":3"), "{text}");
    assert!(
        !text.contains("EHR outage"),
        "the reason text stays out of the audit log"
    );
}

#[tokio::test]
async fn quarantine_and_purge_commands_work_on_the_sqlite_store() {
    let app = spawn_app().await;
    let (status, answer) = post_signed(&app, "not json at all {").await;
    assert_eq!(status, 400, "{answer}");
    let qid = answer["quarantine_id"].as_str().unwrap().to_owned();
    deliver(&app, r#"{"event":"call.ended","data":{"call_id":"pg-1"}}"#).await;

    let list = cli(
        app.dir.path(),
        &app.config_path,
        &["quarantine", "list", "--format", "json"],
    );
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let rows: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["id"], qid.as_str());
    let show = cli(
        app.dir.path(),
        &app.config_path,
        &["quarantine", "show", &qid],
    );
    assert!(String::from_utf8_lossy(&show.stdout).contains("not json at all {"));

    let purge = cli(
        app.dir.path(),
        &app.config_path,
        &["purge", "--older-than", "0s"],
    );
    let text = String::from_utf8_lossy(&purge.stdout);
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    assert!(
        text.contains("1 delivery payloads, 1 quarantined bodies"),
        "{text}"
    );
}
