//! Telnyx: `telnyx-signature-ed25519` (base64 of a 64-byte Ed25519 signature) over
//! `{telnyx-timestamp}|{body}`, checked against the account's public key(s).

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};

use super::generic::Part;
use super::scheme::{Scheme, SignInput, Signed};
use super::sign::SignError;
use super::timestamped::{Form, Name};
use super::util::{self, Ctx, Encoding, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};

const SIG: &str = "telnyx-signature-ed25519";
const TS: &str = "telnyx-timestamp";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw key follows it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Ed25519 over the timestamped form `{timestamp}|{body}`.
#[derive(Debug)]
pub(crate) struct Telnyx {
    keys: Vec<VerifyingKey>,
    form: Form,
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

impl Telnyx {
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        let mut form = Form::headers(
            Name::lowercase(TS),
            Name::lowercase(SIG),
            "",
            vec![Part::Timestamp, Part::Literal("|".into()), Part::Body],
            Encoding::Base64,
        );
        form.signature_len = Some(ed25519_dalek::SIGNATURE_LENGTH);
        Self { keys, form }
    }
}

impl Scheme for Telnyx {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let presented = self.form.read(ctx)?;
        let message = self.form.message(presented.timestamp, ctx.req.body);
        let index = util::first_match(&self.keys, |k| {
            presented
                .signatures
                .iter()
                .any(|s| Signature::from_slice(s).is_ok_and(|sig| k.verify(&message, &sig).is_ok()))
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            signed_at: Some(presented.signed_at),
            used_headers: presented.used_headers,
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let sk = input.key.ok_or(SignError::NeedsSigningKey("telnyx"))?;
        if !self.keys.contains(&sk.verifying_key()) {
            return Err(SignError::KeyMismatch);
        }
        let timestamp = input.timestamp(TimeUnit::Seconds);
        let signature = sk.sign(&self.form.message(&timestamp, input.body));
        Ok(Signed::headers(
            self.form.sign_headers(timestamp, &signature.to_bytes()),
        ))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}
