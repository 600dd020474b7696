//! IP allowlist with trusted proxies, and the OAuth2 token endpoint.

use std::sync::Arc;

use super::*;
use crate::verify::oauth::{hash_client_secret, DEFAULT_TOKEN_TTL};

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn bearer_spec(source: &str, token: &str) -> VerifierSpec {
    let mut s = spec(Preset::Bearer, &[token]);
    s.source = source.into();
    s
}

#[test]
fn allowlist_and_trusted_proxies_resolve_the_client_address() {
    let mut s = bearer_spec("src", "tok");
    s.allow_ips = vec![net("203.0.113.0/24"), net("2001:db8::/32")];
    s.trusted_proxies = vec![net("10.0.0.0/8")];
    let v = SourceVerifier::new(s).expect("spec");
    let auth = ("authorization", "Bearer tok");
    struct Case {
        what: &'static str,
        peer: &'static str,
        xff: Option<&'static str>,
        expect: Result<&'static str, Rejection>,
    }
    let cases = [
        Case {
            what: "direct allowed v4",
            peer: "203.0.113.9",
            xff: None,
            expect: Ok("203.0.113.9"),
        },
        Case {
            what: "direct allowed v6",
            peer: "2001:db8::5",
            xff: None,
            expect: Ok("2001:db8::5"),
        },
        Case {
            what: "v4-mapped v6 peer counts as v4",
            peer: "::ffff:203.0.113.9",
            xff: None,
            expect: Ok("203.0.113.9"),
        },
        Case {
            what: "direct denied",
            peer: "198.51.100.1",
            xff: None,
            expect: Err(Rejection::IpDenied),
        },
        Case {
            what: "untrusted peer's XFF is ignored",
            peer: "198.51.100.1",
            xff: Some("203.0.113.9"),
            expect: Err(Rejection::IpDenied),
        },
        Case {
            what: "trusted proxy: client from XFF",
            peer: "10.0.0.2",
            xff: Some("203.0.113.9"),
            expect: Ok("203.0.113.9"),
        },
        Case {
            what: "right-most untrusted wins over a spoofed left entry",
            peer: "10.0.0.2",
            xff: Some("203.0.113.50, 198.51.100.1"),
            expect: Err(Rejection::IpDenied),
        },
        Case {
            what: "spoofed allowed address on the left is not believed",
            peer: "10.0.0.2",
            xff: Some("203.0.113.50, 198.51.100.1, 10.0.0.3"),
            expect: Err(Rejection::IpDenied),
        },
        Case {
            what: "chain of trusted proxies is skipped",
            peer: "10.0.0.2",
            xff: Some("203.0.113.9, 10.1.1.1, 10.0.0.3"),
            expect: Ok("203.0.113.9"),
        },
        Case {
            what: "entries with ports",
            peer: "10.0.0.2",
            xff: Some("[2001:db8::7]:443"),
            expect: Ok("2001:db8::7"),
        },
        Case {
            what: "trusted proxy without XFF is the client",
            peer: "10.0.0.2",
            xff: None,
            expect: Err(Rejection::IpDenied),
        },
        Case {
            what: "garbage where the client should be",
            peer: "10.0.0.2",
            xff: Some("not-an-ip"),
            expect: Err(Rejection::MalformedHeader("x-forwarded-for")),
        },
    ];
    for c in cases {
        let mut pairs = vec![auth];
        if let Some(x) = c.xff {
            pairs.push(("x-forwarded-for", x));
        }
        let r = check_with(&v, &headers(&pairs), b"{}", "/", at(0), ip(c.peer));
        match (r, c.expect) {
            (Ok(Verdict::Verified(d)), Ok(want)) => {
                assert_eq!(d.client_ip(), ip(want), "{}", c.what)
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "{}", c.what),
            (got, want) => panic!("{}: got {got:?}, want {want:?}", c.what),
        }
    }
}

#[test]
fn ip_is_checked_before_the_signature() {
    let mut s = bearer_spec("src", "tok");
    s.allow_ips = vec![net("203.0.113.0/24")];
    let v = SourceVerifier::new(s).expect("spec");
    let r = check_with(&v, &HeaderMap::new(), b"", "/", at(0), ip("198.51.100.1"));
    assert_eq!(r.err(), Some(Rejection::IpDenied));
}

fn oauth_specs() -> (Vec<VerifierSpec>, &'static str) {
    let secret_text = "client-secret-for-tests";
    let mut a = spec(Preset::CallTelemetry, &[]);
    a.source = "ct".into();
    a.scheme.mode = Some("oauth2".into());
    a.scheme.oauth_clients = vec![OAuthClient {
        client_id: "ct-client".into(),
        client_secret_sha256: hash_client_secret(secret_text.as_bytes()),
    }];
    let mut b = spec(Preset::Vapi, &[]);
    b.source = "vapi".into();
    b.scheme.mode = Some("oauth2".into());
    b.scheme.oauth_clients = vec![OAuthClient {
        client_id: "vapi-client".into(),
        client_secret_sha256: hash_client_secret(b"other"),
    }];
    (vec![a, b], secret_text)
}

