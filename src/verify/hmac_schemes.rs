//! HMAC-SHA256 schemes that sign the body (and sometimes a timestamp) with a shared secret:
//! NextPhone, PhoneShield, Bland, GitHub, Shopify (body only); Stripe, Slack, Retell (timestamp
//! signed, replay window applies).

use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, Encoding, TimeUnit};
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

/// Stripe: HMAC-SHA256 keyed by the whole `whsec_…` string over `{t}.{body}`.
#[derive(Debug)]
pub(crate) struct Stripe {
    pub keys: Vec<Secret>,
}

impl Scheme for Stripe {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        const H: &str = "stripe-signature";
        let value = ctx.header(H, H)?;
        let parsed = parse_stripe_header(value).ok_or(Rejection::MalformedHeader(H))?;
        let ts = util::parse_unix(parsed.timestamp).ok_or(Rejection::MalformedHeader(H))?;
        let signed_at = util::check_window(ts, TimeUnit::Seconds, ctx.now, ctx.spec.tolerance)?;
        let parts: [&[u8]; 3] = [parsed.timestamp.as_bytes(), b".", ctx.req.body];
        let index = util::first_match(&self.keys, |k| {
            parsed
                .v1
                .iter()
                .any(|sig| util::mac_matches(Algorithm::Sha256, k.expose(), &parts, sig))
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            signed_at: Some(signed_at),
            used_headers: vec![(H.to_owned(), value.to_owned())],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let ts_text = input.timestamp(TimeUnit::Seconds);
        let mac = util::mac(
            Algorithm::Sha256,
            k.expose(),
            &[ts_text.as_bytes(), b".", input.body],
        );
        Ok(Signed::headers(vec![h(
            "Stripe-Signature",
            format!("t={ts_text},v1={}", hex::encode(mac)),
        )]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}

/// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.
#[derive(Debug)]
pub(crate) struct Slack {
    pub keys: Vec<Secret>,
}

impl Scheme for Slack {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        const SIG: &str = "x-slack-signature";
        const TS: &str = "x-slack-request-timestamp";
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
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let ts_text = input.timestamp(TimeUnit::Seconds);
        let mac = util::mac(
            Algorithm::Sha256,
            k.expose(),
            &[b"v0:", ts_text.as_bytes(), b":", input.body],
        );
        Ok(Signed::headers(vec![
            h("X-Slack-Request-Timestamp", ts_text),
            h("X-Slack-Signature", format!("v0={}", hex::encode(mac))),
        ]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
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

/// Retell: `x-retell-signature: v=<ms>,d=<hex HMAC-SHA256(api key, body + ms)>`.
#[derive(Debug)]
pub(crate) struct Retell {
    pub keys: Vec<Secret>,
}

impl Scheme for Retell {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        const H: &str = "x-retell-signature";
        let value = ctx.header(H, H)?;
        let (ts_text, sig) = parse_retell_header(value).ok_or(Rejection::MalformedHeader(H))?;
        let ts = util::parse_unix(ts_text).ok_or(Rejection::MalformedHeader(H))?;
        let signed_at = util::check_window(ts, TimeUnit::Millis, ctx.now, ctx.spec.tolerance)?;
        let parts: [&[u8]; 2] = [ctx.req.body, ts_text.as_bytes()];
        let index = util::first_match(&self.keys, |k| {
            util::mac_matches(Algorithm::Sha256, k.expose(), &parts, &sig)
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            signed_at: Some(signed_at),
            used_headers: vec![(H.to_owned(), value.to_owned())],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let ms = input.timestamp(TimeUnit::Millis);
        let mac = util::mac(Algorithm::Sha256, k.expose(), &[input.body, ms.as_bytes()]);
        Ok(Signed::headers(vec![h(
            "x-retell-signature",
            format!("v={ms},d={}", hex::encode(mac)),
        )]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}
