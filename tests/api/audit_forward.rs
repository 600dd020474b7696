//! Audit forwarding to a real syslog collector: Debian's rsyslog with TLS on loopback
//! (`audit_forward_rsyslog.rs`), the real `wardhook serve` binary, real deliveries.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wardhook::certs::DevCa;

use super::audit_forward_rsyslog::{self as rsyslog, seq_of, Rsyslog};
use super::helpers::{
    fixture_cli, fixture_token, nextphone_signature, wardhook_bin, write_fixture, AppOptions,
    Fixture, ServerProcess, DEMO_SECRET,
};
use super::postgres::PgTestDb;

/// Values that stand for PHI in the test deliveries; none may reach the collector or the log.
pub(super) const CANARIES: &[&str] = &[
    "Zebediah Quillfeather",
    "+15550142398",
    "5550142398",
    "zeb.quill@example.org",
    "1961-04-17",
    "CA-FWD-CANARY-77",
];

/// A running `wardhook serve` with every stderr line kept.
pub(super) struct Server {
    process: ServerProcess,
    pub(super) port: u16,
    pub(super) admin_port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub(super) fn start(fixture: &Fixture) -> Self {
        let mut process = ServerProcess::spawn(
            Command::new(wardhook_bin())
                .args(["serve", "--config"])
                .arg(&fixture.config_path)
                .current_dir(fixture.dir.path())
                .stderr(Stdio::piped())
                .stdout(Stdio::null()),
        );
        let stderr = process.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        let mut server = Self {
            process,
            port: 0,
            admin_port: 0,
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while (server.port == 0 || server.admin_port == 0) && Instant::now() < deadline {
            for line in server.lines.lock().unwrap().iter() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if let Some(p) = v["fields"]["port"].as_u64() {
                        server.port = p as u16;
                    }
                    if let Some(p) = v["fields"]["admin_port"].as_u64() {
                        server.admin_port = p as u16;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(server.port != 0, "server did not start: {:?}", server.log());
        server
    }

    pub(super) fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait (20 s at most) until `times` lines of the log contain `needle`.
    pub(super) async fn wait_logged(&self, needle: &str, times: usize) {
        let what = format!("{times} log line(s) with {needle:?}");
        wait_for(&what, Duration::from_secs(20), || {
            self.log().iter().filter(|l| l.contains(needle)).count() >= times
        })
        .await;
    }

    /// SIGTERM and wait for the graceful stop.
    pub(super) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            matches!(self.process.try_wait(), Ok(Some(_))),
            "server did not stop"
        );
    }
}

pub(super) fn http(fixture: &Fixture) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap()
}

/// The admin listener's `/metrics` text, read with a fresh auditor token.
pub(super) async fn metrics(fixture: &Fixture, server: &Server) -> String {
    let token = fixture_token(fixture, "fwd", "auditor");
    http(fixture)
        .get(format!("https://localhost:{}/metrics", server.admin_port))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `wardhook_audit_forward_backlog` gauge of cursor `target` in a `/metrics` text.
pub(super) fn backlog(metrics: &str, target: &str) -> f64 {
    let prefix = format!("wardhook_audit_forward_backlog{{target=\"{target}\"}}");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("backlog gauge");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A signed delivery carrying the canary values; asserts the 200.
pub(super) async fn deliver(fixture: &Fixture, server: &Server, n: usize) {
    let body = format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{}-{n}","caller":{{"name":"{}","phone":"{}","email":"{}"}},"dob":"{}"}}}}"#,
        CANARIES[5], CANARIES[0], CANARIES[1], CANARIES[3], CANARIES[4]
    );
    let res = http(fixture)
        .post(format!("https://localhost:{}/hooks/demo", server.port))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "intake must answer 200 whatever the collector does"
    );
}

