//! Zoom: `x-zm-signature: v0=<hex HMAC-SHA256(secret token, "v0:" + ts + ":" + body)>` with
//! `x-zm-request-timestamp`, and the `endpoint.url_validation` challenge.
//!
//! The challenge reply is an HMAC of a sender-chosen `plainToken` under the same key, i.e. a
//! signing oracle. So it is answered only for a request that itself carries a valid, fresh
//! signature, and only for a short token of URL-safe characters (which can never contain the
//! `:` a forged `v0:ts:body` would need).

use super::scheme::{Scheme, SignInput, Signed};
use super::sign::SignError;
use super::timestamped::{Form, Name, TimestampedHmac};
use super::util::{self, Algorithm, Ctx};
use super::{BodyCoverage, ChallengeReply, Proof, Rejection};
use crate::secret::Secret;

const SIG: &str = "x-zm-signature";
const TS: &str = "x-zm-request-timestamp";
const MAX_PLAIN_TOKEN: usize = 64;

/// The timestamped HMAC plus the challenge.
#[derive(Debug)]
pub(crate) struct Zoom {
    hmac: TimestampedHmac,
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

impl Zoom {
    pub fn new(keys: Vec<Secret>) -> Self {
        let form = Form::v0(Name::lowercase(TS), Name::lowercase(SIG));
        Self {
            hmac: TimestampedHmac {
                keys,
                form,
                algorithm: Algorithm::Sha256,
            },
        }
    }
}

impl Scheme for Zoom {
    /// The timestamped HMAC, then the URL validation answer for a validated request.
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let mut proof = self.hmac.verify(ctx)?;
        if let Some(token) = url_validation_token(ctx.req.body)? {
            let key = self
                .hmac
                .keys
                .get(proof.key_index)
                .ok_or(Rejection::UnknownKey)?;
            proof.challenge = Some(ChallengeReply {
                status: 200,
                headers: Vec::new(),
                content_type: "application/json",
                body: challenge_body(key.expose(), &token),
            });
        }
        Ok(proof)
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        self.hmac.sign(input)
    }

    fn body_coverage(&self) -> BodyCoverage {
        self.hmac.body_coverage()
    }
}
