//! Store maintenance through the real binary against a real server and real SQLite files:
//! `deliveries reverify` per scheme, `backup` manifests and `doctor`'s retention check, and
//! `purge` and `deliveries index-phones` while senders keep posting.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

use crate::helpers::*;

fn cli(app_dir: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(app_dir)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const TOKEN: &str = "bearer-token-for-the-tests-0123456789";

/// A `demo` NextPhone source that also checks a Bearer token, and a token-only `tok` source.
async fn app_with_token_sources() -> TestApp {
    let fixture = write_fixture(&AppOptions {
        sources: Some(
            r#"
[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:demo.secret"]
token = "file:demo.token"

[[sources]]
name = "tok"
preset = "bearer"
secrets = ["file:demo.token"]
"#
            .into(),
        ),
        ..AppOptions::default()
    });
    std::fs::write(fixture.dir.path().join("demo.token"), TOKEN).unwrap();
    spawn_from_fixture(fixture).await
}

async fn post(app: &TestApp, source: &str, body: &str, signed: bool) -> String {
    let mut req = app
        .client()
        .post(app.url(&format!("/hooks/{source}")))
        .header("Content-Type", "application/json")
        .bearer_auth(TOKEN)
        .body(body.to_owned());
    if signed {
        req = req.header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        );
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    v["delivery_id"].as_str().unwrap().to_owned()
}

/// Rewrite delivery `id`'s stored raw body with `edit`, re-sealed under its own data key: what
/// someone holding the database and the master key could do.
fn alter_stored_body(app: &TestApp, id: &str, edit: impl FnOnce(&mut Vec<u8>)) {
    use wardhook::crypto::{DataKey, Keyring, MasterKey, RecordPlace};
    let keyring =
        Keyring::from_master(&MasterKey::load(&app.dir.path().join("master.key")).unwrap());
    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    let (source, key_id, nonce, ct): (String, i64, Vec<u8>, Vec<u8>) = conn
        .query_row(
            "SELECT source, key_id, nonce, ciphertext FROM deliveries WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let (period, wrapped): (String, Vec<u8>) = conn
        .query_row(
            "SELECT period, wrapped FROM data_keys WHERE key_id = ?1",
            [key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let key = DataKey::unwrap_from(&keyring, key_id, &period, &wrapped).unwrap();
    let place = RecordPlace {
        kind: "delivery",
        id,
        source: &source,
        key_id,
    };
    let mut stored: Value =
        serde_json::from_slice(&key.open(&place, &nonce, &ct).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = b64.decode(stored["body_b64"].as_str().unwrap()).unwrap();
    edit(&mut body);
    stored["body_b64"] = Value::String(b64.encode(&body));
    let sealed = key
        .seal(&place, serde_json::to_vec(&stored).unwrap().as_slice())
        .unwrap();
    conn.execute(
        "UPDATE deliveries SET nonce = ?1, ciphertext = ?2 WHERE id = ?3",
        rusqlite::params![sealed.nonce, sealed.ciphertext, id],
    )
    .unwrap();
}

#[tokio::test]
async fn reverify_checks_the_signature_of_a_nextphone_delivery_that_also_carried_a_token() {
    let app = app_with_token_sources().await;
    let body = r#"{"event":"call.ended","data":{"call_id":"rv-token"}}"#;
    let id = post(&app, "demo", body, true).await;

    let out = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "reverify", &id],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("AUTHENTIC"), "{shown}");
    assert!(
        shown.contains("not re-checked"),
        "says the token was not checked: {shown}"
    );
    assert!(!shown.contains(TOKEN), "the token is never printed");
}

#[tokio::test]
async fn reverify_says_a_token_only_delivery_is_not_reverifiable_with_its_own_exit_code() {
    let app = app_with_token_sources().await;
    let id = post(
        &app,
        "tok",
        r#"{"event":"call.ended","call_id":"rv-tok"}"#,
        false,
    )
    .await;

    let out = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "reverify", &id],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(shown.contains("NOT RE-VERIFIABLE"), "{shown}");
    assert!(
        !shown.contains("NOT VERIFIED"),
        "no claim of tampering: {shown}"
    );
    // The database holds no copy of the token to make it "verifiable".
    let db = std::fs::read(app.dir.path().join("data/wardhook.db")).unwrap();
    assert!(
        !db.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "the bearer token is not stored"
    );
}

#[tokio::test]
async fn reverify_finds_an_altered_stored_body_of_a_signed_delivery() {
    let app = spawn_app().await;
    let body = r#"{"event":"call.ended","data":{"call_id":"rv-alter","note":"fine"}}"#;
    let id = deliver(&app, body).await;
    let ok = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "reverify", &id],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));

    alter_stored_body(&app, &id, |b| {
        let at = b.windows(4).position(|w| w == b"fine").unwrap();
        b[at..at + 4].copy_from_slice(b"FINE");
    });
    let bad = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "reverify", &id],
    );
    let shown = text(&bad);
    assert_eq!(bad.status.code(), Some(3), "{shown}");
    assert!(shown.contains("NOT VERIFIED"), "{shown}");
}

