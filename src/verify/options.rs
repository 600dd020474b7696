//! The `[sources.scheme]` table and the per-preset validation that turns a [`VerifierSpec`] into
//! a ready-to-run scheme. Every problem is collected with its key path, so `check-config` can
//! report them all at once; once compiled, verification never re-parses configuration.

use super::generic::{HmacTemplate, Template};
use super::header_hmac::HeaderHmac;
use super::plivo::Plivo;
use super::scheme::Scheme;
use super::standard_webhooks::{StandardWebhooks, SwKey};
use super::telnyx::Telnyx;
use super::tokens::{TokenCheck, TokenScheme};
use super::twilio::Twilio;
use super::util::{Algorithm, Encoding, TimeUnit};
use super::vonage::Vonage;
use super::zoom::Zoom;
use super::{Preset, SpecProblem, VerifierSpec};
use crate::secret::Secret;

pub use crate::config::{OAuthClient, SchemeOptions};

impl SchemeOptions {
    /// `(toml key, is set)` for every option, for the "not used by this preset" check.
    fn set_keys(&self) -> Vec<&'static str> {
        let all = [
            ("mode", self.mode.is_some()),
            ("header", self.header.is_some()),
            ("prefix", self.prefix.is_some()),
            ("encoding", self.encoding.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("signed_content", self.signed_content.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("timestamp_unit", self.timestamp_unit.is_some()),
            ("id_header", self.id_header.is_some()),
            ("include_timestamp", self.include_timestamp.is_some()),
            ("secret_is_base64", self.secret_is_base64.is_some()),
            ("username", self.username.is_some()),
            ("url_port_variants", self.url_port_variants.is_some()),
            ("require_payload_hash", self.require_payload_hash.is_some()),
            ("api_key", self.api_key.is_some()),
            ("oauth_clients", !self.oauth_clients.is_empty()),
        ];
        all.iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The keys of `[sources.scheme]` each preset reads.
fn allowed_keys(preset: Preset) -> &'static [&'static str] {
    match preset {
        Preset::Twilio => &["url_port_variants"],
        Preset::Vonage => &["require_payload_hash", "api_key"],
        Preset::Basic => &["username"],
        Preset::Bearer => &["header", "oauth_clients"],
        Preset::ApiKey => &["header"],
        Preset::CallTelemetry => &["mode", "header", "username", "oauth_clients"],
        Preset::Vapi => &[
            "mode",
            "header",
            "prefix",
            "encoding",
            "algorithm",
            "signed_content",
            "timestamp_header",
            "timestamp_unit",
            "include_timestamp",
            "secret_is_base64",
            "oauth_clients",
        ],
        Preset::Generic => &[
            "header",
            "prefix",
            "encoding",
            "algorithm",
            "signed_content",
            "timestamp_header",
            "timestamp_unit",
            "id_header",
            "secret_is_base64",
        ],
        _ => &[],
    }
}

/// Presets for which `token` is meaningful: NextPhone's extra Bearer check, and the token-only
/// presets where it is one more accepted token.
fn reads_token(preset: Preset) -> bool {
    matches!(
        preset,
        Preset::NextPhone
            | Preset::Bearer
            | Preset::ApiKey
            | Preset::RingCentral
            | Preset::CallTelemetry
            | Preset::Vapi
    )
}

/// A spec compiled for checking requests and signing: the preset's [`Scheme`].
pub(crate) type CompiledScheme = Box<dyn Scheme>;

fn boxed(scheme: impl Scheme + 'static) -> CompiledScheme {
    Box::new(scheme)
}

/// Collects problems while compiling.
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem::new(path, message));
    }
}

