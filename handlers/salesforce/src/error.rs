//! Failures talking to Salesforce, each mapped once to retryable or permanent.

use std::time::Duration;

use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// What went wrong creating or updating one Lead. Messages name hosts, status codes and
/// Salesforce's `errorCode`s (a fixed vocabulary), never payload values or response messages
/// (those echo field values).
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// Connecting, sending or reading failed.
    #[error(transparent)]
    Network(#[from] wardhook_sdk::http::Unreachable),
    /// The egress allowlist refused the host (its name resolves to addresses not listed in
    /// `allow_hosts`): permanent.
    #[error(transparent)]
    Egress(#[from] wardhook_sdk::http::EgressRefused),
    /// The token endpoint refused the credentials (`invalid_grant`, `invalid_client`, …).
    #[error("OAuth2 token endpoint {host} refused the credentials (HTTP {status}{})", code_suffix(.code))]
    TokenRefused {
        /// The token host.
        host: String,
        /// The status code.
        status: u16,
        /// OAuth2 `error`, when it was a plain code.
        code: Option<String>,
    },
    /// The token endpoint failed in a way that may pass.
    #[error("OAuth2 token endpoint {host}: HTTP {status}")]
    TokenUnavailable {
        /// The token host.
        host: String,
        /// The status code.
        status: u16,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
    },
    /// The token endpoint answered 2xx without an `access_token`.
    #[error("OAuth2 token endpoint {0} returned no access_token")]
    TokenMissing(String),
    /// A freshly fetched token was refused too: the integration user or app lacks access.
    #[error("HTTP 401 from {host} with a freshly issued token (INVALID_SESSION_ID): check the connected app's user and permissions")]
    SessionRefused {
        /// The instance host.
        host: String,
    },
    /// Salesforce rejected the Lead (required field, validation rule, duplicate rule, …).
    #[error("HTTP {status} from {host}{}", code_suffix(.code))]
    Rejected {
        /// The status code.
        status: u16,
        /// The instance host.
        host: String,
        /// Salesforce's first `errorCode`.
        code: Option<String>,
    },
    /// A failure that may pass (429, 5xx, `REQUEST_LIMIT_EXCEEDED`).
    #[error("HTTP {status} from {host}{}", code_suffix(.code))]
    Unavailable {
        /// The status code.
        status: u16,
        /// The instance host.
        host: String,
        /// Salesforce's first `errorCode`.
        code: Option<String>,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body was not what Salesforce documents.
    #[error("unexpected response from {host} ({what})")]
    BadResponse {
        /// The host.
        host: String,
        /// What was missing.
        what: &'static str,
    },
    /// A field template could not be rendered for this event.
    #[error("fields.{field}: {source}")]
    Template {
        /// The Lead field.
        field: String,
        /// The template error (names the variable, never its value).
        source: TemplateError,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

impl From<SalesforceError> for HandlerError {
    fn from(e: SalesforceError) -> Self {
        let reason = e.to_string();
        match e {
            SalesforceError::Network(_) => HandlerError::retryable(reason),
            SalesforceError::Unavailable { retry_after, .. }
            | SalesforceError::TokenUnavailable { retry_after, .. } => HandlerError::Retryable {
                reason,
                retry_after,
            },
            _ => HandlerError::permanent(reason),
        }
    }
}