/// Store `n` authentic `demo` deliveries received `age` ago, straight through the store's intake
/// (verified by the source's own verifier first, as the listener does): a large old history in
/// seconds instead of `n` HTTPS posts.
async fn seed_old_deliveries(fixture: &Fixture, n: usize, age: chrono::Duration) {
    seed_deliveries(fixture, n, age, |i| {
        format!(
            r#"{{"event":"call.ended","data":{{"call_id":"old-{i}","summary":"seeded history"}}}}"#
        )
    })
    .await;
}

/// [`seed_old_deliveries`] with the `i`th body of `body`.
async fn seed_deliveries(
    fixture: &Fixture,
    n: usize,
    age: chrono::Duration,
    body: impl Fn(usize) -> String,
) {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use wardhook::normalize::{normalize, IntakeInput};
    use wardhook::verify::{UnverifiedRequest, Verdict};
    let config =
        wardhook::config::Config::load_with_base(&fixture.config_path, fixture.dir.path()).unwrap();
    let source = config.source("demo").unwrap();
    let keyring = wardhook::crypto::Keyring::from_master(
        &wardhook::crypto::MasterKey::load(&fixture.dir.path().join("master.key")).unwrap(),
    );
    let db = fixture.dir.path().join("data/wardhook.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let store =
        wardhook::store::Store::open(&db, keyring, wardhook::store::StoreOptions::default())
            .unwrap();
    let received = chrono::Utc::now() - age;
    for start in (0..n).step_by(5_000) {
        let batch = (start..n.min(start + 5_000)).map(|i| {
            let body = body(i);
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_static("x-nextphone-signature"),
                HeaderValue::from_str(&nextphone_signature(DEMO_SECRET, body.as_bytes())).unwrap(),
            );
            let request = UnverifiedRequest {
                method: "POST",
                path_and_query: "/hooks/demo",
                headers: &headers,
                body: body.as_bytes(),
                peer_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            };
            let verifier = wardhook::verify::SourceVerifier::new(source.spec.clone()).unwrap();
            let Ok(Verdict::Verified(verified)) = verifier.verify(&request, received) else {
                panic!("the seeded delivery must verify");
            };
            let input = IntakeInput::from_verified(&verified);
            let mut normalized = normalize(&input, received).unwrap();
            let store = store.clone();
            async move {
                store
                    .intake(input, &mut normalized, Vec::new())
                    .await
                    .unwrap()
            }
        });
        futures_util::future::join_all(batch).await;
    }
}