fn token_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], DEFAULT_TOKEN_TTL.as_secs());
    v["access_token"].as_str().expect("token").to_owned()
}

fn error_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("json");
    v["error"].as_str().expect("error").to_owned()
}

#[test]
fn oauth_tokens_are_issued_to_authenticated_clients_and_accepted_only_by_their_source() {
    let (specs, secret_text) = oauth_specs();
    let issuer = Arc::new(TokenIssuer::from_specs(&specs, DEFAULT_TOKEN_TTL).expect("issuer"));
    let ct = SourceVerifier::new(specs[0].clone())
        .expect("ct")
        .with_token_issuer(issuer.clone());
    let vapi = SourceVerifier::new(specs[1].clone())
        .expect("vapi")
        .with_token_issuer(issuer.clone());

    // client_secret_post
    let body =
        format!("grant_type=client_credentials&client_id=ct-client&client_secret={secret_text}");
    let r = issuer.token_endpoint(body.as_bytes(), None, at(1000));
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .contains(&("Cache-Control".to_owned(), "no-store".to_owned())));
    let token = token_of(&r.body);
    let auth = format!("Bearer {token}");
    let map = headers(&[("authorization", &auth)]);
    let d = verified(check_with(&ct, &map, b"{}", "/", at(1000), ip(PEER)));
    assert_eq!(d.oauth_client(), Some("ct-client"));
    assert_eq!(d.key_index(), 1);
    assert_eq!(
        check_with(&vapi, &map, b"{}", "/", at(1000), ip(PEER)).err(),
        Some(Rejection::UnknownKey),
        "a token is only good for the source it was issued for"
    );
    let ttl = i64::try_from(DEFAULT_TOKEN_TTL.as_secs()).expect("ttl");
    verified(check_with(&ct, &map, b"{}", "/", at(1000 + ttl), ip(PEER)));
    assert_eq!(
        check_with(&ct, &map, b"{}", "/", at(1001 + ttl), ip(PEER)).err(),
        Some(Rejection::UnknownKey),
        "expired"
    );

    // client_secret_basic
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("ct-client:{secret_text}"),
    );
    let r = issuer.token_endpoint(
        b"grant_type=client_credentials",
        Some(&format!("Basic {basic}")),
        at(1000),
    );
    assert_eq!(r.status, 200);
    token_of(&r.body);
}

#[test]
fn oauth_endpoint_errors_follow_rfc_6749() {
    let (specs, secret_text) = oauth_specs();
    let issuer = TokenIssuer::from_specs(&specs, DEFAULT_TOKEN_TTL).expect("issuer");
    let wrong_basic =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ct-client:nope");
    let good_post = format!("client_id=ct-client&client_secret={secret_text}");
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "wrong secret (post)",
            "grant_type=client_credentials&client_id=ct-client&client_secret=nope".into(),
            None,
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            "grant_type=client_credentials&client_id=who&client_secret=x".into(),
            None,
            401,
            "invalid_client",
        ),
        (
            "no credentials",
            "grant_type=client_credentials".into(),
            None,
            401,
            "invalid_client",
        ),
        (
            "wrong secret (basic)",
            "grant_type=client_credentials".into(),
            Some(format!("Basic {wrong_basic}")),
            401,
            "invalid_client",
        ),
        (
            "bearer is not client auth",
            "grant_type=client_credentials".into(),
            Some("Bearer x".into()),
            401,
            "invalid_client",
        ),
        (
            "password grant",
            format!("grant_type=password&{good_post}"),
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            "no grant type",
            good_post.clone(),
            None,
            400,
            "invalid_request",
        ),
        (
            "repeated parameter",
            format!("grant_type=client_credentials&grant_type=client_credentials&{good_post}"),
            None,
            400,
            "invalid_request",
        ),
    ];
    for (what, body, auth, status, error) in cases {
        let r = issuer.token_endpoint(body.as_bytes(), auth.as_deref(), at(0));
        assert_eq!(r.status, status, "{what}");
        assert_eq!(error_of(&r.body), error, "{what}");
        if status == 401 {
            assert!(
                r.headers.iter().any(|(k, _)| k == "WWW-Authenticate"),
                "{what}"
            );
        }
        assert!(
            !String::from_utf8_lossy(&r.body).contains(secret_text),
            "{what}: echoed the secret"
        );
    }
}

#[test]
fn oauth_client_ids_must_be_unique_across_sources() {
    let (mut specs, _) = oauth_specs();
    specs[1].scheme.oauth_clients[0].client_id = "ct-client".into();
    let problems = TokenIssuer::from_specs(&specs, DEFAULT_TOKEN_TTL).expect_err("duplicate");
    assert_eq!(problems[0].path, "scheme.oauth_clients[0].client_id");
}