/// Validate `spec` for its preset and compile it; every problem is returned.
pub(crate) fn compile(spec: &VerifierSpec) -> Result<CompiledScheme, Vec<SpecProblem>> {
    let mut p = Problems(Vec::new());
    let o = &spec.scheme;
    let preset = spec.preset;

    for key in o.set_keys() {
        if !allowed_keys(preset).contains(&key) {
            p.add(
                format!("scheme.{key}"),
                format!("not used by preset {}", preset.name()),
            );
        }
    }
    if spec.token.is_some() && !reads_token(preset) {
        p.add(
            "token",
            format!("preset {} does not check a token", preset.name()),
        );
    }
    for (i, s) in spec.secrets.iter().enumerate() {
        if s.expose().is_empty() {
            p.add(format!("secrets[{i}]"), "is empty");
        }
    }
    check_oauth_clients(o, &mut p);
    if !spec.allow_ips.is_empty() || !spec.trusted_proxies.is_empty() {
        // Nothing to validate beyond what IpNet parsing already did; kept for symmetry.
    }

    let needs_public_url = matches!(preset, Preset::Twilio | Preset::Plivo);
    if needs_public_url {
        match &spec.public_url {
            None => p.add(
                "public_url",
                format!(
                    "preset {} signs the URL the sender calls; set public_url to it \
                     (e.g. https://clinic.example.org/hooks/{})",
                    preset.name(),
                    spec.source
                ),
            ),
            Some(u) => check_url(u, &mut p),
        }
    }

    let secrets = spec.secrets.clone();
    let require_secret = |p: &mut Problems| {
        if spec.secrets.is_empty() {
            p.add(
                "secrets",
                format!("preset {} needs at least one secret", preset.name()),
            );
        }
    };

    let compiled = match preset {
        Preset::NextPhone => {
            require_secret(&mut p);
            Some(boxed(HeaderHmac::nextphone(secrets, spec.token.clone())))
        }
        Preset::PhoneShield => {
            require_secret(&mut p);
            Some(boxed(HeaderHmac::phoneshield(secrets)))
        }
        Preset::Bland => {
            require_secret(&mut p);
            Some(boxed(HeaderHmac::bland(secrets)))
        }
        Preset::GitHub => {
            require_secret(&mut p);
            Some(boxed(HeaderHmac::github(secrets)))
        }
        Preset::Shopify => {
            require_secret(&mut p);
            Some(boxed(HeaderHmac::shopify(secrets)))
        }
        Preset::Stripe => {
            require_secret(&mut p);
            Some(boxed(super::stripe::scheme(secrets)))
        }
        Preset::Slack => {
            require_secret(&mut p);
            Some(boxed(super::slack::scheme(secrets)))
        }
        Preset::Retell => {
            require_secret(&mut p);
            Some(boxed(super::retell::scheme(secrets)))
        }
        Preset::Zoom => {
            require_secret(&mut p);
            Some(boxed(Zoom::new(secrets)))
        }
        Preset::StandardWebhooks => {
            require_secret(&mut p);
            let mut keys = Vec::new();
            for (i, s) in spec.secrets.iter().enumerate() {
                match SwKey::parse(s) {
                    Ok(k) => keys.push(k),
                    Err(msg) => p.add(format!("secrets[{i}]"), msg),
                }
            }
            Some(boxed(StandardWebhooks { keys }))
        }
        Preset::Telnyx => {
            require_secret(&mut p);
            let mut keys = Vec::new();
            for (i, s) in spec.secrets.iter().enumerate() {
                match super::telnyx::parse_public_key(s.expose()) {
                    Some(k) => keys.push(k),
                    None => p.add(
                        format!("secrets[{i}]"),
                        "must be the Telnyx public key: base64 of 32 raw Ed25519 bytes, \
                         or of its SubjectPublicKeyInfo, or PEM",
                    ),
                }
            }
            Some(boxed(Telnyx::new(keys)))
        }
        Preset::Twilio => {
            require_secret(&mut p);
            spec.public_url.as_ref().map(|u| {
                boxed(Twilio {
                    keys: secrets,
                    public_url: u.clone(),
                    port_variants: o.url_port_variants.unwrap_or(true),
                })
            })
        }
        Preset::Plivo => {
            require_secret(&mut p);
            spec.public_url.as_ref().map(|u| {
                boxed(Plivo {
                    keys: secrets,
                    public_url: u.clone(),
                })
            })
        }
        Preset::Vonage => {
            require_secret(&mut p);
            Some(boxed(Vonage {
                keys: secrets,
                require_payload_hash: o.require_payload_hash.unwrap_or(false),
                api_key: o.api_key.clone(),
            }))
        }
        Preset::RingCentral => {
            require_tokens(spec, &mut p, false);
            Some(boxed(TokenScheme::new(spec, TokenCheck::RingCentral)))
        }
        Preset::Basic => {
            require_secret(&mut p);
            let user = basic_username(o, &mut p);
            Some(boxed(TokenScheme::new(
                spec,
                TokenCheck::Basic { username: user },
            )))
        }
        Preset::Bearer => {
            require_tokens(spec, &mut p, true);
            let header = header_name(o.header.as_deref(), "authorization", &mut p);
            Some(boxed(TokenScheme::new(spec, TokenCheck::Bearer { header })))
        }
        Preset::ApiKey => {
            require_tokens(spec, &mut p, false);
            let header = header_name(o.header.as_deref(), "x-api-key", &mut p);
            Some(boxed(TokenScheme::new(spec, TokenCheck::Plain { header })))
        }
        Preset::CallTelemetry => compile_calltelemetry(spec, &mut p),
        Preset::Vapi => compile_vapi(spec, &mut p),
        Preset::Generic => compile_generic(spec, &mut p),
    };

    match compiled {
        Some(c) if p.0.is_empty() => Ok(c),
        _ => {
            if p.0.is_empty() {
                p.add("preset", "could not be compiled");
            }
            Err(p.0)
        }
    }
}

