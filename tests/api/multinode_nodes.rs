//! What the multi-node tests share: a cluster of real `wardhook serve` processes on one
//! PostgreSQL database (one shared master key, one config each), the CRM's route, a sender's
//! client, and SQL and CLI probes.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use crate::helpers::*;
use crate::postgres::PgTestDb;

/// A `call.ended` from the `demo` source for call `call`.
pub fn call_ended(call: &str) -> String {
    format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"{call}","caller":{{"name":"Cluster Caller","phone":"+15550104"}}}}}}"#
    )
}

/// A node's options: JSON logs (the test reads the ports from them), `workers` dispatch
/// workers with `dispatch_extra` settings, the `demo` source routed to an http handler `crm` at
/// `crm_uri`, and `admin` keys for the console.
pub fn node_options(
    crm_uri: &str,
    workers: usize,
    dispatch_extra: &str,
    admin: &str,
) -> AppOptions {
    AppOptions {
        admin: admin.to_owned(),
        extra: format!(
            r#"
[log]
format = "json"
level = "warn,wardhook::cli=info,wardhook::app=info"

[dispatch]
workers = {workers}
{dispatch_extra}

[[handlers]]
name = "crm"
kind = "http"
phi = "full"
baa = true
url = "{crm_uri}/api/leads"

[[routes]]
source = "demo"
events = ["call.ended"]
handlers = ["crm"]
"#
        ),
        ..AppOptions::default()
    }
}

/// One fixture per `(node id, options)`, all sharing the first node's master key.
pub fn cluster_fixtures(db: &PgTestDb, nodes: Vec<(&str, AppOptions)>) -> Vec<Fixture> {
    let mut fixtures: Vec<Fixture> = Vec::new();
    let mut key = None;
    for (node, opts) in nodes {
        let f = db.fixture(node, opts, key.as_deref());
        if key.is_none() {
            key = Some(std::fs::read(f.dir.path().join("master.key")).unwrap());
        }
        fixtures.push(f);
    }
    fixtures
}

/// A client that trusts the node's test CA.
pub fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The one number `query` returns, read straight from the cluster's database.
pub async fn one_value(db: &PgTestDb, query: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query_one(query, &[]).await.unwrap().get(0)
}

/// Run `wardhook <args> --config <the fixture's>` in the fixture's folder.
pub fn cli(fixture: &Fixture, args: &[&str]) -> Output {
    std::process::Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap()
}

/// A command's stdout and stderr, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
