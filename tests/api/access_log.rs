//! The access log at the default level: one line per request, naming a stored delivery and its
//! outcome, no second "delivery accepted" line unless asked for, every line written out at exit
//! (the writer is buffered and runs on its own thread), and no payload value in any line.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// What one server run left behind: its stderr, the text of its log folder, and the id of the
/// delivery it accepted.
struct Logged {
    stderr: String,
    file: String,
    delivery_id: String,
}

/// Like [`run_and_collect`], for any `[log]` section and environment, keeping stderr too. The
/// server listens on a port chosen beforehand: at `warn` no line names the port it bound.
async fn run_logging(log: &str, env: &[(&str, &str)]) -> Logged {
    let fixture = write_fixture(&AppOptions {
        extra: log.to_owned(),
        ..AppOptions::default()
    });
    let port = free_port();
    let config = std::fs::read_to_string(&fixture.config_path)
        .unwrap()
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
    std::fs::write(&fixture.config_path, config).unwrap();
    let mut command = Command::new(wardhook_bin());
    command
        .args(["serve", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .env_remove("WARDHOOK_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = ServerProcess::spawn(&mut command);
    let mut stderr = server.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let body = canary_body();
    let url = format!("https://localhost:{port}/hooks/demo");
    let mut statuses = Vec::new();
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
        statuses.push(res.status().as_u16());
        if res.status() == 200 {
            let v: Value = res.json().await.unwrap();
            delivery_id = v["delivery_id"].as_str().unwrap().to_owned();
        }
    }
    assert_eq!(statuses, [200, 200, 401]);
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
    let stderr = stderr.join().unwrap();
    let dir = fixture.dir.path().join("data/logs");
    let mut file = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        file.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert_no_canary(&file, &dir);
    assert_no_canary(&stderr, Path::new("stderr"));
    Logged {
        stderr,
        file,
        delivery_id,
    }
}

/// `line` with what changes from run to run masked: the timestamp (`<ts>`), the request id
/// (`<id>`) and the latency's digits (`<µs>`).
fn masked(line: &str) -> String {
    const STAMP: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    let shape = |at: usize, shape: &[u8], digit: fn(&u8) -> bool| {
        line.len() >= at + shape.len()
            && shape.iter().zip(&line.as_bytes()[at..]).all(|(s, b)| {
                if *s == b'd' {
                    digit(b)
                } else {
                    s == b
                }
            })
    };
    let stamp = (0..line.len())
        .find(|&i| shape(i, STAMP, u8::is_ascii_digit))
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let after_name = line.find("request_id").unwrap() + "request_id".len();
    let id = (after_name..line.len())
        .find(|&i| shape(i, &[b'd'; 32], |b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no request id in {line:?}"));
    let latency_end = line[line.find("latency_us").unwrap()..]
        .find(' ')
        .map_or(line.len(), |end| end + line.find("latency_us").unwrap());
    let latency_start = line[..latency_end]
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .len();
    assert!(latency_start < latency_end, "no latency in {line:?}");
    format!(
        "{}<ts>{}<id>{}<µs>{}",
        &line[..stamp],
        &line[stamp + STAMP.len()..id],
        &line[id + 32..latency_start],
        &line[latency_end..]
    )
}

/// An access line as the fmt layer's default format prints it, masked as [`masked`] masks.
fn pretty_access_line(ansi: bool, fields: &[(&str, &str)]) -> String {
    let (dim, italic, green, reset) = if ansi {
        ("\x1b[2m", "\x1b[3m", "\x1b[32m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut line = format!(
        "{dim}<ts>{reset} {green} INFO{reset} {dim}wardhook::listener::access{reset}{dim}:{reset} request"
    );
    for (name, value) in fields {
        line.push_str(&format!(" {italic}{name}{reset}{dim}={reset}{value}"));
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pretty_access_line_reads_as_before_in_the_file_and_in_colour_on_stderr() {
    let run = run_logging(
        "[log]\nformat = \"pretty\"\nlevel = \"info\"\ndir = \"data/logs\"\n",
        &[],
    )
    .await;
    let delivery_id = format!("{:?}", run.delivery_id);
    let expected = |ansi: bool| -> Vec<String> {
        let hook = [
            ("request_id", "\"<id>\""),
            ("method", "\"POST\""),
            ("path", "\"/hooks/demo\""),
        ];
        let stored = |outcome: &str| {
            let mut fields = hook.to_vec();
            let outcome = format!("{outcome:?}");
            let owned = [
                ("status", "200"),
                ("latency_us", "<µs>"),
                ("delivery_id", delivery_id.as_str()),
                ("outcome", outcome.as_str()),
            ];
            fields.extend(owned);
            pretty_access_line(ansi, &fields)
        };
        let mut refused = hook.to_vec();
        refused.extend([("status", "401"), ("latency_us", "<µs>")]);
        let health = [
            ("request_id", "\"<id>\""),
            ("method", "\"GET\""),
            ("path", "\"/healthz\""),
            ("status", "200"),
            ("latency_us", "<µs>"),
        ];
        vec![
            stored("accepted"),
            stored("duplicate"),
            pretty_access_line(ansi, &refused),
            pretty_access_line(ansi, &health),
        ]
    };
    let access_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("wardhook::listener::access"))
            .map(masked)
            .collect()
    };
    assert_eq!(access_lines(&run.file), expected(false), "the log file");
    assert_eq!(access_lines(&run.stderr), expected(true), "stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_from_the_environment_or_a_listener_directive_writes_no_access_line() {
    let json = |level: &str| {
        format!("[log]\nformat = \"json\"\nlevel = \"{level}\"\ndir = \"data/logs\"\n")
    };
    for (what, log, env) in [
        (
            "WARDHOOK_LOG=warn",
            json("info"),
            vec![("WARDHOOK_LOG", "warn")],
        ),
        (
            "level = \"info,wardhook::listener=warn\"",
            json("info,wardhook::listener=warn"),
            vec![],
        ),
    ] {
        let run = run_logging(&log, &env).await;
        for (name, text) in [("file", &run.file), ("stderr", &run.stderr)] {
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(
                !lines.iter().any(|l| message(l) == "request"),
                "{what}: an access line in {name}: {text}"
            );
            // The log was written: the refused delivery's warning is there.
            assert!(
                lines.iter().any(|l| message(l) == "delivery rejected"),
                "{what}: no warning in {name}: {text}"
            );
        }
    }
}
