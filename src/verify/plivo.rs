//! Plivo signature V3: `X-Plivo-Signature-V3` (one or more comma-separated base64 signatures)
//! and `X-Plivo-Signature-V3-Nonce`.
//!
//! Signed: `scheme://host/path` + `?` + the query sorted as `k=v&…`, then for a POST with
//! parameters `.` (only when there was a query) and the sorted form parameters concatenated as
//! `kv…`; then `.` + nonce. HMAC-SHA256 with the auth token. This mirrors plivo-python's
//! `signature_v3.py`. The URL comes from `public_url`, as for Twilio. No timestamp: replays are
//! caught by deduplication.

use std::collections::BTreeMap;

use rand::Rng;

use super::scheme::{h, path_and_query, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, SignedUrl};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

const SIG: &str = "x-plivo-signature-v3";
const NONCE: &str = "x-plivo-signature-v3-nonce";

#[derive(Debug)]
pub(crate) struct Plivo {
    pub keys: Vec<Secret>,
    pub public_url: url::Url,
}

fn grouped(pairs: Vec<(String, String)>) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    for vs in map.values_mut() {
        vs.sort_unstable();
    }
    map
}

/// The base string before `.` + nonce.
pub(crate) fn base_string(url: &SignedUrl, method: &str, body: &[u8]) -> String {
    let query_pairs = url
        .query
        .as_deref()
        .map(|q| util::form_pairs(q.as_bytes()))
        .unwrap_or_default();
    let query = grouped(query_pairs)
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("&");
    let post_params = if method.eq_ignore_ascii_case("GET") {
        BTreeMap::new()
    } else {
        grouped(util::form_pairs(body))
    };
    let mut base = url.base();
    let empty_post = post_params.is_empty();
    if !query.is_empty() || !empty_post {
        base.push('?');
        base.push_str(&query);
    }
    if !query.is_empty() && !empty_post {
        base.push('.');
    }
    for (k, vs) in &post_params {
        for v in vs {
            base.push_str(k);
            base.push_str(v);
        }
    }
    base
}

/// The signature Plivo would send.
pub(crate) fn compute(key: &[u8], base: &str, nonce: &str) -> String {
    util::b64(&util::mac(
        Algorithm::Sha256,
        key,
        &[base.as_bytes(), b".", nonce.as_bytes()],
    ))
}

/// Split the signature header into decoded signatures (at most 8).
pub fn parse_signature_list(value: &str) -> Vec<Vec<u8>> {
    value
        .split(',')
        .filter_map(|s| util::b64_decode(s.trim()))
        .filter(|s| !s.is_empty())
        .take(8)
        .collect()
}

impl Scheme for Plivo {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let sig_text = ctx.header(SIG, SIG)?;
        let nonce = ctx.header(NONCE, NONCE)?.trim();
        if nonce.is_empty() {
            return Err(Rejection::MalformedHeader(NONCE));
        }
        let sigs = parse_signature_list(sig_text);
        if sigs.is_empty() {
            return Err(Rejection::MalformedHeader(SIG));
        }
        let url = SignedUrl::from_public(&self.public_url, ctx.req.path_and_query);
        let base = base_string(&url, ctx.req.method, ctx.req.body);
        let parts: [&[u8]; 3] = [base.as_bytes(), b".", nonce.as_bytes()];
        let index = util::first_match(&self.keys, |k| {
            sigs.iter()
                .any(|s| util::mac_matches(Algorithm::Sha256, k.expose(), &parts, s))
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            used_headers: vec![
                (SIG.to_owned(), sig_text.to_owned()),
                (NONCE.to_owned(), nonce.to_owned()),
            ],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let u = input.parsed_url()?;
        let nonce: String = (0..20)
            .map(|_| char::from(b'0' + rand::thread_rng().gen_range(0..10u8)))
            .collect();
        let signed = SignedUrl::from_public(&self.public_url, &path_and_query(&u));
        let base = base_string(&signed, "POST", input.body);
        Ok(Signed::headers(vec![
            h("X-Plivo-Signature-V3", compute(k.expose(), &base, &nonce)),
            h("X-Plivo-Signature-V3-Nonce", nonce),
        ]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}