fn check_url(u: &url::Url, p: &mut Problems) {
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        p.add("public_url", "must be an http(s) URL with a host");
    }
}

fn check_oauth_clients(o: &SchemeOptions, p: &mut Problems) {
    let mut seen = std::collections::HashSet::new();
    for (i, c) in o.oauth_clients.iter().enumerate() {
        if c.client_id.is_empty() || c.client_id.len() > 200 || c.client_id.contains(':') {
            p.add(
                format!("scheme.oauth_clients[{i}].client_id"),
                "must be 1-200 characters without ':'",
            );
        }
        if !seen.insert(c.client_id.as_str()) {
            p.add(
                format!("scheme.oauth_clients[{i}].client_id"),
                "appears twice",
            );
        }
        let h = &c.client_secret_sha256;
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.add(
                format!("scheme.oauth_clients[{i}].client_secret_sha256"),
                "must be 64 hex digits: the SHA-256 of the client secret, not the secret",
            );
        }
    }
}

/// Token-only presets need a token from `secrets`/`token`, or (where OAuth2 is allowed)
/// at least one OAuth2 client.
fn require_tokens(spec: &VerifierSpec, p: &mut Problems, oauth_ok: bool) {
    let has_static = !spec.secrets.is_empty() || spec.token.is_some();
    let has_oauth = oauth_ok && !spec.scheme.oauth_clients.is_empty();
    if !has_static && !has_oauth {
        let also = if oauth_ok {
            " (or scheme.oauth_clients)"
        } else {
            ""
        };
        p.add(
            "secrets",
            format!(
                "preset {} needs at least one token in secrets{also}",
                spec.preset.name()
            ),
        );
    }
}

fn basic_username(o: &SchemeOptions, p: &mut Problems) -> String {
    match &o.username {
        Some(u) if !u.is_empty() && !u.contains(':') => u.clone(),
        _ => {
            p.add(
                "scheme.username",
                "basic authentication needs a user name without ':'",
            );
            String::new()
        }
    }
}

/// A configured header name, lowercased; invalid names are problems.
fn header_name(configured: Option<&str>, default: &str, p: &mut Problems) -> String {
    let name = configured.unwrap_or(default);
    if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        p.add("scheme.header", "is not a valid HTTP header name");
    }
    name.to_ascii_lowercase()
}

fn opt_header_name(configured: Option<&str>, key: &str, p: &mut Problems) -> Option<String> {
    let name = configured?;
    if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        p.add(format!("scheme.{key}"), "is not a valid HTTP header name");
    }
    Some(name.to_ascii_lowercase())
}

