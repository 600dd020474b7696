//! Failures talking to HubSpot, each mapped once to retryable or permanent.

use std::time::Duration;

use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// HubSpot's rate limits are per 10-second window: without a `Retry-After`, a 429 is retried
/// after one window.
pub const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(10);

/// What went wrong upserting one contact. Messages name hosts, status codes and property
/// names, never payload values or response bodies (those echo the patient's record).
#[derive(Debug, thiserror::Error)]
pub enum HubSpotError {
    /// Connecting, sending or reading failed.
    #[error(transparent)]
    Network(#[from] wardhook_sdk::http::Unreachable),
    /// The egress allowlist refused the API host (its name resolves to addresses not listed
    /// in `allow_hosts`): permanent.
    #[error(transparent)]
    Egress(#[from] wardhook_sdk::http::EgressRefused),
    /// The token was refused. Private-app tokens do not expire on their own and cannot be
    /// refreshed, so retrying cannot help: someone has to issue a new one.
    #[error("HTTP 401 from {host}: the private-app token was rejected (revoked, rotated or wrong); private-app tokens do not refresh, create a new one and update the secret")]
    Unauthorized {
        /// The API host.
        host: String,
    },
    /// The token lacks a scope.
    #[error("HTTP 403 from {host}: the private-app token lacks a scope (crm.objects.contacts.read/write)")]
    Forbidden {
        /// The API host.
        host: String,
    },
    /// HubSpot rejected the request's content (unknown property, bad value).
    #[error("HTTP {status} from {host}: validation error (check the property mapping)")]
    Validation {
        /// 400 or 422.
        status: u16,
        /// The API host.
        host: String,
    },
    /// Any other failure status.
    #[error("HTTP {status} from {host}")]
    Status {
        /// The status code.
        status: u16,
        /// The API host.
        host: String,
        /// `Retry-After`, parsed (HubSpot's window when it sent none on a 429).
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body was not the JSON HubSpot documents.
    #[error("unexpected response from {host} ({what})")]
    BadResponse {
        /// The API host.
        host: String,
        /// What was missing.
        what: &'static str,
    },
    /// A property template could not be rendered for this event.
    #[error("properties.{property}: {source}")]
    Template {
        /// The HubSpot property.
        property: String,
        /// The template error (names the variable, never its value).
        source: TemplateError,
    },
    /// Nothing to match or create a contact on.
    #[error("the caller has neither an e-mail address nor a phone number: no contact to match or create")]
    NoIdentity,
}

impl From<HubSpotError> for HandlerError {
    fn from(e: HubSpotError) -> Self {
        let reason = e.to_string();
        match e {
            HubSpotError::Network(_) => HandlerError::retryable(reason),
            HubSpotError::Status {
                status,
                retry_after,
                ..
            } if status == 408 || status == 429 || status >= 500 => HandlerError::Retryable {
                reason,
                retry_after,
            },
            _ => HandlerError::permanent(reason),
        }
    }
}
