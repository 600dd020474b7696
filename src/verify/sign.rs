//! The sender's side of every scheme: the headers a source's sender would send for a body.
//!
//! Used by `wardhook sign` (print headers for curl demos and handler authors), `wardhook
//! send-test` (post a signed sample event) and the tests. Signing uses the *first* configured
//! secret, the one a rotation puts in front. Asymmetric presets (Standard Webhooks with a
//! `whpk_` key, Telnyx) need the private key, which wardhook never has: pass it to
//! [`sign_request_with_key`].

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey};
use rand::Rng;

use super::generic::Values;
use super::options::{compile, CompiledScheme};
use super::standard_webhooks::SwKey;
use super::tokens::TokenCheck;
use super::util::{self, Algorithm, SignedUrl, TimeUnit};
use super::VerifierSpec;

/// Why headers could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The spec does not pass validation; the messages are the spec problems.
    #[error("the source's verification settings are invalid: {0}")]
    InvalidSpec(String),
    /// There is no secret/token to sign with.
    #[error("the source has no secret or token to sign with")]
    NoSecret,
    /// The preset signs with an Ed25519 private key that wardhook does not hold.
    #[error("preset {0} signs with an Ed25519 private key; pass it with sign_request_with_key")]
    NeedsSigningKey(&'static str),
    /// The given private key does not belong to any configured public key.
    #[error("the signing key does not match any configured public key")]
    KeyMismatch,
    /// The text is not a usable Ed25519 private key.
    #[error("not an Ed25519 private key (whsk_<base64> or base64 of a 32-byte seed)")]
    BadKey,
    /// The source accepts only tokens from the OAuth2 endpoint; a sender fetches one first.
    #[error("this source accepts only OAuth2-issued tokens; fetch one from /oauth/token")]
    NeedsOAuthToken,
    /// The URL to sign is not an absolute http(s) URL.
    #[error("the URL to sign must be an absolute http(s) URL")]
    BadUrl,
}

/// Headers plus the URL to post to (which differs from the given one only for Twilio JSON
/// bodies, where the sender appends `bodySHA256=<hex>` to the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Where to send the request.
    pub url: String,
    /// Headers, including `Content-Type` (last).
    pub headers: Vec<(String, String)>,
}

/// The headers `spec`'s sender would send for `body` posted to `url` at `now` (including
/// `Content-Type`). For Twilio JSON bodies use [`sign_request_full`], which also returns the
/// URL with `bodySHA256`.
pub fn sign_request(
    spec: &VerifierSpec,
    body: &[u8],
    now: DateTime<Utc>,
    url: &str,
) -> Result<Vec<(String, String)>, SignError> {
    sign_request_full(spec, body, now, url, None).map(|r| r.headers)
}

/// [`sign_request`] for presets that sign with an Ed25519 private key.
pub fn sign_request_with_key(
    spec: &VerifierSpec,
    body: &[u8],
    now: DateTime<Utc>,
    url: &str,
    key: &SigningKey,
) -> Result<Vec<(String, String)>, SignError> {
    sign_request_full(spec, body, now, url, Some(key)).map(|r| r.headers)
}

/// Parse an Ed25519 private key: `whsk_<base64>` (Standard Webhooks) or bare base64 of a
/// 32-byte seed or a 64-byte seed‖public keypair.
pub fn parse_signing_key(text: &str) -> Result<SigningKey, SignError> {
    let t = text.trim();
    let b64 = t.strip_prefix("whsk_").unwrap_or(t);
    let bytes = util::b64_decode(b64).ok_or(SignError::BadKey)?;
    let seed: [u8; 32] = bytes
        .get(..32)
        .filter(|_| bytes.len() == 32 || bytes.len() == 64)
        .and_then(|s| s.try_into().ok())
        .ok_or(SignError::BadKey)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A random id of URL-safe characters, as senders use for message ids and nonces.
fn random_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..24)
        .map(|_| {
            let i = rng.gen_range(0..62u8);
            char::from(match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            })
        })
        .collect();
    format!("{prefix}{tail}")
}

