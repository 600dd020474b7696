//! The sender's side of every scheme: the headers a source's sender would send for a body.
//! Each scheme signs in its own file ([`super::scheme::Scheme::sign`]); this is the entry point
//! that compiles a spec, dispatches to it and adds `Content-Type`.
//!
//! Used by `wardhook sign` (print headers for curl demos and handler authors), `wardhook
//! send-test` (post a signed sample event) and the tests. Signing uses the *first* configured
//! secret, the one a rotation puts in front. Asymmetric presets (Standard Webhooks with a
//! `whpk_` key, Telnyx) need the private key, which wardhook never has: pass it to
//! [`sign_request_with_key`].

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;

use super::options::compile;
use super::scheme::{content_type, h, SignInput};
use super::util;
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

/// The full signing routine behind [`sign_request`] and [`sign_request_with_key`]: compile the
/// spec, let its scheme sign, then add `Content-Type`.
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
    let signed = scheme.sign(&SignInput {
        body,
        now,
        url,
        key,
    })?;
    let mut headers = signed.headers;
    headers.push(h("Content-Type", content_type(body)));
    Ok(SignedRequest {
        url: signed.url.unwrap_or_else(|| url.to_owned()),
        headers,
    })
}
