//! Standard Webhooks (and Svix, which sends the same scheme under `svix-*` header names).
//!
//! Signed content is `{id}.{timestamp}.{body}`. `v1,<base64>` is HMAC-SHA256 keyed by the
//! base64-decoded `whsec_` secret; `v1a,<base64>` is Ed25519 checked against a configured
//! `whpk_` public key (keys are never taken from the request). The header may carry several
//! space-separated signatures for rotation; any match is enough.

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};

use super::scheme::{h, random_id, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

/// At most this many signatures of one header are tried, so a huge header cannot make us
/// compute thousands of MACs.
const MAX_SIGNATURES: usize = 16;

/// One configured key.
#[derive(Debug)]
pub(crate) enum SwKey {
    /// `whsec_<base64>`: the decoded HMAC key.
    Hmac(Secret),
    /// `whpk_<base64>`: an Ed25519 public key.
    Ed25519(VerifyingKey),
}

impl SwKey {
    pub fn parse(secret: &Secret) -> Result<Self, String> {
        let text = secret
            .expose_str()
            .map(str::trim)
            .ok_or_else(|| "must be text (whsec_… or whpk_…)".to_owned())?;
        if let Some(b64) = text.strip_prefix("whsec_") {
            match util::b64_decode(b64) {
                Some(k) if !k.is_empty() => Ok(Self::Hmac(Secret::new(k))),
                _ => Err("whsec_ secret is not valid base64".to_owned()),
            }
        } else if let Some(b64) = text.strip_prefix("whpk_") {
            let bytes =
                util::b64_decode(b64).ok_or_else(|| "whpk_ key is not valid base64".to_owned())?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| "whpk_ key must decode to 32 bytes".to_owned())?;
            VerifyingKey::from_bytes(&arr)
                .map(Self::Ed25519)
                .map_err(|_| "whpk_ key is not a valid Ed25519 public key".to_owned())
        } else if text.starts_with("whsk_") {
            Err("this is a signing (private) key; configure the whpk_ public key instead".into())
        } else {
            Err("must start with whsec_ (HMAC secret) or whpk_ (Ed25519 public key)".to_owned())
        }
    }
}

/// A signature from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwSignature {
    /// `v1,<base64>` HMAC-SHA256.
    V1(Vec<u8>),
    /// `v1a,<base64>` Ed25519.
    V1a(Vec<u8>),
}

/// Parse a `webhook-signature` value. Unknown versions and undecodable entries are skipped;
/// an empty list means nothing usable was sent.
pub fn parse_signature_header(value: &str) -> Vec<SwSignature> {
    value
        .split(' ')
        .filter(|s| !s.is_empty())
        .filter_map(|item| {
            let (version, b64) = item.split_once(',')?;
            let bytes = util::b64_decode(b64).filter(|b| !b.is_empty())?;
            match version {
                "v1" => Some(SwSignature::V1(bytes)),
                "v1a" => Some(SwSignature::V1a(bytes)),
                _ => None,
            }
        })
        .take(MAX_SIGNATURES)
        .collect()
}

/// The three header names, under either naming.
struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: Names = Names {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};
const SVIX: Names = Names {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

#[derive(Debug)]
pub(crate) struct StandardWebhooks {
    pub keys: Vec<SwKey>,
}

impl Scheme for StandardWebhooks {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let names = if ctx.req.headers.contains_key(WEBHOOK.id) {
            WEBHOOK
        } else if ctx.req.headers.contains_key(SVIX.id) {
            SVIX
        } else {
            return Err(Rejection::MissingHeader(WEBHOOK.id));
        };
        let id = ctx.header(names.id, names.id)?.trim();
        // A '.' in the id would make `{id}.{ts}.{body}` ambiguous.
        if id.is_empty() || id.len() > 256 || id.contains('.') {
            return Err(Rejection::MalformedHeader(names.id));
        }
        let ts_text = ctx.header(names.timestamp, names.timestamp)?.trim();
        let ts = util::parse_unix(ts_text).ok_or(Rejection::MalformedHeader(names.timestamp))?;
        let sig_text = ctx.header(names.signature, names.signature)?;
        let sigs = parse_signature_header(sig_text);
        if sigs.is_empty() {
            return Err(Rejection::MalformedHeader(names.signature));
        }
        let signed_at = util::check_window(ts, TimeUnit::Seconds, ctx.now, ctx.spec.tolerance)?;
        let content = signed_content(id, ts_text, ctx.req.body);
        let index = util::first_match(&self.keys, |key| {
            sigs.iter().any(|sig| match (key, sig) {
                (SwKey::Hmac(k), SwSignature::V1(s)) => {
                    util::mac_matches(Algorithm::Sha256, k.expose(), &[&content], s)
                }
                (SwKey::Ed25519(pk), SwSignature::V1a(s)) => Signature::from_slice(s)
                    .map(|sig| pk.verify(&content, &sig).is_ok())
                    .unwrap_or(false),
                _ => false,
            })
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            signed_at: Some(signed_at),
            delivery_id: Some(id.to_owned()),
            used_headers: vec![
                (names.id.to_owned(), id.to_owned()),
                (names.timestamp.to_owned(), ts_text.to_owned()),
                (names.signature.to_owned(), sig_text.to_owned()),
            ],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let ts_text = input.timestamp(TimeUnit::Seconds);
        let id = random_id("msg_");
        let content = signed_content(&id, &ts_text, input.body);
        let first = self.keys.first().ok_or(SignError::NoSecret)?;
        let sig = match (first, input.key) {
            (SwKey::Hmac(k), _) => format!(
                "v1,{}",
                util::b64(&util::mac(Algorithm::Sha256, k.expose(), &[&content]))
            ),
            (SwKey::Ed25519(_), None) => {
                return Err(SignError::NeedsSigningKey("standard-webhooks"))
            }
            (SwKey::Ed25519(_), Some(sk)) => {
                let public = sk.verifying_key();
                let known = self
                    .keys
                    .iter()
                    .any(|k| matches!(k, SwKey::Ed25519(pk) if *pk == public));
                if !known {
                    return Err(SignError::KeyMismatch);
                }
                format!("v1a,{}", util::b64(&sk.sign(&content).to_bytes()))
            }
        };
        Ok(Signed::headers(vec![
            h("webhook-id", id),
            h("webhook-timestamp", ts_text),
            h("webhook-signature", sig),
        ]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}

/// `{id}.{timestamp}.{body}`.
pub(crate) fn signed_content(id: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(ts.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}
