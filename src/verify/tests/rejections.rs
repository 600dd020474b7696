//! Forged, missing, malformed, stale and wrong-key requests, table-driven, one message per case.

use super::roundtrip::{preset_spec, URL};
use super::*;

const NOW: i64 = 1_795_000_000;

/// Sign as the preset's sender, with the test Ed25519 key where the preset needs one.
fn signed(s: &VerifierSpec, body: &[u8]) -> Vec<(String, String)> {
    let key = crate::verify::sign::parse_signing_key(super::roundtrip::SEED).expect("seed");
    crate::verify::sign::sign_request_full(s, body, at(NOW), URL, Some(&key))
        .expect("sign")
        .headers
}

/// Replace (or with `None`, remove) one header of a signed set.
fn edit(hs: &[(String, String)], name: &str, value: Option<&str>) -> HeaderMap {
    let mut out: Vec<(String, String)> = hs
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect();
    if let Some(v) = value {
        out.push((name.to_owned(), v.to_owned()));
    }
    owned_headers(&out)
}

struct Case {
    what: &'static str,
    preset: Preset,
    header: &'static str,
    value: Option<&'static str>,
    expect: Rejection,
}

#[test]
fn forged_missing_and_malformed_headers_are_rejected_with_a_typed_reason() {
    use Rejection::*;
    let cases = [
        Case {
            what: "nextphone signature missing",
            preset: Preset::NextPhone,
            header: "x-nextphone-signature",
            value: None,
            expect: MissingHeader("x-nextphone-signature"),
        },
        Case {
            what: "nextphone prefix missing",
            preset: Preset::NextPhone,
            header: "x-nextphone-signature",
            value: Some("5690cdbce629dad1e0b3de2651287e2afb790d3881d8a9b04a1a4fdcc1f67e07"),
            expect: MalformedHeader("x-nextphone-signature"),
        },
        Case {
            what: "nextphone empty signature",
            preset: Preset::NextPhone,
            header: "x-nextphone-signature",
            value: Some("sha256="),
            expect: MalformedHeader("x-nextphone-signature"),
        },
        Case {
            what: "nextphone non-hex",
            preset: Preset::NextPhone,
            header: "x-nextphone-signature",
            value: Some("sha256=zz"),
            expect: MalformedHeader("x-nextphone-signature"),
        },
        Case {
            what: "nextphone forged (right length)",
            preset: Preset::NextPhone,
            header: "x-nextphone-signature",
            value: Some("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
            expect: BadSignature,
        },
        Case {
            what: "nextphone truncated signature",
            preset: Preset::NextPhone,
            header: "x-nextphone-signature",
            value: Some("sha256=5690cdbce629dad1"),
            expect: BadSignature,
        },
        Case {
            what: "phoneshield odd-length hex (timingSafeEqual would throw)",
            preset: Preset::PhoneShield,
            header: "x-phoneshield-signature",
            value: Some("abc"),
            expect: MalformedHeader("x-phoneshield-signature"),
        },
        Case {
            what: "standard webhooks empty v1 signature",
            preset: Preset::StandardWebhooks,
            header: "webhook-signature",
            value: Some("v1,"),
            expect: MalformedHeader("webhook-signature"),
        },
        Case {
            what: "standard webhooks unknown version only",
            preset: Preset::StandardWebhooks,
            header: "webhook-signature",
            value: Some("v9,AAAA"),
            expect: MalformedHeader("webhook-signature"),
        },
        Case {
            what: "standard webhooks timestamp not a number",
            preset: Preset::StandardWebhooks,
            header: "webhook-timestamp",
            value: Some("yesterday"),
            expect: MalformedHeader("webhook-timestamp"),
        },
        Case {
            what: "standard webhooks negative timestamp",
            preset: Preset::StandardWebhooks,
            header: "webhook-timestamp",
            value: Some("-5"),
            expect: MalformedHeader("webhook-timestamp"),
        },
        Case {
            what: "standard webhooks huge timestamp",
            preset: Preset::StandardWebhooks,
            header: "webhook-timestamp",
            value: Some("99999999999999999999999"),
            expect: MalformedHeader("webhook-timestamp"),
        },
        Case {
            what: "standard webhooks id with a dot",
            preset: Preset::StandardWebhooks,
            header: "webhook-id",
            value: Some("msg.1"),
            expect: MalformedHeader("webhook-id"),
        },
        Case {
            what: "stripe header without t",
            preset: Preset::Stripe,
            header: "stripe-signature",
            value: Some("v1=00"),
            expect: MalformedHeader("stripe-signature"),
        },
        Case {
            what: "stripe header garbage",
            preset: Preset::Stripe,
            header: "stripe-signature",
            value: Some(",,,=,"),
            expect: MalformedHeader("stripe-signature"),
        },
        Case {
            what: "slack signature missing",
            preset: Preset::Slack,
            header: "x-slack-signature",
            value: None,
            expect: MissingHeader("x-slack-signature"),
        },
        Case {
            what: "slack timestamp missing",
            preset: Preset::Slack,
            header: "x-slack-request-timestamp",
            value: None,
            expect: MissingHeader("x-slack-request-timestamp"),
        },
        Case {
            what: "retell missing d",
            preset: Preset::Retell,
            header: "x-retell-signature",
            value: Some("v=1795000000000"),
            expect: MalformedHeader("x-retell-signature"),
        },
        Case {
            what: "twilio not base64",
            preset: Preset::Twilio,
            header: "x-twilio-signature",
            value: Some("***"),
            expect: MalformedHeader("x-twilio-signature"),
        },
        Case {
            what: "telnyx short signature",
            preset: Preset::Telnyx,
            header: "telnyx-signature-ed25519",
            value: Some("AAAA"),
            expect: MalformedHeader("telnyx-signature-ed25519"),
        },
        Case {
            what: "plivo nonce missing",
            preset: Preset::Plivo,
            header: "x-plivo-signature-v3-nonce",
            value: None,
            expect: MissingHeader("x-plivo-signature-v3-nonce"),
        },
        Case {
            what: "vonage not a JWT",
            preset: Preset::Vonage,
            header: "authorization",
            value: Some("Bearer not-a-jwt"),
            expect: MalformedHeader("authorization"),
        },
        Case {
            what: "vonage basic instead of bearer",
            preset: Preset::Vonage,
            header: "authorization",
            value: Some("Basic Zm9vOmJhcg=="),
            expect: MalformedHeader("authorization"),
        },
        Case {
            what: "zoom without v0=",
            preset: Preset::Zoom,
            header: "x-zm-signature",
            value: Some("087b"),
            expect: MalformedHeader("x-zm-signature"),
        },
        Case {
            what: "bearer wrong token",
            preset: Preset::Bearer,
            header: "authorization",
            value: Some("Bearer nope"),
            expect: UnknownKey,
        },
        Case {
            what: "bearer empty token",
            preset: Preset::Bearer,
            header: "authorization",
            value: Some("Bearer "),
            expect: MalformedHeader("authorization"),
        },
        Case {
            what: "basic wrong password",
            preset: Preset::Basic,
            header: "authorization",
            value: Some("Basic c2VuZGVyOm5vcGU="),
            expect: UnknownKey,
        },
        Case {
            what: "basic not base64",
            preset: Preset::Basic,
            header: "authorization",
            value: Some("Basic %%%"),
            expect: MalformedHeader("authorization"),
        },
        Case {
            what: "api key wrong",
            preset: Preset::ApiKey,
            header: "x-api-key",
            value: Some("nope"),
            expect: UnknownKey,
        },
        Case {
            what: "generic id header with separator",
            preset: Preset::Generic,
            header: "x-id",
            value: Some("a:b"),
            expect: MalformedHeader("configured id header"),
        },
        Case {
            what: "generic signature missing",
            preset: Preset::Generic,
            header: "x-sig",
            value: None,
            expect: MissingHeader("configured signature header"),
        },
    ];
    for c in cases {
        let s = preset_spec(c.preset);
        let body = sample_body(c.preset);
        let hs = signed(&s, &body);
        let map = edit(&hs, c.header, c.value);
        let r = check(&s, &map, &body, "/hooks/src?x=1", at(NOW));
        assert_eq!(r.err(), Some(c.expect), "{}", c.what);
    }
}

#[test]
fn wrong_key_tampered_body_and_stale_requests_are_rejected_for_every_preset() {
    for preset in Preset::ALL {
        let s = preset_spec(*preset);
        let body = sample_body(*preset);
        let hs = signed(&s, &body);
        let map = owned_headers(&hs);
        let name = preset.name();

        // Wrong key: the same request checked by a source configured with another secret.
        let mut other = s.clone();
        other.secrets = match *preset {
            Preset::StandardWebhooks => vec![secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
            Preset::Telnyx => vec![secret("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")],
            _ => vec![secret("some-other-secret")],
        };
        assert!(
            check(&other, &map, &body, "/hooks/src?x=1", at(NOW)).is_err(),
            "{name}: wrong key accepted"
        );

        // Tampered body: only schemes that sign the body must notice.
        let token_only = matches!(
            preset,
            Preset::RingCentral
                | Preset::CallTelemetry
                | Preset::Basic
                | Preset::Bearer
                | Preset::ApiKey
        );
        let vapi_token = *preset == Preset::Vapi && s.scheme.mode.as_deref() != Some("hmac");
        let signs_body = !(token_only || vapi_token);
        let mut tampered = body.clone();
        tampered.push(b' ');
        let r = check(&s, &map, &tampered, "/hooks/src?x=1", at(NOW));
        assert_eq!(r.is_err(), signs_body, "{name}: tampered body result {r:?}");

        // Stale: ten minutes later. Only schemes that sign a timestamp can tell.
        let timed = matches!(
            preset,
            Preset::StandardWebhooks
                | Preset::Stripe
                | Preset::Slack
                | Preset::Telnyx
                | Preset::Retell
                | Preset::Vonage
                | Preset::Zoom
                | Preset::Generic
                | Preset::Vapi
        );
        let r = check(&s, &map, &body, "/hooks/src?x=1", at(NOW + 600));
        if timed {
            assert_eq!(r.err(), Some(Rejection::StaleTimestamp), "{name}: stale");
            let r = check(&s, &map, &body, "/hooks/src?x=1", at(NOW - 600));
            assert_eq!(r.err(), Some(Rejection::FutureTimestamp), "{name}: future");
        } else {
            assert!(
                r.is_ok(),
                "{name}: no timestamp is signed, so age cannot matter"
            );
        }

        // Nothing at all.
        assert!(
            check(&s, &HeaderMap::new(), &body, "/hooks/src?x=1", at(NOW)).is_err(),
            "{name}: no headers"
        );
    }
}

#[test]
fn every_rejection_is_401_except_ip_denied() {
    assert_eq!(Rejection::BadSignature.status(), 401);
    assert_eq!(Rejection::MalformedBody.status(), 401);
    assert_eq!(Rejection::IpDenied.status(), 403);
}

#[test]
fn non_ascii_header_bytes_are_malformed_not_a_panic() {
    let s = preset_spec(Preset::NextPhone);
    let mut map = HeaderMap::new();
    map.insert(
        HeaderName::from_static("x-nextphone-signature"),
        HeaderValue::from_bytes(b"sha256=\xff\xfe").expect("obs-text is a valid header value"),
    );
    assert_eq!(
        check(&s, &map, b"{}", "/", at(NOW)).err(),
        Some(Rejection::MalformedHeader("x-nextphone-signature"))
    );
}
