//! Reload without downtime: new sources, secrets and certificates take effect; a bad config is
//! refused and the old one keeps serving; no request is lost while it happens.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const SECOND_SOURCE: &str = r#"
[[sources]]
name = "demo2"
preset = "nextphone"
secrets = ["file:demo.secret"]
"#;

async fn post(client: &reqwest::Client, port: u16, source: &str, body: &str) -> u16 {
    client
        .post(format!("https://localhost:{port}/hooks/{source}"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn body(n: usize) -> String {
    format!(r#"{{"event":"call.ended","data":{{"call_id":"reload-{n}"}}}}"#)
}

#[tokio::test]
async fn reload_adds_a_source_and_a_bad_config_is_refused_while_the_old_one_serves() {
    let app = spawn_app().await;
    let client = app.client();
    assert_eq!(post(&client, app.port, "demo2", &body(1)).await, 404);

    let original = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{original}{SECOND_SOURCE}")).unwrap();
    let report = app.reloader.reload(&app.config_path).unwrap();
    assert_eq!(report.sources, 2);
    assert!(report.certificate_reloaded);
    assert_eq!(post(&client, app.port, "demo2", &body(2)).await, 200);

    std::fs::write(
        &app.config_path,
        format!("{original}{SECOND_SOURCE}\n[[routes]]\nsource = \"ghost\"\nhandlers = [\"x\"]\n"),
    )
    .unwrap();
    let err = app.reloader.reload(&app.config_path).unwrap_err();
    assert!(err.to_string().contains("routes[0].source"), "{err}");
    assert_eq!(post(&client, app.port, "demo", &body(3)).await, 200);
    assert_eq!(post(&client, app.port, "demo2", &body(4)).await, 200);
}

#[tokio::test]
async fn reload_with_a_different_master_key_is_refused() {
    let app = spawn_app().await;
    let key = app.dir.path().join("master.key");
    std::fs::remove_file(&key).unwrap();
    wardhook::crypto::MasterKey::generate_file(&key).unwrap();
    let err = app.reloader.reload(&app.config_path).unwrap_err();
    assert!(
        matches!(err, wardhook::app::ReloadError::MasterKeyChanged),
        "{err}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_after_reload() {
    let app = spawn_app().await;
    let renewed = app
        .ca
        .issue_server(&["localhost", "127.0.0.1"], 90)
        .unwrap();
    std::fs::write(app.dir.path().join("server.crt"), &renewed.cert_pem).unwrap();
    std::fs::write(app.dir.path().join("server.key"), &renewed.key_pem).unwrap();
    let old_conn = {
        let config = client_tls_config(
            &app.ca_pem,
            &[&rustls::version::TLS13],
            &[b"http/1.1"],
            None,
        );
        tls_connect(app.port, config).await.unwrap()
    };
    app.reloader.reload(&app.config_path).unwrap();

    let config = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut tls = tls_connect(app.port, config).await.unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let expected = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap()
    };
    assert_eq!(presented, expected);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The connection made before the reload is still usable.
    let mut old_conn = old_conn;
    old_conn
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_load_loses_no_request() {
    let fixture = write_fixture(&AppOptions {
        extra: "[log]\nformat = \"json\"\nlevel = \"warn,wardhook::cli=info\"\n".into(),
        ..AppOptions::default()
    });
    let (mut child, port) = start_server(&fixture);
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(fixture.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (client, stop, sent, failed) =
            (client.clone(), stop.clone(), sent.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = worker * 1_000_000;
            while !stop.load(Ordering::Relaxed) && n % 1_000_000 < 3_000 {
                let status = post(&client, port, "demo", &body(n)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    let original = std::fs::read_to_string(&fixture.config_path).unwrap();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&fixture.config_path, format!("{original}{SECOND_SOURCE}")).unwrap();
    assert!(hup().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&client, port, "demo2", &body(9_000_001)).await, 200);

    std::fs::write(&fixture.config_path, "this is [not toml").unwrap();
    assert!(hup().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&client, port, "demo2", &body(9_000_002)).await, 200);

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 20, "too little load: {sent}");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {sent} requests");
}

#[tokio::test]
async fn the_admin_listener_gets_the_renewed_certificate_and_its_own_client_ca() {
    let app = spawn_app_with(AppOptions {
        admin: "client_ca = \"ca.crt\"".into(),
        ..AppOptions::default()
    })
    .await;
    let admin_port = app.admin_port;
    let request = b"GET /api/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Operators must present a certificate from the admin CA…
    let anonymous = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut response = String::new();
    if let Ok(mut tls) = tls_connect(admin_port, anonymous).await {
        let _ = tls.write_all(request).await;
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut tls, &mut response).await;
    }
    assert!(
        !response.contains("200 OK"),
        "admin served without a client cert"
    );
    // …while senders, with no client_ca of their own, still connect without one.
    assert_eq!(
        app.client()
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let renewed = app
        .ca
        .issue_server(&["localhost", "127.0.0.1"], 90)
        .unwrap();
    std::fs::write(app.dir.path().join("server.crt"), &renewed.cert_pem).unwrap();
    std::fs::write(app.dir.path().join("server.key"), &renewed.key_pem).unwrap();
    app.reloader.reload(&app.config_path).unwrap();
    let operator = app.ca.issue_client("operator-1").unwrap();
    let config = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        Some((&operator.cert_pem, &operator.key_pem)),
    );
    let mut tls = tls_connect(admin_port, config).await.unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    use rustls::pki_types::pem::PemObject;
    let expected =
        rustls::pki_types::CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        presented, expected,
        "the admin listener must present the renewed certificate"
    );
    tls.write_all(request).await.unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tls, &mut response)
        .await
        .ok();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{}",
        &response[..response.len().min(200)]
    );
}

#[tokio::test]
async fn the_console_shows_the_reloaded_sources() {
    let app = spawn_app().await;
    let created = std::process::Command::new(wardhook_bin())
        .args([
            "tokens",
            "create",
            "--name",
            "reload-check",
            "--role",
            "admin",
            "--config",
        ])
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let sources = || async {
        let v: serde_json::Value = app
            .client()
            .get(format!("https://localhost:{}/api/config", app.admin_port))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(sources().await, ["demo"]);
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{original}{SECOND_SOURCE}")).unwrap();
    app.reloader.reload(&app.config_path).unwrap();
    assert_eq!(sources().await, ["demo", "demo2"]);
}
