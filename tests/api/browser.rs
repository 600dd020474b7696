//! The dashboard in a real headless Chromium, driven over WebDriver: sign in, find a dead
//! letter, retry it, see it delivered, reveal a payload as an operator (and be refused as an
//! auditor), play a captured call recording from its page (the browser fetches and decodes the
//! WAV under the console's Content-Security-Policy), be signed out after the idle time, and save a screenshot of each page into
//! `target/screenshots/` — or, with `WARDHOOK_UPDATE_SCREENSHOTS=1`, over the documentation's
//! `docs/screenshots/`, so an ordinary test run leaves the tracked images alone. Each test runs
//! on SQLite and on PostgreSQL (whose screenshots go to `target/screenshots/postgres/` only).
//!
//! WebDriver is plain JSON over HTTP on loopback, so these tests speak it with `reqwest`
//! directly instead of pulling a WebDriver crate and its TLS stack. They need `chromedriver`
//! and `chromium` (Debian: `apt-get install chromium chromium-driver`, as `.ci/run` does); when
//! `chromedriver` is not installed they print why and pass without running.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use wardhook::admin::Role;
use wiremock::MockServer;

use crate::admin::{
    admin_url, console_app_on, create_token, deliver_to, drain, send_signed, Db, CANARY_NAME,
};
use crate::helpers::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session (shared by the other `browser_*` test files).
pub(crate) struct Browser {
    driver: Driver,
    session: String,
    user_data: tempfile::TempDir,
    /// The backend under test: only SQLite's screenshots may update the documentation's.
    pub(crate) backend: Db,
}

