//! Failures inside the http handler, each mapped once to retryable or permanent.

use std::time::Duration;

use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// What went wrong sending one request. Messages name hosts, headers and variables, never
/// payload values or response bodies.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A template could not be rendered for this event (a missing variable).
    #[error("{what}: {source}")]
    Template {
        /// Which template (`url`, `body`, `headers.X-Id`).
        what: String,
        /// The template error (names the variable).
        source: TemplateError,
    },
    /// The rendered JSON body does not parse.
    #[error("rendered body is not valid JSON (a placeholder outside quotes? use `| tojson`)")]
    BodyNotJson,
    /// A rendered header value holds characters a header cannot.
    #[error("header {0} has characters not allowed in a header value")]
    BadHeader(String),
    /// Connecting, sending or reading failed.
    #[error(transparent)]
    Network(#[from] wardhook_sdk::http::Unreachable),
    /// The destination answered with a failure status.
    #[error("HTTP {status} from {host}")]
    Status {
        /// The status code.
        status: u16,
        /// The destination host.
        host: String,
        /// The destination's `Retry-After`, parsed.
        retry_after: Option<Duration>,
    },
    /// The egress allowlist refused the destination (not configured, not in `allow_hosts`,
    /// or resolving to addresses not allowed): permanent.
    #[error(transparent)]
    Egress(#[from] wardhook_sdk::http::EgressRefused),
    /// The OAuth2 token endpoint failed.
    #[error("OAuth2 token request: {0}")]
    Token(Box<HttpError>),
    /// The OAuth2 token endpoint answered without a usable token.
    #[error("OAuth2 token endpoint {0} returned no access_token")]
    TokenMissing(String),
}

impl From<HttpError> for HandlerError {
    fn from(e: HttpError) -> Self {
        let reason = e.to_string();
        match e {
            HttpError::Network(_) => HandlerError::retryable(reason),
            HttpError::Status {
                status,
                retry_after,
                ..
            } if status == 408 || status == 429 || status >= 500 => HandlerError::Retryable {
                reason,
                retry_after,
            },
            HttpError::Token(inner) => match HandlerError::from(*inner) {
                HandlerError::Retryable { retry_after, .. } => HandlerError::Retryable {
                    reason,
                    retry_after,
                },
                HandlerError::Permanent { .. } => HandlerError::permanent(reason),
            },
            _ => HandlerError::permanent(reason),
        }
    }
}
