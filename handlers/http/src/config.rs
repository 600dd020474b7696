//! The http handler's `[[handlers]]` keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `kind = "http"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Any HTTP method; `POST` by default.
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL template. The scheme and host are literal (no placeholders); values in the path
    /// are percent-encoded and stay inside their segment (a segment a value makes empty, `.`
    /// or `..` is refused), values in the query are encoded as components. Must be `https://`
    /// (plain `http://` only to a loopback host).
    pub url: String,
    /// Query parameters: name → template, URL-encoded after rendering.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers: name → template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body template (`json` and `text` formats).
    pub body: Option<String>,
    /// Form fields: name → template (`form` format).
    #[serde(default)]
    pub form: BTreeMap<String, String>,
    /// `json` (default when there is a body), `form` or `text`.
    pub body_format: Option<BodyFormat>,
    /// Overrides the format's default `Content-Type`.
    pub content_type: Option<String>,
    /// Seconds per request (including an OAuth2 token fetch); 30 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// An extra CA certificate (PEM) to trust, for destinations with an internal CA. The
    /// public roots stay trusted; certificate verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
    /// Hosts besides the ones in `url` and `auth.token_url` this handler may reach, and the
    /// private ranges their names may resolve to: host names, IP addresses or CIDR ranges
    /// (`["crm.internal", "10.0.0.0/8"]`). See `docs/HANDLERS.md`, "Egress".
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// How to authenticate to the destination.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Keep a JSON response as `app_data.<name>.data` for later handlers; true by default.
    #[serde(default = "default_true")]
    pub capture_response: bool,
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `body` is a JSON template, values JSON-escaped; the result must parse as JSON.
    Json,
    /// `form` fields, `application/x-www-form-urlencoded`.
    Form,
    /// `body` is sent as rendered, `text/plain`.
    Text,
}

/// `auth = { type = … }`. Secret fields are `env:`/`file:` strings, resolved (with their key
/// path in any problem) when the handler is built.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// The user name (not secret).
        username: String,
        /// `env:`/`file:` reference.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// `env:`/`file:` reference.
        token: String,
    },
    /// A key in a header of the destination's choosing.
    ApiKey {
        /// The header name, e.g. `X-Api-Key`.
        header: String,
        /// `env:`/`file:` reference.
        key: String,
    },
    /// OAuth 2.0 client credentials; the token is cached until it expires and fetched again
    /// once when the destination answers 401.
    Oauth2 {
        /// The token endpoint.
        token_url: String,
        /// The client id (not secret).
        client_id: String,
        /// `env:`/`file:` reference.
        client_secret: String,
        /// Optional scope.
        scope: Option<String>,
    },
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_timeout() -> u64 {
    30
}

fn default_true() -> bool {
    true
}
