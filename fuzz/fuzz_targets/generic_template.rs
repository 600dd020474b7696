//! The generic preset's signed-content template: parsing arbitrary text, and verifying arbitrary
//! requests against whatever template parsed. Neither may panic.
#![no_main]

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wardhook::secret::Secret;
use wardhook::verify::{
    parsers, Preset, SchemeOptions, SourceVerifier, UnverifiedRequest, VerifierSpec,
};

fuzz_target!(|data: &[u8]| {
    // Layout: template \0 signature \0 timestamp \0 id \0 body
    let mut fields = data.splitn(5, |b| *b == 0);
    let template = fields.next().unwrap_or_default();
    let Ok(template) = std::str::from_utf8(template) else {
        return;
    };
    let _ = parsers::Template::parse(template);
    let spec = VerifierSpec {
        source: "fuzz".into(),
        preset: Preset::Generic,
        secrets: vec![Secret::new(b"fuzz-secret".to_vec())],
        token: None,
        tolerance: VerifierSpec::DEFAULT_TOLERANCE,
        public_url: url::Url::parse("https://fuzz.example/hooks/fuzz").ok(),
        allow_ips: Vec::new(),
        trusted_proxies: Vec::new(),
        scheme: SchemeOptions {
            header: Some("x-sig".into()),
            prefix: Some("v1=".into()),
            signed_content: Some(template.to_owned()),
            timestamp_header: template.contains("{timestamp}").then(|| "x-ts".into()),
            id_header: template.contains("{id}").then(|| "x-id".into()),
            ..SchemeOptions::default()
        },
    };
    let Ok(verifier) = SourceVerifier::new(spec) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in ["x-sig", "x-ts", "x-id"] {
        if let Some(v) = fields.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let body = fields.next().unwrap_or_default();
    let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let req = UnverifiedRequest {
        method: "POST",
        path_and_query: "/hooks/fuzz?a=1",
        headers: &headers,
        body,
        peer_ip: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let _ = verifier.verify(&req, now);
});
