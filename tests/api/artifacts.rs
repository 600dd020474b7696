//! Artifact capture end to end, each test on SQLite and on PostgreSQL: a Twilio recording
//! status callback, signed with Twilio's scheme, makes the `capture` step fetch the recording
//! from a local HTTPS "vendor" (Python `http.server` + `ssl`, the test CA's certificate, basic
//! auth) serving a WAV written with Python's `wave` module. The capture is decrypted back and
//! compared by SHA-256, a canary inside the audio is found in no file wardhook wrote, the
//! failure answers end as documented in docs/ARTIFACTS.md, a `503` or a connection cut mid-body
//! is retried to one capture, and a SIGKILL mid-download leaves no partial file and is retried
//! to completion after restart. A replayed capture downloads nothing again; operators play and
//! download the recording in the console (API and dashboard, each read audited), an emergency
//! export carries it, and a purge of its period (run two days later, under `faketime`) makes it
//! unreadable everywhere.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use wardhook::admin::Role;

use crate::admin::Db;
use crate::helpers::*;

const CANARY: &[u8] = b"CANARY-RECORDING-QX7Z-PATIENT-VOICE";
const TWILIO_TOKEN: &str = "twilio_auth_token_for_tests";
const PUBLIC_URL: &str = "https://wardhook.example/hooks/twilio";
const SID: &str = "AC00000000000000000000000000000001";
const VENDOR_PASSWORD: &str = "vendor-password";

