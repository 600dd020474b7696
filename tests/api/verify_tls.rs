//! Every preset over real TLS: what its sender signs is accepted; forged, unsigned and stale
//! deliveries are refused with nothing more than 401; rotation, IP allowlists and trusted
//! proxies behave as documented.
#![allow(clippy::unwrap_used)]

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;
use wardhook::config::Config;
use wardhook::verify::sign::{parse_signing_key, sign_request_full};
use wardhook::verify::{sample_body, Preset};

use crate::helpers::*;

const SEED: &str = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
const PUBLIC_B64: &str = "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
const PUBLIC_HOST: &str = "https://hooks.clinic.example";

/// A `[[sources]]` table for `preset`, named after it, as a clinic would configure it.
fn source_toml(preset: Preset) -> String {
    let name = preset.name();
    let mut extra = String::new();
    let secret = match preset {
        Preset::StandardWebhooks => "whsec.secret",
        Preset::Telnyx => "telnyx.pub",
        _ => "plain.secret",
    };
    match preset {
        Preset::Twilio | Preset::Plivo => {
            extra = format!("public_url = \"{PUBLIC_HOST}/hooks/{name}\"\n");
        }
        Preset::Basic => extra = "scheme = { username = \"sender\" }\n".into(),
        Preset::Vapi => extra = "scheme = { mode = \"hmac\" }\n".into(),
        Preset::Generic => {
            extra = format!(
                "public_url = \"{PUBLIC_HOST}/hooks/{name}\"\nscheme = {{ header = \"X-Sig\", prefix = \"sha512=\", algorithm = \"sha512\", encoding = \"base64\", signed_content = \"{{id}}:{{timestamp}}:{{method}}:{{url}}:{{body}}\", timestamp_header = \"X-Ts\", id_header = \"X-Id\" }}\n"
            );
        }
        _ => {}
    }
    format!(
        "[[sources]]\nname = \"{name}\"\npreset = \"{name}\"\nsecrets = [\"file:{secret}\"]\n{extra}\n"
    )
}

struct PresetApp {
    app: TestApp,
    config: Config,
}

/// Sign `body` for `preset` at `when`; returns (path and query to post to, headers).
fn signed(
    pa: &PresetApp,
    preset: Preset,
    body: &[u8],
    when: chrono::DateTime<Utc>,
) -> (String, Vec<(String, String)>) {
    let spec = &pa.config.source(preset.name()).unwrap().spec;
    let public = format!("{PUBLIC_HOST}/hooks/{}", preset.name());
    let key = parse_signing_key(SEED).unwrap();
    let req = sign_request_full(spec, body, when, &public, Some(&key)).unwrap();
    let pq = req.url.strip_prefix(PUBLIC_HOST).unwrap().to_owned();
    (pq, req.headers)
}

