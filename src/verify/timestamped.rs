//! The timestamped-signature shape several senders share, written once: a timestamp and a
//! signature arrive in headers, the signed bytes are a fixed arrangement of the timestamp's text
//! and the raw body, and the timestamp must lie inside the replay window.
//!
//! A [`Form`] says where the two values live and what is signed; [`TimestampedHmac`] is the
//! HMAC scheme over a form (Slack, Zoom, Stripe, Retell, each a few lines in its own file).
//! Telnyx signs the same shape with Ed25519 and reuses [`Form`] for everything but the
//! cryptography.

use super::generic::{Part, Template, Values};
use super::header_hmac::parse_prefixed;
use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, Encoding, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

/// A header's name as looked up and reported (lowercase) and as the sender writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name {
    /// Lowercase; also the label of `MissingHeader`/`MalformedHeader` rejections.
    pub checked: &'static str,
    /// The spelling `wardhook sign` prints, as the sender's documentation shows it.
    pub sent: &'static str,
}

impl Name {
    /// A header the sender writes in lowercase.
    pub const fn lowercase(name: &'static str) -> Self {
        Self {
            checked: name,
            sent: name,
        }
    }
}

/// A parser of a combined header: the timestamp's text and every decoded signature.
pub(crate) type ParseCombined = fn(&str) -> Option<(&str, Vec<Vec<u8>>)>;
/// Writes a combined header from the timestamp's text and the encoded signature.
pub(crate) type RenderCombined = fn(&str, &str) -> String;

/// Where the timestamp and the signature arrive.
#[derive(Debug)]
pub(crate) enum Carrier {
    /// Two headers: the timestamp as text, the signature as `prefix` + encoded bytes.
    Headers {
        timestamp: Name,
        signature: Name,
        prefix: &'static str,
    },
    /// One header that holds both (Stripe's `t=…,v1=…`, Retell's `v=…,d=…`).
    Combined {
        header: Name,
        parse: ParseCombined,
        render: RenderCombined,
    },
}

/// Everything about a timestamped scheme except its keys and its cryptography.
#[derive(Debug)]
pub(crate) struct Form {
    pub carrier: Carrier,
    /// What is signed, from `{timestamp}` (the header's text as sent) and `{body}` (raw bytes).
    pub signed: Template,
    /// The timestamp's unit.
    pub unit: TimeUnit,
    /// How a two-header signature is encoded (combined headers decode in their parser).
    pub encoding: Encoding,
    /// A signature of any other length is a malformed header (Ed25519: 64); `None` leaves the
    /// length to the MAC comparison, which refuses anything but the full tag.
    pub signature_len: Option<usize>,
}

/// What a request presented, after the replay window was checked.
pub(crate) struct Presented<'r> {
    /// The timestamp exactly as sent (it is signed as text).
    pub timestamp: &'r str,
    /// Decoded, non-empty signatures; any one may match.
    pub signatures: Vec<Vec<u8>>,
    pub signed_at: chrono::DateTime<chrono::Utc>,
    /// The headers the check used, kept for re-verification.
    pub used_headers: Vec<(String, String)>,
}

impl Form {
    /// The form of a two-header scheme.
    pub fn headers(
        timestamp: Name,
        signature: Name,
        prefix: &'static str,
        signed: Vec<Part>,
        encoding: Encoding,
    ) -> Self {
        Self {
            carrier: Carrier::Headers {
                timestamp,
                signature,
                prefix,
            },
            signed: Template::from_parts(signed),
            unit: TimeUnit::Seconds,
            encoding,
            signature_len: None,
        }
    }

    /// Slack's `v0` convention, which Zoom copied: `v0=<hex>` over `v0:{timestamp}:{body}`.
    pub fn v0(timestamp: Name, signature: Name) -> Self {
        Self::headers(
            timestamp,
            signature,
            "v0=",
            vec![
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body,
            ],
            Encoding::Hex,
        )
    }

