//! Crash safety: SIGKILL the real binary under concurrent load, several times; every delivery
//! that got a 2xx is present and decryptable afterwards, and none is stored twice.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use wardhook::crypto::{Keyring, MasterKey};
use wardhook::store::admin::{list_deliveries, show_delivery, ListFilter, Requester};
use wardhook::store::{Store, StoreOptions};

use crate::helpers::*;

fn event_body(call: u64) -> String {
    format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"crash-{call}","caller":{{"name":"Load Caller {call}","phone":"+1555{call:07}"}}}}}}"#
    )
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn send(client: &reqwest::Client, port: u16, body: &str) -> Option<serde_json::Value> {
    let res = client
        .post(format!("https://localhost:{port}/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_sigkill_and_are_never_stored_twice() {
    let fixture = write_fixture(&AppOptions {
        extra: "[log]\nformat = \"json\"\nlevel = \"warn,wardhook::cli=info\"\n".into(),
        ..AppOptions::default()
    });
    let ca = fixture.ca.cert_pem();
    // call number -> delivery id, for every 2xx "accepted" answer.
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let mut next_call = 0u64;

    for round in 0..3 {
        let (mut child, port) = start_server(&fixture);
        let http = client(&ca);
        // Retries of deliveries acknowledged before the previous crash must be duplicates
        // carrying the first id.
        let earlier: Vec<(u64, String)> = acked
            .lock()
            .unwrap()
            .iter()
            .take(20)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (call, id) in earlier {
            let answer = send(&http, port, &event_body(call)).await.unwrap();
            assert_eq!(answer["status"], "duplicate", "round {round}, call {call}");
            assert_eq!(answer["delivery_id"], id.as_str());
        }

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..8u64 {
            let http = http.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            let first = next_call + worker * 100_000;
            tasks.push(tokio::spawn(async move {
                let mut call = first;
                let mut sent = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 5_000 {
                    if let Some(answer) = send(&http, port, &event_body(call)).await {
                        assert_eq!(answer["status"], "accepted");
                        let id = answer["delivery_id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().insert(call, id);
                    }
                    call += 1;
                    sent += 1;
                }
            }));
        }
        next_call += 1_000_000;
        let delay = rand::thread_rng().gen_range(300..1200);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too little load to prove anything: {}",
        acked.len()
    );
    let key = MasterKey::load(&fixture.dir.path().join("master.key")).unwrap();
    let store = Store::open(
        &fixture.dir.path().join("data/wardhook.db"),
        Keyring::from_master(&key),
        StoreOptions::default(),
    )
    .unwrap();
    let stored = list_deliveries(
        &store,
        &ListFilter {
            limit: 1_000_000,
            ..ListFilter::default()
        },
    )
    .unwrap();
    let who = Requester::cli_user();
    let mut seen_calls = HashSet::new();
    for row in &stored {
        let event = show_delivery(&store, &row.id, &who).unwrap();
        let call_id = event.call_id.unwrap();
        assert!(seen_calls.insert(call_id.clone()), "{call_id} stored twice");
    }
    let stored_ids: HashSet<&str> = stored.iter().map(|d| d.id.as_str()).collect();
    for (call, id) in &acked {
        assert!(
            stored_ids.contains(id.as_str()),
            "acknowledged call {call} lost"
        );
    }
    eprintln!(
        "{} acknowledged, {} stored, 3 SIGKILLs",
        acked.len(),
        stored.len()
    );
}