/// While `command` runs as its own process against the running server, post signed deliveries
/// to it over TLS; the statuses they got and the command's output.
async fn post_while_running(app: &TestApp, args: &[&str], tag: &str) -> (Vec<u16>, Output) {
    let child = Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = app.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let running = running.clone();
        tokio::task::spawn_blocking(move || {
            let out = child.wait_with_output().unwrap();
            running.store(false, std::sync::atomic::Ordering::SeqCst);
            out
        })
    };
    let mut statuses = Vec::new();
    let mut i = 0u64;
    while running.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "{tag} did not finish in time"
        );
        let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"{tag}-{i}"}}}}"#);
        let res = client
            .post(app.url("/hooks/demo"))
            .header("Content-Type", "application/json")
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        i += 1;
    }
    (statuses, watcher.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn senders_get_no_503_while_emergency_export_and_purge_work_through_fifty_thousand_rows() {
    const ROWS: usize = 50_000;
    let started = std::time::Instant::now();
    let fixture = write_fixture(&AppOptions::default());
    seed_old_deliveries(&fixture, ROWS, chrono::Duration::days(3)).await;
    let app = spawn_from_fixture(fixture).await;
    eprintln!("seeded {ROWS} rows in {:?}", started.elapsed());
    // Before anything the sender posts, so the export's count is exact.
    let until = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();

    let archive = app.dir.path().join("emergency.archive");
    let (statuses, out) = post_while_running(
        &app,
        &[
            "emergency-export",
            "--reason",
            "load test of the break-glass export",
            "--since",
            "2000-01-01",
            "--until",
            &until,
            "--out",
            archive.to_str().unwrap(),
        ],
        "during-export",
    )
    .await;
    eprintln!(
        "export done at {:?}, {} posts meanwhile",
        started.elapsed(),
        statuses.len()
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("wrote {ROWS} deliveries")),
        "{}",
        text(&out)
    );
    assert!(
        !statuses.is_empty(),
        "the sender posted while the export ran"
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every delivery during the export was accepted: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );

    let (statuses, out) =
        post_while_running(&app, &["purge", "--older-than", "1d"], "during-purge").await;
    let shown = text(&out);
    eprintln!(
        "purge done at {:?}, {} posts meanwhile",
        started.elapsed(),
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every delivery during the purge was accepted: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert!(
        statuses.len() >= 5,
        "the sender kept posting during the purge ({} posts)",
        statuses.len()
    );
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("{ROWS} delivery payloads")),
        "{shown}"
    );
    assert!(shown.contains("purge: 100%"), "progress is shown: {shown}");

    // The trail says what went, chunk by chunk: no transaction covered more than 500 rows.
    let audit = cli(
        app.dir.path(),
        &app.config_path,
        &["audit", "search", "--action", "purged"],
    );
    let counts: Vec<i64> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter_map(|line| line.rsplit('\t').next())
        .filter_map(|detail| serde_json::from_str::<Value>(detail).ok())
        .filter(|d| d["object_kind"] == "delivery")
        .filter_map(|d| d["count"].as_i64())
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), ROWS as i64, "{counts:?}");
    assert!(counts.len() >= ROWS / 500, "{} chunks", counts.len());
    assert!(counts.iter().all(|c| *c <= 500), "{counts:?}");
}