fn compile_calltelemetry(spec: &VerifierSpec, p: &mut Problems) -> Option<CompiledScheme> {
    let o = &spec.scheme;
    let check = match o.mode.as_deref().unwrap_or("bearer") {
        "bearer" => {
            require_tokens(spec, p, true);
            TokenCheck::Bearer {
                header: header_name(o.header.as_deref(), "authorization", p),
            }
        }
        "oauth2" => {
            if o.oauth_clients.is_empty() {
                p.add(
                    "scheme.oauth_clients",
                    "oauth2 mode needs at least one client",
                );
            }
            TokenCheck::Bearer {
                header: header_name(o.header.as_deref(), "authorization", p),
            }
        }
        "basic" => {
            if spec.secrets.is_empty() {
                p.add("secrets", "basic mode needs at least one password");
            }
            TokenCheck::Basic {
                username: basic_username(o, p),
            }
        }
        other => {
            p.add(
                "scheme.mode",
                format!("unknown mode {other:?}; expected bearer, basic or oauth2"),
            );
            return None;
        }
    };
    Some(boxed(TokenScheme::new(spec, check)))
}

fn compile_vapi(spec: &VerifierSpec, p: &mut Problems) -> Option<CompiledScheme> {
    let o = &spec.scheme;
    let mode = o.mode.as_deref().unwrap_or("secret");
    let hmac_only = [
        ("prefix", o.prefix.is_some()),
        ("encoding", o.encoding.is_some()),
        ("algorithm", o.algorithm.is_some()),
        ("signed_content", o.signed_content.is_some()),
        ("timestamp_header", o.timestamp_header.is_some()),
        ("timestamp_unit", o.timestamp_unit.is_some()),
        ("include_timestamp", o.include_timestamp.is_some()),
        ("secret_is_base64", o.secret_is_base64.is_some()),
    ];
    if mode != "hmac" {
        for (key, set) in hmac_only {
            if set {
                p.add(format!("scheme.{key}"), "only used with mode = \"hmac\"");
            }
        }
    }
    match mode {
        "secret" => {
            require_tokens(spec, p, false);
            Some(boxed(TokenScheme::new(
                spec,
                TokenCheck::Plain {
                    header: header_name(o.header.as_deref(), "x-vapi-secret", p),
                },
            )))
        }
        "bearer" => {
            require_tokens(spec, p, true);
            Some(boxed(TokenScheme::new(
                spec,
                TokenCheck::Bearer {
                    header: header_name(o.header.as_deref(), "authorization", p),
                },
            )))
        }
        "oauth2" => {
            if o.oauth_clients.is_empty() {
                p.add(
                    "scheme.oauth_clients",
                    "oauth2 mode needs at least one client",
                );
            }
            Some(boxed(TokenScheme::new(
                spec,
                TokenCheck::Bearer {
                    header: header_name(o.header.as_deref(), "authorization", p),
                },
            )))
        }
        "hmac" => {
            if spec.token.is_some() {
                p.add("token", "not used with mode = \"hmac\"");
            }
            let include_ts = o.include_timestamp.unwrap_or(true);
            let default_template = if include_ts {
                "{timestamp}.{body}"
            } else {
                "{body}"
            };
            let default_ts_header = include_ts.then_some("x-timestamp");
            template_scheme(
                spec,
                p,
                TemplateDefaults {
                    header: Some("x-signature"),
                    template: default_template,
                    timestamp_header: default_ts_header,
                    unit: TimeUnit::Auto,
                },
            )
        }
        other => {
            p.add(
                "scheme.mode",
                format!("unknown mode {other:?}; expected secret, bearer, hmac or oauth2"),
            );
            None
        }
    }
}

fn compile_generic(spec: &VerifierSpec, p: &mut Problems) -> Option<CompiledScheme> {
    if spec.scheme.header.is_none() {
        p.add(
            "scheme.header",
            "the generic preset needs the name of the signature header",
        );
    }
    template_scheme(
        spec,
        p,
        TemplateDefaults {
            header: None,
            template: "{body}",
            timestamp_header: None,
            unit: TimeUnit::Seconds,
        },
    )
}