    /// Read the timestamp and signatures from the request and check the replay window.
    /// Rejections name the header at fault; nothing secret is compared yet.
    pub fn read<'r>(&self, ctx: &'r Ctx<'_>) -> Result<Presented<'r>, Rejection> {
        let usable = |s: &Vec<u8>| !s.is_empty() && self.signature_len.is_none_or(|n| s.len() == n);
        let (timestamp, ts, signatures, used_headers) = match &self.carrier {
            Carrier::Headers {
                timestamp,
                signature,
                prefix,
            } => {
                let (sig_name, ts_name) = (signature.checked, timestamp.checked);
                let sig_text = ctx.header(sig_name, sig_name)?;
                let ts_text = ctx.header(ts_name, ts_name)?.trim();
                let ts = util::parse_unix(ts_text).ok_or(Rejection::MalformedHeader(ts_name))?;
                let sig = parse_prefixed(sig_text, prefix)
                    .and_then(|s| self.encoding.decode(s))
                    .filter(usable)
                    .ok_or(Rejection::MalformedHeader(sig_name))?;
                let used = vec![
                    (sig_name.to_owned(), sig_text.to_owned()),
                    (ts_name.to_owned(), ts_text.to_owned()),
                ];
                (ts_text, ts, vec![sig], used)
            }
            Carrier::Combined { header, parse, .. } => {
                let name = header.checked;
                let value = ctx.header(name, name)?;
                let (ts_text, sigs) = parse(value).ok_or(Rejection::MalformedHeader(name))?;
                let ts = util::parse_unix(ts_text).ok_or(Rejection::MalformedHeader(name))?;
                let used = vec![(name.to_owned(), value.to_owned())];
                (ts_text, ts, sigs, used)
            }
        };
        let signed_at = util::check_window(ts, self.unit, ctx.now, ctx.spec.tolerance)?;
        Ok(Presented {
            timestamp,
            signatures,
            signed_at,
            used_headers,
        })
    }

    /// The signed bytes as pieces, in order (nothing is copied).
    pub fn pieces<'a>(&'a self, timestamp: &'a str, body: &'a [u8]) -> Vec<&'a [u8]> {
        self.signed.slices(&values(timestamp, body))
    }

    /// The signed bytes in one buffer, for signatures that need a contiguous message.
    pub fn message(&self, timestamp: &str, body: &[u8]) -> Vec<u8> {
        self.signed.render(&values(timestamp, body))
    }

    /// The headers a sender sends for `signature` made at `timestamp`, timestamp first.
    pub fn sign_headers(&self, timestamp: String, signature: &[u8]) -> Vec<(String, String)> {
        let encoded = self.encoding.encode(signature);
        match &self.carrier {
            Carrier::Headers {
                timestamp: ts_name,
                signature: sig_name,
                prefix,
            } => vec![
                h(ts_name.sent, timestamp),
                h(sig_name.sent, format!("{prefix}{encoded}")),
            ],
            Carrier::Combined { header, render, .. } => {
                vec![h(header.sent, render(&timestamp, &encoded))]
            }
        }
    }
}

fn values<'a>(timestamp: &'a str, body: &'a [u8]) -> Values<'a> {
    Values {
        body,
        timestamp,
        id: "",
        url: "",
        method: "",
    }
}

/// An HMAC over a [`Form`] with shared secrets; any configured secret may match (rotation).
#[derive(Debug)]
pub(crate) struct TimestampedHmac {
    pub keys: Vec<Secret>,
    pub form: Form,
    pub algorithm: Algorithm,
}

impl Scheme for TimestampedHmac {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let presented = self.form.read(ctx)?;
        let pieces = self.form.pieces(presented.timestamp, ctx.req.body);
        let index = util::first_match(&self.keys, |k| {
            presented
                .signatures
                .iter()
                .any(|sig| util::mac_matches(self.algorithm, k.expose(), &pieces, sig))
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
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let timestamp = input.timestamp(self.form.unit);
        let mac = util::mac(
            self.algorithm,
            k.expose(),
            &self.form.pieces(&timestamp, input.body),
        );
        Ok(Signed::headers(self.form.sign_headers(timestamp, &mac)))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}
