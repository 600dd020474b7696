//! Every preset: sign its sample body as its sender would, then verify it.

use super::*;
use crate::verify::sign::{parse_signing_key, sign_request, sign_request_full};
use crate::verify::OAuthClient;

pub(crate) const SEED: &str = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
pub(crate) const PUBLIC_B64: &str = "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
pub(crate) const URL: &str = "https://clinic.example.org/hooks/src?x=1";

/// A valid spec for every preset, as a clinic might configure it.
pub(crate) fn preset_spec(preset: Preset) -> VerifierSpec {
    let mut s = spec(preset, &["s3cr3t-for-tests"]);
    match preset {
        Preset::StandardWebhooks => {
            s.secrets = vec![secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")];
        }
        Preset::Telnyx => s.secrets = vec![secret(PUBLIC_B64)],
        Preset::Twilio | Preset::Plivo => {
            s.public_url =
                Some(url::Url::parse("https://clinic.example.org/hooks/src").expect("url"));
        }
        Preset::Basic => s.scheme.username = Some("sender".into()),
        Preset::Generic => {
            s.scheme.header = Some("X-Sig".into());
            s.scheme.prefix = Some("sha512=".into());
            s.scheme.algorithm = Some("sha512".into());
            s.scheme.encoding = Some("base64".into());
            s.scheme.signed_content = Some("{id}:{timestamp}:{method}:{url}:{body}".into());
            s.scheme.timestamp_header = Some("X-Ts".into());
            s.scheme.id_header = Some("X-Id".into());
            s.public_url =
                Some(url::Url::parse("https://clinic.example.org/hooks/src").expect("url"));
        }
        Preset::Vapi => s.scheme.mode = Some("hmac".into()),
        _ => {}
    }
    s
}

fn round_trip(s: &VerifierSpec, now: DateTime<Utc>) -> VerifiedDelivery {
    let body = sample_body(s.preset);
    let key = parse_signing_key(SEED).expect("seed");
    let signed = sign_request_full(s, &body, now, URL, Some(&key)).expect("sign");
    let pq = signed
        .url
        .strip_prefix("https://clinic.example.org")
        .expect("same host")
        .to_owned();
    verified(check(s, &owned_headers(&signed.headers), &body, &pq, now))
}

#[test]
fn every_preset_accepts_what_its_sender_signs() {
    let now = at(1_795_000_000);
    for preset in Preset::ALL {
        let s = preset_spec(*preset);
        let d = round_trip(&s, now);
        assert_eq!(d.preset(), *preset);
        assert_eq!(
            d.body(),
            sample_body(*preset).as_slice(),
            "{}",
            preset.name()
        );
    }
}

#[test]
fn every_preset_name_parses_back() {
    assert_eq!(Preset::NAMES.len(), Preset::ALL.len());
    for p in Preset::ALL {
        assert_eq!(Preset::parse(p.name()), Some(*p));
    }
    assert_eq!(Preset::parse("nope"), None);
}

#[test]
fn sample_bodies_are_fake_and_json_where_the_sender_sends_json() {
    for p in Preset::ALL {
        let body = sample_body(*p);
        let text = std::str::from_utf8(&body).expect("utf8");
        if !matches!(p, Preset::Twilio | Preset::Plivo) {
            serde_json::from_slice::<serde_json::Value>(&body)
                .unwrap_or_else(|e| panic!("{} sample is not JSON: {e}", p.name()));
        }
        for digits in text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|d| d.len() == 11 && d.starts_with('1'))
        {
            assert!(
                digits.starts_with("1555555"),
                "{}: phone {digits} is not a 555-01xx number",
                p.name()
            );
        }
    }
}

#[test]
fn standard_webhooks_and_telnyx_sign_with_an_ed25519_key() {
    let mut s = spec(
        Preset::StandardWebhooks,
        &["whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g="],
    );
    let now = at(1_795_000_000);
    assert_eq!(
        sign_request(&s, b"{}", now, URL).err(),
        Some(SignError::NeedsSigningKey("standard-webhooks"))
    );
    let d = round_trip(&s, now);
    assert!(d
        .sender_delivery_id()
        .is_some_and(|id| id.starts_with("msg_")));
    // A key that belongs to no configured public key is refused up front.
    s.secrets = vec![secret("whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")];
    let key = parse_signing_key(SEED).expect("seed");
    assert_eq!(
        sign_request_full(&s, b"{}", now, URL, Some(&key)).err(),
        Some(SignError::KeyMismatch)
    );
}