fn content_type(body: &[u8]) -> &'static str {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') => "application/json",
        _ => "application/x-www-form-urlencoded",
    }
}

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// The full signing routine behind [`sign_request`] and [`sign_request_with_key`].
pub fn sign_request_full(
    spec: &VerifierSpec,
    body: &[u8],
    now: DateTime<Utc>,
    url: &str,
    key: Option<&SigningKey>,
) -> Result<SignedRequest, SignError> {
    let scheme = compile(spec).map_err(|problems| {
        SignError::InvalidSpec(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let ts = now.timestamp();
    let ts_text = ts.to_string();
    let mut out_url = url.to_owned();
    let parsed_url = || -> Result<url::Url, SignError> {
        let u = url::Url::parse(url).map_err(|_| SignError::BadUrl)?;
        if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() {
            Ok(u)
        } else {
            Err(SignError::BadUrl)
        }
    };
    let path_and_query = |u: &url::Url| match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };

    let mut headers = match &scheme {
        CompiledScheme::HeaderHmac(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let mac = util::mac(Algorithm::Sha256, k.expose(), &[body]);
            let mut hs = vec![h(
                s.header,
                format!("{}{}", s.prefix, s.encoding.encode(&mac)),
            )];
            if let Some(t) = &s.bearer {
                hs.insert(
                    0,
                    h(
                        "Authorization",
                        format!("Bearer {}", String::from_utf8_lossy(t.expose())),
                    ),
                );
            }
            hs
        }
        CompiledScheme::Stripe(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let mac = util::mac(
                Algorithm::Sha256,
                k.expose(),
                &[ts_text.as_bytes(), b".", body],
            );
            vec![h(
                "Stripe-Signature",
                format!("t={ts_text},v1={}", hex::encode(mac)),
            )]
        }
        CompiledScheme::Slack(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let mac = util::mac(
                Algorithm::Sha256,
                k.expose(),
                &[b"v0:", ts_text.as_bytes(), b":", body],
            );
            vec![
                h("X-Slack-Request-Timestamp", ts_text.clone()),
                h("X-Slack-Signature", format!("v0={}", hex::encode(mac))),
            ]
        }
        CompiledScheme::Retell(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let ms = now.timestamp_millis().to_string();
            let mac = util::mac(Algorithm::Sha256, k.expose(), &[body, ms.as_bytes()]);
            vec![h(
                "x-retell-signature",
                format!("v={ms},d={}", hex::encode(mac)),
            )]
        }
        CompiledScheme::Zoom(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let mac = util::mac(
                Algorithm::Sha256,
                k.expose(),
                &[b"v0:", ts_text.as_bytes(), b":", body],
            );
            vec![
                h("x-zm-request-timestamp", ts_text.clone()),
                h("x-zm-signature", format!("v0={}", hex::encode(mac))),
            ]
        }
        CompiledScheme::StandardWebhooks(s) => {
            let id = random_id("msg_");
            let content = super::standard_webhooks::signed_content(&id, &ts_text, body);
            let first = s.keys.first().ok_or(SignError::NoSecret)?;
            let sig = match (first, key) {
                (SwKey::Hmac(k), _) => format!(
                    "v1,{}",
                    util::b64(&util::mac(Algorithm::Sha256, k.expose(), &[&content]))
                ),
                (SwKey::Ed25519(_), None) => {
                    return Err(SignError::NeedsSigningKey("standard-webhooks"))
                }
                (SwKey::Ed25519(_), Some(sk)) => {
                    let public = sk.verifying_key();
                    let known = s
                        .keys
                        .iter()
                        .any(|k| matches!(k, SwKey::Ed25519(pk) if *pk == public));
                    if !known {
                        return Err(SignError::KeyMismatch);
                    }
                    format!("v1a,{}", util::b64(&sk.sign(&content).to_bytes()))
                }
            };
            vec![
                h("webhook-id", id),
                h("webhook-timestamp", ts_text.clone()),
                h("webhook-signature", sig),
            ]
        }
        CompiledScheme::Telnyx(s) => {
            let sk = key.ok_or(SignError::NeedsSigningKey("telnyx"))?;
            if !s.keys.contains(&sk.verifying_key()) {
                return Err(SignError::KeyMismatch);
            }
            let msg = super::telnyx::signed_message(&ts_text, body);
            vec![
                h("telnyx-timestamp", ts_text.clone()),
                h(
                    "telnyx-signature-ed25519",
                    util::b64(&sk.sign(&msg).to_bytes()),
                ),
            ]
        }
        CompiledScheme::Twilio(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let mut u = parsed_url()?;
            let json = content_type(body) == "application/json";
            if json {
                let hash = hex::encode(util::sha256(body));
                u.query_pairs_mut().append_pair("bodySHA256", &hash);
                out_url = u.to_string();
            }
            let signed = SignedUrl::from_public(&s.public_url, &path_and_query(&u));
            vec![h(
                "X-Twilio-Signature",
                super::twilio::compute(k.expose(), &signed.render(), body, json),
            )]
        }
        CompiledScheme::Plivo(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let u = parsed_url()?;
            let nonce: String = (0..20)
                .map(|_| char::from(b'0' + rand::thread_rng().gen_range(0..10u8)))
                .collect();
            let signed = SignedUrl::from_public(&s.public_url, &path_and_query(&u));
            let base = super::plivo::base_string(&signed, "POST", body);
            vec![
                h(
                    "X-Plivo-Signature-V3",
                    super::plivo::compute(k.expose(), &base, &nonce),
                ),
                h("X-Plivo-Signature-V3-Nonce", nonce),
            ]
        }
        CompiledScheme::Vonage(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let jwt = super::vonage::make_jwt(
                k.expose(),
                ts,
                &uuid::Uuid::new_v4().to_string(),
                body,
                s.api_key.as_deref(),
            );
            vec![h("Authorization", format!("Bearer {jwt}"))]
        }
        CompiledScheme::Tokens(s) => {
            let token = s.tokens.first();
            let text = |t: &crate::secret::Secret| String::from_utf8_lossy(t.expose()).into_owned();
            match &s.check {
                TokenCheck::Bearer { header } => {
                    let t = token.ok_or(SignError::NeedsOAuthToken)?;
                    vec![h(header, format!("Bearer {}", text(t)))]
                }
                TokenCheck::Plain { header } => {
                    vec![h(header, text(token.ok_or(SignError::NoSecret)?))]
                }
                TokenCheck::Basic { username } => {
                    let t = token.ok_or(SignError::NoSecret)?;
                    let creds = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{}", text(t)));
                    vec![h("Authorization", format!("Basic {creds}"))]
                }
                TokenCheck::RingCentral => {
                    vec![h(
                        "Verification-Token",
                        text(token.ok_or(SignError::NoSecret)?),
                    )]
                }
            }
        }
        CompiledScheme::Template(s) => {
            let k = s.keys.first().ok_or(SignError::NoSecret)?;
            let ts_value = match s.unit {
                TimeUnit::Millis => now.timestamp_millis().to_string(),
                TimeUnit::Seconds | TimeUnit::Auto => ts_text.clone(),
            };
            let id = random_id("msg_");
            let signed_url = match (&s.public_url, s.template.uses_url()) {
                (Some(public), true) => {
                    SignedUrl::from_public(public, &path_and_query(&parsed_url()?)).render()
                }
                _ => String::new(),
            };
            let value = s.sign(
                k.expose(),
                &Values {
                    body,
                    timestamp: &ts_value,
                    id: &id,
                    url: &signed_url,
                    method: "POST",
                },
            );
            let mut hs = vec![h(&s.header, value)];
            if let (Some(name), true) = (&s.timestamp_header, s.template.uses_timestamp()) {
                hs.push(h(name, ts_value.clone()));
            }
            if let (Some(name), true) = (&s.id_header, s.template.uses_id()) {
                hs.push(h(name, id));
            }
            hs
        }
    };
    headers.push(h("Content-Type", content_type(body)));
    Ok(SignedRequest {
        url: out_url,
        headers,
    })
}
