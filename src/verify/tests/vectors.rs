//! Known-answer tests: every published vector of the reference (§1.2–1.4) and the derived ones
//! (§1.6), each checked through the real verifier.

use super::*;
use crate::verify::sign::parse_signing_key;
use ed25519_dalek::Signer;

const SW_GO_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_GO_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_GO_TS: i64 = 1614265330;
const SW_GO_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SEED: &str = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
const SW_PUBLIC: &str = "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
const SW_V1A: &str =
    "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==";

fn sw_headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", &ts.to_string()),
        ("webhook-signature", sig),
    ])
}

#[test]
fn standard_webhooks_go_v1_vector_verifies() {
    let s = spec(Preset::StandardWebhooks, &[SW_GO_SECRET]);
    let map = sw_headers(
        SW_GO_ID,
        SW_GO_TS,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    let d = verified(check(&s, &map, SW_GO_BODY, "/hooks/src", at(SW_GO_TS)));
    assert_eq!(d.sender_delivery_id(), Some(SW_GO_ID));
    assert_eq!(d.signed_at(), Some(at(SW_GO_TS)));
    assert_eq!(d.key_index(), 0);
    // The three signed headers, plus the method and path kept for `deliveries reverify`.
    assert_eq!(d.signature_headers().len(), 5);
    assert!(d
        .signature_headers()
        .iter()
        .any(|(k, v)| k == crate::verify::REVERIFY_PATH && v == "/hooks/src"));
}

#[test]
fn standard_webhooks_rust_v1_vector_verifies() {
    let s = spec(
        Preset::StandardWebhooks,
        &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
    );
    let map = sw_headers(
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    );
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    verified(check(&s, &map, body, "/", at(1649367553)));
}

#[test]
fn standard_webhooks_v1a_ed25519_vector_verifies_and_signing_reproduces_it() {
    let s = spec(Preset::StandardWebhooks, &[SW_PUBLIC]);
    let map = sw_headers(SW_GO_ID, SW_GO_TS, SW_V1A);
    verified(check(&s, &map, SW_GO_BODY, "/", at(SW_GO_TS)));

    let key = parse_signing_key(SW_SEED).expect("seed");
    let content =
        crate::verify::standard_webhooks::signed_content(SW_GO_ID, "1614265330", SW_GO_BODY);
    let sig = crate::verify::util::b64(&key.sign(&content).to_bytes());
    assert_eq!(format!("v1a,{sig}"), SW_V1A);
}

#[test]
fn standard_webhooks_header_with_both_versions_verifies_against_either_key_type() {
    let both = format!("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= {SW_V1A}");
    for secrets in [[SW_GO_SECRET], [SW_PUBLIC]] {
        let s = spec(Preset::StandardWebhooks, &secrets);
        verified(check(
            &s,
            &sw_headers(SW_GO_ID, SW_GO_TS, &both),
            SW_GO_BODY,
            "/",
            at(SW_GO_TS),
        ));
    }
}

#[test]
fn standard_webhooks_published_negative_vectors_are_rejected() {
    let s = spec(Preset::StandardWebhooks, &[SW_GO_SECRET]);
    let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let bad = sw_headers(
        SW_GO_ID,
        SW_GO_TS,
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
    );
    assert_eq!(
        check(&s, &bad, SW_GO_BODY, "/", at(SW_GO_TS)).err(),
        Some(Rejection::BadSignature)
    );
    let map = sw_headers(SW_GO_ID, SW_GO_TS, good);
    assert_eq!(
        check(&s, &map, SW_GO_BODY, "/", at(SW_GO_TS + 301)).err(),
        Some(Rejection::StaleTimestamp),
        "5 min + 1 s old"
    );
    assert_eq!(
        check(&s, &map, SW_GO_BODY, "/", at(SW_GO_TS - 301)).err(),
        Some(Rejection::FutureTimestamp),
        "5 min + 1 s ahead"
    );
    verified(check(&s, &map, SW_GO_BODY, "/", at(SW_GO_TS + 300)));
    verified(check(&s, &map, SW_GO_BODY, "/", at(SW_GO_TS - 300)));
}

#[test]
fn standard_webhooks_under_svix_header_names_verifies() {
    let s = spec(Preset::StandardWebhooks, &[SW_GO_SECRET]);
    let map = headers(&[
        ("svix-id", SW_GO_ID),
        ("svix-timestamp", "1614265330"),
        (
            "svix-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]);
    let d = verified(check(&s, &map, SW_GO_BODY, "/", at(SW_GO_TS)));
    assert_eq!(d.signature_headers()[0].0, "svix-id");
}

#[test]
fn github_published_vector_verifies() {
    let s = spec(Preset::GitHub, &["It's a Secret to Everybody"]);
    let map = headers(&[(
        "x-hub-signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )]);
    verified(check(&s, &map, b"Hello, World!", "/", at(0)));
}

const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

#[test]
fn slack_published_vector_verifies() {
    let s = spec(Preset::Slack, &["8f742231b10e8888abcd99yyyzzz85a5"]);
    let map = headers(&[
        ("x-slack-request-timestamp", "1531420618"),
        (
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ]);
    let d = verified(check(&s, &map, SLACK_BODY.as_bytes(), "/", at(1531420618)));
    assert_eq!(d.signed_at(), Some(at(1531420618)));
}

const TWILIO_FORM: &[u8] =
    b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";

fn twilio_spec(public: &str) -> VerifierSpec {
    let mut s = spec(Preset::Twilio, &["12345"]);
    s.public_url = Some(url::Url::parse(public).expect("url"));
    s
}

#[test]
fn twilio_published_form_vectors_verify_with_and_without_port() {
    let cases = [
        (
            "https://mycompany.com/myapp.php",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "plain https",
        ),
        (
            "https://mycompany.com/myapp.php",
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
            "signed with :443, configured without",
        ),
        (
            "https://mycompany.com:443/myapp.php",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "configured with :443, signed without",
        ),
        (
            "http://mycompany.com/myapp.php",
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            "http signed with :80",
        ),
        (
            "http://mycompany.com:1234/myapp.php",
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            "http with :1234",
        ),
    ];
    for (public, sig, what) in cases {
        let s = twilio_spec(public);
        let map = headers(&[("x-twilio-signature", sig)]);
        let r = check(&s, &map, TWILIO_FORM, "/hooks/twilio?foo=1&bar=2", at(0));
        assert!(matches!(r, Ok(Verdict::Verified(_))), "{what}: {r:?}");
    }
}

#[test]
fn twilio_port_variants_can_be_switched_off() {
    let mut s = twilio_spec("https://mycompany.com/myapp.php");
    s.scheme.url_port_variants = Some(false);
    let map = headers(&[("x-twilio-signature", "kvajT1Ptam85bY51eRf/AJRuM3w=")]);
    assert_eq!(
        check(&s, &map, TWILIO_FORM, "/hooks/twilio?foo=1&bar=2", at(0)).err(),
        Some(Rejection::BadSignature)
    );
}

#[test]
fn twilio_published_json_vector_verifies_and_body_hash_is_enforced() {
    let s = twilio_spec("https://mycompany.com/myapp.php");
    let body = br#"{"property": "value", "boolean": true}"#;
    let pq = "/hooks/twilio?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let map = headers(&[("x-twilio-signature", "a9nBmqA0ju/hNViExpshrM61xv4=")]);
    verified(check(&s, &map, body, pq, at(0)));
    let tampered = br#"{"property": "value", "boolean": false}"#;
    assert_eq!(
        check(&s, &map, tampered, pq, at(0)).err(),
        Some(Rejection::MalformedBody)
    );
}

#[test]
fn stripe_derived_vector_verifies() {
    let s = spec(Preset::Stripe, &["whsec_test_secret"]);
    let map = headers(&[(
        "stripe-signature",
        "t=1700000000,v1=134db1947d85f218e81824bc6e9ea81ff0249b28c0380ef73b8a050b20cd4bb1",
    )]);
    verified(check(&s, &map, BODY55, "/", at(1700000000)));
    // Several v1 entries and a v0 entry: any v1 may match, v0 is ignored.
    let map = headers(&[(
        "stripe-signature",
        "t=1700000000,v0=00,v1=6666,v1=134db1947d85f218e81824bc6e9ea81ff0249b28c0380ef73b8a050b20cd4bb1",
    )]);
    verified(check(&s, &map, BODY55, "/", at(1700000000)));
}

#[test]
fn nextphone_phoneshield_bland_derived_vectors_verify() {
    let hex = "5690cdbce629dad1e0b3de2651287e2afb790d3881d8a9b04a1a4fdcc1f67e07";
    let cases = [
        (
            Preset::NextPhone,
            "x-nextphone-signature",
            format!("sha256={hex}"),
        ),
        (
            Preset::PhoneShield,
            "x-phoneshield-signature",
            hex.to_owned(),
        ),
        (Preset::Bland, "x-webhook-signature", hex.to_owned()),
    ];
    for (preset, header, value) in cases {
        let s = spec(preset, &["test_secret_123"]);
        let r = check(&s, &headers(&[(header, &value)]), BODY55, "/", at(0));
        assert!(
            matches!(r, Ok(Verdict::Verified(_))),
            "{}: {r:?}",
            preset.name()
        );
    }
}

#[test]
fn nextphone_bearer_token_is_checked_when_configured() {
    let mut s = spec(Preset::NextPhone, &["test_secret_123"]);
    s.token = Some(secret("np_live_test_token"));
    let sig = "sha256=5690cdbce629dad1e0b3de2651287e2afb790d3881d8a9b04a1a4fdcc1f67e07";
    let ok = headers(&[
        ("authorization", "Bearer np_live_test_token"),
        ("x-nextphone-signature", sig),
    ]);
    verified(check(&s, &ok, BODY55, "/", at(0)));
    let wrong = headers(&[
        ("authorization", "Bearer np_live_other"),
        ("x-nextphone-signature", sig),
    ]);
    assert_eq!(
        check(&s, &wrong, BODY55, "/", at(0)).err(),
        Some(Rejection::UnknownKey)
    );
    let missing = headers(&[("x-nextphone-signature", sig)]);
    assert_eq!(
        check(&s, &missing, BODY55, "/", at(0)).err(),
        Some(Rejection::MissingHeader("authorization"))
    );
}

#[test]
fn shopify_derived_vector_verifies() {
    let s = spec(Preset::Shopify, &["test_secret_123"]);
    let map = headers(&[(
        "x-shopify-hmac-sha256",
        "VpDNvOYp2tHgs94mUSh+Kvt5DTiB2KmwShpP3MH2fgc=",
    )]);
    verified(check(&s, &map, BODY55, "/", at(0)));
}

#[test]
fn zoom_derived_vector_verifies() {
    let s = spec(Preset::Zoom, &["test_secret_123"]);
    let map = headers(&[
        ("x-zm-request-timestamp", "1700000000"),
        (
            "x-zm-signature",
            "v0=087b00610e9338f04975748718d30380c92895ecedeadd2ea14eefcb0a5d7a58",
        ),
    ]);
    verified(check(&s, &map, BODY55, "/", at(1700000000)));
}

#[test]
fn zoom_url_validation_is_answered_only_when_signed() {
    let s = spec(Preset::Zoom, &["test_secret_123"]);
    let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1700000000000}"#;
    let signed = crate::verify::sign::sign_request(&s, body, at(1700000000), "https://x.example/h")
        .expect("sign");
    match check(&s, &owned_headers(&signed), body, "/", at(1700000000)) {
        Ok(Verdict::Challenge(reply)) => {
            let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
            assert_eq!(v["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
            assert_eq!(
                v["encryptedToken"],
                "fcffe51a72726475ccd42359dfc8ea4f41ef9629b4c9f8584a23ef62c13aba2b"
            );
            assert_eq!(reply.status, 200);
        }
        other => panic!("expected a challenge, got {other:?}"),
    }
    let unsigned = headers(&[("x-zm-request-timestamp", "1700000000")]);
    assert!(check(&s, &unsigned, body, "/", at(1700000000)).is_err());
    let forged = headers(&[
        ("x-zm-request-timestamp", "1700000000"),
        (
            "x-zm-signature",
            "v0=087b00610e9338f04975748718d30380c92895ecedeadd2ea14eefcb0a5d7a58",
        ),
    ]);
    assert_eq!(
        check(&s, &forged, body, "/", at(1700000000)).err(),
        Some(Rejection::BadSignature)
    );
}

#[test]
fn zoom_url_validation_with_an_oracle_shaped_token_is_refused() {
    let s = spec(Preset::Zoom, &["test_secret_123"]);
    let body =
        br#"{"event":"endpoint.url_validation","payload":{"plainToken":"v0:1700000000:{}"}}"#;
    let signed = crate::verify::sign::sign_request(&s, body, at(1700000000), "https://x.example/h")
        .expect("sign");
    assert_eq!(
        check(&s, &owned_headers(&signed), body, "/", at(1700000000)).err(),
        Some(Rejection::MalformedBody)
    );
}

#[test]
fn retell_derived_vector_verifies_in_milliseconds() {
    let s = spec(Preset::Retell, &["test_secret_123"]);
    let map = headers(&[(
        "x-retell-signature",
        "v=1700000000000,d=fe853a4968e7b3158b5e895b84639b6b2ac7c2d6cb1dfed188fba5a543edea0f",
    )]);
    verified(check(&s, &map, BODY55, "/", at_ms(1700000000000)));
    verified(check(&s, &map, BODY55, "/", at_ms(1700000300000)));
    assert_eq!(
        check(&s, &map, BODY55, "/", at_ms(1700000300001)).err(),
        Some(Rejection::StaleTimestamp)
    );
}

#[test]
fn telnyx_derived_vector_verifies_with_raw_and_spki_keys() {
    let raw = "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=";
    let mut spki = hex::decode("302a300506032b6570032100").expect("hex");
    spki.extend(crate::verify::util::b64_decode(raw).expect("b64"));
    let spki_b64 = crate::verify::util::b64(&spki);
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{spki_b64}\n-----END PUBLIC KEY-----\n");
    let map = headers(&[
        ("telnyx-timestamp", "1700000000"),
        (
            "telnyx-signature-ed25519",
            "F1u+Emxr2fOcs5nfaaPhB6zKd4AkIeUNqPQfweXQ2uOQVTzZ6YZ3/VyRp3OM5R7sVNEYbtpi3i7zbdKVRjxEBw==",
        ),
    ]);
    for key in [raw, spki_b64.as_str(), pem.as_str()] {
        let s = spec(Preset::Telnyx, &[key]);
        verified(check(&s, &map, BODY55, "/", at(1700000000)));
    }
}

#[test]
fn plivo_derived_vector_verifies() {
    let mut s = spec(Preset::Plivo, &["test_secret_123"]);
    s.public_url = Some(url::Url::parse("https://example.com/answer").expect("url"));
    let map = headers(&[
        (
            "x-plivo-signature-v3",
            "J73I1ToTIdWkP09XjB9owkQ1RD9tWmhYTFgyS5/fn10=",
        ),
        ("x-plivo-signature-v3-nonce", "12345"),
    ]);
    let body = b"From=%2B14155550100&CallUUID=abc";
    let url = crate::verify::util::SignedUrl::from_public(
        s.public_url.as_ref().expect("url"),
        "/answer?b=2&a=1",
    );
    assert_eq!(
        crate::verify::plivo::base_string(&url, "POST", body),
        "https://example.com/answer?a=1&b=2.CallUUIDabcFrom+14155550100"
    );
    verified(check(&s, &map, body, "/hooks/plivo?b=2&a=1", at(0)));
    // Several comma-separated signatures: any may match.
    let many = headers(&[
        (
            "x-plivo-signature-v3",
            "AAAA,J73I1ToTIdWkP09XjB9owkQ1RD9tWmhYTFgyS5/fn10=",
        ),
        ("x-plivo-signature-v3-nonce", "12345"),
    ]);
    verified(check(&s, &many, body, "/hooks/plivo?b=2&a=1", at(0)));
}

#[test]
fn vonage_jwt_with_payload_hash_verifies_and_alg_none_is_refused() {
    let s = spec(Preset::Vonage, &["vonage_signature_secret"]);
    let jwt = crate::verify::vonage::make_jwt(
        b"vonage_signature_secret",
        1700000000,
        "jti-1",
        BODY55,
        None,
    );
    let map = headers(&[("authorization", &format!("Bearer {jwt}"))]);
    let d = verified(check(&s, &map, BODY55, "/", at(1700000000)));
    assert_eq!(d.signed_at(), Some(at(1700000000)));
    assert_eq!(
        check(&s, &map, b"{}", "/", at(1700000000)).err(),
        Some(Rejection::MalformedBody),
        "payload_hash mismatch"
    );
    // alg none with the same claims and no signature.
    let parts: Vec<&str> = jwt.split('.').collect();
    let none_header = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        br#"{"alg":"none","typ":"JWT"}"#,
    );
    let forged = format!("Bearer {none_header}.{}.", parts[1]);
    assert_eq!(
        check(
            &s,
            &headers(&[("authorization", &forged)]),
            BODY55,
            "/",
            at(1700000000)
        )
        .err(),
        Some(Rejection::MalformedHeader("authorization"))
    );
}
