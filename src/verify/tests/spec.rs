//! `SourceVerifier::new` reports every problem of a spec, with its path.

use super::*;

fn problems(s: VerifierSpec) -> Vec<(String, String)> {
    match SourceVerifier::new(s) {
        Ok(_) => Vec::new(),
        Err(list) => list.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

fn paths(s: VerifierSpec) -> Vec<String> {
    problems(s).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn standard_webhooks_secrets_must_be_whsec_or_whpk_and_each_is_reported() {
    let s = spec(
        Preset::StandardWebhooks,
        &[
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "plain",
            "whpk_AAAA",
            "whsk_AAAA",
            "whsec_!!",
        ],
    );
    assert_eq!(
        paths(s),
        vec!["secrets[1]", "secrets[2]", "secrets[3]", "secrets[4]"]
    );
}

#[test]
fn url_signing_presets_need_public_url() {
    for preset in [Preset::Twilio, Preset::Plivo] {
        assert_eq!(
            paths(spec(preset, &["t"])),
            vec!["public_url"],
            "{}",
            preset.name()
        );
    }
}

#[test]
fn generic_without_header_and_with_unsigned_timestamp_reports_both() {
    let mut s = spec(Preset::Generic, &["k"]);
    s.scheme.timestamp_header = Some("x-ts".into());
    assert_eq!(paths(s), vec!["scheme.header", "scheme.timestamp_header"]);
}

#[test]
fn generic_template_problems_have_their_paths() {
    let cases = [
        (
            "{body}{nope}",
            "scheme.signed_content",
            "unknown placeholder",
        ),
        ("{body", "scheme.signed_content", "unbalanced"),
        ("{timestamp}", "scheme.signed_content", "body"),
        ("{timestamp}.{body}", "scheme.timestamp_header", "timestamp"),
        ("{id}.{body}", "scheme.id_header", "id"),
        ("{url}{body}", "public_url", "url"),
    ];
    for (template, path, why) in cases {
        let mut s = spec(Preset::Generic, &["k"]);
        s.scheme.header = Some("x-sig".into());
        s.scheme.signed_content = Some(template.into());
        let got = problems(s);
        assert!(
            got.iter()
                .any(|(p, m)| p == path && m.to_lowercase().contains(why)),
            "{template}: {got:?}"
        );
    }
}

#[test]
fn options_a_preset_does_not_read_are_reported() {
    let mut s = spec(Preset::GitHub, &["k"]);
    s.scheme.header = Some("x-other".into());
    s.scheme.algorithm = Some("sha1".into());
    s.token = Some(secret("t"));
    assert_eq!(paths(s), vec!["scheme.header", "scheme.algorithm", "token"]);
}

#[test]
fn missing_secrets_bad_enums_and_bad_oauth_clients_are_all_reported() {
    let mut s = spec(Preset::Vapi, &[]);
    s.scheme.mode = Some("hmac".into());
    s.scheme.algorithm = Some("md5".into());
    s.scheme.encoding = Some("base32".into());
    s.scheme.timestamp_unit = Some("fortnights".into());
    s.scheme.oauth_clients = vec![OAuthClient {
        client_id: "c".into(),
        client_secret_sha256: "not-a-hash".into(),
    }];
    let got = paths(s);
    for want in [
        "secrets",
        "scheme.algorithm",
        "scheme.encoding",
        "scheme.timestamp_unit",
        "scheme.oauth_clients[0].client_secret_sha256",
    ] {
        assert!(got.iter().any(|p| p == want), "{want} missing from {got:?}");
    }
}

#[test]
fn token_presets_accept_oauth_clients_instead_of_secrets() {
    let mut s = spec(Preset::Bearer, &[]);
    assert_eq!(paths(s.clone()), vec!["secrets"]);
    s.scheme.oauth_clients = vec![OAuthClient {
        client_id: "c".into(),
        client_secret_sha256: crate::verify::oauth::hash_client_secret(b"x"),
    }];
    assert!(paths(s).is_empty());
    let mut b = spec(Preset::Basic, &["pw"]);
    assert_eq!(paths(b.clone()), vec!["scheme.username"]);
    b.scheme.username = Some("u".into());
    assert!(paths(b).is_empty());
}

#[test]
fn telnyx_keys_must_be_ed25519_public_keys() {
    let s = spec(
        Preset::Telnyx,
        &["ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=", "AAAA"],
    );
    assert_eq!(paths(s), vec!["secrets[1]"]);
}

#[test]
fn scheme_table_rejects_unknown_keys_when_deserialized() {
    let ok: Result<SchemeOptions, _> = serde_json::from_str(
        r#"{"header":"X-Sig","oauth_clients":[{"client_id":"a","client_secret_sha256":"00"}]}"#,
    );
    assert!(ok.is_ok());
    let bad: Result<SchemeOptions, _> = serde_json::from_str(r#"{"hedaer":"X-Sig"}"#);
    assert!(bad.is_err());
}
