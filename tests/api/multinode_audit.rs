//! Operating a three-node PostgreSQL cluster from any node: three real `wardhook serve`
//! processes on one database, each with its own `[audit] dir`. From node A — its CLI and its
//! console API — the operator sees a delivery node B accepted and a dead letter node C's worker
//! made; `audit verify` passes on every node, and catches a modified record, a deleted record and a cut-off
//! tail on any one node (the tail through that node's own signed checkpoints and mirror).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::multinode_nodes::*;
use crate::postgres::PgTestDb;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

async fn post(port: u16, ca_pem: &str, body: &str) -> Value {
    let res = client_trusting(ca_pem)
        .post(format!("https://localhost:{port}/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// GET `path` from the console on `port` with `token`; the JSON answer.
async fn console_get(port: u16, ca_pem: &str, token: &str, path: &str) -> Value {
    let res = client_trusting(ca_pem)
        .get(format!("https://localhost:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn sql(db: &PgTestDb, statements: &str) {
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(statements).await.unwrap();
}

fn stop(process: &mut ServerProcess) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while process.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `audit verify` with `fixture`'s config: passes, or fails with the tampering exit code naming
/// `node`.
fn assert_verify(fixture: &Fixture, passes: bool, node: &str, what: &str) {
    let out = cli(fixture, &["audit", "verify"]);
    if passes {
        assert!(out.status.success(), "{what}: {}", text(&out));
    } else {
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what} not detected: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("node {node}")),
            "{what}: the error names the node: {}",
            text(&out)
        );
    }
}

/// Keep the untouched log to put back after each tampering.
const SNAPSHOT: &str = "CREATE TABLE audit_saved AS SELECT * FROM audit_log;
     CREATE TABLE heads_saved AS SELECT * FROM audit_heads;";
const RESTORE: &str = "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
     DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM audit_saved;
     DELETE FROM audit_heads; INSERT INTO audit_heads SELECT * FROM heads_saved;
     ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;";

fn tamper(statements: &str) -> String {
    format!(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; {statements};
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;"
    )
}

fn mirror_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("data/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("audit.") && name.ends_with(".jsonl")
        })
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_sees_the_cluster_and_audit_verify_catches_tampering_on_any_node() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    // The CRM refuses every lead: a permanent failure, dead-lettered at the first attempt.
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422))
        .mount(&crm)
        .await;
    // Only node C runs jobs, so whatever B accepts, C dead-letters. Node A serves the console.
    let fixtures = cluster_fixtures(
        &db,
        vec![
            (NODES[0], node_options(&crm.uri(), 0, "", "")),
            (NODES[1], node_options(&crm.uri(), 0, "", "enabled = false")),
            (NODES[2], node_options(&crm.uri(), 1, "", "enabled = false")),
        ],
    );
    let mut processes = Vec::new();
    let mut ports = Vec::new();
    let (process, port, console_port) = start_server_with_console(&fixtures[0]);
    processes.push(process);
    ports.push(port);
    for f in &fixtures[1..] {
        let (process, port) = start_server(f);
        processes.push(process);
        ports.push(port);
    }

    // Each node accepts a delivery; B's is the one to find from A.
    let mut ids = Vec::new();
    for (i, f) in fixtures.iter().enumerate() {
        let answer = post(ports[i], &f.ca.cert_pem(), &call_ended(&format!("mn-{i}"))).await;
        ids.push(answer["delivery_id"].as_str().unwrap().to_owned());
    }
    let taken_by_b = &ids[1];
    let deadline = Instant::now() + Duration::from_secs(30);
    while one_value(&db, "SELECT COUNT(*) FROM jobs WHERE status = 'dead'").await < 3 {
        assert!(Instant::now() < deadline, "node C dead-letters every job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        one_value(
            &db,
            &format!(
                "SELECT COUNT(*) FROM deliveries WHERE id = '{taken_by_b}' AND node_id = 'node-b'"
            )
        )
        .await,
        1,
        "node B accepted it"
    );
    assert_eq!(
        one_value(
            &db,
            &format!(
                "SELECT COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.delivery_id = '{taken_by_b}' AND a.node_id = 'node-c'"
            )
        )
        .await,
        1,
        "node C made the attempt that dead-lettered it"
    );

    // The operator on node A sees both.
    let out = cli(&fixtures[0], &["deliveries", "list", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == taken_by_b.as_str()),
        "node A lists node B's delivery: {listed}"
    );
    let out = cli(&fixtures[0], &["dlq", "list", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let dead: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        dead.as_array()
            .unwrap()
            .iter()
            .any(|d| d["delivery_id"] == taken_by_b.as_str()),
        "node A lists node C's dead letter: {dead}"
    );

    // And through node A's console API, with an operator token made on node A.
    let out = cli(
        &fixtures[0],
        &["tokens", "create", "--name", "ops", "--role", "operator"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let ca = fixtures[0].ca.cert_pem();
    let listed = console_get(console_port, &ca, &token, "/api/deliveries").await;
    assert!(
        listed["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == taken_by_b.as_str()),
        "node A's console lists node B's delivery: {listed}"
    );
    let dead = console_get(console_port, &ca, &token, "/api/dead-letters").await;
    let row = dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["delivery_id"] == taken_by_b.as_str())
        .unwrap_or_else(|| panic!("node A's console lists node C's dead letter: {dead}"))
        .clone();
    let detail = console_get(
        console_port,
        &ca,
        &token,
        &format!("/api/deliveries/{taken_by_b}"),
    )
    .await;
    assert_eq!(detail["jobs"][0]["job_id"], row["job_id"], "{detail}");
    assert_eq!(detail["jobs"][0]["status"], "dead", "{detail}");

    // Stop the nodes: each signs a checkpoint of its chain on the way out.
    for p in &mut processes {
        stop(p);
    }
    for (f, node) in fixtures.iter().zip(NODES) {
        assert!(mirror_lines(f.dir.path()) >= 3, "{node} mirrors its chain");
        assert!(
            f.dir.path().join("data/audit/checkpoints.jsonl").exists(),
            "{node} signs checkpoints"
        );
        let out = cli(f, &["audit", "verify"]);
        let report = text(&out);
        assert!(out.status.success(), "{node}: {report}");
        for n in NODES {
            assert!(report.contains(&format!("node {n}:")), "{report}");
        }
        assert!(report.contains("mirror: OK"), "{report}");
    }

    sql(&db, SNAPSHOT).await;
    for (i, node) in NODES.iter().enumerate() {
        // A modified record: every node's verify finds it (the database chain is shared).
        sql(
            &db,
            &tamper(&format!(
                "UPDATE audit_log SET detail = '{{\"count\":99}}' WHERE node_id = '{node}' AND seq = 2"
            )),
        )
        .await;
        assert_verify(&fixtures[(i + 1) % 3], false, node, "modified record");
        sql(&db, RESTORE).await;

        // A deleted record in the middle of the chain.
        sql(
            &db,
            &tamper(&format!(
                "DELETE FROM audit_log WHERE node_id = '{node}' AND seq = 2"
            )),
        )
        .await;
        assert_verify(&fixtures[(i + 2) % 3], false, node, "deleted record");
        sql(&db, RESTORE).await;

        // The newest records cut off, and the head row rewritten to match: a valid shorter
        // chain, caught by the node's signed checkpoint and mirror.
        sql(
            &db,
            &tamper(&format!(
                "DELETE FROM audit_log WHERE node_id = '{node}'
                   AND seq > (SELECT seq - 2 FROM audit_heads WHERE node_id = '{node}');
                 UPDATE audit_heads h SET seq = l.seq, mac = l.mac, ts = l.ts
                   FROM (SELECT seq, mac, ts FROM audit_log WHERE node_id = '{node}'
                         ORDER BY seq DESC LIMIT 1) l
                   WHERE h.node_id = '{node}'"
            )),
        )
        .await;
        assert_verify(&fixtures[i], false, node, "truncated tail");
        sql(&db, RESTORE).await;
        assert_verify(&fixtures[i], true, node, "restored log");
    }
}
