//! What unauthenticated traffic can cost, over real TLS: junk hook paths create no metric
//! series, a flood of forgeries cannot spend the real sender's rate limit, and a flood leaves a
//! handful of counted audit records under the forwarded client's address instead of one
//! fsync'd record per request.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wardhook::admin::Role;

use crate::admin::{admin_url, create_token};
use crate::helpers::*;

/// A source with a rate limit the flood would exhaust many times over.
const LIMITED_SOURCE: &str = r#"
[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:demo.secret"]
rate_limit = { per_second = 2.0, burst = 10 }
"#;

#[tokio::test]
async fn junk_hook_paths_of_any_method_create_no_metric_series() {
    let app = spawn_app().await;
    let client = app.client();
    // A marker unique to this test: the metrics registry is shared by every test in the binary.
    let marker = format!("junk{}", uuid::Uuid::new_v4().simple());
    for i in 0..150 {
        let path = format!("/hooks/{marker}-{i}");
        let method = ["GET", "POST", "PUT", "DELETE", "PATCH"][i % 5];
        let res = client
            .request(method.parse().unwrap(), app.url(&path))
            .body("{}")
            .send()
            .await
            .unwrap();
        let want: &[u16] = if method == "POST" { &[404] } else { &[405] };
        assert!(
            want.contains(&res.status().as_u16()),
            "{method} {path}: {}",
            res.status()
        );
    }
    // A wrong method on the real source keeps its configured name as the label.
    let res = client.get(app.url("/hooks/demo")).send().await.unwrap();
    assert_eq!(res.status(), 405);

    let (token, _) = create_token(&app, "prom-junk", Role::Auditor);
    let res = client
        .get(admin_url(&app, "/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(&marker),
        "a request path became a label:\n{text}"
    );
    assert!(
        text.contains(r#"wardhook_deliveries_total{source="_unknown",outcome="rejected"}"#),
        "{text}"
    );
}

async fn post_forged(client: &reqwest::Client, url: &str, xff: Option<&str>) -> u16 {
    let mut req = client
        .post(url)
        .header("X-NextPhone-Signature", "sha256=00")
        .body(r#"{"event":"call.ended"}"#);
    if let Some(x) = xff {
        req = req.header("X-Forwarded-For", x);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_forged_flood_from_the_senders_own_address_does_not_lock_the_sender_out() {
    let app = spawn_app_with(AppOptions {
        sources: Some(LIMITED_SOURCE.into()),
        ..AppOptions::default()
    })
    .await;
    // The flood comes from loopback, like the real sender: no address tells them apart.
    let flood = {
        let client = app.client();
        let url = app.url("/hooks/demo");
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..200 {
                statuses.push(post_forged(&client, &url, None).await);
            }
            statuses
        })
    };
    let mut real = Vec::new();
    for i in 0..8 {
        let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"flood-real-{i}"}}}}"#);
        let res = app
            .client()
            .post(app.url("/hooks/demo"))
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        real.push(res.status().as_u16());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let forged = flood.await.unwrap();
    assert_eq!(real, vec![200; 8], "real deliveries during the flood");
    // The forger got 401s until its own budget of rejections ran out, then 429s.
    assert!(forged[..20].iter().all(|s| *s == 401), "{forged:?}");
    assert!(forged.contains(&429), "{forged:?}");
    assert!(forged.iter().all(|s| matches!(s, 401 | 429)), "{forged:?}");
}

/// `(remote_addr, reason, count)` of each `delivery_rejected` record.
fn rejection_rows(app: &TestApp) -> Vec<(Option<String>, Option<String>, Option<i64>)> {
    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT remote_addr, json_extract(detail, '$.reason'), json_extract(detail, '$.count')
             FROM audit_log WHERE action = 'delivery_rejected' ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn has_action(app: &TestApp, action: &str) -> bool {
    let conn = rusqlite::Connection::open(app.dir.path().join("data/wardhook.db")).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE action = ?1",
        [action],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

#[tokio::test]
async fn a_forged_flood_leaves_a_few_counted_audit_records_under_the_forwarded_client() {
    let app = spawn_app_with(AppOptions {
        server_extra: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        ..AppOptions::default()
    })
    .await;
    let client = app.client();
    let url = app.url("/hooks/demo");
    for _ in 0..200 {
        let status = post_forged(&client, &url, Some("198.51.100.23")).await;
        assert!(matches!(status, 401 | 429), "{status}");
    }
    // The first rejection is recorded at once…
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rejection_rows(&app).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no rejection record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …and the rest are tallied and written as one record when the server stops.
    app.stop().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !has_action(&app, "server_stopped") {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = rejection_rows(&app);
    assert!(
        rows.len() <= 3,
        "one record per rejection is unbounded: {} records",
        rows.len()
    );
    assert_eq!(
        rows,
        vec![
            (
                Some("198.51.100.23".to_owned()),
                Some("bad_signature".to_owned()),
                None
            ),
            (
                Some("198.51.100.23".to_owned()),
                Some("bad_signature".to_owned()),
                Some(199)
            ),
        ],
        "the first rejection, then the count of the others, under the forwarded client"
    );
    let mirrored: usize = std::fs::read_dir(app.dir.path().join("data/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .matches("delivery_rejected")
                .count()
        })
        .sum();
    assert_eq!(mirrored, 2, "mirror lines of rejections");
    // The chain, aggregates included, still verifies.
    let verify = std::process::Command::new(wardhook_bin())
        .args(["audit", "verify", "--config"])
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
