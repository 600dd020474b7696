//! `wardhook sign` and `wardhook send-test` against a running server.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use crate::helpers::*;

async fn app_on_fixed_port() -> TestApp {
    let fixture = write_fixture(&AppOptions::default());
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let port = free_port();
    std::fs::write(
        &fixture.config_path,
        // The first `127.0.0.1:0` is `[server] listen`; the admin listener keeps port 0.
        text.replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1),
    )
    .unwrap();
    spawn_from_fixture(fixture).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_posts_a_signed_sample_that_is_accepted_then_duplicate() {
    let app = app_on_fixed_port().await;
    let run = || {
        Command::new(wardhook_bin())
            .args([
                "send-test",
                "--source",
                "demo",
                "--ca",
                "ca.crt",
                "--config",
            ])
            .arg(&app.config_path)
            .current_dir(app.dir.path())
            .output()
            .unwrap()
    };
    let first = run();
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        out.contains("-> 200") && out.contains("\"accepted\""),
        "{out}"
    );
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("\"duplicate\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_prints_headers_that_the_server_accepts() {
    let app = app_on_fixed_port().await;
    let body = r#"{"event":"call.ended","data":{"call_id":"signed-by-cli"}}"#;
    let mut child = Command::new(wardhook_bin())
        .args(["sign", "--source", "demo", "--config"])
        .arg(&app.config_path)
        .current_dir(app.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut req = app.client().post(app.url("/hooks/demo")).body(body);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (k, v) = line.split_once(": ").unwrap();
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200, "{text}");
}
