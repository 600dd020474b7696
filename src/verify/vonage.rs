//! Vonage signed webhooks: `Authorization: Bearer <JWT>` signed HS256 with the account's
//! signature secret.
//!
//! Only `alg: HS256` is accepted (never `none`, never an algorithm chosen by the request). The
//! `payload_hash` claim, when present, must be the hex SHA-256 of the raw body (configurable to
//! be required); `iat` must be present and within the replay window both ways; `exp`/`nbf` are
//! honoured when present; the `api_key` claim must match when one is configured.

use base64::Engine as _;
use serde::Deserialize;

use super::scheme::{h, Scheme, SignInput, Signed};
use super::sign::SignError;
use super::util::{self, Algorithm, Ctx, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};
use crate::secret::Secret;

const H: &str = "authorization";
/// Longer tokens are refused before any decoding work.
const MAX_TOKEN_LEN: usize = 8192;

#[derive(Debug)]
pub(crate) struct Vonage {
    pub keys: Vec<Secret>,
    pub require_payload_hash: bool,
    pub api_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwtHeader {
    alg: String,
}

/// The claims wardhook looks at; others are ignored.
#[derive(Debug, Deserialize, PartialEq)]
pub struct VonageClaims {
    /// Issued at, Unix seconds.
    pub iat: Option<i64>,
    /// Expiry, Unix seconds.
    pub exp: Option<i64>,
    /// Not before, Unix seconds.
    pub nbf: Option<i64>,
    /// Hex SHA-256 of the body.
    pub payload_hash: Option<String>,
    /// The Vonage account API key.
    pub api_key: Option<String>,
}

/// A JWT split and decoded: (signing input `header.payload`, claims, signature).
pub fn parse_jwt(token: &str) -> Option<(&str, VonageClaims, Vec<u8>)> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let (signing_input, sig_b64) = token.rsplit_once('.')?;
    let (header_b64, payload_b64) = signing_input.split_once('.')?;
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()
    };
    let header: JwtHeader = serde_json::from_slice(&decode(header_b64)?).ok()?;
    if header.alg != "HS256" {
        return None;
    }
    let claims: VonageClaims = serde_json::from_slice(&decode(payload_b64)?).ok()?;
    let sig = decode(sig_b64).filter(|s| !s.is_empty())?;
    Some((signing_input, claims, sig))
}

impl Scheme for Vonage {
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection> {
        let auth = ctx.header(H, H)?;
        let token = util::strip_bearer(auth).ok_or(Rejection::MalformedHeader(H))?;
        let (signing_input, claims, sig) = parse_jwt(token).ok_or(Rejection::MalformedHeader(H))?;
        let index = util::first_match(&self.keys, |k| {
            util::mac_matches(
                Algorithm::Sha256,
                k.expose(),
                &[signing_input.as_bytes()],
                &sig,
            )
        })
        .ok_or(Rejection::BadSignature)?;

        // Claims are believed only after the signature checks out.
        let iat = claims.iat.ok_or(Rejection::MalformedHeader(H))?;
        let signed_at = util::check_window(iat, TimeUnit::Seconds, ctx.now, ctx.spec.tolerance)?;
        let now = ctx.now.timestamp();
        if claims.exp.is_some_and(|exp| now > exp) {
            return Err(Rejection::StaleTimestamp);
        }
        let tol = i64::try_from(ctx.spec.tolerance.as_secs()).unwrap_or(i64::MAX);
        if claims.nbf.is_some_and(|nbf| nbf.saturating_sub(tol) > now) {
            return Err(Rejection::FutureTimestamp);
        }
        match &claims.payload_hash {
            Some(h) => {
                let expected = hex::decode(h.trim()).map_err(|_| Rejection::MalformedBody)?;
                if !util::ct_eq(&util::sha256(ctx.req.body), &expected) {
                    return Err(Rejection::MalformedBody);
                }
            }
            None if self.require_payload_hash => return Err(Rejection::MalformedBody),
            None => {}
        }
        if let Some(want) = &self.api_key {
            if claims.api_key.as_deref() != Some(want.as_str()) {
                return Err(Rejection::UnknownKey);
            }
        }
        Ok(Proof {
            key_index: index,
            signed_at: Some(signed_at),
            used_headers: vec![(H.to_owned(), auth.to_owned())],
            ..Proof::default()
        })
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError> {
        let k = self.keys.first().ok_or(SignError::NoSecret)?;
        let jwt = make_jwt(
            k.expose(),
            input.now.timestamp(),
            &uuid::Uuid::new_v4().to_string(),
            input.body,
            self.api_key.as_deref(),
        );
        Ok(Signed::headers(vec![h(
            "Authorization",
            format!("Bearer {jwt}"),
        )]))
    }

    fn body_coverage(&self) -> BodyCoverage {
        if self.require_payload_hash {
            BodyCoverage::Signed
        } else {
            BodyCoverage::SignedIfPayloadHash
        }
    }
}

/// A token Vonage would send (tests, `wardhook sign`).
pub(crate) fn make_jwt(
    key: &[u8],
    iat: i64,
    jti: &str,
    body: &[u8],
    api_key: Option<&str>,
) -> String {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = enc(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut claims = serde_json::json!({
        "iat": iat,
        "jti": jti,
        "iss": "Vonage",
        "payload_hash": hex::encode(util::sha256(body)),
    });
    if let (Some(k), Some(obj)) = (api_key, claims.as_object_mut()) {
        obj.insert("api_key".into(), serde_json::Value::String(k.to_owned()));
    }
    let payload = enc(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let sig = enc(&util::mac(Algorithm::Sha256, key, &[input.as_bytes()]));
    format!("{input}.{sig}")
}
