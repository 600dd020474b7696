//! HMAC-SHA256 of the raw body alone in one header, `[prefix]<hex|base64>`: NextPhone,
//! PhoneShield, Bland, GitHub, Shopify. No timestamp is signed, so replays are caught by
//! deduplication. (Schemes that also sign a timestamp are in `timestamped.rs`.)

use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, Encoding};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

/// A signature of the raw body in one header: `[prefix]<hex|base64>`.
#[derive(Debug)]
pub(crate) struct HeaderHmac {
    pub keys: Vec<Secret>,
    pub header: &'static str,
    pub prefix: &'static str,
    pub encoding: Encoding,
    /// NextPhone's additional `Authorization: Bearer` token.
    pub bearer: Option<Secret>,
}

impl HeaderHmac {
    pub fn nextphone(keys: Vec<Secret>, bearer: Option<Secret>) -> Self {
        Self {
            keys,
            header: "x-nextphone-signature",
            prefix: "sha256=",
            encoding: Encoding::Hex,
            bearer,
        }
    }
    pub fn phoneshield(keys: Vec<Secret>) -> Self {
        Self {
            keys,
            header: "x-phoneshield-signature",
            prefix: "",
            encoding: Encoding::Hex,
            bearer: None,
        }
    }
    pub fn bland(keys: Vec<Secret>) -> Self {
        Self {
            keys,
            header: "x-webhook-signature",
            prefix: "",
            encoding: Encoding::Hex,
            bearer: None,
        }
    }
    pub fn github(keys: Vec<Secret>) -> Self {
        Self {
            keys,
            header: "x-hub-signature-256",
            prefix: "sha256=",
            encoding: Encoding::Hex,
            bearer: None,
        }
    }
    pub fn shopify(keys: Vec<Secret>) -> Self {
        Self {
            keys,
            header: "x-shopify-hmac-sha256",
            prefix: "",
            encoding: Encoding::Base64,
            bearer: None,
        }
    }
}

impl Scheme for HeaderHmac {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let mut used = Vec::new();
        if let Some(token) = &self.bearer {
            let auth = ctx.header("authorization", "authorization")?;
            let presented =
                util::strip_bearer(auth).ok_or(Rejection::MalformedHeader("authorization"))?;
            if !util::ct_eq(presented.as_bytes(), token.expose()) {
                return Err(Rejection::UnknownKey);
            }
        }
        let value = ctx.header(self.header, self.header)?;
        used.push((self.header.to_owned(), value.to_owned()));
        let encoded =
            parse_prefixed(value, self.prefix).ok_or(Rejection::MalformedHeader(self.header))?;
        let sig = self
            .encoding
            .decode(encoded)
            .filter(|s| !s.is_empty())
            .ok_or(Rejection::MalformedHeader(self.header))?;
        let index = util::first_match(&self.keys, |k| {
            util::mac_matches(Algorithm::Sha256, k.expose(), &[ctx.req.body], &sig)
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            used_headers: used,
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let mac = util::mac(Algorithm::Sha256, k.expose(), &[input.body]);
        let mut hs = vec![h(
            self.header,
            format!("{}{}", self.prefix, self.encoding.encode(&mac)),
        )];
        if let Some(t) = &self.bearer {
            hs.insert(
                0,
                h(
                    "Authorization",
                    format!("Bearer {}", String::from_utf8_lossy(t.expose())),
                ),
            );
        }
        Ok(Signed::headers(hs))
    }

    fn body_coverage(&self) -> BodyCoverage {
        if self.bearer.is_some() {
            BodyCoverage::SignedPlusToken
        } else {
            BodyCoverage::Signed
        }
    }
}

/// `prefix` + encoded signature, surrounding whitespace ignored; the prefix must match exactly.
pub(crate) fn parse_prefixed<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let v = value.trim();
    if prefix.is_empty() {
        return Some(v);
    }
    v.strip_prefix(prefix)
}
