//! Stage 2 of the delivery path: prove a delivery is authentic before anything else touches it.
//!
//! The listener hands over an [`UnverifiedRequest`] (raw body bytes exactly as received, headers,
//! the peer address). Only [`SourceVerifier::verify`] can produce a [`VerifiedDelivery`], and the
//! intake stage accepts nothing else: an unverified body cannot reach storage or a handler by
//! construction. Every comparison of a secret-derived value is constant time.
//!
//! Map of this module:
//! - `scheme`: the `Scheme` trait every sender scheme implements — one file per scheme that
//!   both checks a request (`verify`) and writes what its sender sends (`sign`), so the two sides
//!   cannot drift apart (see `docs/SIGNATURES.md`, "Adding a sender scheme");
//! - the schemes: `header_hmac` (body HMAC in one header: NextPhone, PhoneShield, Bland, GitHub,
//!   Shopify), `timestamped` (the one timestamped-HMAC implementation) with its senders `slack`,
//!   `zoom`, `stripe`, `retell`, plus `telnyx` (the same form, Ed25519), `standard_webhooks`,
//!   `twilio`, `plivo`, `vonage`, `tokens` and `generic` (configured by hand);
//! - [`options`]: per-preset validation of the settings ([`VerifierSpec`], [`SchemeOptions`],
//!   plain config types) that compiles them into the preset's ready-to-run scheme;
//! - [`ip`]: allowlist and trusted-proxy resolution of the client address;
//! - [`oauth`]: the OAuth2 client-credentials token issuer for senders that only do bearer;
//! - [`sign`]: the entry point of the sender's side (`wardhook sign`, `send-test`, tests);
//! - `util`: constant-time helpers, header access and the replay window shared by all.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use chrono::{DateTime, Utc};

mod build;
mod generic;
mod header_hmac;
pub mod ip;
pub mod oauth;
mod options;
mod plivo;
mod retell;
pub mod samples;
mod scheme;
pub mod sign;
mod slack;
mod standard_webhooks;
mod stripe;
mod telnyx;
mod timestamped;
mod tokens;
mod twilio;
mod util;
mod vonage;
mod zoom;

#[cfg(test)]
mod tests;

pub use build::{build_verifiers, Verifiers};
pub use oauth::{TokenIssuer, TokenResponse};
pub use options::{OAuthClient, SchemeOptions};
pub use samples::sample_body;
pub use sign::{sign_request, sign_request_full, sign_request_with_key, SignError, SignedRequest};

use options::CompiledScheme;

/// The header and template parsers on their own, public so that `fuzz/` and property tests
/// can drive them directly. They never panic on any input.
pub mod parsers {
    pub use super::generic::{Part, Template, TemplateError};
    pub use super::ip::parse_forwarded_entry;
    pub use super::plivo::parse_signature_list as parse_plivo_signatures;
    pub use super::retell::parse_retell_header;
    pub use super::standard_webhooks::{
        parse_signature_header as parse_standard_webhooks_signatures, SwSignature,
    };
    pub use super::stripe::{parse_stripe_header, StripeHeader};
    pub use super::telnyx::parse_public_key as parse_telnyx_public_key;
    pub use super::tokens::parse_basic;
    pub use super::vonage::{parse_jwt as parse_vonage_jwt, VonageClaims};
    pub use super::zoom::url_validation_token as zoom_url_validation_token;
}

// A source's verification settings are plain config; verify builds verifiers from them.
pub use crate::config::{Preset, VerifierSpec};

/// A problem with a source's verification settings, with the key path below the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Key path relative to the source table, e.g. `scheme.header`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl SpecProblem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A request as it arrived, before anything is believed about it.
#[derive(Debug)]
pub struct UnverifiedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path and query exactly as received.
    pub path_and_query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The raw body bytes as received; signatures are checked over these, never re-serialized.
    pub body: &'a [u8],
    /// The TCP peer.
    pub peer_ip: IpAddr,
}

