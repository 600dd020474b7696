//! Store maintenance through the real binary against a real server and real SQLite files:
//! `deliveries reverify` per scheme, `backup` manifests and `doctor`'s retention check, and
//! `purge` while senders keep posting.
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
