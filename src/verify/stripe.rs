//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 keyed by the whole
//! `whsec_…` string over `{t}.{body}`; several `v1` entries during Stripe's own key rolls.

use super::generic::{Part, Template};
use super::timestamped::{Carrier, Form, Name, TimestampedHmac};
use super::util::{self, Algorithm, Encoding, TimeUnit};
use crate::secret::Secret;

/// The Stripe scheme with these endpoint secrets.
pub(crate) fn scheme(keys: Vec<Secret>) -> TimestampedHmac {
    TimestampedHmac {
        keys,
        form: Form {
            carrier: Carrier::Combined {
                header: Name {
                    checked: "stripe-signature",
                    sent: "Stripe-Signature",
                },
                parse: |value| parse_stripe_header(value).map(|p| (p.timestamp, p.v1)),
                render: |ts, sig| format!("t={ts},v1={sig}"),
            },
            signed: Template::from_parts(vec![
                Part::Timestamp,
                Part::Literal(".".into()),
                Part::Body,
            ]),
            unit: TimeUnit::Seconds,
            encoding: Encoding::Hex,
            signature_len: None,
        },
        algorithm: Algorithm::Sha256,
    }
}

/// The parsed `Stripe-Signature` header.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StripeHeader<'a> {
    /// The `t=` value as sent (it is signed as text).
    pub timestamp: &'a str,
    /// Every `v1=` signature, decoded; other schemes (`v0`) are ignored.
    pub v1: Vec<Vec<u8>>,
}

/// Parse `t=<unix>,v1=<hex>[,v1=<hex>…]`. `None` when `t` is missing, repeated or not digits,
/// or no `v1` decodes.
pub fn parse_stripe_header(value: &str) -> Option<StripeHeader<'_>> {
    let mut out = StripeHeader::default();
    let mut seen_t = false;
    for item in value.split(',') {
        let (k, v) = item.trim().split_once('=')?;
        match k {
            "t" => {
                if seen_t || util::parse_unix(v).is_none() {
                    return None;
                }
                seen_t = true;
                out.timestamp = v.trim();
            }
            "v1" => {
                if let Some(sig) = util::hex_sig(v.trim()) {
                    if !sig.is_empty() {
                        out.v1.push(sig);
                    }
                }
            }
            _ => {}
        }
    }
    (seen_t && !out.v1.is_empty()).then_some(out)
}