#[test]
fn vapi_modes_and_calltelemetry_modes_round_trip() {
    let now = at(1_795_000_000);
    for mode in ["secret", "bearer", "hmac"] {
        let mut s = spec(Preset::Vapi, &["vapi-secret"]);
        s.scheme.mode = Some(mode.into());
        round_trip(&s, now);
    }
    let mut s = spec(Preset::Vapi, &["dmFwaS1zZWNyZXQ="]);
    s.scheme.mode = Some("hmac".into());
    s.scheme.secret_is_base64 = Some(true);
    s.scheme.include_timestamp = Some(false);
    s.scheme.algorithm = Some("sha1".into());
    s.scheme.prefix = Some("sha1=".into());
    round_trip(&s, now);
    for mode in ["bearer", "basic"] {
        let mut s = spec(Preset::CallTelemetry, &["ct-secret"]);
        s.scheme.mode = Some(mode.into());
        if mode == "basic" {
            s.scheme.username = Some("ct".into());
        }
        round_trip(&s, now);
    }
    let mut s = spec(Preset::CallTelemetry, &[]);
    s.scheme.mode = Some("oauth2".into());
    s.scheme.oauth_clients = vec![OAuthClient {
        client_id: "ct".into(),
        client_secret_sha256: crate::verify::oauth::hash_client_secret(b"x"),
    }];
    assert_eq!(
        sign_request(&s, b"{}", now, URL).err(),
        Some(SignError::NeedsOAuthToken)
    );
}

#[test]
fn twilio_json_body_signing_adds_body_sha256_to_the_url() {
    let s = preset_spec(Preset::Twilio);
    let body = br#"{"CallSid": "CA00000000000000000000000000000001"}"#;
    let signed = sign_request_full(&s, body, at(0), URL, None).expect("sign");
    assert!(signed.url.contains("bodySHA256="), "{}", signed.url);
    let pq = signed
        .url
        .strip_prefix("https://clinic.example.org")
        .expect("host");
    verified(check(&s, &owned_headers(&signed.headers), body, pq, at(0)));
}

#[test]
fn pretty_printed_json_signed_as_sent_is_accepted_and_reserialized_is_not() {
    let pretty = b"{\n  \"event\": \"call.ended\",\n  \"data\": {\n    \"call_id\": \"call_abc123\"\n  }\n}\n";
    for preset in [
        Preset::NextPhone,
        Preset::StandardWebhooks,
        Preset::Stripe,
        Preset::Retell,
    ] {
        let s = preset_spec(preset);
        let now = at(1_795_000_000);
        let hs = sign_request(&s, pretty, now, URL).expect("sign");
        verified(check(&s, &owned_headers(&hs), pretty, "/hooks/src", now));
        let compact =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(pretty).expect("json"))
                .expect("json");
        assert!(
            check(&s, &owned_headers(&hs), &compact, "/hooks/src", now).is_err(),
            "{}: re-serialized body must not verify",
            preset.name()
        );
    }
}

