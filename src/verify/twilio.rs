//! Twilio: `X-Twilio-Signature: base64(HMAC-SHA1(auth token, url + Σ sorted(name + value)))`.
//!
//! The URL is the one the sender called, which behind NAT or a TLS-terminating proxy is not the
//! one we see: it is built from the source's `public_url` (scheme, host, port, path) plus the
//! query as received. JSON bodies are not parameters: Twilio adds `bodySHA256=<hex>` to the
//! query, signs the URL alone, and the body is checked against that hash. Like Twilio's SDKs,
//! the URL is tried with and without the scheme's default port. No timestamp is signed, so
//! replays are caught by deduplication, not here.

use std::collections::BTreeMap;

use super::scheme::{h, path_and_query, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, SignedUrl};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

const H: &str = "x-twilio-signature";

#[derive(Debug)]
pub(crate) struct Twilio {
    pub keys: Vec<Secret>,
    pub public_url: url::Url,
    pub port_variants: bool,
}

/// The bytes Twilio signs after the URL: parameter names sorted, each name's (distinct) values
/// sorted, concatenated as `name value name value …` without separators.
pub(crate) fn params_string(pairs: &[(String, String)]) -> String {
    let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in pairs {
        grouped.entry(k.as_str()).or_default().push(v.as_str());
    }
    let mut s = String::new();
    for (k, mut vs) in grouped {
        vs.sort_unstable();
        vs.dedup();
        for v in vs {
            s.push_str(k);
            s.push_str(v);
        }
    }
    s
}

/// The `bodySHA256` query parameter, if the query has one.
pub(crate) fn body_hash_param(query: Option<&str>) -> Option<String> {
    let q = query?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

/// The URLs to try, in order.
pub(crate) fn candidate_urls(url: &SignedUrl, port_variants: bool) -> Vec<String> {
    let mut urls = vec![url.render()];
    if port_variants {
        for u in [url.with_port(), url.without_port()] {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
    }
    urls
}

impl Scheme for Twilio {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let value = ctx.header(H, H)?;
        let sig = util::b64_decode(value.trim())
            .filter(|s| !s.is_empty())
            .ok_or(Rejection::MalformedHeader(H))?;
        let url = SignedUrl::from_public(&self.public_url, ctx.req.path_and_query);
        let params = match body_hash_param(url.query.as_deref()) {
            Some(expected_hex) => {
                let expected =
                    hex::decode(expected_hex.trim()).map_err(|_| Rejection::MalformedBody)?;
                if !util::ct_eq(&util::sha256(ctx.req.body), &expected) {
                    return Err(Rejection::MalformedBody);
                }
                String::new()
            }
            None => params_string(&util::form_pairs(ctx.req.body)),
        };
        let urls = candidate_urls(&url, self.port_variants);
        let index = util::first_match(&self.keys, |k| {
            urls.iter().any(|u| {
                util::mac_matches(
                    Algorithm::Sha1,
                    k.expose(),
                    &[u.as_bytes(), params.as_bytes()],
                    &sig,
                )
            })
        })
        .ok_or(Rejection::BadSignature)?;
        Ok(Proof {
            key_index: index,
            used_headers: vec![(H.to_owned(), value.to_owned())],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let mut u = input.parsed_url()?;
        let json = input.is_json();
        let mut url = None;
        if json {
            let hash = hex::encode(util::sha256(input.body));
            u.query_pairs_mut().append_pair("bodySHA256", &hash);
            url = Some(u.to_string());
        }
        let signed = SignedUrl::from_public(&self.public_url, &path_and_query(&u));
        Ok(Signed {
            headers: vec![h(
                "X-Twilio-Signature",
                compute(k.expose(), &signed.render(), input.body, json),
            )],
            url,
        })
    }

    fn body_coverage(&self) -> BodyCoverage {
        BodyCoverage::Signed
    }
}

/// The signature Twilio would send for `url_text` (as rendered) and body.
pub(crate) fn compute(key: &[u8], url_text: &str, body: &[u8], json: bool) -> String {
    let params = if json {
        String::new()
    } else {
        params_string(&util::form_pairs(body))
    };
    util::b64(&util::mac(
        Algorithm::Sha1,
        key,
        &[url_text.as_bytes(), params.as_bytes()],
    ))
}