/// The newest sequence number in the JSONL mirror (the chain's head once mirrored). The mirror
/// is written by its own thread just after the senders are answered, so this waits until the
/// mirror holds a delivery's record and its head has not moved for half a second.
pub(super) fn mirrored_head(fixture: &Fixture) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = (read_mirror_head(fixture), std::time::Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = read_mirror_head(fixture);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if now.1 && last.1.elapsed() >= Duration::from_millis(500) {
            return now.0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror did not settle with a delivery's record"
        );
    }
}

/// The newest mirrored sequence number, and whether a `delivery_accepted` record is mirrored.
fn read_mirror_head(fixture: &Fixture) -> (u64, bool) {
    let dir = fixture.dir.path().join("data/audit");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let text = std::fs::read_to_string(files.last().expect("a mirror file")).unwrap();
    let last = text.lines().last().expect("a mirrored record");
    let seq = serde_json::from_str::<serde_json::Value>(last).unwrap()["seq"]
        .as_u64()
        .unwrap();
    (seq, text.contains("\"delivery_accepted\""))
}

pub(super) async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fixture forwarding to 127.0.0.1:`port` under cursor `name`, trusting `ca_pem`.
pub(super) fn forwarding_fixture(name: &str, port: u16, ca_pem: &str, format: &str) -> Fixture {
    forwarding_fixture_on(None, name, port, ca_pem, format)
}

/// [`forwarding_fixture`] for a node of the PostgreSQL database `pg`, when given.
fn forwarding_fixture_on(
    pg: Option<&PgTestDb>,
    name: &str,
    port: u16,
    ca_pem: &str,
    format: &str,
) -> Fixture {
    let fixture = write_fixture(&AppOptions {
        storage: pg
            .map(|_| PgTestDb::storage_toml("fwd-node-1"))
            .unwrap_or_default(),
        extra: format!(
            r#"
[log]
format = "json"

[audit_forward]
address = "127.0.0.1:{port}"
server_name = "localhost"
ca_file = "syslog-ca.crt"
name = "{name}"
format = "{format}"
hostname = "clinic-gw"
batch_max = 3
poll_interval = "100ms"
max_backoff = "300ms"
connect_timeout = "2s"
io_timeout = "5s"
"#
        ),
        ..AppOptions::default()
    });
    std::fs::write(fixture.dir.path().join("syslog-ca.crt"), ca_pem).unwrap();
    if let Some(pg) = pg {
        std::fs::write(fixture.dir.path().join("pg.url"), &pg.url).unwrap();
    }
    fixture
}

fn collector(dir: &Path, ca: &DevCa) -> Rsyslog {
    let cert = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    Rsyslog::new(dir, &cert.cert_pem, &cert.key_pem, &ca.cert_pem())
}

/// rsyslog in a fresh temporary folder (the `TempDir`, to keep for the test's length) with a
/// server certificate from a fresh CA, not started yet; `None` where rsyslog is not installed
/// (the test says it skipped; never under CI).
pub(super) fn new_collector() -> Option<(TempDir, DevCa, Rsyslog)> {
    if !rsyslog::available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate().unwrap();
    let rsyslog = collector(dir.path(), &ca);
    Some((dir, ca, rsyslog))
}

/// The usual arrangement: a [`new_collector`] started, and a `wardhook serve` forwarding to it
/// under cursor `name` in `format`.
struct Forwarding {
    _collector_dir: TempDir,
    rsyslog: Rsyslog,
    fixture: Fixture,
    server: Server,
}

fn forwarding(name: &str, format: &str) -> Option<Forwarding> {
    let (collector_dir, ca, mut rsyslog) = new_collector()?;
    rsyslog.start();
    let fixture = forwarding_fixture(name, rsyslog.port, &ca.cert_pem(), format);
    let server = Server::start(&fixture);
    Some(Forwarding {
        _collector_dir: collector_dir,
        rsyslog,
        fixture,
        server,
    })
}

/// Wait (30 s at most) until the last message rsyslog wrote is the record at the mirror's
/// settled head, or later; that head.
async fn wait_collected(what: &str, fixture: &Fixture, rsyslog: &Rsyslog) -> u64 {
    let head = mirrored_head(fixture);
    wait_for(what, Duration::from_secs(30), || {
        rsyslog.messages().last().map(|m| seq_of(m)) >= Some(head)
    })
    .await;
    head
}

