//! Plaintext only on loopback, and a configured client CA never dropped, for both listeners:
//! `check-config` (the real binary) refuses such configs with their key path, the listeners
//! refuse them again before binding, the admin listener with a client CA refuses a TLS client
//! without a certificate, and a reload that changes the admin listener says it needs a restart.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wardhook::app::Application;
use wardhook::config::Config;

use crate::helpers::*;

/// The fixture's `[admin]` address line (the `[server]` one reads the same).
const ADMIN_LISTEN: &str = "[admin]\nlisten = \"127.0.0.1:0\"";

/// A plain-HTTP fixture whose config text went through `edit`.
fn plain_fixture(edit: impl Fn(String) -> String) -> Fixture {
    let fixture = write_fixture(&AppOptions {
        plain_http: true,
        ..AppOptions::default()
    });
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    assert!(
        text.contains(ADMIN_LISTEN),
        "fixture lacks {ADMIN_LISTEN:?}"
    );
    std::fs::write(&fixture.config_path, edit(text)).unwrap();
    fixture
}

/// `wardhook check-config` on the fixture: (exit success, stdout).
fn check_config(fixture: &Fixture) -> (bool, String) {
    let out = Command::new(wardhook_bin())
        .args(["check-config", "--config"])
        .arg(&fixture.config_path)
        .current_dir(fixture.dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn admin_listen(addr: &'static str) -> impl Fn(String) -> String {
    move |t: String| t.replacen(ADMIN_LISTEN, &format!("[admin]\nlisten = \"{addr}\""), 1)
}

#[test]
fn check_config_refuses_a_plain_http_admin_listener_off_loopback_with_its_key_path() {
    let cases = [
        ("0.0.0.0:9443", "every IPv4 interface"),
        ("[::]:9443", "every IPv6 interface"),
        ("192.0.2.10:9443", "a LAN address"),
        ("[2001:db8::1]:9443", "an IPv6 address"),
        ("[::ffff:127.0.0.1]:9443", "an IPv4-mapped address"),
    ];
    for (addr, what) in cases {
        let (ok, stdout) = check_config(&plain_fixture(admin_listen(addr)));
        assert!(!ok, "{what} ({addr}) accepted: {stdout}");
        assert!(
            stdout.contains("admin.listen: plain HTTP is only allowed on a loopback address"),
            "{what} ({addr}): {stdout}"
        );
    }
    // A host name is no address at all (this was refused before as well).
    let (ok, stdout) = check_config(&plain_fixture(admin_listen("example.org:9443")));
    assert!(!ok, "a host name accepted: {stdout}");
    assert!(stdout.contains("admin.listen:"), "{stdout}");
}

#[test]
fn check_config_accepts_a_plain_http_admin_listener_on_loopback() {
    for addr in ["127.0.0.1:9443", "[::1]:9443"] {
        let (ok, stdout) = check_config(&plain_fixture(admin_listen(addr)));
        assert!(ok, "{addr} refused: {stdout}");
    }
    // A disabled console listens nowhere, so its address does not matter.
    let (ok, stdout) = check_config(&plain_fixture(|t| {
        admin_listen("0.0.0.0:9443")(t).replacen("[admin]\n", "[admin]\nenabled = false\n", 1)
    }));
    assert!(ok, "{stdout}");
}

#[test]
fn check_config_refuses_plain_http_on_the_senders_listener_off_loopback() {
    let (ok, stdout) = check_config(&plain_fixture(|t| {
        t.replacen("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8443\"", 1)
    }));
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("server.plain_http: plain HTTP is only allowed on a loopback address"),
        "{stdout}"
    );
}

#[test]
fn check_config_refuses_an_admin_client_ca_it_cannot_honour() {
    // Plain HTTP cannot ask for client certificates: refused, not silently dropped.
    let (ok, stdout) = check_config(&plain_fixture(|t| {
        t.replacen(
            ADMIN_LISTEN,
            &format!("{ADMIN_LISTEN}\nclient_ca = \"ca.crt\""),
            1,
        )
    }));
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("admin.client_ca: client certificates need TLS"),
        "{stdout}"
    );

    // With TLS, a CA file that holds no certificate is reported before the server starts.
    let fixture = write_fixture(&AppOptions {
        admin: "client_ca = \"not-a-ca.pem\"".into(),
        ..AppOptions::default()
    });
    std::fs::write(fixture.dir.path().join("not-a-ca.pem"), "no PEM here\n").unwrap();
    let (ok, stdout) = check_config(&fixture);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("admin.client_ca: cannot load client CA bundle"),
        "{stdout}"
    );

    // A real CA with TLS is fine.
    let fixture = write_fixture(&AppOptions {
        admin: "client_ca = \"ca.crt\"".into(),
        ..AppOptions::default()
    });
    let (ok, stdout) = check_config(&fixture);
    assert!(ok, "{stdout}");
}

