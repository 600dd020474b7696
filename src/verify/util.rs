//! Helpers shared by every scheme: header access that never panics, MACs by algorithm with
//! constant-time, length-checked comparison, decoding, and the replay window.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::{Rejection, TokenIssuer, UnverifiedRequest, VerifierSpec};

/// Everything a scheme may look at while checking one request.
pub(crate) struct Ctx<'a> {
    pub spec: &'a VerifierSpec,
    pub req: &'a UnverifiedRequest<'a>,
    pub now: DateTime<Utc>,
    pub oauth: Option<&'a TokenIssuer>,
}

impl Ctx<'_> {
    /// A required header as text. Absent → `MissingHeader`; not visible ASCII → `MalformedHeader`.
    pub fn header(&self, name: &str, label: &'static str) -> Result<&str, Rejection> {
        let value = self
            .req
            .headers
            .get(name)
            .ok_or(Rejection::MissingHeader(label))?;
        value
            .to_str()
            .map_err(|_| Rejection::MalformedHeader(label))
    }

    /// An optional header as text; present but unreadable is still an error.
    pub fn opt_header(&self, name: &str, label: &'static str) -> Result<Option<&str>, Rejection> {
        match self.req.headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| Rejection::MalformedHeader(label)),
        }
    }
}

/// The MAC algorithms a scheme may use. SHA-1 exists only because Twilio and some Vapi plans
/// force it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Some(Self::Sha1),
            "sha256" | "sha-256" => Some(Self::Sha256),
            "sha512" | "sha-512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// HMAC over the concatenation of `parts`.
pub(crate) fn mac(algo: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail; an empty tag never verifies.
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut m) => {
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    match algo {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// Does `sig` equal the HMAC of `parts`? Constant time via `verify_slice`, which also rejects
/// any length other than the full tag; an empty signature never matches.
pub(crate) fn mac_matches(algo: Algorithm, key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut m) => {
                for p in parts {
                    m.update(p);
                }
                m.verify_slice(sig).is_ok()
            }
            Err(_) => false,
        }
    }
    if sig.is_empty() {
        return false;
    }
    match algo {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts, sig),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts, sig),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts, sig),
    }
}

/// Constant-time equality with an explicit length check; empty never equals anything.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Signature encodings a scheme may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "hex" => Some(Self::Hex),
            "base64" => Some(Self::Base64),
            _ => None,
        }
    }

    pub fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex_sig(text),
            Self::Base64 => b64_decode(text),
        }
    }

    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::Hex => crate::crypto::hex_lower(bytes),
            Self::Base64 => b64(bytes),
        }
    }
}

/// A hex signature: lowercase only, as every sender emits. Accepting `A`–`F` too would let a
/// changed byte (bit 5 of a letter) still verify; there is exactly one accepted spelling.
pub(crate) fn hex_sig(text: &str) -> Option<Vec<u8>> {
    if text
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        hex::decode(text).ok()
    } else {
        None
    }
}

/// Standard base64 with padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard base64, padding required; `None` on anything else.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A Unix timestamp header: ASCII digits only (no sign, no spaces inside), at most 18 of them so
/// arithmetic cannot overflow.
pub(crate) fn parse_unix(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() || t.len() > 18 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Units a signed timestamp may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeUnit {
    Seconds,
    Millis,
    /// Values of 10^11 and above are milliseconds (10^11 s is the year 5138).
    Auto,
}

impl TimeUnit {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "s" | "seconds" => Some(Self::Seconds),
            "ms" | "milliseconds" => Some(Self::Millis),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    fn is_millis(self, value: i64) -> bool {
        match self {
            Self::Seconds => false,
            Self::Millis => true,
            Self::Auto => value >= 100_000_000_000,
        }
    }
}

/// The replay window, both directions, in the timestamp's own unit: `now` is truncated to that
/// unit, then `|now - ts| <= tolerance` is accepted. Exactly at the edge is accepted, one unit
/// past it (1 s, or 1 ms for millisecond schemes) is rejected.
pub(crate) fn check_window(
    ts: i64,
    unit: TimeUnit,
    now: DateTime<Utc>,
    tolerance: std::time::Duration,
) -> Result<DateTime<Utc>, Rejection> {
    let millis = unit.is_millis(ts);
    let (now_units, tol_units, signed_at) = if millis {
        (
            i128::from(now.timestamp_millis()),
            tolerance.as_millis() as i128,
            DateTime::<Utc>::from_timestamp_millis(ts),
        )
    } else {
        (
            i128::from(now.timestamp()),
            i128::from(tolerance.as_secs()),
            DateTime::<Utc>::from_timestamp(ts, 0),
        )
    };
    let diff = now_units - i128::from(ts);
    if diff > tol_units {
        return Err(Rejection::StaleTimestamp);
    }
    if -diff > tol_units {
        return Err(Rejection::FutureTimestamp);
    }
    signed_at.ok_or(Rejection::StaleTimestamp)
}

/// Strip `Bearer ` (scheme name case-insensitive) from an `Authorization` value.
pub(crate) fn strip_bearer(value: &str) -> Option<&str> {
    let v = value.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        (!token.is_empty()).then_some(token)
    } else {
        None
    }
}

/// Which secret, if any, satisfies `check`; all secrets are tried in order.
pub(crate) fn first_match<'s, K: 's>(
    keys: impl IntoIterator<Item = &'s K>,
    check: impl FnMut(&K) -> bool,
) -> Option<usize> {
    keys.into_iter().position(check)
}

/// The URL a URL-signing sender signed: the configured `public_url` (scheme, host, port, path)
/// with the query as received, or `public_url`'s own query when the request has none.
pub(crate) struct SignedUrl {
    pub scheme: String,
    pub host: String,
    /// The explicit port, `None` when the URL carried the scheme's default (or none).
    pub port: Option<u16>,
    pub path: String,
    pub query: Option<String>,
}

impl SignedUrl {
    pub fn from_public(public: &url::Url, path_and_query: &str) -> Self {
        let request_query = path_and_query
            .split_once('?')
            .map(|(_, q)| q.to_owned())
            .filter(|q| !q.is_empty());
        Self {
            scheme: public.scheme().to_owned(),
            host: public.host_str().unwrap_or_default().to_owned(),
            port: public.port(),
            path: public.path().to_owned(),
            query: request_query.or_else(|| public.query().map(str::to_owned)),
        }
    }

    fn default_port(&self) -> u16 {
        if self.scheme == "http" {
            80
        } else {
            443
        }
    }

    /// `scheme://host[:port]path[?query]` with the port as configured.
    pub fn render(&self) -> String {
        self.render_with(self.port, true)
    }

    /// Rendered with an explicit port (the default one when none was given).
    pub fn with_port(&self) -> String {
        self.render_with(Some(self.port.unwrap_or(self.default_port())), true)
    }

    /// Rendered without any port.
    pub fn without_port(&self) -> String {
        self.render_with(None, true)
    }

    /// `scheme://host[:port]path` only.
    pub fn base(&self) -> String {
        self.render_with(self.port, false)
    }

    fn render_with(&self, port: Option<u16>, query: bool) -> String {
        let mut s = format!("{}://{}", self.scheme, self.host);
        if let Some(p) = port {
            s.push(':');
            s.push_str(&p.to_string());
        }
        s.push_str(&self.path);
        if query {
            if let Some(q) = &self.query {
                s.push('?');
                s.push_str(q);
            }
        }
        s
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub(crate) fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}