/// The `backups` line of `wardhook doctor`'s report.
fn doctor_backups_line(app: &TestApp, extra: &[&str]) -> String {
    let mut args = vec!["doctor"];
    args.extend_from_slice(extra);
    let out = cli(app.dir.path(), &app.config_path, &args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with("backups ")))
        .unwrap_or_else(|| panic!("no backups line in {report}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_records_the_periods_it_holds_and_doctor_warns_once_they_pass_retention() {
    let fixture = write_fixture(&AppOptions::default());
    let old = chrono::Utc::now() - chrono::Duration::days(10);
    seed_old_deliveries(&fixture, 3, chrono::Duration::days(10)).await;
    let app = spawn_from_fixture(fixture).await;
    deliver(&app, r#"{"event":"call.ended","data":{"call_id":"today"}}"#).await;
    let old_day = old.format("%Y-%m-%d").to_string();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();

    let folder = app.dir.path().join("backups");
    std::fs::create_dir_all(&folder).unwrap();
    let to = folder.join("wardhook-1.db");
    let out = cli(
        app.dir.path(),
        &app.config_path,
        &["backup", "--to", to.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{old_day} to {today}")),
        "{}",
        text(&out)
    );

    // The manifest beside it: owner-only, every period listed, the same digest as the record.
    let manifest_path = folder.join("wardhook-1.db.manifest.json");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&manifest_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "manifest mode {mode:o}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["format"], "wardhook-backup-manifest v1");
    assert_eq!(manifest["backup"], "wardhook-1.db");
    assert_eq!(manifest["periods"], serde_json::json!([old_day, today]));
    assert_eq!(manifest["oldest_period"], old_day.as_str());
    assert_eq!(
        manifest["bytes"].as_u64(),
        Some(std::fs::metadata(&to).unwrap().len())
    );

    // The audit record names the copy and its periods.
    let audit = cli(
        app.dir.path(),
        &app.config_path,
        &["audit", "search", "--action", "backup_taken"],
    );
    let record: Value = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter_map(|l| l.rsplit('\t').next())
        .find_map(|d| serde_json::from_str(d).ok())
        .expect("a backup_taken record");
    let day_start = |day: &str| {
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    };
    assert_eq!(
        record["path"].as_str(),
        to.canonicalize().unwrap().to_str(),
        "{record}"
    );
    assert_eq!(
        record["oldest_period_unix"].as_i64(),
        Some(day_start(&old_day))
    );
    assert_eq!(
        record["newest_period_unix"].as_i64(),
        Some(day_start(&today))
    );
    assert_eq!(record["count"], 2, "two periods");
    assert_eq!(record["sha256"], manifest["sha256"]);
    assert_eq!(record["bytes"], manifest["bytes"]);

    // No purge yet: no retention to judge by.
    let line = doctor_backups_line(&app, &[]);
    assert!(line.starts_with("OK"), "{line}");

    // A purge at 5 days destroys the old period here; the backup still holds it.
    let purge = cli(
        app.dir.path(),
        &app.config_path,
        &["purge", "--older-than", "5d"],
    );
    assert!(purge.status.success(), "{}", text(&purge));
    let line = doctor_backups_line(&app, &[]);
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains("wardhook-1.db"), "{line}");
    assert!(line.contains(&old_day), "{line}");
    assert!(line.contains("5-day retention"), "{line}");

    // Judged against a longer stated policy, it is within retention.
    let line = doctor_backups_line(&app, &["--retention", "30d"]);
    assert!(line.starts_with("OK"), "{line}");

    // Once the copy is destroyed, nothing is left to warn about.
    std::fs::remove_file(&to).unwrap();
    let line = doctor_backups_line(&app, &[]);
    assert!(line.starts_with("OK"), "{line}");
}

/// Every delivery's id and caller index in the SQLite file at `db`, in id order.
fn caller_refs(db: &Path) -> Vec<(String, Option<String>)> {
    rusqlite::Connection::open(db)
        .unwrap()
        .prepare("SELECT id, caller_ref FROM deliveries ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn index_phones_beside_the_running_server_gives_older_deliveries_the_intake_index() {
    const ROWS: usize = 3_000;
    let fixture = write_fixture(&AppOptions::default());
    // Two events in three name one of ten callers (spelled two ways); the third names none.
    seed_deliveries(&fixture, ROWS, chrono::Duration::hours(2), |i| {
        let caller = match i % 3 {
            0 => String::new(),
            1 => format!(r#","caller":{{"phone":"+1555010{:04}"}}"#, i % 10),
            _ => format!(r#","caller":{{"phone":"+1 555 010 {:04}"}}"#, i % 10),
        };
        format!(r#"{{"event":"call.ended","data":{{"call_id":"ix-{i}"{caller}}}}}"#)
    })
    .await;
    let db = fixture.dir.path().join("data/wardhook.db");
    let at_intake = caller_refs(&db);
    let named = at_intake.iter().filter(|(_, r)| r.is_some()).count();
    assert_eq!(named, ROWS / 3 * 2);
    // As a database from before the caller index holds them.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE deliveries SET caller_ref = NULL")
        .unwrap();
    let app = spawn_from_fixture(fixture).await;

    let (statuses, out) = post_while_running(
        &app,
        &["deliveries", "index-phones", "--batch", "100"],
        "during-index",
    )
    .await;
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "the sender posted and every delivery was accepted: {statuses:?}"
    );
    assert!(shown.contains(&format!("indexed {named},")), "{shown}");
    assert!(
        shown.contains("deliveries index-phones: 100%"),
        "progress is shown: {shown}"
    );
    // The seeded deliveries have exactly the index intake gave them; the new ones name none.
    let after = caller_refs(&db);
    assert_eq!(
        after[..ROWS],
        at_intake[..],
        "the intake index, row for row"
    );
    assert!(after[ROWS..].iter().all(|(_, r)| r.is_none()));

    // A rerun reads only the deliveries naming no number, and the trail verifies.
    let again = cli(
        app.dir.path(),
        &app.config_path,
        &["deliveries", "index-phones"],
    );
    assert!(text(&again).contains("indexed 0,"), "{}", text(&again));
    assert_eq!(caller_refs(&db)[..ROWS], at_intake[..]);
    let verified = cli(app.dir.path(), &app.config_path, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    let audit = cli(
        app.dir.path(),
        &app.config_path,
        &["audit", "search", "--action", "callers_indexed"],
    );
    assert_eq!(
        String::from_utf8_lossy(&audit.stdout)
            .lines()
            .filter(|line| line.contains("\tcallers_indexed\t"))
            .count(),
        4,
        "{}",
        text(&audit)
    );
}
