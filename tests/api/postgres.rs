//! Serving on PostgreSQL: nodes sharing one database over real TLS, and every CLI command
//! against it. Each test creates its own database on the server
//! named by `WARDHOOK_TEST_POSTGRES_URL`; without it the tests skip (under CI they fail).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use serde_json::Value;
use wardhook::dispatch::worker::TaskOutcome;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// A database created for one test, dropped at the end.
pub struct PgTestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    pub async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var("WARDHOOK_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "the PostgreSQL tests need WARDHOOK_TEST_POSTGRES_URL (.ci/run starts a server)"
            );
            eprintln!("SKIPPED: WARDHOOK_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("wardhook_it_{}", uuid::Uuid::new_v4().simple());
        run_sql(&admin_url, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&admin_url).expect("the test URL is a postgres:// URL");
        url.set_path(&format!("/{name}"));
        Some(Self {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    /// `[storage]` lines for a node, the URL read from `file:pg.url` (see [`Self::fixture`]).
    pub fn storage_toml(node_id: &str) -> String {
        format!(
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"file:pg.url\"\ntls = \"disable\"\n\
             pool_size = 8\nnode_id = \"{node_id}\"\n"
        )
    }

    /// A fixture for a node on this database, sharing `master_key` with the other nodes.
    pub fn fixture(&self, node_id: &str, opts: AppOptions, master_key: Option<&[u8]>) -> Fixture {
        let fixture = write_fixture(&AppOptions {
            // Plain keys the test chose (e.g. `phone_country`) stay ahead of the section.
            storage: format!("{}{}", opts.storage, Self::storage_toml(node_id)),
            ..opts
        });
        std::fs::write(fixture.dir.path().join("pg.url"), &self.url).unwrap();
        if let Some(key) = master_key {
            std::fs::write(fixture.dir.path().join("master.key"), key).unwrap();
        }
        fixture
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run_sql(
                    &url,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ));
        })
        .join();
    }
}

/// A single number from `sql` on the database at `url`, from synchronous test code.
pub fn count_blocking(url: &str, sql: &str) -> i64 {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test PostgreSQL server");
                tokio::spawn(connection);
                client.query_one(&sql, &[]).await.expect("count").get(0)
            })
    })
    .join()
    .unwrap()
}

async fn run_sql(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
}

fn call_ended(call: &str) -> String {
    format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call}","caller":{{"name":"Test Caller","phone":"+15550100"}}}}}}"#
    )
}

/// Post `body` to the `demo` source, signed; status and JSON answer.
async fn post(app: &TestApp, body: &str) -> (u16, Value) {
    crate::admin::send_signed(app, "demo", body, true).await
}

fn cli(app: &TestApp, args: &[&str]) -> Output {
    Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .output()
        .unwrap()
}

