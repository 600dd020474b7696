//! Artifact capture end to end: a Twilio recording status callback, signed with Twilio's
//! scheme, makes the `capture` step fetch the recording from a local HTTPS "vendor" (Python
//! `http.server` + `ssl`, the test CA's certificate, basic auth) serving a WAV written with
//! Python's `wave` module. The capture is decrypted back and compared by SHA-256, a canary
//! inside the audio is found in no file wardhook wrote, the failure answers end as documented
//! in docs/ARTIFACTS.md, and a SIGKILL mid-download leaves no partial file and is retried to
//! completion after restart.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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
struct Vendor {
    child: Child,
    port: u16,
    log: PathBuf,
    slow_flag: PathBuf,
    _dir: tempfile::TempDir,
    wav: Vec<u8>,
}

impl Drop for Vendor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vendor {
    fn start(fixture: &Fixture) -> Self {
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

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The fixture: a Twilio source, capture of `RecordingUrl` from the vendor, `delete_at_vendor`.
fn fixture(extra_log: &str) -> Fixture {
    let fixture = write_fixture(&AppOptions {
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
    });
    let d = fixture.dir.path();
    std::fs::write(d.join("twilio.secret"), TWILIO_TOKEN).unwrap();
    std::fs::write(d.join("vendor.user"), SID).unwrap();
    std::fs::write(d.join("vendor.password"), VENDOR_PASSWORD).unwrap();
    fixture
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

async fn post_callback(client: &reqwest::Client, port: u16, call: &str, url: &str) {
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

fn listed(dir: &Path) -> Vec<serde_json::Value> {
    let out = cli(dir, &["artifacts", "list", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_twilio_recording_callback_captures_the_recording_encrypted_and_failures_end_as_documented(
) {
    let fixture = fixture("");
    let vendor = Vendor::start(&fixture);
    let app = spawn_from_fixture(fixture).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_killed_midway_leaves_no_plaintext_and_completes_after_restart() {
    let fixture = fixture("[log]\nformat = \"json\"\nlevel = \"warn,wardhook::cli=info\"\n");
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