async fn post(app: &TestApp, pq: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let mut req = app
        .client()
        .post(format!("https://localhost:{}{pq}", app.port))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_is_accepted_when_signed_and_refused_when_forged_missing_or_stale() {
    let pa = with_secret_files().await;
    let now = Utc::now();
    for preset in Preset::ALL {
        let name = preset.name();
        let body = sample_body(*preset);
        let (pq, headers) = signed(&pa, *preset, &body, now);

        let (status, answer) = post(&pa.app, &pq, &headers, &body).await;
        assert_eq!(status, 200, "{name}: signed sample refused: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        assert!(
            v["status"] == "accepted" || v.get("plainToken").is_some() || v.is_null(),
            "{name}: {answer}"
        );

        // Forged: one byte of the body changed after signing (presets that sign the body;
        // token-only schemes authenticate the sender, not the bytes).
        let token_only = matches!(
            preset,
            Preset::RingCentral
                | Preset::Bearer
                | Preset::Basic
                | Preset::ApiKey
                | Preset::CallTelemetry
        );
        if !token_only {
            let mut forged = body.clone();
            let last = forged.len() - 2;
            forged[last] ^= 0x01;
            let (status, answer) = post(&pa.app, &pq, &headers, &forged).await;
            assert_eq!(status, 401, "{name}: forged body got {answer}");
            assert!(
                answer == r#"{"error":"unauthorized"}"#,
                "{name}: refusal says more than unauthorized: {answer}"
            );
        }
        // Forged: every authentication header value altered in its last character.
        let tampered: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("content-type") {
                    return (k.clone(), v.clone());
                }
                let mut t = v.clone();
                let c = t.pop().unwrap_or('x');
                t.push(if c == 'A' { 'B' } else { 'A' });
                (k.clone(), t)
            })
            .collect();
        let (status, _) = post(&pa.app, &pq, &tampered, &body).await;
        assert_eq!(status, 401, "{name}: tampered headers accepted");

        // Missing: no authentication headers at all.
        let bare: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .cloned()
            .collect();
        let (status, _) = post(&pa.app, &pq, &bare, &body).await;
        assert_eq!(status, 401, "{name}: unsigned delivery accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_that_sign_a_timestamp_refuse_stale_deliveries() {
    let pa = with_secret_files().await;
    let stale = Utc::now() - ChronoDuration::seconds(301 + 5);
    for preset in [
        Preset::StandardWebhooks,
        Preset::Stripe,
        Preset::Slack,
        Preset::Telnyx,
        Preset::Retell,
        Preset::Zoom,
        Preset::Generic,
        Preset::Vapi,
    ] {
        let body = sample_body(preset);
        let (pq, headers) = signed(&pa, preset, &body, stale);
        let (status, answer) = post(&pa.app, &pq, &headers, &body).await;
        assert_eq!(
            status,
            401,
            "{}: stale delivery got {answer}",
            preset.name()
        );
    }
}

async fn with_secret_files() -> PresetApp {
    // The fixture writes `demo.secret`; the preset sources need their own files, which must
    // exist before the config is checked, so write them into a fixture first. The tests here
    // send dozens of refused requests from one address, so its refusal budget is raised.
    let fixture = write_fixture(&AppOptions {
        server_extra: "rejected_rate_limit = { per_second = 100.0, burst = 1000 }".into(),
        ..AppOptions::default()
    });
    let d = fixture.dir.path();
    std::fs::write(d.join("plain.secret"), "s3cr3t-for-tests").unwrap();
    std::fs::write(
        d.join("whsec.secret"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    std::fs::write(d.join("telnyx.pub"), PUBLIC_B64).unwrap();
    let sources: String = Preset::ALL.iter().map(|p| source_toml(*p)).collect();
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let demo_at = text.find("[[sources]]").unwrap();
    std::fs::write(
        &fixture.config_path,
        format!("{}{sources}", &text[..demo_at]),
    )
    .unwrap();
    let app = spawn_from_fixture(fixture).await;
    let config = Config::load_with_base(&app.config_path, app.dir.path()).unwrap();
    PresetApp { app, config }
}

#[tokio::test]
async fn rotation_accepts_the_old_and_the_new_secret() {
    let fixture = write_fixture(&AppOptions {
        sources: Some(
            "[[sources]]\nname = \"demo\"\npreset = \"nextphone\"\nsecrets = [\"file:new.secret\", \"file:demo.secret\"]\n"
                .into(),
        ),
        ..AppOptions::default()
    });
    std::fs::write(fixture.dir.path().join("new.secret"), "the-new-secret").unwrap();
    let app = spawn_from_fixture(fixture).await;
    for (i, secret) in ["the-new-secret", DEMO_SECRET].into_iter().enumerate() {
        let body = format!(r#"{{"event":"call.ended","data":{{"call_id":"rot-{i}"}}}}"#);
        let headers = vec![(
            "X-NextPhone-Signature".to_owned(),
            nextphone_signature(secret, body.as_bytes()),
        )];
        let (status, answer) = post(&app, "/hooks/demo", &headers, body.as_bytes()).await;
        assert_eq!(status, 200, "secret {i}: {answer}");
    }
    let body = br#"{"event":"call.ended","data":{"call_id":"rot-x"}}"#;
    let headers = vec![(
        "X-NextPhone-Signature".to_owned(),
        nextphone_signature("a-retired-secret", body),
    )];
    assert_eq!(post(&app, "/hooks/demo", &headers, body).await.0, 401);
}

#[tokio::test]
async fn ip_allowlist_and_trusted_proxies() {
    let allow_only = |extra_server: &str| {
        AppOptions {
        server_extra: extra_server.to_owned(),
        sources: Some(
            "[[sources]]\nname = \"demo\"\npreset = \"nextphone\"\nsecrets = [\"file:demo.secret\"]\nallow_ips = [\"203.0.113.9/32\", \"2001:db8::/32\"]\n"
                .into(),
        ),
        ..AppOptions::default()
    }
    };
    let body = br#"{"event":"call.ended","data":{"call_id":"ip-1"}}"#;
    let sig = nextphone_signature(DEMO_SECRET, body);
    let with_xff = |xff: &str| {
        vec![
            ("X-NextPhone-Signature".to_owned(), sig.clone()),
            ("X-Forwarded-For".to_owned(), xff.to_owned()),
        ]
    };

    // No trusted proxy: the loopback peer is the client, and X-Forwarded-For is ignored.
    let app = spawn_app_with(allow_only("")).await;
    let (status, answer) = post(&app, "/hooks/demo", &with_xff("203.0.113.9"), body).await;
    assert_eq!((status, answer.as_str()), (403, r#"{"error":"forbidden"}"#));

    // Loopback is a trusted proxy: the forwarded client decides.
    let app = spawn_app_with(allow_only("trusted_proxies = [\"127.0.0.1/32\"]")).await;
    assert_eq!(
        post(&app, "/hooks/demo", &with_xff("203.0.113.9"), body)
            .await
            .0,
        200
    );
    assert_eq!(
        post(&app, "/hooks/demo", &with_xff("198.51.100.1"), body)
            .await
            .0,
        403
    );
    assert_eq!(
        post(&app, "/hooks/demo", &with_xff("2001:db8::7"), body)
            .await
            .0,
        200
    );
    // A spoofed left-most entry does not help: the right-most untrusted address counts.
    assert_eq!(
        post(
            &app,
            "/hooks/demo",
            &with_xff("203.0.113.9, 198.51.100.1"),
            body
        )
        .await
        .0,
        403
    );
}
