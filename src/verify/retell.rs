//! Retell: `x-retell-signature: v=<unix ms>,d=<hex HMAC-SHA256(api key, body + ms)>`.

use super::generic::{Part, Template};
use super::timestamped::{Carrier, Form, Name, TimestampedHmac};
use super::util::{self, Algorithm, Encoding, TimeUnit};
use crate::secret::Secret;

/// The Retell scheme with these API keys.
pub(crate) fn scheme(keys: Vec<Secret>) -> TimestampedHmac {
    TimestampedHmac {
        keys,
        form: Form {
            carrier: Carrier::Combined {
                header: Name::lowercase("x-retell-signature"),
                parse: |value| parse_retell_header(value).map(|(ts, sig)| (ts, vec![sig])),
                render: |ts, sig| format!("v={ts},d={sig}"),
            },
            signed: Template::from_parts(vec![Part::Body, Part::Timestamp]),
            unit: TimeUnit::Millis,
            encoding: Encoding::Hex,
            signature_len: None,
        },
        algorithm: Algorithm::Sha256,
    }
}

/// Parse `v=<unix ms>,d=<hex>` (either order). Returns the timestamp text and the signature.
pub fn parse_retell_header(value: &str) -> Option<(&str, Vec<u8>)> {
    let mut ts = None;
    let mut digest = None;
    for item in value.split(',') {
        let (k, v) = item.trim().split_once('=')?;
        match k {
            "v" if ts.is_none() => ts = Some(v.trim()),
            "d" if digest.is_none() => digest = Some(util::hex_sig(v.trim())?),
            _ => return None,
        }
    }
    let ts = ts.filter(|t| util::parse_unix(t).is_some())?;
    let digest = digest.filter(|d| !d.is_empty())?;
    Some((ts, digest))
}
