//! The console's audit export streams: an export of more records than one page goes out as a
//! chunked body (no `Content-Length`, so it was never built whole), every record once, and on
//! PostgreSQL every line names the node whose chain holds the record — on both backends.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use serde_json::Value;
use wardhook::admin::Role;

use crate::admin::{admin_url, app_with_a_dead_letter, audit_rows, create_token, Db};
use crate::on_both_backends;

/// More than the console's export page (256 records).
const REFUSALS: usize = 300;

async fn a_large_audit_export_streams_every_record_once_with_its_node_on(db: Db) {
    let Some((app, _crm, id)) = app_with_a_dead_letter(db).await else {
        return;
    };
    let (auditor, _) = create_token(&app, "aud", Role::Auditor);
    // Each refused replay is one `access_denied` record.
    let client = app.client();
    for _ in 0..REFUSALS {
        let res = client
            .post(admin_url(&app, &format!("/api/deliveries/{id}/replay")))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }

    let res = client
        .get(admin_url(&app, "/api/audit/export"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("content-length").is_none(),
        "streamed, not built whole: {:?}",
        res.headers()
    );
    let jsonl = res.text().await.unwrap();
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > REFUSALS, "{} lines", lines.len());
    let keys: HashSet<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["node"].as_str().unwrap_or("").to_owned(),
                l["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), lines.len(), "every record once");
    for l in &lines {
        match db {
            Db::Postgres => assert_eq!(l["node"], "node-a", "{l}"),
            Db::Sqlite => assert!(l.get("node").is_none(), "{l}"),
        }
    }
    let exported = audit_rows(&app, "audit_exported").await;
    assert_eq!(exported.len(), 1);
    assert!(
        exported[0]
            .2
            .contains(&format!("\"count\":{}", lines.len())),
        "the record names how many went out: {:?}",
        exported[0]
    );

    // CSV: the same columns as a single chain's, plus the node last on PostgreSQL.
    let csv = client
        .get(admin_url(&app, "/api/audit/export?format=csv"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut rows = csv.lines();
    let header = rows.next().unwrap();
    assert!(header.starts_with("seq,ts,"), "{header}");
    let rows: Vec<&str> = rows.collect();
    assert!(rows.len() > lines.len(), "{} rows", rows.len());
    match db {
        Db::Postgres => {
            assert!(header.ends_with(",mac,node"), "{header}");
            assert!(rows.iter().all(|r| r.ends_with(",node-a")));
        }
        Db::Sqlite => assert!(header.ends_with(",mac"), "{header}"),
    }
}

on_both_backends! {
    a_large_audit_export_streams_every_record_once_with_its_node_on => a_large_audit_export_streams_every_record_once_with_its_node, a_large_audit_export_streams_every_record_once_with_its_node_on_postgres;
}
