//! Telnyx: `telnyx-signature-ed25519` (base64 of a 64-byte Ed25519 signature) over
//! `{telnyx-timestamp}|{body}`, checked against the account's public key(s).

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};

use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Ctx, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};

const SIG: &str = "telnyx-signature-ed25519";
const TS: &str = "telnyx-timestamp";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug)]
pub(crate) struct Telnyx {
    pub keys: Vec<VerifyingKey>,
}

/// A public key as Telnyx shows it: base64 of the raw 32 bytes, base64 of the SPKI DER, or a
/// PEM `PUBLIC KEY` block.
pub fn parse_public_key(text: &[u8]) -> Option<VerifyingKey> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let b64: String = if text.starts_with("-----BEGIN") {
        text.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect()
    } else {
        text.to_owned()
    };
    let bytes = util::b64_decode(&b64)?;
    let raw: &[u8] = match bytes.len() {
        32 => &bytes,
        44 if bytes.starts_with(&SPKI_PREFIX) => bytes.get(12..)?,
        _ => return None,
    };
    let arr: [u8; 32] = raw.try_into().ok()?;
    VerifyingKey::from_bytes(&arr).ok()
}

impl Scheme for Telnyx {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let sig_text = ctx.header(SIG, SIG)?;
        let ts_text = ctx.header(TS, TS)?.trim();
        let ts = util::parse_unix(ts_text).ok_or(Rejection::MalformedHeader(TS))?;
        let sig = util::b64_decode(sig_text.trim())
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(Rejection::MalformedHeader(SIG))?;
        let signed_at = util::check_window(ts, TimeUnit::Seconds, ctx.now, ctx.spec.tolerance)?;
        let message = signed_message(ts_text, ctx.req.body);
        let index = util::first_match(&self.keys, |k| k.verify(&message, &sig).is_ok())
            .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            signed_at: Some(signed_at),
            used_headers: vec![
                (SIG.to_owned(), sig_text.to_owned()),
                (TS.to_owned(), ts_text.to_owned()),
            ],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let sk = input.key.ok_or(SignError::NeedsSigningKey("telnyx"))?;
        if !self.keys.contains(&sk.verifying_key()) {
            return Err(SignError::KeyMismatch);
        }
        let ts_text = input.timestamp(TimeUnit::Seconds);
        let msg = signed_message(&ts_text, input.body);
        Ok(Signed::headers(vec![
            h("telnyx-timestamp", ts_text),
            h(
                "telnyx-signature-ed25519",
                util::b64(&sk.sign(&msg).to_bytes()),
            ),
        ]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}

/// `{timestamp}|{body}`.
pub(crate) fn signed_message(ts: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ts.len() + 1 + body.len());
    m.extend_from_slice(ts.as_bytes());
    m.push(b'|');
    m.extend_from_slice(body);
    m
}