/// Why a delivery was refused. The caller only ever learns 401/403; this goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A required header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but does not parse.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// No configured secret produces the presented signature.
    #[error("signature does not match any configured secret")]
    BadSignature,
    /// The signed timestamp is older than the tolerance.
    #[error("timestamp older than the replay window")]
    StaleTimestamp,
    /// The signed timestamp is further in the future than the tolerance.
    #[error("timestamp in the future beyond the replay window")]
    FutureTimestamp,
    /// The token or key id presented is not one we know.
    #[error("unknown key or token")]
    UnknownKey,
    /// The client address is not in the source's allowlist.
    #[error("client address not allowed")]
    IpDenied,
    /// The body does not have the shape the scheme signs (e.g. a Twilio body hash that does not
    /// match, or a Zoom URL validation without a usable `plainToken`).
    #[error("body does not match what the signature covers")]
    MalformedBody,
}

impl Rejection {
    /// A short, stable code for the audit trail (`missing_header`, `bad_signature`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::UnknownKey => "unknown_key",
            Self::IpDenied => "ip_denied",
            Self::MalformedBody => "malformed_body",
        }
    }

    /// The header a `MissingHeader`/`MalformedHeader` rejection is about.
    pub fn header(&self) -> Option<&'static str> {
        match self {
            Self::MissingHeader(h) | Self::MalformedHeader(h) => Some(h),
            _ => None,
        }
    }

    /// The HTTP status the sender sees.
    pub fn status(&self) -> u16 {
        match self {
            Self::IpDenied => 403,
            _ => 401,
        }
    }
}

/// A delivery proven to come from the configured sender. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedDelivery {
    source: String,
    preset: Preset,
    body: Vec<u8>,
    content_type: Option<String>,
    key_index: usize,
    oauth_client: Option<String>,
    sender_delivery_id: Option<String>,
    signed_at: Option<DateTime<Utc>>,
    signature_headers: Vec<(String, String)>,
    client_ip: IpAddr,
}

impl VerifiedDelivery {
    /// The source it arrived on.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The source's preset, which tells normalization where the envelope's fields live.
    pub fn preset(&self) -> Preset {
        self.preset
    }
    /// The raw body bytes that were verified.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    /// The raw body bytes that were verified, moved out (intake keeps them without a copy).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
    /// The request's `Content-Type`, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
    /// Which configured secret matched (0-based position in `secrets`; `token`, where a preset
    /// accepts it as one more candidate, counts as position `secrets.len()`), for the audit
    /// trail. For a bearer token issued by the OAuth2 endpoint it is `secrets.len() + 1 + i`
    /// where `i` is the client's position in `scheme.oauth_clients`; see [`Self::oauth_client`].
    pub fn key_index(&self) -> usize {
        self.key_index
    }
    /// The OAuth2 client id whose issued token authenticated this delivery, if any.
    pub fn oauth_client(&self) -> Option<&str> {
        self.oauth_client.as_deref()
    }
    /// The sender's own per-delivery id, when the scheme *signs* one (Standard Webhooks
    /// `webhook-id`). Unsigned id headers (GitHub, Shopify) are deliberately not used: a
    /// replayed body with a fresh id would otherwise slip past deduplication.
    pub fn sender_delivery_id(&self) -> Option<&str> {
        self.sender_delivery_id.as_deref()
    }
    /// The timestamp the sender signed, when the scheme signs one.
    pub fn signed_at(&self) -> Option<DateTime<Utc>> {
        self.signed_at
    }
    /// The headers the signature check used, kept (encrypted) so it can be re-run later.
    pub fn signature_headers(&self) -> &[(String, String)] {
        &self.signature_headers
    }
    /// The client address after trusted-proxy resolution.
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
}

/// What verification decided besides "rejected".
#[derive(Debug)]
pub enum Verdict {
    /// An authentic delivery for intake.
    Verified(VerifiedDelivery),
    /// A correctly authenticated protocol handshake (e.g. Zoom's URL validation) that is
    /// answered directly and not stored.
    Challenge(ChallengeReply),
}

/// A direct answer to a handshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeReply {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Content type of `body`.
    pub content_type: &'static str,
    /// Response body.
    pub body: Vec<u8>,
}

/// What a scheme proved about a request; turned into a [`Verdict`] by [`SourceVerifier`].
#[derive(Debug, Default)]
pub(crate) struct Proof {
    pub key_index: usize,
    pub oauth_client: Option<String>,
    pub signed_at: Option<DateTime<Utc>>,
    pub delivery_id: Option<String>,
    pub used_headers: Vec<(String, String)>,
    pub challenge: Option<ChallengeReply>,
}