fn crm_route(url: &str) -> String {
    format!(
        r#"
[dispatch]
workers = 0

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_dedup_across_nodes_and_run_each_job_once() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&crm)
        .await;
    let opts = AppOptions {
        admin: "enabled = false".into(),
        extra: crm_route(&crm.uri()),
        ..AppOptions::default()
    };
    let one = spawn_from_fixture(db.fixture("node-1", opts.clone(), None)).await;
    let key = std::fs::read(one.dir.path().join("master.key")).unwrap();
    let two = spawn_from_fixture(db.fixture("node-2", opts, Some(&key))).await;

    let (status, first) = post(&one, &call_ended("c1")).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("accepted")));
    let (status, retry) = post(&two, &call_ended("c1")).await;
    assert_eq!(
        (status, retry["status"].as_str()),
        (200, Some("duplicate")),
        "a retry landing on the other node is still a duplicate"
    );
    assert_eq!(retry["delivery_id"], first["delivery_id"]);

    // Node 2 runs the job node 1 accepted; node 1 then finds nothing left.
    let step = two.dispatcher.try_execute_task().await.unwrap();
    assert!(matches!(step, TaskOutcome::Done { .. }), "{step:?}");
    assert_eq!(
        one.dispatcher.try_execute_task().await.unwrap(),
        TaskOutcome::Idle
    );
    let requests = crm.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one handler call for one delivery");
    assert_eq!(
        requests[0].headers.get("idempotency-key").unwrap(),
        format!("{}:crm", first["delivery_id"].as_str().unwrap()).as_str()
    );

    let verified = cli(&one, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        text.contains("node node-1") && text.contains("node node-2"),
        "{text}"
    );

    // An operator reads it (an audited decryption) and replays it from any node's host; whichever node claims it calls
    // the handler again with the same idempotency key.
    let id = first["delivery_id"].as_str().unwrap();
    let shown = cli(&two, &["deliveries", "show", id]);
    let event: Value = serde_json::from_slice(&shown.stdout).unwrap_or(Value::Null);
    assert_eq!(
        event["call_id"],
        "c1",
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let replayed = cli(&two, &["deliveries", "replay", id]);
    assert!(
        String::from_utf8_lossy(&replayed.stdout).contains("re-queued 1 job"),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let step = one.dispatcher.try_execute_task().await.unwrap();
    assert!(matches!(step, TaskOutcome::Done { .. }), "{step:?}");
    let requests = crm.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].headers.get("idempotency-key"),
        requests[0].headers.get("idempotency-key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_starts_on_postgres() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    // The admin console serves on PostgreSQL too (its own tests are in `admin.rs`).
    let fixture = db.fixture("node-console", AppOptions::default(), None);
    let config =
        wardhook::config::Config::load_with_base(&fixture.config_path, fixture.dir.path()).unwrap();
    let console = wardhook::app::Application::build_with_base(config, fixture.dir.path())
        .await
        .expect("the console starts on postgres");
    assert!(console.admin_port().is_some());
    drop(console);
}

/// One node on `db` without the console, for the operator commands.
async fn operator_node(db: &PgTestDb) -> TestApp {
    spawn_from_fixture(db.fixture(
        "node-1",
        AppOptions {
            admin: "enabled = false".into(),
            ..AppOptions::default()
        },
        None,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_command_works_with_postgres() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let app = operator_node(&db).await;
    let (status, first) = post(&app, &call_ended("ops-1")).await;
    assert_eq!(status, 200, "{first}");
    let id = first["delivery_id"].as_str().unwrap().to_owned();
    for args in [
        &["purge", "--older-than", "30d"][..],
        &["dlq", "list"],
        &["dlq", "retry", "--all"],
        &["deliveries", "list"],
        &["quarantine", "list"],
        &["keys", "rotate"],
        &["audit", "search"],
        &["audit", "export", "--format", "csv"],
        &["audit", "verify"],
        &["tokens", "list"],
    ] {
        let out = cli(&app, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("not available"), "{args:?}: {err}");
    }
    // `backup` points to the database's own tools and the documented procedure.
    let out = cli(&app, &["backup", "--to", "/tmp/wardhook-pg-backup.db"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("pg_dump") && text.contains("deploy/INSTALL.md"),
        "{text}"
    );
    assert!(!std::path::Path::new("/tmp/wardhook-pg-backup.db").exists());
    // The stored delivery still verifies after the key rotation re-encrypted it.
    let out = cli(&app, &["deliveries", "reverify", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("AUTHENTIC"), "{text}");
    // Emergency access: an archive that opens with the key printed once, and its audit record.
    let archive = app.dir.path().join("emergency.bin");
    let out = cli(
        &app,
        &[
            "emergency-export",
            "--reason",
            "records requested during an outage drill",
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
    let key_file = app.dir.path().join("emergency.key");
    std::fs::write(&key_file, &out.stdout).unwrap();
    let out = cli(
        &app,
        &[
            "emergency-open",
            archive.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    );
    let opened = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(opened.contains("ops-1"), "{opened}");
    let out = cli(&app, &["audit", "search", "--action", "emergency_access"]);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found.contains("node-1\t") && found.contains("emergency_access"),
        "{found}"
    );
    let out = cli(&app, &["audit", "search", "--delivery-id", &id]);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(found.contains("delivery_reverified"), "{found}");
    // doctor checks the connection, the schema and every node's audit chain.
    let out = cli(&app, &["doctor"]);
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        "OK    postgres (connection)",
        "OK    postgres (tls)",
        "OK    postgres (schema)",
        "OK    postgres (replication)",
        "OK    audit",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    // A delivery that does not exist is an error about the delivery, not about the backend.
    let out = cli(&app, &["deliveries", "reverify", "no-such-delivery"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_time_retry_on_another_node_gets_the_stored_reply_without_a_second_lookup() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let crm = crate::realtime::crm_answering(std::time::Duration::ZERO).await;
    let opts = AppOptions {
        admin: "enabled = false".into(),
        extra: format!(
            "[dispatch]\nworkers = 0\n{}",
            crate::realtime::realtime_config(&crm.uri(), 2000, false)
        ),
        ..AppOptions::default()
    };
    let one = spawn_from_fixture(db.fixture("node-1", opts.clone(), None)).await;
    let key = std::fs::read(one.dir.path().join("master.key")).unwrap();
    let two = spawn_from_fixture(db.fixture("node-2", opts, Some(&key))).await;

    let (status, first, kind, _) = crate::realtime::ring(&one, "rt-pg", "+15555550142").await;
    assert_eq!((status, kind.as_str()), (200, "computed"));
    assert_eq!(first["greeting"], "Hello Dana");
    let (status, retry, _, _) = crate::realtime::ring(&two, "rt-pg", "+15555550142").await;
    assert_eq!(status, 200);
    assert_eq!(retry, first, "the other node answers with the stored reply");
    assert_eq!(
        crm.received_requests().await.unwrap().len(),
        1,
        "no second CRM lookup"
    );
}

/// A graceful stop while deliveries keep arriving: afterwards the node's JSONL mirror holds
/// exactly its chain in the database (every accepted delivery among it), the last checkpoint
/// names its last record, and `audit verify` passes. The mirror task is stopped and waited for
/// before the final catch-up, so nothing it writes is cut off or written after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_load_leaves_the_nodes_mirror_equal_to_its_chain() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let opts = AppOptions {
        admin: "enabled = false".into(),
        ..AppOptions::default()
    };
    let Fixture {
        dir,
        ca,
        config_path,
    } = db.fixture("n1", opts, None);
    let config = wardhook::config::Config::load_with_base(&config_path, dir.path()).unwrap();
    let audit_dir = config.audit.dir.clone();
    let app = wardhook::app::Application::build_with_base(config, dir.path())
        .await
        .unwrap();
    let port = app.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let (client, accepted) = (client.clone(), accepted.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let body = call_ended(&format!("s{s}-{i}"));
                    let sent = post_demo(&client, port, body).await;
                    // Once the listener has stopped, connections are refused: the load ends.
                    let Ok(res) = sent else { return i };
                    if res.status().as_u16() == 200 {
                        let v: Value = res.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(v["delivery_id"].as_str().unwrap().to_owned());
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // Stop while all four senders are mid-stream.
    while accepted.lock().unwrap().len() < 60 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    for s in senders {
        s.await.unwrap();
    }

    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 60);
    let mut mirrored = Vec::new();
    for entry in std::fs::read_dir(&audit_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("audit.") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            mirrored.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    let (pg, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let in_db: i64 = pg
        .query_one("SELECT COUNT(*) FROM audit_log WHERE node_id = 'n1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        mirrored.len() as i64,
        in_db,
        "the mirror holds the node's whole chain, nothing more"
    );
    let mirrored_ids: std::collections::HashSet<&str> = mirrored
        .iter()
        .filter_map(|r| r["delivery_id"].as_str())
        .collect();
    for id in &accepted {
        assert!(
            mirrored_ids.contains(id.as_str()),
            "accepted {id} is mirrored"
        );
    }
    // The last signed checkpoint names the node's last record in the database.
    let last_seq: i64 = pg
        .query_one("SELECT MAX(seq) FROM audit_log WHERE node_id = 'n1'", &[])
        .await
        .unwrap()
        .get(0);
    let checkpoints =
        std::fs::read_to_string(audit_dir.join("checkpoints.jsonl")).expect("checkpoints");
    let last: Value = serde_json::from_str(checkpoints.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"].as_i64(), Some(last_seq));
    assert_eq!(mirrored.last().unwrap()["seq"].as_i64(), Some(last_seq));
    assert_eq!(
        mirrored.last().unwrap()["action"].as_str(),
        Some("server_stopped"),
        "nothing commits after the stop record"
    );
    assert_audit_verifies(&config_path, dir.path());
}

/// The database refuses the node mid-service (its sessions cut off, new ones refused): intake
/// answers 503 with `Retry-After` and a body naming nothing of the delivery, `/readyz` turns
/// red, nothing is acknowledged; once the database takes connections again the sender's retry
/// is accepted (not a duplicate: nothing of it was stored), the earlier delivery is intact and
/// the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_refusing_the_node_answers_503_with_retry_after_and_the_retry_is_stored() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let opts = AppOptions {
        admin: "enabled = false".into(),
        ..AppOptions::default()
    };
    let app = spawn_from_fixture(db.fixture("node-1", opts, None)).await;
    let (status, first) = post(&app, &call_ended("outage-1")).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("accepted")));

    run_sql(
        &db.admin_url,
        &format!(
            "ALTER DATABASE {name} CONNECTION LIMIT 0;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
            name = db.name
        ),
    )
    .await;
    let body = call_ended("outage-2");
    let res = app
        .client()
        .post(app.url("/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert!(res.headers().get("retry-after").is_some(), "{res:?}");
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("outage-2") && !text.contains("Test Caller"),
        "{text}"
    );
    let ready = app.client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503, "readiness shows the outage");

    run_sql(
        &db.admin_url,
        &format!("ALTER DATABASE {} CONNECTION LIMIT -1", db.name),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let retried = loop {
        let (status, answer) = post(&app, &body).await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            std::time::Instant::now() < deadline,
            "the node never recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(retried["status"], "accepted", "{retried}");
    assert_eq!(
        crate::multinode_nodes::one_value(&db, "SELECT COUNT(*) FROM deliveries").await,
        2
    );
    let verified = cli(&app, &["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// Every delivery's `id=caller_ref` (`-` for none) on the database at `url`, in id order.
async fn caller_refs(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT COALESCE(string_agg(id || '=' || COALESCE(caller_ref, '-'), ',' ORDER BY id), '')
             FROM deliveries",
            &[],
        )
        .await
        .expect("caller refs")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_phones_gives_older_deliveries_on_postgres_the_intake_index_while_a_node_serves() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let app = operator_node(&db).await;
    for (i, caller) in [
        r#","caller":{"phone":"+15550101234"}"#,
        "",
        r#","caller":{"phone":"+1 (555) 010-1234"}"#,
        r#","caller":{"phone":"+15550109999"}"#,
    ]
    .iter()
    .enumerate()
    {
        let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"pg-ix-{i}"{caller}}}}}"#);
        let (status, answer) = post(&app, &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let at_intake = caller_refs(&db.url).await;
    assert_eq!(at_intake.matches("=-").count(), 1, "{at_intake}");
    run_sql(&db.url, "UPDATE deliveries SET caller_ref = NULL").await;

    // The command runs as its own process while the node keeps accepting deliveries.
    let command = {
        let (dir, config) = (app.dir.path().to_owned(), app.config_path.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(wardhook_bin())
                .args(["deliveries", "index-phones", "--batch", "2"])
                .arg("--config")
                .arg(config)
                .current_dir(dir)
                .output()
                .unwrap()
        })
    };
    for i in 0..3 {
        let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"pg-during-{i}"}}}}"#);
        assert_eq!(post(&app, &body).await.0, 200);
    }
    let out = command.await.unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("indexed 3,"),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = caller_refs(&db.url).await;
    assert!(
        after.starts_with(&at_intake),
        "the intake index again:\n{after}\n{at_intake}"
    );

    // A rerun changes nothing; the trail holds two records a run and verifies.
    let again = cli(&app, &["deliveries", "index-phones"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("indexed 0,"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(caller_refs(&db.url).await, after);
    assert_eq!(
        count_blocking(
            &db.url,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'callers_indexed'"
        ),
        4
    );
    let verified = cli(&app, &["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}
