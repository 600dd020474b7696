//! Scale-out: three `wardhook serve` processes on one PostgreSQL database on loopback, load
//! spread across them, one SIGKILLed mid-load. Senders retry on another node until they get a
//! 2xx, as behind a load balancer. No acknowledged delivery is lost, none is stored or enqueued
//! twice, and every job runs to completion — at least once, always with its idempotency key —
//! including the ones the killed node had claimed (their leases expire and another node takes
//! them over).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::multinode_nodes::*;
use crate::postgres::PgTestDb;

const DELIVERIES: u64 = 240;
const KILL_AFTER: u64 = 80;

/// One node as a sender sees it.
struct Node {
    port: u16,
    http: reqwest::Client,
}

/// Post until some node answers 2xx, starting at `first` and moving on after each failure.
async fn deliver_somewhere(nodes: &[Node], first: usize, body: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = first;
    loop {
        let node = &nodes[i % nodes.len()];
        let sent = node
            .http
            .post(format!("https://localhost:{}/hooks/demo", node.port))
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await;
        if let Ok(res) = sent {
            if res.status().is_success() {
                return res.json().await.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no node accepted a delivery");
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_killed_mid_load_lose_nothing_and_enqueue_nothing_twice() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(20)))
        .mount(&crm)
        .await;
    let opts = node_options(
        &crm.uri(),
        4,
        "handler_timeout_secs = 1\nretry_schedule = [\"0s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        "enabled = false",
    );
    let fixtures = cluster_fixtures(
        &db,
        vec![
            ("node-1", opts.clone()),
            ("node-2", opts.clone()),
            ("node-3", opts),
        ],
    );
    let mut processes = Vec::new();
    let mut nodes = Vec::new();
    for f in &fixtures {
        let (process, port) = start_server(f);
        processes.push(process);
        nodes.push(Node {
            port,
            http: client_trusting(&f.ca.cert_pem()),
        });
    }
    let nodes = Arc::new(nodes);

    // Eight senders, each delivery starting at the next node in turn.
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (nodes, acked, next) = (nodes.clone(), acked.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let call = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if call >= DELIVERIES {
                    return;
                }
                let answer =
                    deliver_somewhere(&nodes, call as usize, &call_ended(&format!("node-{call}")))
                        .await;
                let id = answer["delivery_id"].as_str().unwrap().to_owned();
                acked.lock().unwrap().insert(call, id);
            }
        }));
    }
    while (acked.lock().unwrap().len() as u64) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGKILL node 2 mid-load: in-flight requests fail and are retried on another node, and
    // the jobs it had claimed stay `running` until their leases expire.
    processes[1].kill().unwrap();
    processes[1].wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len() as u64,
        DELIVERIES,
        "every delivery acknowledged"
    );

    // Every acknowledged delivery is stored once, with one job.
    let ids: HashSet<&String> = acked.values().collect();
    assert_eq!(ids.len() as u64, DELIVERIES, "one delivery id per call");
    assert_eq!(
        one_value(&db, "SELECT COUNT(*) FROM deliveries").await,
        DELIVERIES as i64,
        "nothing stored twice"
    );
    // And the ids the senders were given are the stored ones (an answer lost with the killed
    // node was retried elsewhere and answered with the first id).
    let listed: Vec<String> = ids.iter().map(|id| (*id).clone()).collect();
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let stored: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM deliveries WHERE id = ANY($1)",
            &[&listed],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, DELIVERIES as i64, "every acknowledged id is stored");
    assert_eq!(
        one_value(&db, "SELECT COUNT(*) FROM jobs").await,
        DELIVERIES as i64,
        "nothing enqueued twice"
    );

    for node in ["node-1", "node-2", "node-3"] {
        let sql = format!("SELECT COUNT(*) FROM deliveries WHERE node_id = '{node}'");
        assert!(one_value(&db, &sql).await > 0, "load reached {node}");
    }

    // The two live nodes finish every job, the dead node's included (lease 12 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = one_value(&db, "SELECT COUNT(*) FROM jobs WHERE status = 'done'").await;
        if done == DELIVERIES as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {DELIVERIES} jobs done"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let requests = crm.received_requests().await.unwrap();
    let keys: HashSet<String> = requests
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: HashSet<String> = ids.iter().map(|id| format!("{id}:crm")).collect();
    assert_eq!(keys, expected, "each job ran under its own idempotency key");
    assert!(requests.len() as u64 >= DELIVERIES);

    // Each node's audit chain verifies (the killed node's included).
    let out = cli(&fixtures[0], &["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("node node-2"), "{text}");
}