fn python() -> String {
    std::env::var("WARDHOOK_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A WAV with the canary in its frames, written by Python's `wave` module.
fn write_wav(path: &Path) -> Vec<u8> {
    let script = r#"
import sys, wave, random
canary = sys.argv[2].encode()
random.seed(7)
frames = bytearray()
while len(frames) < 200000:
    frames += canary + bytes(random.getrandbits(8) for _ in range(301))
if len(frames) % 2:
    frames += b"\0"
w = wave.open(sys.argv[1], "wb")
w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
w.writeframes(bytes(frames))
w.close()
"#;
    let status = Command::new(python())
        .args(["-c", script])
        .arg(path)
        .arg(std::str::from_utf8(CANARY).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "python wave fixture failed");
    std::fs::read(path).unwrap()
}

/// The vendor: a Python HTTPS server. Killed on drop.
pub(crate) struct Vendor {
    child: Child,
    port: u16,
    log: PathBuf,
    slow_flag: PathBuf,
    _dir: tempfile::TempDir,
    pub(crate) wav: Vec<u8>,
}

impl Drop for Vendor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vendor {
    pub(crate) fn start(fixture: &Fixture) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let wav_path = dir.path().join("recording.wav");
        let wav = write_wav(&wav_path);
        let log = dir.path().join("requests.log");
        let slow_flag = dir.path().join("slow");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/artifacts_vendor.py");
        let d = fixture.dir.path();
        let mut child = Command::new(python())
            .arg(script)
            .arg(d.join("server.crt"))
            .arg(d.join("server.key"))
            .arg(SID)
            .arg(VENDOR_PASSWORD)
            .arg(&wav_path)
            .arg(&log)
            .arg(&slow_flag)
            .arg("0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Self {
            child,
            port,
            log,
            slow_flag,
            _dir: dir,
            wav,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The fixture on `db`: a Twilio source, capture of `RecordingUrl` from the vendor,
/// `delete_at_vendor`; with the PostgreSQL database it uses, kept until the test ends. `None`
/// (the test skips) when PostgreSQL is not configured, outside CI.
pub(crate) async fn fixture_on(
    db: Db,
    opts: AppOptions,
) -> Option<(Fixture, Option<crate::postgres::PgTestDb>)> {
    let (fixture, pg) = match db {
        Db::Sqlite => (write_fixture(&opts), None),
        Db::Postgres => {
            let pg = crate::postgres::PgTestDb::create().await?;
            (pg.fixture("node-a", opts, None), Some(pg))
        }
    };
    write_secrets(&fixture);
    Some((fixture, pg))
}

pub(crate) fn write_secrets(fixture: &Fixture) {
    let d = fixture.dir.path();
    std::fs::write(d.join("twilio.secret"), TWILIO_TOKEN).unwrap();
    std::fs::write(d.join("vendor.user"), SID).unwrap();
    std::fs::write(d.join("vendor.password"), VENDOR_PASSWORD).unwrap();
}

pub(crate) fn options(extra_log: &str) -> AppOptions {
    AppOptions {
        sources: Some(format!(
            r#"
[[sources]]
name = "twilio"
preset = "twilio"
secrets = ["file:twilio.secret"]
public_url = "{PUBLIC_URL}"
"#
        )),
        extra: format!(
            r#"
{extra_log}
[dispatch]
retry_schedule = ["0s", "1s", "1s"]

[artifacts]
dir = "data/artifacts"
max_bytes = 1048576

[[artifacts.sources]]
source = "twilio"
allow_hosts = ["127.0.0.1"]
ca_file = "ca.crt"
auth = {{ type = "basic", username = "file:vendor.user", password = "file:vendor.password" }}
delete_at_vendor = true

[[routes]]
source = "twilio"
events = ["recording.*"]
handlers = ["capture"]
"#
        ),
        ..AppOptions::default()
    }
}

/// A recording status callback, form-encoded and signed the way Twilio signs it.
fn recording_callback(call: &str, url: &str) -> (String, String) {
    let params = [
        ("AccountSid", SID.to_owned()),
        ("CallSid", format!("CA{call}")),
        ("RecordingSid", format!("RE{call}")),
        ("RecordingUrl", url.to_owned()),
        ("RecordingStatus", "completed".to_owned()),
        ("RecordingDuration", "12".to_owned()),
    ];
    let mut sorted: Vec<_> = params.iter().collect();
    sorted.sort();
    let mut signed = PUBLIC_URL.to_owned();
    for (k, v) in &sorted {
        signed.push_str(k);
        signed.push_str(v);
    }
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    (body, signature)
}

pub(crate) async fn post_callback(client: &reqwest::Client, port: u16, call: &str, url: &str) {
    let (body, signature) = recording_callback(call, url);
    let res = client
        .post(format!("https://localhost:{port}/hooks/twilio"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

/// A CLI command on the config in `dir`.
fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(dir.join("wardhook.toml"))
        .current_dir(dir)
        .output()
        .unwrap()
}

pub(crate) fn listed(dir: &Path) -> Vec<serde_json::Value> {
    let out = cli(dir, &["artifacts", "list", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The app on `db` (the default capture fixture) and the vendor it captures from; `None` as
/// for [`fixture_on`].
async fn app_and_vendor_on(db: Db) -> Option<(TestApp, Vendor, Option<crate::postgres::PgTestDb>)> {
    let (fixture, pg) = fixture_on(db, options("")).await?;
    let vendor = Vendor::start(&fixture);
    Some((spawn_from_fixture(fixture).await, vendor, pg))
}

/// `GET` an admin API path with a bearer token, as JSON.
async fn api_json(
    app: &TestApp,
    http: &reqwest::Client,
    path: &str,
    token: &str,
) -> serde_json::Value {
    http.get(crate::admin::admin_url(app, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn a_signed_twilio_recording_callback_captures_the_recording_encrypted_and_failures_end_as_documented_on(
    db: Db,
) {
    let Some((app, vendor, _pg)) = app_and_vendor_on(db).await else {
        return;
    };
    let dir = app.dir.path().to_owned();
    let client = app.client();
    post_callback(
        &client,
        app.port,
        "1",
        &vendor.url("/2010-04-01/Recordings/RE1"),
    )
    .await;
    post_callback(&client, app.port, "2", &vendor.url("/wrongauth/RE2")).await;
    post_callback(&client, app.port, "3", &vendor.url("/missing/RE3")).await;
    post_callback(&client, app.port, "4", &vendor.url("/html/RE4")).await;
    post_callback(&client, app.port, "5", &vendor.url("/big/RE5")).await;
    // A host nobody allowed: nothing is requested.
    post_callback(&client, app.port, "6", "https://evil.example/RE6").await;

    // The server's own workers run the jobs: wait for one capture and five dead letters.
    let mut dead = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..150 {
        let out = cli(&dir, &["dlq", "list", "--format", "json"]);
        dead = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default();
        rows = listed(&dir);
        if dead.len() == 5 && rows.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        (rows.len(), dead.len()),
        (1, 5),
        "one capture, five documented refusals"
    );

    // The dead letters say why, naming no URL.
    let dlq = cli(&dir, &["dlq", "list", "--format", "json"]);
    let dlq = String::from_utf8_lossy(&dlq.stdout).into_owned();
    for reason in [
        "HTTP 401 from 127.0.0.1",
        "HTTP 404 from 127.0.0.1",
        "content type not in content_types",
        "larger than max_bytes",
        "names a host not in allow_hosts",
    ] {
        assert!(dlq.contains(reason), "dead letters lack {reason:?}: {dlq}");
    }
    assert!(!dlq.contains("RE2") && !dlq.contains("evil.example"));

    // One artifact, its SHA-256 that of the WAV the vendor served.
    let expected = hex::encode(Sha256::digest(&vendor.wav));
    assert_eq!(rows[0]["sha256"], expected);
    assert_eq!(rows[0]["size"], vendor.wav.len());
    assert_eq!(rows[0]["type"], "audio/x-wav");
    assert!(
        !rows[0]["vendor_deleted_at"].is_null(),
        "deleted at the vendor"
    );
    assert!(vendor
        .requests()
        .contains("DELETE /2010-04-01/Recordings/RE1"));
    assert!(!vendor.requests().contains("DELETE /wrongauth"));

    // Decrypted by an operator (audited), byte for byte the recording.
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("rec.wav");
    let got = cli(
        &dir,
        &["artifacts", "get", &id, "--out", out_path.to_str().unwrap()],
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let bytes = std::fs::read(&out_path).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), expected);
    let search = cli(&dir, &["audit", "search", "--action", "payload_read"]);
    assert!(
        String::from_utf8_lossy(&search.stdout).contains("artifact"),
        "the read is audited"
    );

    // The canary in the audio is in no file wardhook wrote (database, WAL, audit, artifacts).
    let artifact_files = files(&app.dir.path().join("data/artifacts"));
    assert_eq!(artifact_files.len(), 1, "{artifact_files:?}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&artifact_files[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    for f in files(&app.dir.path().join("data")) {
        let content = std::fs::read(&f).unwrap();
        assert!(!holds(&content, CANARY), "canary found in {}", f.display());
    }
    app.stop().await;
}

/// A vendor whose certificate is not signed by the CA the source trusts: the TLS handshake
/// fails, no request reaches the vendor, nothing is stored and the job ends as a dead letter
/// (its reason naming no URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_certificate_from_another_ca_is_refused_before_any_request() {
    let mut opts = options("");
    opts.extra = opts
        .extra
        .replace("ca_file = \"ca.crt\"", "ca_file = \"other-ca.crt\"");
    let fixture = write_fixture(&opts);
    write_secrets(&fixture);
    let other = wardhook::certs::DevCa::generate().expect("a second CA");
    std::fs::write(fixture.dir.path().join("other-ca.crt"), other.cert_pem())
        .expect("write the other CA");
    let vendor = Vendor::start(&fixture);
    let app = spawn_from_fixture(fixture).await;
    let dir = app.dir.path().to_owned();
    let client = app.client();
    post_callback(
        &client,
        app.port,
        "7",
        &vendor.url("/2010-04-01/Recordings/RE7"),
    )
    .await;

    let mut dead = Vec::new();
    for _ in 0..150 {
        let out = cli(&dir, &["dlq", "list", "--format", "json"]);
        dead = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead.len(), 1, "the capture ends as one dead letter");
    let reasons = serde_json::to_string(&dead).expect("json");
    assert!(!reasons.contains("RE7"), "no URL in the reason: {reasons}");
    assert!(listed(&dir).is_empty(), "nothing stored");
    assert!(
        !vendor.requests().contains("RE7"),
        "no request reached the vendor: {}",
        vendor.requests()
    );
    let art = app.dir.path().join("data/artifacts");
    assert!(!art.exists() || files(&art).is_empty(), "no artifact file");
    app.stop().await;
}

async fn a_download_killed_midway_leaves_no_plaintext_and_completes_after_restart_on(db: Db) {
    let Some((fixture, _pg)) = fixture_on(
        db,
        options("[log]\nformat = \"json\"\nlevel = \"warn,wardhook::cli=info\"\n"),
    )
    .await
    else {
        return;
    };
    let vendor = Vendor::start(&fixture);
    // The vendor sends half the recording, then stalls.
    std::fs::write(&vendor.slow_flag, b"").unwrap();
    let dir = fixture.dir.path().to_owned();
    let artifacts = dir.join("data/artifacts");
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let (mut server, port) = start_server(&fixture);
    post_callback(&http, port, "9", &vendor.url("/slow/RE9")).await;
    let mut partial = None;
    for _ in 0..100 {
        partial = std::fs::read_dir(&artifacts).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(".partial"))
        });
        if partial
            .as_ref()
            .is_some_and(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let partial = partial.expect("the download started");
    // SIGKILL mid-download.
    server.kill().unwrap();
    server.wait().unwrap();
    drop(server);
    let left = std::fs::read(&partial).unwrap();
    assert!(!left.is_empty());
    assert!(
        !holds(&left, CANARY),
        "the partial file holds ciphertext only"
    );
    assert!(
        listed(&dir).is_empty(),
        "nothing recorded for an interrupted download"
    );

    // The vendor recovers; after restart the job runs again from scratch and completes.
    std::fs::remove_file(&vendor.slow_flag).unwrap();
    let (_server, _port) = start_server(&fixture);
    let mut rows = Vec::new();
    for _ in 0..150 {
        rows = listed(&dir);
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rows.len(), 1, "captured after restart");
    assert_eq!(rows[0]["sha256"], hex::encode(Sha256::digest(&vendor.wav)));
    let names: Vec<String> = std::fs::read_dir(&artifacts)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [format!("{}.wha", rows[0]["id"].as_str().unwrap())],
        "no partial file is left"
    );
    for f in files(&dir.join("data")) {
        assert!(
            !holds(&std::fs::read(&f).unwrap(), CANARY),
            "canary in {}",
            f.display()
        );
    }
}

/// A vendor that fails the first download — `503`, or the connection closed halfway through
/// the body — and serves the recording on the next: the capture job retries after the
/// schedule's delay, the recording is captured once with the vendor's bytes, and the job's
/// history has one row per attempt (the failure with its reason, then the success).
async fn a_vendor_5xx_and_a_connection_cut_mid_body_are_retried_and_the_recording_captured_once_on(
    db: Db,
) {
    let Some((app, vendor, _pg)) = app_and_vendor_on(db).await else {
        return;
    };
    let dir = app.dir.path().to_owned();
    let (flaky, cut) = ("/flaky/RE11", "/cut/RE12");
    post_callback(&app.client(), app.port, "11", &vendor.url(flaky)).await;
    post_callback(&app.client(), app.port, "12", &vendor.url(cut)).await;
    let mut rows = Vec::new();
    assert!(
        until(|| {
            rows = listed(&dir);
            rows.len() == 2
        })
        .await,
        "both captured after a retry: {rows:?}"
    );
    let sha = hex::encode(Sha256::digest(&vendor.wav));
    for row in &rows {
        assert_eq!(row["sha256"], sha.as_str(), "the vendor's bytes: {row}");
        assert_eq!(row["size"], vendor.wav.len());
    }
    assert_eq!((gets(&vendor, flaky), gets(&vendor, cut)), (2, 2));

    let (operator, _) = crate::admin::create_token(&app, "ops", Role::Operator);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(app.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut failures = Vec::new();
    for row in &rows {
        let delivery = row["delivery_id"].as_str().unwrap();
        // The artifact is listed once its file is recorded; the job is marked done just after.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let detail = loop {
            let detail = api_json(
                &app,
                &http,
                &format!("/api/deliveries/{delivery}"),
                &operator,
            )
            .await;
            if detail["jobs"][0]["status"] == "done" || std::time::Instant::now() > deadline {
                break detail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let jobs = detail["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1, "{detail}");
        assert_eq!(jobs[0]["status"], "done", "{detail}");
        let timeline = jobs[0]["timeline"].as_array().unwrap();
        assert_eq!(timeline.len(), 2, "one row per attempt: {detail}");
        assert_eq!(timeline[0]["result"], "retryable", "{detail}");
        assert_eq!(timeline[1]["result"], "ok", "{detail}");
        failures.push(timeline[0]["error"].as_str().unwrap().to_owned());
        // The schedule's second delay (1 s) lies between the attempts.
        let started = |i: usize| {
            chrono::DateTime::parse_from_rfc3339(timeline[i]["started_at"].as_str().unwrap())
                .unwrap()
        };
        assert!(
            started(1) - started(0) >= chrono::Duration::milliseconds(1000),
            "backoff between the attempts: {detail}"
        );
    }

    failures.sort();
    assert_eq!(
        failures,
        [
            "HTTP 503 from 127.0.0.1",
            "network error talking to 127.0.0.1"
        ],
        "the failed attempts' reasons, naming no URL"
    );

    // One file per recording, no partial download left.
    let mut names: Vec<String> = std::fs::read_dir(app.dir.path().join("data/artifacts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = rows
        .iter()
        .map(|r| format!("{}.wha", r["id"].as_str().unwrap()))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    app.stop().await;
}

/// The handlers after `capture` attach what it stored, read through the SDK's decrypted stream:
/// the FHIR handler writes a `DocumentReference` with the recording (validated by
/// `fhir.resources` in the FHIR server), the e-mail handler mails it (received by aiosmtpd).
/// Both carry the vendor's bytes; each read is an audit record naming the handler.
async fn handlers_attach_the_captured_recording_to_a_document_reference_and_a_mail_on(db: Db) {
    use crate::adapters_flow::sink::{SinkTls, SmtpSink};
    use crate::fhir_keys::fhir_server::FhirServer;
    let (Some(ehr), Some(smtp)) = (
        FhirServer::start(&["--auth", "none"]),
        SmtpSink::start(SinkTls::None),
    ) else {
        return;
    };
    let mut opts = options("");
    opts.extra = opts.extra.replace(
        "handlers = [\"capture\"]",
        "handlers = [\"capture\", \"ehr\", \"mail\"]",
    );
    opts.extra.push_str(&format!(
        r#"
[[handlers]]
name = "ehr"
kind = "fhir"
phi = "full"
baa = true
base_url = "{}"
resources = ["DocumentReference"]
auth = {{ type = "none" }}
document_reference = {{ artifacts = true }}

[[handlers]]
name = "mail"
kind = "email"
phi = "full"
baa = true
host = "127.0.0.1"
port = {}
security = "plain"
from = "wardhook <wardhook@clinic.example>"
to = ["records@clinic.example"]
subject = "Call recording {{{{ call_id | default('') }}}}"
text = "The recording of the call is attached."
attach_artifacts = true
"#,
        ehr.base(),
        smtp.port
    ));
    let Some((fixture, _pg)) = fixture_on(db, opts).await else {
        return;
    };
    let vendor = Vendor::start(&fixture);
    let app = spawn_from_fixture(fixture).await;
    let dir = app.dir.path().to_owned();
    post_callback(
        &app.client(),
        app.port,
        "21",
        &vendor.url("/2010-04-01/Recordings/RE21"),
    )
    .await;
    let mut rows = Vec::new();
    assert!(
        until(|| {
            rows = listed(&dir);
            rows.len() == 1 && !smtp.messages().is_empty()
        })
        .await,
        "captured and mailed: {rows:?}"
    );
    let id = rows[0]["id"].as_str().unwrap();
    let sha = hex::encode(Sha256::digest(&vendor.wav));
    assert_eq!(rows[0]["sha256"], sha.as_str());

    // The mail: the recording attached, byte for byte (aiosmtpd decoded it).
    let mail = &smtp.wait_for(1)[0];
    assert_eq!(mail.content_type, "multipart/mixed");
    assert_eq!(mail.attachments.len(), 1, "{mail:?}");
    let attached = &mail.attachments[0];
    assert_eq!(attached.sha256, sha);
    assert_eq!(attached.size, vendor.wav.len() as u64);
    assert_eq!(attached.content_type, "audio/x-wav");
    assert_eq!(
        attached.filename.as_deref(),
        Some(format!("{id}.wav").as_str())
    );
    assert!(mail.text.as_deref().unwrap().contains("is attached"));

    // The EHR: one DocumentReference whose attachment is the recording, hashed as FHIR says.
    let mut documents = Vec::new();
    for _ in 0..100 {
        documents = ehr.stored("DocumentReference").await;
        if !documents.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(documents.len(), 1, "{documents:?}");
    let attachment = &documents[0]["content"][0]["attachment"];
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = b64.decode(attachment["data"].as_str().unwrap()).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&data)), sha);
    assert_eq!(attachment["contentType"], "audio/x-wav");
    assert_eq!(attachment["size"], vendor.wav.len());
    assert_eq!(
        attachment["hash"],
        b64.encode(<sha1::Sha1 as sha1::Digest>::digest(&vendor.wav))
    );

    // Each handler's read is audited under its name.
    let reads = artifact_reads(&dir);
    assert_eq!(reads.len(), 2, "{reads:?}");
    for handler in ["ehr", "mail"] {
        assert!(
            reads.iter().any(|r| r.contains(handler)),
            "a read by {handler}: {reads:?}"
        );
    }
    app.stop().await;
}

/// How many times the vendor served `path` to a GET.
fn gets(vendor: &Vendor, path: &str) -> usize {
    vendor
        .requests()
        .lines()
        .filter(|l| *l == format!("GET {path}"))
        .count()
}

/// Wait until `cond` holds (polling every 200 ms for up to 30 s).
pub(crate) async fn until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..150 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cond()
}

/// payload_read records of artifacts, per the CLI's audit search (every node's).
pub(crate) fn artifact_reads(dir: &Path) -> Vec<String> {
    let out = cli(dir, &["audit", "search", "--action", "payload_read"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("artifact"))
        .map(str::to_owned)
        .collect()
}

async fn operators_replay_play_download_export_and_purge_an_artifact_on(db: Db) {
    let Some((app, vendor, _pg)) = app_and_vendor_on(db).await else {
        return;
    };
    let dir = app.dir.path().to_owned();
    let recording = "/2010-04-01/Recordings/RE7";
    post_callback(&app.client(), app.port, "7", &vendor.url(recording)).await;
    let mut rows = Vec::new();
    assert!(
        until(|| {
            rows = listed(&dir);
            rows.len() == 1 && !rows[0]["vendor_deleted_at"].is_null()
        })
        .await,
        "captured and deleted at the vendor: {rows:?}"
    );
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    let delivery = rows[0]["delivery_id"].as_str().unwrap().to_owned();
    let sha = hex::encode(Sha256::digest(&vendor.wav));
    assert_eq!(rows[0]["sha256"], sha);
    assert_eq!(gets(&vendor, recording), 1);

    // The console: metadata for every role; content for roles that may reveal payloads.
    let (operator, operator_id) = crate::admin::create_token(&app, "ops", Role::Operator);
    let (auditor, _) = crate::admin::create_token(&app, "audit", Role::Auditor);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(app.ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = |path: &str, token: &str| {
        http.get(crate::admin::admin_url(&app, path))
            .bearer_auth(token)
            .send()
    };
    // A capture that finished is never repeated: replaying the delivery runs the capture job
    // again, which finds the field recorded and downloads nothing.
    let replay = cli(&dir, &["deliveries", "replay", &delivery]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let mut detail = serde_json::Value::Null;
    for _ in 0..150 {
        detail = api(&format!("/api/deliveries/{delivery}"), &operator)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let jobs = detail["jobs"].as_array().cloned().unwrap_or_default();
        let attempts: usize = jobs
            .iter()
            .map(|j| j["timeline"].as_array().map_or(0, Vec::len))
            .sum();
        if attempts >= 2 && jobs.iter().all(|j| j["status"] == "done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let attempts: usize = detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["timeline"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(attempts >= 2, "the replayed capture ran: {detail}");
    assert_eq!(gets(&vendor, recording), 1, "{}", vendor.requests());
    assert_eq!(listed(&dir).len(), 1, "still one artifact");

    let list: serde_json::Value = api(&format!("/api/artifacts?delivery={delivery}"), &auditor)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["artifacts"][0]["id"], id.as_str());
    let content_path = format!("/api/artifacts/{id}/content");
    assert_eq!(api(&content_path, &auditor).await.unwrap().status(), 403);
    let res = api(&content_path, &operator).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "audio/x-wav");
    assert_eq!(res.headers()["x-artifact-sha256"], sha.as_str());
    assert_eq!(&res.bytes().await.unwrap()[..], &vendor.wav[..]);

    // The dashboard: the delivery page links the player; the player loads nothing until play.
    let login = http
        .post(crate::admin::admin_url(&app, "/login"))
        .form(&[("token", operator.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let session = set_cookie_pair(&login);
    let page = |path: String| {
        http.get(crate::admin::admin_url(&app, &path))
            .header("cookie", &session)
            .send()
    };
    let html = page(format!("/deliveries/{delivery}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("href=\"/artifacts/{id}\"")),
        "{html}"
    );
    let res = page(format!("/artifacts/{id}")).await.unwrap();
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("media-src 'self'"));
    let html = res.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<audio id=\"player\" controls preload=\"none\" src=\"/artifacts/{id}/content\">"
        )),
        "{html}"
    );
    let reads_before = artifact_reads(&dir).len();
    assert_eq!(
        reads_before, 1,
        "showing pages reads nothing; the API read is recorded"
    );
    let res = page(format!("/artifacts/{id}/content?download=1"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        format!("attachment; filename=\"{id}.wav\"").as_str()
    );
    assert_eq!(&res.bytes().await.unwrap()[..], &vendor.wav[..]);
    let cross = http
        .get(crate::admin::admin_url(
            &app,
            &format!("/artifacts/{id}/content"),
        ))
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let reads = artifact_reads(&dir);
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(
        reads.iter().all(|r| r.contains(&operator_id)),
        "each read names the token: {reads:?}"
    );

    // Emergency export with the artifacts: the recording comes out of the archive intact.
    let out_dir = tempfile::tempdir().unwrap();
    let archive = out_dir.path().join("archive.bin");
    let export = cli(
        &dir,
        &[
            "emergency-export",
            "--reason",
            "records needed for a legal hold",
            "--since",
            &(chrono::Utc::now() - chrono::Duration::days(1))
                .format("%Y-%m-%d")
                .to_string(),
            "--out",
            archive.to_str().unwrap(),
            "--with-artifacts",
        ],
    );
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(String::from_utf8_lossy(&export.stderr).contains("and 1 artifacts"));
    let key_file = out_dir.path().join("key");
    std::fs::write(&key_file, &export.stdout).unwrap();
    assert!(!holds(&std::fs::read(&archive).unwrap(), CANARY));
    let unpacked = out_dir.path().join("artifacts");
    let open = Command::new(wardhook_bin())
        .args(["emergency-open", archive.to_str().unwrap(), "--key-file"])
        .arg(&key_file)
        .arg("--artifacts-dir")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        open.status.success(),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );
    assert!(String::from_utf8_lossy(&open.stderr).contains("1 deliveries, 1 artifacts"));
    let file = unpacked.join(format!("{id}.wav"));
    assert_eq!(std::fs::read(&file).unwrap(), vendor.wav);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        artifact_reads(&dir).len(),
        3,
        "the export's read is recorded"
    );

    // Two days later, a purge of one day's retention takes the recording's period: the file
    // stays, but nothing can open it any more.
    let purge = Command::new("faketime")
        .arg("+2 days")
        .arg(wardhook_bin())
        .args(["purge", "--older-than", "1d", "--config"])
        .arg(&app.config_path)
        .current_dir(&dir)
        .output()
        .expect("faketime (apt install faketime) runs the purge two days later");
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    let rows = listed(&dir);
    assert_eq!(rows[0]["readable"], false, "{rows:?}");
    assert!(dir.join(format!("data/artifacts/{id}.wha")).exists());
    let get = cli(&dir, &["artifacts", "get", &id, "--out", "/dev/null"]);
    assert!(!get.status.success());
    assert!(String::from_utf8_lossy(&get.stderr).contains("the artifact was purged"));
    assert_eq!(api(&content_path, &operator).await.unwrap().status(), 410);
    let html = page(format!("/artifacts/{id}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("was purged") && !html.contains("<audio"),
        "{html}"
    );
    app.stop().await;
}

crate::on_both_backends! {
    a_signed_twilio_recording_callback_captures_the_recording_encrypted_and_failures_end_as_documented_on =>
        a_signed_twilio_recording_callback_captures_the_recording_encrypted_and_failures_end_as_documented,
        a_signed_twilio_recording_callback_captures_the_recording_encrypted_and_failures_end_as_documented_on_postgres;
    a_download_killed_midway_leaves_no_plaintext_and_completes_after_restart_on =>
        a_download_killed_midway_leaves_no_plaintext_and_completes_after_restart,
        a_download_killed_midway_leaves_no_plaintext_and_completes_after_restart_on_postgres;
    a_vendor_5xx_and_a_connection_cut_mid_body_are_retried_and_the_recording_captured_once_on =>
        a_vendor_5xx_and_a_connection_cut_mid_body_are_retried_and_the_recording_captured_once,
        a_vendor_5xx_and_a_connection_cut_mid_body_are_retried_and_the_recording_captured_once_on_postgres;
    handlers_attach_the_captured_recording_to_a_document_reference_and_a_mail_on =>
        handlers_attach_the_captured_recording_to_a_document_reference_and_a_mail,
        handlers_attach_the_captured_recording_to_a_document_reference_and_a_mail_on_postgres;
    operators_replay_play_download_export_and_purge_an_artifact_on =>
        operators_replay_play_download_export_and_purge_an_artifact,
        operators_replay_play_download_export_and_purge_an_artifact_on_postgres;
}