/// Pseudo-header under which the request method is kept with a delivery's signature headers.
pub const REVERIFY_METHOD: &str = ":method";
/// Pseudo-header under which the request path and query are kept.
pub const REVERIFY_PATH: &str = ":path";

/// What a source's proof of authenticity covers, for `deliveries reverify`: a check can only be
/// run again over what was signed and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyCoverage {
    /// A signature (HMAC, Ed25519, JWT with a body hash) over the raw body, whose headers are
    /// kept with the delivery: re-verifiable.
    Signed,
    /// A signature over the body plus a token the sender also presents (NextPhone's optional
    /// Bearer). The token is not kept — it is a secret and says nothing about the body — so a
    /// re-verification checks the signature only.
    SignedPlusToken,
    /// A JWT that covers the body only when it carries a `payload_hash` claim (Vonage without
    /// `require_payload_hash`): look at the kept token to know.
    SignedIfPayloadHash,
    /// A signature over other parts of the request only (a `generic` template without
    /// `{body}`): it proves nothing about the body.
    NotTheBody,
    /// A bearer token, password or API key only: it proves who sent the request, not what was
    /// sent, and it is not kept. Nothing can be checked again.
    TokenOnly,
}

/// A source's verifier, built once from config.
#[derive(Debug)]
pub struct SourceVerifier {
    spec: VerifierSpec,
    scheme: CompiledScheme,
    oauth: Option<Arc<TokenIssuer>>,
}

impl SourceVerifier {
    /// Check the spec and build the verifier; all problems are returned at once.
    pub fn new(spec: VerifierSpec) -> Result<Self, Vec<SpecProblem>> {
        let scheme = options::compile(&spec)?;
        Ok(Self {
            spec,
            scheme,
            oauth: None,
        })
    }

    /// Let this source accept bearer tokens issued by the OAuth2 token endpoint. Only tokens
    /// issued to one of this source's `scheme.oauth_clients` are accepted; without an issuer
    /// attached such tokens are refused.
    pub fn with_token_issuer(mut self, issuer: Arc<TokenIssuer>) -> Self {
        self.oauth = Some(issuer);
        self
    }

    /// The source name.
    pub fn source(&self) -> &str {
        &self.spec.source
    }

    /// The spec this verifier was built from.
    pub fn spec(&self) -> &VerifierSpec {
        &self.spec
    }

    /// What this source's proof covers (see [`BodyCoverage`]).
    pub fn body_coverage(&self) -> BodyCoverage {
        self.scheme.body_coverage()
    }

    /// Decide whether `req` is authentic at time `now`.
    ///
    /// Order: client address first (403 without looking at anything else), then the scheme.
    pub fn verify(
        &self,
        req: &UnverifiedRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Verdict, Rejection> {
        let client_ip =
            ip::resolve_client_ip(req.peer_ip, req.headers, &self.spec.trusted_proxies)?;
        if !ip::is_allowed(client_ip, &self.spec.allow_ips) {
            return Err(Rejection::IpDenied);
        }
        let ctx = util::Ctx {
            spec: &self.spec,
            req,
            now,
            oauth: self.oauth.as_deref(),
        };
        let mut proof = self.scheme.verify(&ctx)?;
        if let Some(reply) = proof.challenge {
            return Ok(Verdict::Challenge(reply));
        }
        // Kept (encrypted) with the payload so `deliveries reverify` can rebuild the request:
        // URL-signing schemes sign the method, path and query too.
        proof
            .used_headers
            .push((REVERIFY_METHOD.to_owned(), req.method.to_owned()));
        proof
            .used_headers
            .push((REVERIFY_PATH.to_owned(), req.path_and_query.to_owned()));
        Ok(Verdict::Verified(VerifiedDelivery {
            source: self.spec.source.clone(),
            preset: self.spec.preset,
            body: req.body.to_vec(),
            content_type: req
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            key_index: proof.key_index,
            oauth_client: proof.oauth_client,
            sender_delivery_id: proof.delivery_id,
            signed_at: proof.signed_at,
            signature_headers: proof.used_headers,
            client_ip,
        }))
    }
}
