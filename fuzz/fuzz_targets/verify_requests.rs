//! Whole requests through every preset's verifier: arbitrary values for every header any scheme
//! reads, arbitrary body. A forged request must never verify under a signing preset, and
//! nothing may panic.
#![no_main]

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wardhook::secret::Secret;
use wardhook::verify::{
    Preset, SchemeOptions, SourceVerifier, UnverifiedRequest, Verdict, VerifierSpec,
};

const HEADERS: &[&str] = &[
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-nextphone-signature",
    "x-phoneshield-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "x-twilio-signature",
    "telnyx-signature-ed25519",
    "telnyx-timestamp",
    "x-plivo-signature-v3",
    "x-plivo-signature-v3-nonce",
    "x-retell-signature",
    "x-vapi-secret",
    "x-signature",
    "x-timestamp",
    "x-webhook-signature",
    "x-zm-signature",
    "x-zm-request-timestamp",
    "validation-token",
    "verification-token",
    "x-api-key",
    "x-forwarded-for",
];

fn spec(preset: Preset) -> VerifierSpec {
    let secret = match preset {
        Preset::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        Preset::Telnyx => "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=",
        _ => "fuzz-secret",
    };
    let mut scheme = SchemeOptions::default();
    match preset {
        Preset::Basic => scheme.username = Some("u".into()),
        Preset::Generic => {
            scheme.header = Some("x-signature".into());
            scheme.signed_content = Some("{timestamp}.{body}".into());
            scheme.timestamp_header = Some("x-timestamp".into());
        }
        Preset::Vapi => scheme.mode = Some("hmac".into()),
        _ => {}
    }
    VerifierSpec {
        source: "fuzz".into(),
        preset,
        secrets: vec![Secret::new(secret.as_bytes().to_vec())],
        token: None,
        tolerance: VerifierSpec::DEFAULT_TOLERANCE,
        public_url: url::Url::parse("https://fuzz.example/hooks/fuzz").ok(),
        allow_ips: Vec::new(),
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("cidr")],
        scheme,
    }
}

fuzz_target!(|data: &[u8]| {
    // Layout: one \n-separated value per entry of HEADERS, then the body.
    let mut fields = data.splitn(HEADERS.len() + 1, |b| *b == b'\n');
    let mut headers = HeaderMap::new();
    for name in HEADERS {
        if let Some(v) = fields.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            if !v.is_empty() {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
    let body = fields.next().unwrap_or_default();
    let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    for preset in Preset::ALL {
        let Ok(verifier) = SourceVerifier::new(spec(*preset)) else {
            panic!("fuzz spec for {} is invalid", preset.name());
        };
        let req = UnverifiedRequest {
            method: "POST",
            path_and_query: "/hooks/fuzz?a=1",
            headers: &headers,
            body,
            peer_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        };
        // Token-only presets send the secret itself, so a fuzzer that guesses it has not forged
        // anything; every signing preset must refuse whatever the fuzzer builds.
        let token_only = matches!(
            preset,
            Preset::Basic
                | Preset::Bearer
                | Preset::ApiKey
                | Preset::RingCentral
                | Preset::CallTelemetry
        );
        if let Ok(Verdict::Verified(_)) = verifier.verify(&req, now) {
            assert!(token_only, "forged request verified for preset {}", preset.name());
        }
    }
});