/// A valid plain-HTTP config, loaded, for tests that then change what validation would refuse.
fn loaded_plain_config() -> (Fixture, Config) {
    let fixture = plain_fixture(|t| t);
    let config = Config::load_with_base(&fixture.config_path, fixture.dir.path()).unwrap();
    (fixture, config)
}

#[tokio::test]
async fn the_listeners_refuse_plaintext_off_loopback_and_a_dropped_client_ca_before_binding() {
    let (fixture, mut config) = loaded_plain_config();
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    let err = Application::build_with_base(config, fixture.dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.listen: refusing to serve plain HTTP on 0.0.0.0:0"),
        "{err}"
    );

    let (fixture, mut config) = loaded_plain_config();
    config.admin_listen = "0.0.0.0:0".parse().unwrap();
    let err = Application::build_with_base(config, fixture.dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.listen: refusing to serve the admin console as plain HTTP"),
        "{err}"
    );

    let (fixture, mut config) = loaded_plain_config();
    config.admin.client_ca = Some(fixture.dir.path().join("ca.crt"));
    let err = Application::build_with_base(config, fixture.dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.client_ca: client certificates need TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn the_admin_listener_with_a_client_ca_refuses_a_tls_client_without_a_certificate() {
    let app = spawn_app_with(AppOptions {
        admin: "client_ca = \"ca.crt\"".into(),
        ..AppOptions::default()
    })
    .await;
    let request = b"GET /api/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let anonymous = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut response = String::new();
    if let Ok(mut tls) = tls_connect(app.admin_port, anonymous).await {
        // TLS 1.3 reports the missing certificate after the client's handshake completes.
        let _ = tls.write_all(request).await;
        let _ = tls.read_to_string(&mut response).await;
    }
    assert!(
        !response.contains("HTTP/1.1"),
        "the admin listener answered a client without a certificate: {response}"
    );

    let operator = app.ca.issue_client("operator-1").unwrap();
    let with_cert = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        Some((&operator.cert_pem, &operator.key_pem)),
    );
    let mut tls = tls_connect(app.admin_port, with_cert).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_reload_that_changes_settings_fixed_at_start_says_they_need_a_restart() {
    let app = spawn_app().await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    assert!(text.contains("[storage]\n"), "{text}");
    std::fs::write(
        &app.config_path,
        text.replacen("[storage]\n", "[storage]\nphone_country = \"44\"\n", 1)
            .replacen("wardhook.db", "elsewhere.db", 1)
            .replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"", 1)
            .replacen(
                "workers = 2\n",
                "workers = 2\nrejected_rate_limit = { per_second = 2.0, burst = 5 }\n",
                1,
            )
            .replacen(
                ADMIN_LISTEN,
                "[admin]\nlisten = \"127.0.0.1:1\"\nclient_ca = \"ca.crt\"\n\
             idle_timeout = \"5m\"\nsession_lifetime = \"1h\"",
                1,
            ),
    )
    .unwrap();
    let report = app.reloader.reload(&app.config_path).unwrap();
    for key in [
        "admin.client_ca",
        "admin.listen",
        "admin.idle_timeout",
        "admin.session_lifetime",
        "storage.phone_country",
        "storage.path",
        "server.listen",
        "server.rejected_rate_limit",
    ] {
        assert!(
            report.needs_restart.contains(&key),
            "{key} not reported: {:?}",
            report.needs_restart
        );
    }
}
