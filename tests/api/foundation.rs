//! The listener: TLS policy, ALPN, limits, routes, mTLS, graceful shutdown.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A hand-built TLS ClientHello, so we can offer what no modern client library will (TLS 1.1,
/// CBC-only suite lists) and see the server refuse it.
fn client_hello(version: [u8; 2], suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(version);
    body.extend([0x42u8; 32]);
    body.push(0);
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]);
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // groups
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // point formats
    ext.extend([
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]); // sigalgs
    ext.extend([0xff, 0x01, 0x00, 0x01, 0x00]); // renegotiation_info
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// The first TLS record type the server answers with (0x16 handshake, 0x15 alert), or None
/// when it just closes.
async fn first_record_type(port: u16, hello: &[u8]) -> Option<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut first)).await {
        Ok(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

const GCM_SUITES: [u16; 2] = [0xc02b, 0xc02f];
const CBC_SUITES: [u16; 4] = [0xc009, 0xc013, 0x002f, 0x0035];

#[tokio::test]
async fn a_well_formed_tls12_gcm_hello_gets_a_server_hello() {
    // Control for the refusal tests below: the hand-built hello is valid.
    let app = spawn_app().await;
    let answer = first_record_type(app.port, &client_hello([3, 3], &GCM_SUITES)).await;
    assert_eq!(answer, Some(0x16), "expected a ServerHello record");
}

#[tokio::test]
async fn tls11_clients_are_refused() {
    let app = spawn_app().await;
    let mut suites = GCM_SUITES.to_vec();
    suites.extend(CBC_SUITES);
    let answer = first_record_type(app.port, &client_hello([3, 2], &suites)).await;
    assert_ne!(
        answer,
        Some(0x16),
        "a TLS 1.1 hello must not get a ServerHello"
    );
}

#[tokio::test]
async fn cbc_only_clients_are_refused() {
    let app = spawn_app().await;
    let answer = first_record_type(app.port, &client_hello([3, 3], &CBC_SUITES)).await;
    assert_ne!(
        answer,
        Some(0x16),
        "a CBC-only hello must not get a ServerHello"
    );
}

#[tokio::test]
async fn tls12_and_tls13_handshakes_succeed() {
    let app = spawn_app().await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_tls_config(&app.ca_pem, &[version], &[b"http/1.1"], None);
        let mut tls = tls_connect(app.port, config).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tls.read_to_string(&mut response).await.ok();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{expected:?}: {response}"
        );
    }
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn() {
    let app = spawn_app().await;
    let config = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"h2", b"http/1.1"],
        None,
    );
    let tls = tls_connect(app.port, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let res = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn health_readiness_unknown_source_and_wrong_method() {
    let app = spawn_app().await;
    let client = app.client();
    let cases = [
        ("GET", "/healthz", 200, "liveness"),
        ("GET", "/readyz", 200, "readiness with writable storage"),
        ("POST", "/hooks/nosuchsource", 404, "unknown source"),
        ("GET", "/hooks/demo", 405, "wrong method on a hook"),
        ("GET", "/nothing-here", 404, "unknown path"),
        ("POST", "/hooks/demo", 401, "unsigned delivery"),
    ];
    for (method, path, status, what) in cases {
        let res = client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{what}");
    }
}

#[tokio::test]
async fn rejections_say_nothing_beyond_unauthorized() {
    let app = spawn_app().await;
    let res = app
        .client()
        .post(app.url("/hooks/demo"))
        .header("X-NextPhone-Signature", "sha256=00")
        .body(r#"{"event":"call.ended","data":{"caller":{"name":"Canary Person"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.text().await.unwrap(), r#"{"error":"unauthorized"}"#);
}

async fn read_response_head(tls: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn declared_oversized_body_gets_413_before_the_upload_finishes() {
    let app = spawn_app().await;
    let config = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut tls = tls_connect(app.port, config).await.unwrap();
    let head = format!(
        "POST /hooks/demo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // Only 64 KiB of the declared 2 MiB is ever sent: the answer cannot depend on the rest.
    tls.write_all(&vec![b' '; 64 * 1024]).await.unwrap();
    let response = read_response_head(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

#[tokio::test]
async fn chunked_body_is_cut_off_as_it_crosses_the_cap() {
    let app = spawn_app().await;
    let config = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut tls = tls_connect(app.port, config).await.unwrap();
    tls.write_all(
        b"POST /hooks/demo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    // 18 chunks = 1.125 MiB, just over the 1 MiB cap; the final 0-chunk is never sent.
    for _ in 0..18 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if tls.write_all(&frame).await.is_err() {
            break;
        }
    }
    let response = read_response_head(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

#[tokio::test]
async fn a_body_under_the_cap_is_read_whole() {
    let app = spawn_app_with(AppOptions {
        server_extra: "max_body_bytes = 2048".into(),
        ..AppOptions::default()
    })
    .await;
    let client = app.client();
    let small = client
        .post(app.url("/hooks/demo"))
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(
        small.status(),
        401,
        "at the cap: read, then refused as unsigned"
    );
    let big = client
        .post(app.url("/hooks/demo"))
        .body(vec![b'a'; 2049])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413, "one byte over the cap");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(AppOptions {
        sources: Some(
            r#"
[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:demo.secret"]
rate_limit = { per_second = 0.2, burst = 2 }
"#
            .into(),
        ),
        ..AppOptions::default()
    })
    .await;
    let client = app.client();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"rl-{i}"}}}}"#);
        let res = client
            .post(app.url("/hooks/demo"))
            .header(
                "X-NextPhone-Signature",
                nextphone_signature(DEMO_SECRET, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        statuses.push((
            res.status().as_u16(),
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ));
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    assert_eq!(statuses[2], (429, Some("5".to_owned())));
    // Unsigned requests do not spend the source's budget: they are refused as unauthorized.
    let res = client.post(app.url("/hooks/demo")).send().await.unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn mtls_listener_refuses_a_client_without_a_certificate() {
    let app = spawn_app_with(AppOptions {
        mtls: true,
        ..AppOptions::default()
    })
    .await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    let anonymous = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut response = String::new();
    if let Ok(mut tls) = tls_connect(app.port, anonymous).await {
        // TLS 1.3 reports the missing certificate after the client's handshake completes.
        let _ = tls.write_all(request).await;
        let _ = tls.read_to_string(&mut response).await;
    }
    assert!(
        !response.contains("200"),
        "served without a client cert: {response}"
    );

    let client_cert = app.ca.issue_client("sender-a").unwrap();
    let authenticated = client_tls_config(
        &app.ca_pem,
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        Some((&client_cert.cert_pem, &client_cert.key_pem)),
    );
    let mut tls = tls_connect(app.port, authenticated).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn plain_http_on_loopback_serves_without_tls() {
    let app = spawn_app_with(AppOptions {
        plain_http: true,
        ..AppOptions::default()
    })
    .await;
    let res = reqwest::get(format!("http://127.0.0.1:{}/healthz", app.port))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_then_exits_cleanly() {
    let fixture = write_fixture(&AppOptions {
        extra: "[log]\nformat = \"json\"\n".into(),
        ..AppOptions::default()
    });
    let (mut child, port) = start_server(&fixture);

    let body = br#"{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"c-drain"}}"#;
    let signature = nextphone_signature(DEMO_SECRET, body);
    let config = client_tls_config(
        &fixture.ca.cert_pem(),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
        None,
    );
    let mut tls = tls_connect(port, config).await.unwrap();
    let head = format!(
        "POST /hooks/demo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-NextPhone-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..10]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "new connections must be refused once shutdown starts"
    );

    tls.write_all(&body[10..]).await.unwrap();
    let response = read_response_head(&mut tls).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the in-flight request must be answered: {response:?}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
}
