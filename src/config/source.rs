//! A source's verification settings: the sender preset, the resolved secrets and the
//! scheme-specific options of `[sources.scheme]`. Plain data: the verify stage builds the
//! verifier from a [`VerifierSpec`] (and reports what a preset cannot use).

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::secret::Secret;

/// A verification scheme plus where a sender's envelope keeps its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// `X-NextPhone-Signature: sha256=<hex>` over the body, optional Bearer token.
    NextPhone,
    /// `X-PhoneShield-Signature: <hex>` over the body.
    PhoneShield,
    /// Standard Webhooks (`webhook-*` or `svix-*` headers), HMAC `v1` and Ed25519 `v1a`.
    StandardWebhooks,
    /// `X-Hub-Signature-256: sha256=<hex>`.
    GitHub,
    /// `Stripe-Signature: t=…,v1=…`.
    Stripe,
    /// `X-Slack-Signature: v0=<hex>` over `v0:ts:body`.
    Slack,
    /// `X-Shopify-Hmac-Sha256: <base64>`.
    Shopify,
    /// `X-Twilio-Signature`: HMAC-SHA1 over the public URL and sorted form parameters.
    Twilio,
    /// `telnyx-signature-ed25519` over `ts|body`.
    Telnyx,
    /// `X-Plivo-Signature-V3` with nonce.
    Plivo,
    /// `x-retell-signature: v=<ms>,d=<hex>`.
    Retell,
    /// Vapi: secret header, Bearer, OAuth2 or its HMAC plan.
    Vapi,
    /// `X-Webhook-Signature: <hex>` over the body.
    Bland,
    /// Vonage signed webhooks: HS256 JWT in `Authorization`.
    Vonage,
    /// Zoom `x-zm-signature: v0=<hex>` plus the URL validation challenge.
    Zoom,
    /// RingCentral `Validation-Token` handshake and `Verification-Token` check.
    RingCentral,
    /// Call Telemetry's Webhook app: Bearer, Basic or OAuth2 client credentials.
    CallTelemetry,
    /// HTTP Basic authentication.
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A static API key in a configurable header.
    ApiKey,
    /// Everything configured by hand in `[sources.scheme]`.
    Generic,
}

impl Preset {
    /// Every preset name accepted in `sources[].preset`.
    pub const NAMES: &'static [&'static str] = &[
        "nextphone",
        "phoneshield",
        "standard-webhooks",
        "github",
        "stripe",
        "slack",
        "shopify",
        "twilio",
        "telnyx",
        "plivo",
        "retell",
        "vapi",
        "bland",
        "vonage",
        "zoom",
        "ringcentral",
        "calltelemetry",
        "basic",
        "bearer",
        "api-key",
        "generic",
    ];

    /// Every preset, in the order of [`Preset::NAMES`].
    pub const ALL: &'static [Preset] = &[
        Self::NextPhone,
        Self::PhoneShield,
        Self::StandardWebhooks,
        Self::GitHub,
        Self::Stripe,
        Self::Slack,
        Self::Shopify,
        Self::Twilio,
        Self::Telnyx,
        Self::Plivo,
        Self::Retell,
        Self::Vapi,
        Self::Bland,
        Self::Vonage,
        Self::Zoom,
        Self::RingCentral,
        Self::CallTelemetry,
        Self::Basic,
        Self::Bearer,
        Self::ApiKey,
        Self::Generic,
    ];

    /// Parse a configured preset name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The configured name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NextPhone => "nextphone",
            Self::PhoneShield => "phoneshield",
            Self::StandardWebhooks => "standard-webhooks",
            Self::GitHub => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::Twilio => "twilio",
            Self::Telnyx => "telnyx",
            Self::Plivo => "plivo",
            Self::Retell => "retell",
            Self::Vapi => "vapi",
            Self::Bland => "bland",
            Self::Vonage => "vonage",
            Self::Zoom => "zoom",
            Self::RingCentral => "ringcentral",
            Self::CallTelemetry => "calltelemetry",
            Self::Basic => "basic",
            Self::Bearer => "bearer",
            Self::ApiKey => "api-key",
            Self::Generic => "generic",
        }
    }
}

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

impl VerifierSpec {
    /// The default replay window (5 minutes, both directions), as the reference libraries use.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
}

/// Scheme-specific settings of a source (`[sources.scheme]`). Which keys a preset reads is
/// listed in `docs/SIGNATURES.md`; a key the preset does not read is reported as a problem, so
/// a typo or a copy-pasted table cannot silently weaken verification.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchemeOptions {
    /// `vapi`: `secret` (default; token verbatim in `x-vapi-secret`), `bearer`, `hmac` or
    /// `oauth2`. `calltelemetry`: `bearer` (default), `basic` or `oauth2`.
    pub mode: Option<String>,
    /// Header carrying the signature (`generic`, required; `vapi` hmac, default `x-signature`),
    /// the token (`vapi` secret mode, default `x-vapi-secret`; `bearer`/`calltelemetry`/`vapi`
    /// bearer, default `Authorization`) or the key (`api-key`, default `X-API-Key`).
    pub header: Option<String>,
    /// Text before the encoded signature, e.g. `sha256=` (`generic`, `vapi` hmac).
    pub prefix: Option<String>,
    /// `hex` (default) or `base64` (`generic`, `vapi` hmac).
    pub encoding: Option<String>,
    /// `sha256` (default), `sha512`, or `sha1` where a sender forces it (`generic`, `vapi`).
    pub algorithm: Option<String>,
    /// What is signed, with placeholders `{body}`, `{timestamp}`, `{id}` (alias `{svix-id}`),
    /// `{url}`, `{method}`; `{{`/`}}` are literal braces. Default `{body}` (`generic`), or
    /// `{timestamp}.{body}` (`vapi` hmac with `include_timestamp`).
    pub signed_content: Option<String>,
    /// Header carrying the signed timestamp (`generic`; `vapi` hmac default `x-timestamp`).
    pub timestamp_header: Option<String>,
    /// `seconds` (generic default), `milliseconds`, or `auto` (vapi default: values ≥ 10^11 are
    /// milliseconds).
    pub timestamp_unit: Option<String>,
    /// Header carrying a signed delivery id, for `{id}` (`generic`).
    pub id_header: Option<String>,
    /// `vapi` hmac: whether the timestamp is signed (default true).
    pub include_timestamp: Option<bool>,
    /// The configured secrets are base64 text; the key is the decoded bytes (`generic`, `vapi`).
    pub secret_is_base64: Option<bool>,
    /// Basic-auth user name (`basic`, `calltelemetry` basic mode); the passwords are `secrets`.
    pub username: Option<String>,
    /// `twilio`: also try the URL with the default port added/removed (default true), as
    /// Twilio's own SDKs do.
    pub url_port_variants: Option<bool>,
    /// `vonage`: refuse tokens without a `payload_hash` claim (default false; a present claim is
    /// always checked).
    pub require_payload_hash: Option<bool>,
    /// `vonage`: the account API key the JWT's `api_key` claim must name.
    pub api_key: Option<String>,
    /// OAuth2 client-credentials clients allowed to fetch bearer tokens for this source
    /// (`bearer`, `calltelemetry`, `vapi`).
    #[serde(default)]
    pub oauth_clients: Vec<OAuthClient>,
}

/// One OAuth2 client allowed to obtain tokens for a source. Only the SHA-256 of the client
/// secret is configured, so the config never holds a usable secret.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// The `client_id` the sender presents.
    pub client_id: String,
    /// Lowercase hex SHA-256 of the client secret (see `oauth::hash_client_secret`).
    pub client_secret_sha256: String,
}
