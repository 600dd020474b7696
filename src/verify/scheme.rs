//! The one trait every sender scheme implements: a scheme is one file that both checks a
//! request ([`Scheme::verify`]) and produces what its sender would send ([`Scheme::sign`]), so
//! the two sides cannot drift apart and adding a scheme touches one file (plus its preset's
//! line in `options.rs`; see `docs/SIGNATURES.md`, "Adding a sender scheme").

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use rand::Rng;

use super::sign::SignError;
use super::util::{Ctx, TimeUnit};
use super::{BodyCoverage, Proof, Rejection};

/// A compiled, ready-to-run verification scheme of one source.
pub(crate) trait Scheme: std::fmt::Debug + Send + Sync {
    /// Decide whether the request in `ctx` is authentic; on success, what it proved.
    fn verify(&self, ctx: &Ctx<'_>) -> Result<Proof, Rejection>;

    /// The headers (without `Content-Type`) the sender would send for `input`, signed with the
    /// first configured secret, and the URL when signing changes it.
    fn sign(&self, input: &SignInput<'_>) -> Result<Signed, SignError>;

    /// What a successful [`Scheme::verify`] proves about the body.
    fn body_coverage(&self) -> BodyCoverage;
}

/// What a sender signs: the raw body, posted to `url` at `now`.
#[derive(Debug)]
pub(crate) struct SignInput<'a> {
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
    pub url: &'a str,
    /// The Ed25519 private key, for schemes whose configured secrets are public keys.
    pub key: Option<&'a SigningKey>,
}

impl SignInput<'_> {
    /// The current time as a sender writes it in a timestamp header.
    pub fn timestamp(&self, unit: TimeUnit) -> String {
        match unit {
            TimeUnit::Millis => self.now.timestamp_millis().to_string(),
            TimeUnit::Seconds | TimeUnit::Auto => self.now.timestamp().to_string(),
        }
    }

    /// `url` parsed; only absolute http(s) URLs with a host can be signed.
    pub fn parsed_url(&self) -> Result<url::Url, SignError> {
        let u = url::Url::parse(self.url).map_err(|_| SignError::BadUrl)?;
        if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() {
            Ok(u)
        } else {
            Err(SignError::BadUrl)
        }
    }

    /// Whether the body is JSON (first non-blank byte `{` or `[`), as `Content-Type` says.
    pub fn is_json(&self) -> bool {
        content_type(self.body) == "application/json"
    }
}

/// What [`Scheme::sign`] produced.
#[derive(Debug, Default)]
pub(crate) struct Signed {
    /// Headers in the order the sender sends them.
    pub headers: Vec<(String, String)>,
    /// The URL to post to, when the scheme changes it (Twilio JSON bodies).
    pub url: Option<String>,
}

impl Signed {
    /// Headers only; the URL stays as given.
    pub fn headers(headers: Vec<(String, String)>) -> Self {
        Self { headers, url: None }
    }
}

/// One header as a `(name, value)` pair.
pub(crate) fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// The `Content-Type` a sender would give `body`.
pub(crate) fn content_type(body: &[u8]) -> &'static str {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') => "application/json",
        _ => "application/x-www-form-urlencoded",
    }
}

/// Path and query of `u`, as a request line carries them.
pub(crate) fn path_and_query(u: &url::Url) -> String {
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

/// A random id of URL-safe characters, as senders use for message ids and nonces.
pub(crate) fn random_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..24)
        .map(|_| {
            let i = rng.gen_range(0..62u8);
            char::from(match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            })
        })
        .collect();
    format!("{prefix}{tail}")
}