#[test]
fn rotation_accepts_either_secret_and_records_which() {
    let now = at(1_795_000_000);
    for preset in [
        Preset::NextPhone,
        Preset::Stripe,
        Preset::StandardWebhooks,
        Preset::Slack,
        Preset::Twilio,
    ] {
        let old = preset_spec(preset);
        let mut new = old.clone();
        new.secrets = match preset {
            Preset::StandardWebhooks => vec![secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
            _ => vec![secret("the-new-secret")],
        };
        let mut both = new.clone();
        both.secrets.extend(old.secrets.clone());
        let body = sample_body(preset);
        for (signer, expected_index) in [(&new, 0), (&old, 1)] {
            let hs = sign_request(signer, &body, now, URL).expect("sign");
            let d = verified(check(
                &both,
                &owned_headers(&hs),
                &body,
                "/hooks/src?x=1",
                now,
            ));
            assert_eq!(d.key_index(), expected_index, "{}", preset.name());
        }
    }
}

#[test]
fn ringcentral_validation_token_is_echoed_and_verification_token_checked() {
    let mut s = spec(Preset::RingCentral, &["rc-verification-token"]);
    s.token = None;
    let hello = headers(&[("validation-token", "abc-123")]);
    match check(&s, &hello, b"", "/", at(0)) {
        Ok(Verdict::Challenge(c)) => {
            assert_eq!(
                c.headers,
                vec![("Validation-Token".to_owned(), "abc-123".to_owned())]
            );
        }
        other => panic!("expected challenge, got {other:?}"),
    }
    let body = sample_body(Preset::RingCentral);
    for name in ["verification-token", "validation-token"] {
        let ok = headers(&[(name, "rc-verification-token")]);
        verified(check(&s, &ok, &body, "/", at(0)));
        let bad = headers(&[(name, "rc-other")]);
        assert_eq!(
            check(&s, &bad, &body, "/", at(0)).err(),
            Some(Rejection::UnknownKey)
        );
    }
}

/// What `wardhook sign` prints, pinned byte for byte for every preset whose output is
/// deterministic (no random message id, nonce or JWT id): header names exactly as senders spell
/// them, values, order, and the URL. Recorded before the schemes moved behind the `Scheme`
/// trait, so a refactor that changes a single byte fails here.
#[test]
fn signed_headers_are_pinned_byte_for_byte_for_deterministic_presets() {
    type Pinned = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );
    const PINNED: &[Pinned] = &[
        ("nextphone", "https://clinic.example.org/hooks/src?x=1", &[("x-nextphone-signature", "sha256=55c623f3a4bf02a2f137fa64947b5c26be251d9a3d64c25355a23c74c7095a03")]),
        ("phoneshield", "https://clinic.example.org/hooks/src?x=1", &[("x-phoneshield-signature", "55c623f3a4bf02a2f137fa64947b5c26be251d9a3d64c25355a23c74c7095a03")]),
        ("github", "https://clinic.example.org/hooks/src?x=1", &[("x-hub-signature-256", "sha256=55c623f3a4bf02a2f137fa64947b5c26be251d9a3d64c25355a23c74c7095a03")]),
        ("stripe", "https://clinic.example.org/hooks/src?x=1", &[("Stripe-Signature", "t=1795000000,v1=0b2856cb60e69ff268cda5771385b631f2efa0b38225ec9698f39080ca00450d")]),
        ("slack", "https://clinic.example.org/hooks/src?x=1", &[("X-Slack-Request-Timestamp", "1795000000"), ("X-Slack-Signature", "v0=2d612dfce72d43a86796f466b796942eaed898a8c5054c3baac51793e4cf4b61")]),
        ("shopify", "https://clinic.example.org/hooks/src?x=1", &[("x-shopify-hmac-sha256", "VcYj86S/AqLxN/pklHtcJr4lHZo9ZMJTVaI8dMcJWgM=")]),
        ("twilio", "https://clinic.example.org/hooks/src?x=1&bodySHA256=015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862", &[("X-Twilio-Signature", "QlUAKugg2e3GYX1H18O3KYX+Yr4=")]),
        ("telnyx", "https://clinic.example.org/hooks/src?x=1", &[("telnyx-timestamp", "1795000000"), ("telnyx-signature-ed25519", "vTHQSMFxVvEGn9FWctn1U0F2+nP2kciA1mlveMBe8bDbVOFBxmDQpmLeoR1sXu4W8w16Pq59HQ1KRtBatl11CQ==")]),
        ("retell", "https://clinic.example.org/hooks/src?x=1", &[("x-retell-signature", "v=1795000000000,d=a2678a17c63fef26ffed51051eeff886cc76f0c10ed5374c53b6281d6b4de349")]),
        ("vapi", "https://clinic.example.org/hooks/src?x=1", &[("x-signature", "0b2856cb60e69ff268cda5771385b631f2efa0b38225ec9698f39080ca00450d"), ("x-timestamp", "1795000000")]),
        ("bland", "https://clinic.example.org/hooks/src?x=1", &[("x-webhook-signature", "55c623f3a4bf02a2f137fa64947b5c26be251d9a3d64c25355a23c74c7095a03")]),
        ("zoom", "https://clinic.example.org/hooks/src?x=1", &[("x-zm-request-timestamp", "1795000000"), ("x-zm-signature", "v0=2d612dfce72d43a86796f466b796942eaed898a8c5054c3baac51793e4cf4b61")]),
        ("ringcentral", "https://clinic.example.org/hooks/src?x=1", &[("Verification-Token", "s3cr3t-for-tests")]),
        ("calltelemetry", "https://clinic.example.org/hooks/src?x=1", &[("authorization", "Bearer s3cr3t-for-tests")]),
        ("basic", "https://clinic.example.org/hooks/src?x=1", &[("Authorization", "Basic c2VuZGVyOnMzY3IzdC1mb3ItdGVzdHM=")]),
        ("bearer", "https://clinic.example.org/hooks/src?x=1", &[("authorization", "Bearer s3cr3t-for-tests")]),
        ("api-key", "https://clinic.example.org/hooks/src?x=1", &[("x-api-key", "s3cr3t-for-tests")]),
    ];
    let key = parse_signing_key(SEED).expect("seed");
    for (name, url, expected) in PINNED {
        let preset = Preset::parse(name).expect("preset");
        let s = preset_spec(preset);
        let signed = sign_request_full(&s, br#"{"a":1}"#, at(1_795_000_000), URL, Some(&key))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.push(("Content-Type".to_owned(), "application/json".to_owned()));
        assert_eq!(signed.url, *url, "{name}");
        assert_eq!(signed.headers, want, "{name}");
    }
}