struct TemplateDefaults {
    header: Option<&'static str>,
    template: &'static str,
    timestamp_header: Option<&'static str>,
    unit: TimeUnit,
}

/// Shared by `generic` and Vapi's HMAC plan.
fn template_scheme(
    spec: &VerifierSpec,
    p: &mut Problems,
    d: TemplateDefaults,
) -> Option<CompiledScheme> {
    let o = &spec.scheme;
    require_secret_generic(spec, p);
    let header = opt_header_name(o.header.as_deref(), "header", p)
        .or_else(|| d.header.map(str::to_owned))
        .unwrap_or_default();
    let algorithm = match o.algorithm.as_deref() {
        None => Algorithm::Sha256,
        Some(a) => Algorithm::parse(a).unwrap_or_else(|| {
            p.add("scheme.algorithm", "expected sha256, sha512 or sha1");
            Algorithm::Sha256
        }),
    };
    let encoding = match o.encoding.as_deref() {
        None => Encoding::Hex,
        Some(e) => Encoding::parse(e).unwrap_or_else(|| {
            p.add("scheme.encoding", "expected hex or base64");
            Encoding::Hex
        }),
    };
    let unit = match o.timestamp_unit.as_deref() {
        None => d.unit,
        Some(u) => TimeUnit::parse(u).unwrap_or_else(|| {
            p.add(
                "scheme.timestamp_unit",
                "expected seconds, milliseconds or auto",
            );
            d.unit
        }),
    };
    let template_text = o.signed_content.as_deref().unwrap_or(d.template);
    let template = match Template::parse(template_text) {
        Ok(t) => t,
        Err(e) => {
            p.add("scheme.signed_content", e.to_string());
            Template::default()
        }
    };
    let timestamp_header = opt_header_name(o.timestamp_header.as_deref(), "timestamp_header", p)
        .or_else(|| d.timestamp_header.map(str::to_owned));
    let id_header = opt_header_name(o.id_header.as_deref(), "id_header", p);
    if template.uses_timestamp() && timestamp_header.is_none() {
        p.add(
            "scheme.timestamp_header",
            "signed_content uses {timestamp}; name the header that carries it",
        );
    }
    if !template.uses_timestamp() && o.timestamp_header.is_some() {
        p.add(
            "scheme.timestamp_header",
            "signed_content has no {timestamp}, so this timestamp would not be signed and \
             checking it would prove nothing",
        );
    }
    if template.uses_id() && id_header.is_none() {
        p.add(
            "scheme.id_header",
            "signed_content uses {id}; name the header that carries it",
        );
    }
    if template.uses_url() {
        match &spec.public_url {
            None => p.add(
                "public_url",
                "signed_content uses {url}; set the URL the sender signs",
            ),
            Some(u) => check_url(u, p),
        }
    }
    if !template.uses_body() {
        p.add(
            "scheme.signed_content",
            "must include {body}, or the body would not be authenticated",
        );
    }
    let base64_keys = o.secret_is_base64.unwrap_or(false);
    let mut keys = Vec::new();
    for (i, s) in spec.secrets.iter().enumerate() {
        if base64_keys {
            match std::str::from_utf8(s.expose())
                .ok()
                .and_then(|t| super::util::b64_decode(t.trim()))
            {
                Some(k) if !k.is_empty() => keys.push(Secret::new(k)),
                _ => p.add(
                    format!("secrets[{i}]"),
                    "secret_is_base64 is set but this is not base64",
                ),
            }
        } else {
            keys.push(s.clone());
        }
    }
    Some(boxed(HmacTemplate {
        keys,
        header,
        prefix: o.prefix.clone().unwrap_or_default(),
        encoding,
        algorithm,
        template,
        timestamp_header,
        unit,
        id_header,
        public_url: spec.public_url.clone(),
    }))
}

fn require_secret_generic(spec: &VerifierSpec, p: &mut Problems) {
    if spec.secrets.is_empty() {
        p.add(
            "secrets",
            format!("preset {} needs at least one secret", spec.preset.name()),
        );
    }
}
