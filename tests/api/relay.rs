//! The DMZ relay with two real processes over real TLS on loopback: `wardhook relay` in a
//! "DMZ" folder and `wardhook serve` with `[relay]` in an "inside" folder, sharing nothing but
//! the inside public key (in the relay's config) and a CA.
//!
//! Every load test is bounded in count and time; every address is loopback.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use wardhook::certs::DevCa;
use wardhook::crypto::{Keyring, MasterKey};
use wardhook::store::admin::{list_deliveries, show_delivery, ListFilter, Requester};
use wardhook::store::{Store, StoreOptions};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// Relay and inside folders, certificates, and the key pair made by `wardhook relay keygen`.
struct Pair {
    dir: TempDir,
    ca: DevCa,
    /// The relay's pull port: 0 ("any free port") until the first relay names the port it
    /// bound; kept from then on, so a restarted relay is found again at the same address.
    pull_port: AtomicU16,
    /// The relay's config as last written, written again with the pull port once it is known.
    relay_options: Mutex<RelayOptions>,
    /// The inside node's `[relay]` extras and private key files, written out with the relay's
    /// pull port when the inside node starts.
    inside_options: Mutex<(String, Vec<String>)>,
    public_key: String,
    crm: MockServer,
    /// The relay's PostgreSQL database, when its buffer lives there rather than in SQLite.
    relay_pg: Option<crate::postgres::PgTestDb>,
}

/// The SHA-256 fingerprint of the certificate in the PEM file `path` as an operator reads it:
/// `openssl x509 -noout -fingerprint -sha256` (`sha256 Fingerprint=AB:CD:…`), turned into the
/// audit record's form (lowercase hex without colons).
fn openssl_sha256_fingerprint(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("openssl prints text");
    let (_, hex) = text.trim().split_once('=').expect("a Fingerprint= line");
    hex.replace(':', "").to_ascii_lowercase()
}

/// What the relay's and the inside node's configs share, each with its own folder `dir`: the
/// senders' listener on any free port, storage in `data/<db_file>` (plus `storage` keys), the
/// node's own master key and audit folder, no admin listener, and the `demo` source.
fn node_toml(dir: &Path, db_file: &str, storage: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls = {{ cert = "{d}/server.crt", key = "{d}/server.key" }}
workers = 2
shutdown_timeout_secs = 2

[storage]
path = "{d}/data/{db_file}"
{storage}

[keys]
master_key_file = "{d}/master.key"

[audit]
dir = "{d}/data/audit"

[admin]
enabled = false

[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:{d}/demo.secret"]
"#,
        d = dir.display(),
    )
}

/// `wardhook relay keygen --out <private>`: the private key written there, the public key
/// (`whrelay-pk1:…`) as it prints it.
fn relay_keygen(private: &Path) -> String {
    let out = output_of_success(
        Command::new(wardhook_bin())
            .args(["relay", "keygen", "--out"])
            .arg(private),
    );
    let public_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(public_key.starts_with("whrelay-pk1:"), "{public_key}");
    public_key
}

/// What a relay test can vary.
#[derive(Default, Clone)]
struct RelayOptions {
    /// Extra keys for `[relay_server]`.
    server_extra: String,
    /// Extra top-level TOML (routes, handlers).
    extra: String,
    /// Replaces the public key line.
    public_key_line: Option<String>,
}