pub(super) fn assert_no_canary(what: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "PHI canary {c:?} found in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_rsyslog_exactly_once_in_order_across_collector_and_server_restarts() {
    let Some(Forwarding {
        _collector_dir,
        mut rsyslog,
        fixture,
        server,
    }) = forwarding("rsyslog-restarts", "rfc5424")
    else {
        return;
    };

    // Live: records reach the collector while it is up.
    for n in 0..4 {
        deliver(&fixture, &server, n).await;
    }
    wait_collected("the first records at rsyslog", &fixture, &rsyslog).await;

    // The collector goes away mid-stream: intake goes on (200s), records wait in the log.
    rsyslog.stop();
    let seen_before = rsyslog.messages().len();
    for n in 4..9 {
        deliver(&fixture, &server, n).await;
    }
    server.wait_logged("audit forwarding failed", 1).await;
    assert_eq!(rsyslog.messages().len(), seen_before);

    // The server restarts while records are still waiting: the cursor survives.
    server.stop();
    let server = Server::start(&fixture);
    for n in 9..11 {
        deliver(&fixture, &server, n).await;
    }

    // The collector comes back: forwarding resumes where it stopped.
    rsyslog.start();
    let head = wait_collected("every record at rsyslog", &fixture, &rsyslog).await;
    rsyslog.stop();

    let messages = rsyslog.messages();
    let seqs: Vec<u64> = messages.iter().map(|m| seq_of(m)).collect();
    let expected: Vec<u64> = (1..=head).collect();
    assert_eq!(
        seqs, expected,
        "each record exactly once, in sequence order"
    );
    // Each message is RFC 5424 with the record as structured data and its mirror line as body.
    for m in &messages {
        assert!(m.starts_with('<') && m.contains(">1 "), "{m}");
        assert!(m.contains(" clinic-gw wardhook - "), "{m}");
        assert!(m.contains("[wardhook@32473 seq=\""), "{m}");
        let body = m.split_once('\u{feff}').expect("BOM and body").1;
        let line: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(line["seq"].as_u64(), Some(seq_of(m)));
        assert_eq!(line["mac"].as_str().map(str::len), Some(64));
    }
    assert!(
        messages
            .iter()
            .filter(|m| m.contains("delivery_accepted"))
            .count()
            >= 11,
        "every delivery's record was forwarded"
    );
    assert_no_canary("the collector's output", &messages.join("\n"));
    assert_no_canary("wardhook's log", &server.log().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_atna_format_sends_dicom_audit_messages_rsyslog_accepts() {
    let Some(Forwarding {
        _collector_dir,
        mut rsyslog,
        fixture,
        server,
    }) = forwarding("rsyslog-atna", "atna")
    else {
        return;
    };
    deliver(&fixture, &server, 0).await;
    wait_collected("ATNA messages at rsyslog", &fixture, &rsyslog).await;
    rsyslog.stop();
    let messages = rsyslog.messages();
    let accepted = messages
        .iter()
        .find(|m| m.contains("csd-code=\"delivery_accepted\""))
        .expect("the delivery's record");
    assert!(accepted.contains(" IHE+RFC-3881 "), "{accepted}");
    let xml = accepted.split_once('\u{feff}').unwrap().1;
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>"));
    assert!(xml
        .contains("<EventID csd-code=\"110107\" codeSystemName=\"DCM\" originalText=\"Import\"/>"));
    assert!(xml.contains("UserID=\"sender:demo\" UserIsRequestor=\"true\""));
    assert!(xml.ends_with("</AuditMessage>"));
    assert_no_canary("the collector's output", &messages.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_whose_certificate_is_from_another_ca_is_refused_and_gets_nothing() {
    // The collector's certificate is from its own CA; wardhook is told to trust another.
    let Some((_collector_dir, _their_ca, mut rsyslog)) = new_collector() else {
        return;
    };
    let configured_ca = DevCa::generate().unwrap();
    rsyslog.start();
    let fixture = forwarding_fixture(
        "rsyslog-wrong-ca",
        rsyslog.port,
        &configured_ca.cert_pem(),
        "rfc5424",
    );
    let server = Server::start(&fixture);
    for n in 0..2 {
        deliver(&fixture, &server, n).await;
    }
    server
        .wait_logged("TLS handshake with the syslog collector", 1)
        .await;
    let log = server.log().join("\n");
    let line = log
        .lines()
        .find(|l| l.contains("TLS handshake with the syslog collector"))
        .unwrap();
    // Both test CAs share a subject name, so rustls reports the signature that does not check
    // out (BadSignature) rather than an unknown issuer; either way the certificate is refused.
    assert!(line.contains("invalid peer certificate"), "{line}");

    // The metric says so too, and the backlog is what waits.
    let metrics = metrics(&fixture, &server).await;
    assert!(
        metrics.contains(
            "wardhook_audit_forward_errors_total{target=\"rsyslog-wrong-ca\",reason=\"tls\"}"
        ),
        "{metrics}"
    );
    assert!(backlog(&metrics, "rsyslog-wrong-ca") >= 2.0, "{metrics}");

    rsyslog.stop();
    assert!(
        rsyslog.messages().is_empty(),
        "no record may reach an unverified collector"
    );
    assert_no_canary("wardhook's log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_node_forwards_its_own_chain_and_resumes_from_its_own_cursor() {
    let Some((_collector_dir, syslog_ca, mut rsyslog)) = new_collector() else {
        return;
    };
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    rsyslog.start();
    let fixture = forwarding_fixture_on(
        Some(&db),
        "rsyslog-postgres",
        rsyslog.port,
        &syslog_ca.cert_pem(),
        "rfc5424",
    );
    let server = Server::start(&fixture);
    for n in 0..3 {
        deliver(&fixture, &server, n).await;
    }
    wait_collected("the node's records at rsyslog", &fixture, &rsyslog).await;
    rsyslog.stop();
    // Down: intake goes on; then the node restarts and the collector comes back.
    for n in 3..5 {
        deliver(&fixture, &server, n).await;
    }
    server.stop();
    let server = Server::start(&fixture);
    deliver(&fixture, &server, 5).await;
    rsyslog.start();
    let head = wait_collected("every record of the node at rsyslog", &fixture, &rsyslog).await;
    rsyslog.stop();
    let messages = rsyslog.messages();
    let seqs: Vec<u64> = messages.iter().map(|m| seq_of(m)).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    for m in &messages {
        assert!(m.contains(" node=\"fwd-node-1\""), "{m}");
    }
    assert_no_canary("the collector's output", &messages.join("\n"));
}

#[test]
fn check_config_reports_unusable_forwarding_tls_material_with_its_key_path() {
    // Runs without rsyslog: only the configuration is checked.
    let fixture = forwarding_fixture("check-config", 6514, "not a certificate", "rfc5424");
    let run = || {
        Command::new(wardhook_bin())
            .args(["check-config", "--config"])
            .arg(&fixture.config_path)
            .current_dir(fixture.dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a CA file without a certificate must fail"
    );
    assert!(stdout.contains("audit_forward.ca_file"), "{stdout}");

    // A client certificate without its key, and a format that does not exist: all at once.
    let text = std::fs::read_to_string(&fixture.config_path)
        .unwrap()
        .replace(
            "format = \"rfc5424\"",
            "format = \"cef\"\nclient_cert = \"syslog-ca.crt\"",
        );
    std::fs::write(&fixture.config_path, text).unwrap();
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    for key in ["audit_forward.format", "audit_forward.client_key"] {
        assert!(stdout.contains(key), "{key} missing from {stdout}");
    }

    // A real CA: the section is accepted.
    let ca = DevCa::generate().unwrap();
    let fixture = forwarding_fixture("check-config-ok", 6514, &ca.cert_pem(), "atna");
    fixture_cli(&fixture, &["check-config"]);
}

/// `(seq, node)` of every row the collector stored, in the order it wrote them.
async fn collected_rows(db: &PgTestDb) -> Vec<(u64, String)> {
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect to the collector's database");
    tokio::spawn(connection);
    client
        .query("SELECT seq, node FROM collected ORDER BY id", &[])
        .await
        .expect("read the collector's table")
        .iter()
        .map(|r| {
            let seq: i64 = r.get(0);
            (u64::try_from(seq).expect("seq is positive"), r.get(1))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_rsyslog_while_batches_are_in_flight_stores_every_record_exactly_once() {
    let Some((_collector_dir, syslog_ca, mut rsyslog)) = new_collector() else {
        return;
    };
    if !rsyslog::pgsql_available() {
        return;
    }
    // The collector's own database (not wardhook's): rsyslog stores each record keyed by the
    // node and seq it carries.
    let Some(collector_db) = PgTestDb::create().await else {
        return;
    };
    {
        let (client, connection) =
            tokio_postgres::connect(&collector_db.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the collector's database");
        tokio::spawn(connection);
        client
            .batch_execute(rsyslog::COLLECTED_TABLE)
            .await
            .expect("create the collector's table");
    }
    rsyslog.store_in_postgres(&collector_db.url);
    rsyslog.start();
    let fixture = forwarding_fixture(
        "rsyslog-in-flight",
        rsyslog.port,
        &syslog_ca.cert_pem(),
        "rfc5424",
    );
    let server = Server::start(&fixture);
    // Deliveries keep coming while the collector is stopped and started under them, twice.
    for n in 0..40 {
        deliver(&fixture, &server, n).await;
        match n {
            8 | 24 => rsyslog.stop(),
            16 | 32 => rsyslog.start(),
            _ => {}
        }
    }
    let head = mirrored_head(&fixture);
    wait_stored(&collector_db, head).await;

    // A confirmation lost in the worst way: the collector wrote records, wardhook does not
    // know it and sends them all again. A new cursor name starting at the oldest record is that
    // case made certain (rather than hoped for from the timing of a stop).
    server.stop();
    let config = std::fs::read_to_string(&fixture.config_path).unwrap();
    std::fs::write(
        &fixture.config_path,
        config.replace(
            "name = \"rsyslog-in-flight\"",
            "name = \"rsyslog-in-flight-again\"",
        ),
    )
    .unwrap();
    let server = Server::start(&fixture);
    deliver(&fixture, &server, 40).await;
    let head = mirrored_head(&fixture);
    wait_for("the records sent again", Duration::from_secs(30), || {
        rsyslog.messages().iter().map(|m| seq_of(m)).max() >= Some(head)
    })
    .await;
    wait_stored(&collector_db, head).await;
    rsyslog.stop();
    server.stop();
    let stored = collected_rows(&collector_db).await;

    // What the collector wrote: every record exactly once, written in sequence order.
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    let last = seqs.last().copied().unwrap_or(0);
    assert!(last >= head, "{stored:?}");
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{stored:?}");
    assert!(stored.iter().all(|(_, node)| node.is_empty()), "{stored:?}");

    // The wire: at least once. Every record arrived, first arrivals in order; the records
    // sent again arrived a second time and the collector discarded them by their seq.
    let wire: Vec<u64> = rsyslog.messages().iter().map(|m| seq_of(m)).collect();
    let mut first_seen = Vec::new();
    for s in &wire {
        if !first_seen.contains(s) {
            first_seen.push(*s);
        }
    }
    assert_eq!(first_seen, seqs, "{wire:?}");
    assert!(
        wire.iter().filter(|s| **s == 1).count() >= 2,
        "the first record went out twice: {wire:?}"
    );
}

/// Wait until the collector's table holds a record with sequence number `head` or later.
async fn wait_stored(db: &PgTestDb, head: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = collected_rows(db).await;
        if stored.iter().map(|(s, _)| *s).max() >= Some(head) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for record {head} in the collector's database: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
