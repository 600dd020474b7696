//! Zoom: `x-zm-signature: v0=<hex HMAC-SHA256(secret token, "v0:" + ts + ":" + body)>` with
//! `x-zm-request-timestamp`, and the `endpoint.url_validation` challenge.
//!
//! The challenge reply is an HMAC of a sender-chosen `plainToken` under the same key, i.e. a
//! signing oracle. So it is answered only for a request that itself carries a valid, fresh
//! signature, and only for a short token of URL-safe characters (which can never contain the
//! `:` a forged `v0:ts:body` would need).

use super::hmac_schemes::parse_prefixed;
use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, TimeUnit};
use super::{BodyCoverage, ChallengeReply, Proof, Rejection};
use crate::secret::Secret;

const SIG: &str = "x-zm-signature";
const TS: &str = "x-zm-request-timestamp";
const MAX_PLAIN_TOKEN: usize = 64;

#[derive(Debug)]
pub(crate) struct Zoom {
    pub keys: Vec<Secret>,
}

/// The `plainToken` of a URL validation event, or `Ok(None)` for any other event.
pub fn url_validation_token(body: &[u8]) -> Result<Option<String>, Rejection> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    if v.get("event").and_then(|e| e.as_str()) != Some("endpoint.url_validation") {
        return Ok(None);
    }
    let token = v
        .pointer("/payload/plainToken")
        .and_then(|t| t.as_str())
        .ok_or(Rejection::MalformedBody)?;
    let ok = !token.is_empty()
        && token.len() <= MAX_PLAIN_TOKEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(Some(token.to_owned()))
    } else {
        Err(Rejection::MalformedBody)
    }
}

/// The JSON Zoom expects back for a validation.
pub(crate) fn challenge_body(key: &[u8], plain_token: &str) -> Vec<u8> {
    let encrypted = hex::encode(util::mac(Algorithm::Sha256, key, &[plain_token.as_bytes()]));
    serde_json::json!({ "plainToken": plain_token, "encryptedToken": encrypted })
        .to_string()
        .into_bytes()
}

impl Scheme for Zoom {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let sig_text = ctx.header(SIG, SIG)?;
        let ts_text = ctx.header(TS, TS)?.trim();
        let ts = util::parse_unix(ts_text).ok_or(Rejection::MalformedHeader(TS))?;
        let sig = parse_prefixed(sig_text, "v0=")
            .and_then(util::hex_sig)
            .filter(|s| !s.is_empty())
            .ok_or(Rejection::MalformedHeader(SIG))?;
        let signed_at = util::check_window(ts, TimeUnit::Seconds, ctx.now, ctx.spec.tolerance)?;
        let parts: [&[u8]; 4] = [b"v0:", ts_text.as_bytes(), b":", ctx.req.body];
        let index = util::first_match(&self.keys, |k| {
            util::mac_matches(Algorithm::Sha256, k.expose(), &parts, &sig)
        })
        .ok_or(Rejection::BadSignature)?;
        let challenge = match url_validation_token(ctx.req.body)? {
            Some(token) => {
                let key = self.keys.get(index).ok_or(Rejection::UnknownKey)?;
                Some(ChallengeReply {
                    status: 200,
                    headers: Vec::new(),
                    content_type: "application/json",
                    body: challenge_body(key.expose(), &token),
                })
            }
            None => None,
        };
        Ok(Proof {
            key_index: index,
            signed_at: Some(signed_at),
            used_headers: vec![
                (SIG.to_owned(), sig_text.to_owned()),
                (TS.to_owned(), ts_text.to_owned()),
            ],
            challenge,
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let ts_text = input.timestamp(TimeUnit::Seconds);
        let mac = util::mac(
            Algorithm::Sha256,
            k.expose(),
            &[b"v0:", ts_text.as_bytes(), b":", input.body],
        );
        Ok(Signed::headers(vec![
            h("x-zm-request-timestamp", ts_text),
            h("x-zm-signature", format!("v0={}", hex::encode(mac))),
        ]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}
