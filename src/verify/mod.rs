//! Stage 2 of the delivery path: prove a delivery is authentic before anything else touches it.
//!
//! The listener hands over an [`UnverifiedRequest`] (raw body bytes exactly as received, headers,
//! the peer address). Only [`SourceVerifier::verify`] can produce a [`VerifiedDelivery`], and the
//! intake stage accepts nothing else: an unverified body cannot reach storage or a handler by
//! construction. Every comparison of a secret-derived value is constant time.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use serde::Deserialize;
use sha2::Sha256;

use crate::secret::Secret;

/// A verification scheme plus where a sender's envelope keeps its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// `X-NextPhone-Signature: sha256=<hex>` over the body, optional Bearer token.
    NextPhone,
    /// `X-PhoneShield-Signature: <hex>` over the body.
    PhoneShield,
}

impl Preset {
    /// Every preset name accepted in `sources[].preset`.
    pub const NAMES: &'static [&'static str] = &["nextphone", "phoneshield"];

    /// Parse a configured preset name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "nextphone" => Some(Self::NextPhone),
            "phoneshield" => Some(Self::PhoneShield),
            _ => None,
        }
    }

    /// The configured name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NextPhone => "nextphone",
            Self::PhoneShield => "phoneshield",
        }
    }
}

/// Scheme-specific settings of a source (`[sources.scheme]`), for presets that need more than
/// secrets: the `generic` preset, Vapi's HMAC plan, API-key header names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeOptions {}

/// Everything needed to build a source's verifier, resolved from config.
#[derive(Debug, Clone)]
pub struct VerifierSpec {
    /// The source name (`/hooks/{source}`).
    pub source: String,
    /// The sender preset.
    pub preset: Preset,
    /// Signing secrets or public keys, in configured order; any one may match (rotation).
    pub secrets: Vec<Secret>,
    /// An additional bearer/verification token, for presets that check one.
    pub token: Option<Secret>,
    /// How far a signed timestamp may be from now, in either direction.
    pub tolerance: Duration,
    /// The URL the sender signs, for URL-signing schemes behind NAT or proxies.
    pub public_url: Option<url::Url>,
    /// Allowed client networks; empty allows all.
    pub allow_ips: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Scheme-specific settings.
    pub scheme: SchemeOptions,
}

/// A problem with a source's verification settings, with the key path below the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Key path relative to the source table, e.g. `scheme.header`.
    pub path: String,
    /// What is wrong.
    pub message: String,
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
}

impl Rejection {
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
    /// The request's `Content-Type`, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
    /// Which configured secret matched (0-based position in `secrets`), for the audit trail.
    pub fn key_index(&self) -> usize {
        self.key_index
    }
    /// The sender's own per-delivery id (e.g. `webhook-id`), when the scheme has one.
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

/// A source's verifier, built once from config.
#[derive(Debug)]
pub struct SourceVerifier {
    spec: VerifierSpec,
}

impl SourceVerifier {
    /// Check the spec and build the verifier; all problems are returned at once.
    pub fn new(spec: VerifierSpec) -> Result<Self, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        if spec.secrets.is_empty() {
            problems.push(SpecProblem {
                path: "secrets".into(),
                message: format!("preset {} needs at least one secret", spec.preset.name()),
            });
        }
        if problems.is_empty() {
            Ok(Self { spec })
        } else {
            Err(problems)
        }
    }

    /// The source name.
    pub fn source(&self) -> &str {
        &self.spec.source
    }

    /// Decide whether `req` is authentic at time `now`.
    pub fn verify(
        &self,
        req: &UnverifiedRequest<'_>,
        _now: DateTime<Utc>,
    ) -> Result<Verdict, Rejection> {
        let (header, prefix) = match self.spec.preset {
            Preset::NextPhone => ("x-nextphone-signature", "sha256="),
            Preset::PhoneShield => ("x-phoneshield-signature", ""),
        };
        let value = req
            .headers
            .get(header)
            .ok_or(Rejection::MissingHeader(header))?;
        let hex_sig = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().strip_prefix(prefix))
            .ok_or(Rejection::MalformedHeader(header))?;
        let sig = hex::decode(hex_sig).map_err(|_| Rejection::MalformedHeader(header))?;
        if sig.is_empty() {
            return Err(Rejection::MalformedHeader(header));
        }
        for (index, secret) in self.spec.secrets.iter().enumerate() {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose())
                .map_err(|_| Rejection::UnknownKey)?;
            mac.update(req.body);
            if mac.verify_slice(&sig).is_ok() {
                return Ok(Verdict::Verified(VerifiedDelivery {
                    source: self.spec.source.clone(),
                    preset: self.spec.preset,
                    body: req.body.to_vec(),
                    content_type: req
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    key_index: index,
                    sender_delivery_id: None,
                    signed_at: None,
                    signature_headers: vec![(header.to_owned(), hex_sig.to_owned())],
                    client_ip: req.peer_ip,
                }));
            }
        }
        Err(Rejection::BadSignature)
    }
}