impl Pair {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["relay", "inside"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let ca = DevCa::generate().unwrap();
        let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
        let client = ca.issue_client("inside-node").unwrap();
        std::fs::write(d.join("ca.crt"), ca.cert_pem()).unwrap();
        write_cert_and_key(&d.join("relay/server"), &server);
        write_cert_and_key(&d.join("inside/server"), &server);
        write_cert_and_key(&d.join("inside/client"), &client);
        for sub in ["relay", "inside"] {
            MasterKey::generate_file(&d.join(sub).join("master.key")).unwrap();
            std::fs::write(d.join(sub).join("demo.secret"), DEMO_SECRET).unwrap();
        }
        let public_key = relay_keygen(&d.join("inside/relay.key"));
        let crm = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&crm)
            .await;
        let pair = Self {
            dir,
            ca,
            pull_port: AtomicU16::new(0),
            relay_options: Mutex::default(),
            inside_options: Mutex::new((String::new(), vec!["relay.key".to_owned()])),
            public_key,
            crm,
            relay_pg: None,
        };
        pair.write_relay_config(&RelayOptions::default());
        pair
    }

    /// A pair whose relay keeps its buffer and audit chain in a fresh PostgreSQL database;
    /// `None` (skipped, outside CI only) without a test server.
    async fn on_postgres() -> Option<Self> {
        let db = crate::postgres::PgTestDb::create().await?;
        let mut pair = Self::new().await;
        std::fs::write(pair.path("relay/pg.url"), &db.url).unwrap();
        pair.relay_pg = Some(db);
        pair.write_relay_config(&RelayOptions::default());
        Some(pair)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The relay's pull port, once a relay has named it.
    fn pull_port(&self) -> u16 {
        let port = self.pull_port.load(Ordering::SeqCst);
        assert_ne!(
            port, 0,
            "start the relay first: its pull port is chosen when it binds"
        );
        port
    }

    /// Write the relay's config: the pull listener on the port a relay of this pair already
    /// bound, or on port 0 (any free port) before the first start.
    fn write_relay_config(&self, o: &RelayOptions) -> PathBuf {
        *self.relay_options.lock().unwrap() = o.clone();
        let r = self.path("relay");
        let public = o
            .public_key_line
            .clone()
            .unwrap_or_else(|| format!("public_key = \"{}\"", self.public_key));
        let storage = if self.relay_pg.is_some() {
            crate::postgres::PgTestDb::storage_toml("relay")
        } else {
            String::new()
        };
        let text = format!(
            r#"{head}
[log]
format = "json"
level = "info"
dir = "{r}/logs"

[relay_server]
{public}
pull_listen = "127.0.0.1:{pull}"
pull_tls = {{ cert = "{r}/server.crt", key = "{r}/server.key", client_ca = "{ca}" }}
{server_extra}
{extra}
"#,
            r = r.display(),
            pull = self.pull_port.load(Ordering::SeqCst),
            ca = self.path("ca.crt").display(),
            server_extra = o.server_extra,
            extra = o.extra,
            head = node_toml(&r, "relay.db", &storage),
        );
        let path = r.join("relay.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The inside node's `[relay]` gets `relay_extra` from its next start on.
    fn write_inside_config(&self, relay_extra: &str) {
        self.write_inside_config_with_keys(relay_extra, &["relay.key"]);
    }

    /// The inside node's `private_keys` name these files of the inside folder, in order, from
    /// its next start on.
    fn write_inside_config_with_keys(&self, relay_extra: &str, keys: &[&str]) {
        *self.inside_options.lock().unwrap() = (
            relay_extra.to_owned(),
            keys.iter().map(|k| (*k).to_owned()).collect(),
        );
    }

    /// Write the inside config, its `[relay]` url on the relay's pull port.
    fn write_inside_config_file(&self) {
        let (relay_extra, keys) = self.inside_options.lock().unwrap().clone();
        let i = self.path("inside");
        let private_keys = keys
            .iter()
            .map(|k| format!("\"file:{}\"", i.join(k).display()))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"{head}
[log]
format = "json"
level = "warn,wardhook::cli=info"

[dispatch]
workers = 2

[[handlers]]
name = "crm"
kind = "http"
phi = "full"
baa = true
url = "{crm}/api/leads"

[[routes]]
source = "demo"
events = ["call.ended"]
handlers = ["crm"]

[relay]
url = "https://localhost:{pull}"
ca = "{ca}"
client_cert = "{i}/client.crt"
client_key = "{i}/client.key"
private_keys = [{private_keys}]
wait_secs = 1
{relay_extra}
"#,
            i = i.display(),
            head = node_toml(&i, "wardhook.db", ""),
            crm = self.crm.uri(),
            pull = self.pull_port(),
            ca = self.path("ca.crt").display(),
        );
        std::fs::write(i.join("wardhook.toml"), text).unwrap();
    }

    /// `wardhook relay`, with the senders' port it bound. The first start binds the pull
    /// listener on any free port and the pair keeps the one it names; later starts bind that
    /// same port again.
    fn start_relay(&self) -> (ServerProcess, u16) {
        let mut cmd = Command::new(wardhook_bin());
        cmd.args(["relay", "--config"])
            .arg(self.path("relay/relay.toml"));
        let (relay, fields) = spawn_listening(cmd, &self.path("relay"));
        let pull = fields["relay_pull_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("the relay names its pull port: {fields}"));
        match self
            .pull_port
            .compare_exchange(0, pull, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                let options = self.relay_options.lock().unwrap().clone();
                self.write_relay_config(&options);
            }
            Err(kept) => assert_eq!(pull, kept, "a restarted relay binds its first pull port"),
        }
        (relay, port_of(&fields))
    }

    /// The inside node's `wardhook serve`, pulling from the relay's pull port (start the relay
    /// first).
    fn start_inside(&self) -> ServerProcess {
        self.write_inside_config_file();
        let mut cmd = Command::new(wardhook_bin());
        cmd.args(["serve", "--config"])
            .arg(self.path("inside/wardhook.toml"));
        spawn_listening(cmd, &self.path("inside")).0
    }

    /// Wait (bounded by `limit`) until the relay has handed everything over.
    async fn wait_drained(&self, limit: Duration) {
        wait_for("the relay to be drained", limit, || {
            self.relay_backlog() == 0
        })
        .await;
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// The relay's buffer: records not yet handed over.
    fn relay_backlog(&self) -> i64 {
        self.relay_count("SELECT COUNT(*) FROM relay_sealed")
    }

    /// A count from the relay's database, SQLite or PostgreSQL.
    fn relay_count(&self, sql: &str) -> i64 {
        match &self.relay_pg {
            Some(db) => crate::postgres::count_blocking(&db.url, sql),
            None => rusqlite::Connection::open(self.path("relay/data/relay.db"))
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
        }
    }

    /// The inside node's store, opened offline (stop the node first).
    fn inside_store(&self) -> Store {
        let key = MasterKey::load(&self.path("inside/master.key")).unwrap();
        Store::open(
            &self.path("inside/data/wardhook.db"),
            Keyring::from_master(&key),
            StoreOptions::default(),
        )
        .unwrap()
    }

    /// Call ids of the inside node's accepted deliveries, in the order intake committed them.
    fn inside_calls_in_commit_order(&self) -> Vec<String> {
        let store = self.inside_store();
        let conn = rusqlite::Connection::open(self.path("inside/data/wardhook.db")).unwrap();
        let ids: Vec<String> = conn
            .prepare(
                "SELECT delivery_id FROM audit_log WHERE action = 'delivery_accepted' ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let who = Requester::cli_user();
        ids.iter()
            .map(|id| show_delivery(&store, id, &who).unwrap().call_id.unwrap())
            .collect()
    }
}

/// Spawn a wardhook process and wait for its `wardhook listening` line: the process and that
/// line's fields (`port`, and on a relay `relay_pull_port`). Every port is bound by the process
/// itself, so no other test can take one first; a process that ends before naming its ports
/// fails the test with what it wrote.
fn spawn_listening(mut cmd: Command, cwd: &Path) -> (ServerProcess, serde_json::Value) {
    let mut child = ServerProcess::spawn(
        cmd.current_dir(cwd)
            .stderr(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The lines before the ports, to show why a process that ended without them did.
    let early = Arc::new(Mutex::new(Vec::new()));
    let seen = early.clone();
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if !told && v["fields"]["port"].is_u64() {
                    let _ = tx.send(v["fields"].clone());
                    told = true;
                }
            }
            if !told {
                seen.lock().unwrap().push(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(fields) => (child, fields),
        Err(e) => panic!(
            "no ports from {cmd:?} ({e:?}); its output:\n{}",
            early.lock().unwrap().join("\n")
        ),
    }
}

/// The senders' port named in a `wardhook listening` line's fields.
fn port_of(fields: &serde_json::Value) -> u16 {
    fields["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("a port: {fields}"))
}

fn call_body(call: &str) -> String {
    format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call}","caller":{{"name":"Relay Caller","phone":"+15550100"}}}}}}"#
    )
}

async fn post(http: &reqwest::Client, port: u16, body: &str) -> reqwest::Response {
    post_to(http, port, "demo", body).await
}

/// Post `body` to `source`, signed with the demo secret.
async fn post_to(http: &reqwest::Client, port: u16, source: &str, body: &str) -> reqwest::Response {
    http.post(format!("https://localhost:{port}/hooks/{source}"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Post and expect a 200 with a status; return (status, delivery id).
async fn deliver_to(http: &reqwest::Client, port: u16, body: &str) -> (String, String) {
    let res = post(http, port, body).await;
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    (
        v["status"].as_str().unwrap().to_owned(),
        v["delivery_id"].as_str().unwrap().to_owned(),
    )
}

/// Wait (bounded) until `cond` holds.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crm_requests(crm: &MockServer) -> usize {
    crm.received_requests().await.map_or(0, |r| r.len())
}

/// Wait (30 s at most) until the inside node's handler reached the CRM `count` times.
async fn wait_for_crm_requests(crm: &MockServer, count: usize) {
    let start = Instant::now();
    while crm_requests(crm).await < count {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "handlers not reached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deliver calls `<prefix>-0` to `<prefix>-<count - 1>` to the relay, each accepted; their
/// delivery ids by number.
async fn deliver_accepted(
    http: &reqwest::Client,
    port: u16,
    prefix: &str,
    count: usize,
) -> HashMap<usize, String> {
    let mut ids = HashMap::new();
    for n in 0..count {
        let (status, id) = deliver_to(http, port, &call_body(&format!("{prefix}-{n}"))).await;
        assert_eq!(status, "accepted");
        ids.insert(n, id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_posted_to_the_relay_reach_the_inside_handlers_once() {
    let pair = Pair::new().await;
    let (_relay, port) = pair.start_relay();
    let _inside = pair.start_inside();
    let http = pair.http();
    let first_ids = deliver_accepted(&http, port, "relay", 20).await;
    // A sender's retry while the record may still be buffered: the relay's first id.
    let (status, id) = deliver_to(&http, port, &call_body("relay-3")).await;
    assert_eq!(status, "duplicate");
    assert_eq!(id, first_ids[&3]);
    wait_for_crm_requests(&pair.crm, 20).await;
    pair.wait_drained(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        crm_requests(&pair.crm).await,
        20,
        "a delivery reached the CRM twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_inside_node_offline_the_relay_buffers_then_drains_in_order() {
    let pair = Pair::new().await;
    let (_relay, port) = pair.start_relay();
    let http = pair.http();
    for n in 0..30 {
        deliver_to(&http, port, &call_body(&format!("order-{n:02}"))).await;
    }
    assert_eq!(
        pair.relay_backlog(),
        30,
        "buffered while the inside node is away"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inside_started = chrono::Utc::now();
    let inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(30)).await;
    drop(inside);
    let calls = pair.inside_calls_in_commit_order();
    let expected: Vec<String> = (0..30).map(|n| format!("order-{n:02}")).collect();
    assert_eq!(calls, expected, "drained in the relay's order");
    // The relay's audit chain (its receipts and hand-overs beside its own records) verifies.
    assert_audit_verifies(&pair.path("relay/relay.toml"), &pair.path("relay"));
    let conn = rusqlite::Connection::open(pair.path("relay/data/relay.db")).unwrap();
    let count = |action: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = ?1",
            [action],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(count("relay_buffered"), 30);
    assert_eq!(count("relay_handed_over"), 30);
    // Each hand-over names the client certificate that acknowledged it: the fingerprint openssl
    // prints for the certificate the inside node used, and its CN.
    let fingerprint = openssl_sha256_fingerprint(&pair.path("inside/client.crt"));
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    let details: Vec<serde_json::Value> = conn
        .prepare("SELECT detail FROM audit_log WHERE action = 'relay_handed_over'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect();
    assert_eq!(details.len(), 30);
    for detail in &details {
        assert_eq!(detail["sha256"], fingerprint.as_str(), "{detail}");
        assert_eq!(detail["via"], "inside-node", "{detail}");
    }
    // Intake ran with the relay's receipt time, not the time of the pull.
    let store = pair.inside_store();
    for row in list_deliveries(&store, &ListFilter::default()).unwrap() {
        let event = show_delivery(&store, &row.id, &Requester::cli_user()).unwrap();
        assert!(
            event.received_at < inside_started,
            "{} is the pull time",
            event.received_at
        );
    }
    // The sealed record kept the sender's signature: the inside copy re-verifies.
    let id = list_deliveries(&store, &ListFilter::default()).unwrap()[0]
        .id
        .clone();
    cli_in(
        &pair.path("inside/wardhook.toml"),
        &pair.path("inside"),
        &["deliveries", "reverify", &id],
    );
}

/// Senders hammer the relay while it is killed with SIGKILL, twice; afterwards the inside node
/// holds every delivery the relay acknowledged, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_relay_under_load_loses_no_acknowledged_delivery_and_duplicates_none() {
    let pair = Pair::new().await;
    // The first relay binds the pull port the inside node is given.
    let mut first = Some(pair.start_relay());
    let _inside = pair.start_inside();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    for round in 0..2u64 {
        let (mut relay, port) = first.take().unwrap_or_else(|| pair.start_relay());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let (http, acked, stop) = (pair.http(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..300u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let call = format!("kill-{round}-{worker}-{n}");
                    let Ok(res) = http
                        .post(format!("https://localhost:{port}/hooks/demo"))
                        .header(
                            "X-NextPhone-Signature",
                            nextphone_signature(DEMO_SECRET, call_body(&call).as_bytes()),
                        )
                        .body(call_body(&call))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    if res.status() == 200 {
                        acked.lock().unwrap().insert(call);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        relay.kill().unwrap(); // SIGKILL
        relay.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "too little load: {}", acked.len());
    // A last relay start hands over whatever the killed ones had buffered.
    let (_relay, _) = pair.start_relay();
    pair.wait_drained(Duration::from_secs(60)).await;
    drop(_inside);
    assert_inside_holds_each_once(&pair, &acked);
}

/// The inside node is killed with SIGKILL in the middle of draining a backlog in small
/// batches, twice; afterwards it holds every buffered delivery once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_inside_node_mid_pull_loses_nothing_and_duplicates_none() {
    let pair = Pair::new().await;
    pair.write_inside_config("batch = 5");
    let (_relay, port) = pair.start_relay();
    let http = pair.http();
    let mut acked = HashSet::new();
    for n in 0..150 {
        let call = format!("pull-{n}");
        deliver_to(&http, port, &call_body(&call)).await;
        acked.insert(call);
    }
    for _ in 0..2 {
        let before = pair.relay_backlog();
        let mut inside = pair.start_inside();
        wait_for("the pull to start", Duration::from_secs(20), || {
            pair.relay_backlog() < before
        })
        .await;
        inside.kill().unwrap(); // SIGKILL, mid-drain
        inside.wait().unwrap();
    }
    assert!(
        pair.relay_backlog() > 0,
        "the kills came too late to prove anything"
    );
    let inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(60)).await;
    drop(inside);
    assert_inside_holds_each_once(&pair, &acked);
}

fn assert_inside_holds_each_once(pair: &Pair, acked: &HashSet<String>) {
    let store = pair.inside_store();
    let rows = list_deliveries(
        &store,
        &ListFilter {
            limit: 1_000_000,
            ..ListFilter::default()
        },
    )
    .unwrap();
    let who = Requester::cli_user();
    let mut seen = HashSet::new();
    for row in &rows {
        let call = show_delivery(&store, &row.id, &who)
            .unwrap()
            .call_id
            .unwrap();
        assert!(seen.insert(call.clone()), "{call} stored twice inside");
    }
    for call in acked {
        assert!(seen.contains(call), "acknowledged {call} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_relay_answers_503_with_retry_after_and_keeps_what_it_buffered() {
    let pair = Pair::new().await;
    pair.write_relay_config(&RelayOptions {
        server_extra: "max_buffer_mb = 1".into(),
        ..RelayOptions::default()
    });
    let (_relay, port) = pair.start_relay();
    let http = pair.http();
    let filler = "x".repeat(200 * 1024);
    let mut accepted = 0;
    let mut full = None;
    for n in 0..20 {
        let body =
            format!(r#"{{"event":"call.ended","data":{{"call_id":"big-{n}","pad":"{filler}"}}}}"#);
        let res = post(&http, port, &body).await;
        if res.status() == 200 {
            accepted += 1;
        } else {
            full = Some(res);
            break;
        }
    }
    let res = full.expect("the cap was never reached");
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    assert!(accepted >= 2, "{accepted}");
    assert_eq!(pair.relay_backlog(), accepted);
    // The inside node drains it; then there is room again.
    let _inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(30)).await;
    let body =
        format!(r#"{{"event":"call.ended","data":{{"call_id":"big-after","pad":"{filler}"}}}}"#);
    assert_eq!(post(&http, port, &body).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_config_names_the_inside_private_key_refuses_to_start() {
    let pair = Pair::new().await;
    let private = std::fs::read_to_string(pair.path("inside/relay.key")).unwrap();
    let private = private.trim();
    let run = |pair: &Pair| {
        Command::new(wardhook_bin())
            .args(["relay", "--config"])
            .arg(pair.path("relay/relay.toml"))
            .output()
            .unwrap()
    };
    let cases = [
        (
            "the private key as the public key",
            RelayOptions {
                public_key_line: Some(format!("public_key = \"{private}\"")),
                ..RelayOptions::default()
            },
            "PRIVATE key",
        ),
        (
            "the private key elsewhere in the file",
            RelayOptions {
                extra: format!("# {private}\n"),
                ..RelayOptions::default()
            },
            "must never hold",
        ),
        (
            "an inside [relay] section naming private keys",
            RelayOptions {
                extra: format!(
                    "[relay]\nurl = \"https://localhost:1\"\nca = \"{ca}\"\nclient_cert = \"{ca}\"\nclient_key = \"{ca}\"\nprivate_keys = [\"file:{k}\"]\n",
                    ca = pair.path("ca.crt").display(),
                    k = pair.path("inside/relay.key").display()
                ),
                ..RelayOptions::default()
            },
            "[relay]",
        ),
    ];
    for (case, options, says) in cases {
        pair.write_relay_config(&options);
        let out = run(&pair);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: started");
        assert!(err.contains(says), "{case}: {err}");
        assert!(!err.contains(&private[12..]), "{case}: the key was echoed");
    }
    // `serve` refuses a relay's config too.
    pair.write_relay_config(&RelayOptions::default());
    let out = Command::new(wardhook_bin())
        .args(["serve", "--config"])
        .arg(pair.path("relay/relay.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wardhook relay"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_listener_refuses_clients_without_a_certificate_from_its_ca() {
    let pair = Pair::new().await;
    let (_relay, _) = pair.start_relay();
    let url = format!(
        "https://localhost:{}/relay/v1/records?after=0",
        pair.pull_port()
    );
    let trust = reqwest::Certificate::from_pem(pair.ca.cert_pem().as_bytes()).unwrap();
    let client = |identity: Option<reqwest::Identity>| {
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(trust.clone())
            .timeout(Duration::from_secs(5));
        match identity {
            Some(i) => b.identity(i),
            None => b,
        }
        .build()
        .unwrap()
    };
    // No certificate.
    assert!(client(None).get(&url).send().await.is_err());
    // A certificate from another CA.
    let other = DevCa::generate().unwrap().issue_client("intruder").unwrap();
    let foreign =
        reqwest::Identity::from_pem(format!("{}\n{}", other.cert_pem, other.key_pem).as_bytes())
            .unwrap();
    assert!(client(Some(foreign)).get(&url).send().await.is_err());
    // The inside node's certificate.
    let pem = format!(
        "{}\n{}",
        std::fs::read_to_string(pair.path("inside/client.crt")).unwrap(),
        std::fs::read_to_string(pair.path("inside/client.key")).unwrap()
    );
    let res = client(Some(reqwest::Identity::from_pem(pem.as_bytes()).unwrap()))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

const CANARIES: &[&str] = &[
    "Zyxwvut Relaycanary",
    "relaycanary.zyx@example.org",
    "+15559871234",
    "relay canary transcript about chest pain qqq",
];

fn scan(dir: &Path, needles: &[Vec<u8>], hits: &mut Vec<String>, files: &mut usize) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, needles, hits, files);
            continue;
        }
        *files += 1;
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

/// Every file under `dir` is mode 0600 and every folder 0700: what the relay wrote is its
/// owner's alone, whatever the umask.
fn assert_private(dir: &Path, files: &mut usize) {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("folder entry").path();
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            assert_private(&path, files);
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            *files += 1;
        }
    }
}

/// Canary values sent through the relay — accepted, retried, refused for a bad signature,
/// buffered, handed over — appear in no file the relay wrote: database, WAL, shm, audit
/// mirror, logs. They do reach the inside node (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_scan_of_every_file_the_relay_wrote_finds_no_plaintext_phi() {
    let pair = Pair::new().await;
    let (relay, port) = pair.start_relay();
    let http = pair.http();
    let body = format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"canary-call-1","caller":{{"name":"{}","email":"{}","phone":"{}"}},"ai_summary":"{}"}}}}"#,
        CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3]
    );
    assert_eq!(deliver_to(&http, port, &body).await.0, "accepted");
    assert_eq!(deliver_to(&http, port, &body).await.0, "duplicate");
    let forged = http
        .post(format!("https://localhost:{port}/hooks/demo"))
        .header("X-NextPhone-Signature", "sha256=00")
        .body(body.replace("canary-call-1", "canary-call-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(30)).await;
    drop(inside);
    drop(relay);
    let mut needles = Vec::new();
    for c in CANARIES {
        needles.push(c.as_bytes().to_vec());
        needles.push(
            serde_json::to_string(c)
                .unwrap()
                .trim_matches('"')
                .as_bytes()
                .to_vec(),
        );
    }
    let (mut hits, mut files) = (Vec::new(), 0);
    scan(&pair.path("relay"), &needles, &mut hits, &mut files);
    assert!(files >= 5, "too few relay files to prove anything: {files}");
    assert!(hits.is_empty(), "{hits:#?}");
    // The relay's data files (database, WAL, audit mirror, checkpoints) are 0600.
    let mut data_files = 0;
    assert_private(&pair.path("relay/data"), &mut data_files);
    assert!(
        data_files >= 3,
        "the relay wrote its data files: {data_files}"
    );
    // Control: the inside node did get it (decrypted on read, not from disk).
    let store = pair.inside_store();
    let rows = list_deliveries(&store, &ListFilter::default()).unwrap();
    assert_eq!(rows.len(), 1);
    let event = show_delivery(&store, &rows[0].id, &Requester::cli_user()).unwrap();
    assert_eq!(event.caller.name.as_deref(), Some(CANARIES[0]));
}

/// A real-time route on the relay answers with its fallback (the data to compute a reply is
/// inside), after the delivery is sealed and buffered; the delivery still reaches the inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_time_route_on_the_relay_answers_its_fallback_and_the_delivery_still_goes_inside() {
    let pair = Pair::new().await;
    pair.write_relay_config(&RelayOptions {
        extra: format!(
            r#"
[[handlers]]
name = "lookup"
kind = "http"
phi = "full"
baa = true
method = "GET"
url = "{crm}/contacts"

[[routes]]
source = "demo"
events = ["call.incoming"]
mode = "realtime"
handlers = ["lookup"]
baa = true
respond = '{{"greeting": "computed"}}'
fallback = '{{"greeting": "Hello, thanks for calling"}}'
"#,
            crm = pair.crm.uri()
        ),
        ..RelayOptions::default()
    });
    let (_relay, port) = pair.start_relay();
    let http = pair.http();
    let body = r#"{"event":"call.incoming","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"rt-1","caller":{"phone":"+15550100"}}}"#;
    let res = post(&http, port, body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-wardhook-reply"], "fallback");
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["greeting"], "Hello, thanks for calling");
    assert_eq!(crm_requests(&pair.crm).await, 0, "the relay ran no handler");
    assert_eq!(pair.relay_backlog(), 1);
    let inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(30)).await;
    drop(inside);
    let store = pair.inside_store();
    assert_eq!(
        list_deliveries(&store, &ListFilter::default())
            .unwrap()
            .len(),
        1
    );
}

/// Rotation of the inside key pair, and a key removed too early: records sealed to a key the
/// inside node lacks are never acknowledged and stay at the relay while the others drain; with
/// the old key back beside the new one, they drain too, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sealed_to_a_key_the_inside_node_lacks_stay_at_the_relay_until_the_key_is_back() {
    let pair = Pair::new().await;
    let new_public = relay_keygen(&pair.path("inside/relay-2.key"));
    assert_ne!(new_public, pair.public_key);
    let http = pair.http();
    // Sealed to the first key.
    let (relay, port) = pair.start_relay();
    for n in 0..3 {
        deliver_to(&http, port, &call_body(&format!("old-{n}"))).await;
    }
    drop(relay);
    // The relay now seals to the new key.
    pair.write_relay_config(&RelayOptions {
        public_key_line: Some(format!("public_key = \"{new_public}\"")),
        ..RelayOptions::default()
    });
    let (_relay, port) = pair.start_relay();
    for n in 0..3 {
        deliver_to(&http, port, &call_body(&format!("new-{n}"))).await;
    }
    assert_eq!(pair.relay_backlog(), 6);
    // The inside node has only the new key: the old key was removed too early.
    pair.write_inside_config_with_keys("", &["relay-2.key"]);
    let inside = pair.start_inside();
    wait_for("the new key's records", Duration::from_secs(30), || {
        pair.relay_backlog() == 3
    })
    .await;
    // Several more passes (long poll of 1 s): the unopenable records are never acknowledged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pair.relay_backlog(),
        3,
        "unopenable records stay at the relay"
    );
    drop(inside);
    assert_eq!(
        pair.inside_calls_in_commit_order(),
        ["new-0", "new-1", "new-2"]
    );
    // The old key back after the new one (the overlap of a rotation): everything drains.
    pair.write_inside_config_with_keys("", &["relay-2.key", "relay.key"]);
    let inside = pair.start_inside();
    wait_for("the old key's records", Duration::from_secs(30), || {
        pair.relay_backlog() == 0
    })
    .await;
    drop(inside);
    let mut calls = pair.inside_calls_in_commit_order();
    calls.sort();
    assert_eq!(
        calls,
        ["new-0", "new-1", "new-2", "old-0", "old-1", "old-2"]
    );
}

/// The relay on PostgreSQL: with the inside node offline it buffers in its database (a retry
/// answered as a duplicate), the inside node drains it once, and the relay's audit chain in
/// the database holds each record's buffering and hand-over and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_postgres_buffers_hands_over_and_each_delivery_arrives_once() {
    let Some(pair) = Pair::on_postgres().await else {
        return;
    };
    let (_relay, port) = pair.start_relay();
    let http = pair.http();
    let first = deliver_accepted(&http, port, "pg", 15).await;
    let (status, id) = deliver_to(&http, port, &call_body("pg-4")).await;
    assert_eq!((status.as_str(), &id), ("duplicate", &first[&4]));
    assert_eq!(pair.relay_backlog(), 15);
    assert!(
        !pair.path("relay/data/relay.db").exists(),
        "nothing of the buffer is kept in a SQLite file"
    );
    let _inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(30)).await;
    wait_for_crm_requests(&pair.crm, 15).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        crm_requests(&pair.crm).await,
        15,
        "a delivery arrived twice"
    );
    let count = |action: &str| {
        pair.relay_count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE node_id = 'relay' AND action = '{action}'"
        ))
    };
    assert_eq!(count("relay_buffered"), 15);
    assert_eq!(count("delivery_duplicate"), 1);
    assert_eq!(count("relay_handed_over"), 15);
    assert_eq!(pair.relay_count("SELECT bytes FROM relay_size"), 0);
    assert_audit_verifies(&pair.path("relay/relay.toml"), &pair.path("relay"));
}

/// A source configured on the relay but not on the inside node: its deliveries are
/// quarantined inside with a reason saying so (never stored or routed as deliveries), and
/// handed over, so the relay does not keep them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_delivery_of_a_source_the_inside_node_lacks_is_quarantined_with_the_reason() {
    let pair = Pair::new().await;
    let r = pair.path("relay");
    pair.write_relay_config(&RelayOptions {
        extra: format!(
            "[[sources]]\nname = \"lab\"\npreset = \"nextphone\"\nsecrets = [\"file:{}/demo.secret\"]\n",
            r.display()
        ),
        ..RelayOptions::default()
    });
    let (_relay, port) = pair.start_relay();
    let http = pair.http();
    let res = post_to(&http, port, "lab", &call_body("lab-1")).await;
    assert_eq!(res.status(), 200, "the relay accepts its own source");
    deliver_to(&http, port, &call_body("demo-1")).await;
    let inside = pair.start_inside();
    pair.wait_drained(Duration::from_secs(30)).await;
    drop(inside);
    let conn = rusqlite::Connection::open(pair.path("inside/data/wardhook.db")).unwrap();
    let quarantined: Vec<(String, String)> = conn
        .prepare("SELECT source, reason FROM quarantine")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        quarantined,
        [(
            "lab".to_owned(),
            "source is not configured on this node (received through the relay)".to_owned()
        )]
    );
    let stored: Vec<String> = conn
        .prepare("SELECT source FROM deliveries")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        stored,
        ["demo"],
        "only the configured source is stored as a delivery"
    );
}