impl Driver {
    async fn start() -> Option<Self> {
        let Some(bin) = find_in_path("chromedriver") else {
            // `.ci/run` installs Chromium, so under CI a missing driver is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "chromedriver is not installed; .ci/run installs chromium and chromium-driver"
            );
            eprintln!(
                "SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver); \
                 the browser tests did not run"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(driver)
    }
}

impl Browser {
    pub(crate) async fn open() -> Option<Self> {
        let driver = Driver::start().await?;
        let user_data = tempfile::tempdir().unwrap();
        let mut options = json!({
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--ignore-certificate-errors", "--window-size=1280,900", "--hide-scrollbars",
                format!("--user-data-dir={}", user_data.path().display()),
            ]
        });
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": options,
        }}});
        let v: Value = driver
            .http
            .post(format!("{}/session", driver.base))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Some(Self {
            driver,
            session,
            user_data,
            backend: Db::Sqlite,
        })
    }

    pub(crate) async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.driver.base, self.session);
        let req = match method {
            "GET" => self.driver.http.get(url),
            "DELETE" => self.driver.http.delete(url),
            _ => self.driver.http.post(url).json(&body),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    pub(crate) async fn url(&self) -> String {
        self.cmd("GET", "/url", json!({}))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn source(&self) -> String {
        self.cmd("GET", "/source", json!({}))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The page source once it contains `text` (a click's navigation may still be running
    /// when the click returns); panics with the page after 10 s.
    pub(crate) async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = self.source().await;
            if page.contains(text) {
                return page;
            }
            assert!(Instant::now() < deadline, "never showed {text:?}: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    pub(crate) async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub(crate) async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Save a PNG of the current page as `<name>.png` (see the module docs for where).
    pub(crate) async fn screenshot(&self, name: &str) {
        let b64 = self.cmd("GET", "/screenshot", json!({})).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let into = if self.backend == Db::Postgres {
            "target/screenshots/postgres"
        } else if std::env::var_os("WARDHOOK_UPDATE_SCREENSHOTS").is_some() {
            "docs/screenshots"
        } else {
            "target/screenshots"
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(into);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) async fn sign_in(&self, app: &TestApp, token: &str) {
        self.goto(&admin_url(app, "/login")).await;
        self.type_into("#token", token).await;
        self.click("#sign-in").await;
        self.wait_for("<h1>Overview</h1>").await;
    }

    pub(crate) async fn close(self) {
        self.cmd("DELETE", "", json!({})).await;
        drop(self.user_data);
    }
}

async fn an_operator_retries_a_dead_letter_and_reveals_it_while_an_auditor_is_refused_on(db: Db) {
    // Arrange: the CRM refuses the first lead (dead letter) and takes every later one.
    let crm = destination_answering(400, 1, 201).await;
    let Some(app) = console_app_on(db, "demo", "crm", &crm.uri(), "").await else {
        return;
    };
    let (_, v) = deliver_to(&app, "demo", "call-browser-1").await;
    let dead_id = v["delivery_id"].as_str().unwrap().to_owned();
    drain(&app).await;
    deliver_to(&app, "demo", "call-browser-2").await;
    drain(&app).await;
    let (status, _) = send_signed(&app, "demo", r#"{"data":{"note":"no event type"}}"#, true).await;
    assert_eq!(status, 400, "quarantined");
    let (operator, _) = create_token(&app, "ops-alice", Role::Operator);
    let (auditor, _) = create_token(&app, "audit-bob", Role::Auditor);
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;

    // Sign in; the overview shows sources and handlers with their charts.
    b.goto(&admin_url(&app, "/login")).await;
    b.screenshot("login").await;
    b.sign_in(&app, &operator).await;
    let page = b.source().await;
    assert!(
        page.contains("crm") && page.contains("<svg"),
        "overview with charts"
    );
    b.screenshot("overview").await;
    b.resize(820, 1180).await;
    b.screenshot("overview-tablet").await;
    b.resize(1280, 900).await;

    // Find the dead letter and retry it.
    b.goto(&admin_url(&app, "/dead-letters")).await;
    let page = b.source().await;
    assert!(page.contains(&dead_id), "the dead letter is listed");
    assert!(page.contains("✗ dead"), "status in words, not only colour");
    b.screenshot("dead-letters").await;
    b.click("button.retry").await;
    b.wait_for("Retried 1 dead letter").await;
    assert!(matches!(
        drain(&app).await[..],
        [wardhook::dispatch::worker::TaskOutcome::Done { .. }]
    ));

    // See it delivered, with its attempts timeline.
    b.goto(&admin_url(&app, "/deliveries")).await;
    b.screenshot("deliveries").await;
    b.goto(&admin_url(&app, &format!("/deliveries/{dead_id}")))
        .await;
    let page = b.source().await;
    assert!(page.contains("✓ done"), "delivered after the retry");
    assert!(
        page.contains("✗ permanent") && page.contains("✓ ok"),
        "timeline"
    );
    assert!(!page.contains(CANARY_NAME), "metadata only until revealed");
    b.screenshot("delivery").await;

    // Reveal the payload as the operator.
    b.click("#reveal").await;
    b.wait_for(CANARY_NAME).await;
    b.screenshot("payload").await;

    b.goto(&admin_url(&app, "/quarantine")).await;
    assert!(b.source().await.contains("quarantined"));
    b.screenshot("quarantine").await;

    // Sign out; the auditor sees the verified audit log but cannot reveal.
    b.click("header form button").await;
    b.wait_for("Admin token").await;
    assert!(b.url().await.ends_with("/login"));
    b.sign_in(&app, &auditor).await;
    b.goto(&admin_url(&app, "/audit")).await;
    let page = b.source().await;
    assert!(page.contains("Chain verified"), "verification status shown");
    assert!(
        page.contains("payload_read"),
        "the operator's reveal is on record"
    );
    b.screenshot("audit").await;
    b.goto(&admin_url(&app, &format!("/deliveries/{dead_id}")))
        .await;
    b.click("#reveal").await;
    let page = b.wait_for("<h1>Not allowed</h1>").await;
    assert!(!page.contains(CANARY_NAME), "nothing leaked");
    b.screenshot("reveal-refused").await;
    b.close().await;
}

async fn an_idle_session_is_signed_out_on(db: Db) {
    let crm = MockServer::start().await;
    let Some(app) = console_app_on(db, "demo", "crm", &crm.uri(), "idle_timeout = \"3s\"").await
    else {
        return;
    };
    let (operator, _) = create_token(&app, "ops-idle", Role::Operator);
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    b.sign_in(&app, &operator).await;
    b.goto(&admin_url(&app, "/deliveries")).await;
    assert!(b.url().await.ends_with("/deliveries"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    b.goto(&admin_url(&app, "/deliveries")).await;
    assert!(b.url().await.ends_with("/login?expired=1"));
    assert!(b
        .source()
        .await
        .contains("signed out after a period of inactivity"));
    b.screenshot("signed-out").await;
    b.close().await;
}

crate::on_both_backends! {
    an_operator_retries_a_dead_letter_and_reveals_it_while_an_auditor_is_refused_on =>
        an_operator_retries_a_dead_letter_and_reveals_it_while_an_auditor_is_refused,
        an_operator_retries_a_dead_letter_and_reveals_it_while_an_auditor_is_refused_on_postgres;
    an_idle_session_is_signed_out_on =>
        an_idle_session_is_signed_out, an_idle_session_is_signed_out_on_postgres;
    an_operator_plays_a_captured_recording_on =>
        an_operator_plays_a_captured_recording,
        an_operator_plays_a_captured_recording_on_postgres;
}

/// An operator opens a captured recording from its delivery's page and plays it: the browser
/// fetches the decrypted WAV with the session cookie, under the console's CSP, and decodes it.
async fn an_operator_plays_a_captured_recording_on(db: Db) {
    let Some(mut browser) = Browser::open().await else {
        return;
    };
    browser.backend = db;
    let options = crate::artifacts::options("");
    let (fixture, _pg) = match db {
        Db::Sqlite => (write_fixture(&options), None),
        Db::Postgres => {
            let Some(pg) = crate::postgres::PgTestDb::create().await else {
                return;
            };
            (pg.fixture("node-a", options, None), Some(pg))
        }
    };
    crate::artifacts::write_secrets(&fixture);
    let vendor = crate::artifacts::Vendor::start(&fixture);
    let app = spawn_from_fixture(fixture).await;
    let dir = app.dir.path().to_owned();
    crate::artifacts::post_callback(
        &app.client(),
        app.port,
        "11",
        &vendor.url("/2010-04-01/Recordings/RE11"),
    )
    .await;
    let mut rows = Vec::new();
    assert!(
        crate::artifacts::until(|| {
            rows = crate::artifacts::listed(&dir);
            rows.len() == 1
        })
        .await,
        "captured"
    );
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    let delivery = rows[0]["delivery_id"].as_str().unwrap().to_owned();
    let (operator, _) = create_token(&app, "ops", Role::Operator);
    browser.sign_in(&app, &operator).await;
    browser
        .goto(&admin_url(&app, &format!("/deliveries/{delivery}")))
        .await;
    browser.wait_for("<h2>Artifacts</h2>").await;
    browser.click("a.artifact").await;
    browser.wait_for("id=\"player\"").await;
    assert!(browser.url().await.ends_with(&format!("/artifacts/{id}")));
    assert!(
        crate::artifacts::artifact_reads(&dir).is_empty(),
        "nothing is decrypted before play"
    );
    let played = browser
        .cmd(
            "POST",
            "/execute/async",
            json!({ "script": "const done = arguments[arguments.length - 1];
                const a = document.getElementById('player');
                a.muted = true;
                a.addEventListener('error', () => done('error ' + (a.error && a.error.code)));
                a.play().then(() => done(String(a.duration)), e => done('play failed: ' + e));",
                "args": [] }),
        )
        .await;
    let seconds: f64 = played
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the recording did not play: {played}"));
    let expected = (vendor.wav.len() - 44) as f64 / 16000.0;
    assert!(
        (seconds - expected).abs() < 0.5,
        "decoded {seconds} s, the WAV holds {expected} s"
    );
    browser.screenshot("artifact").await;
    let reads = crate::artifacts::artifact_reads(&dir);
    assert!(!reads.is_empty(), "playing is a recorded read");
    browser.close().await;
    app.stop().await;
}
