//! Failures posting to Slack, each mapped once to retryable or permanent.

use std::time::Duration;

use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// What went wrong posting one message. Messages name the host, status codes and Slack's error
/// codes (`channel_is_archived`), never the webhook URL (it is the credential) or payload data.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Connecting, sending or reading failed.
    #[error(transparent)]
    Network(#[from] wardhook_sdk::http::Unreachable),
    /// The egress allowlist refused the webhook host (its name resolves to addresses not
    /// listed in `allow_hosts`): permanent.
    #[error(transparent)]
    Egress(#[from] wardhook_sdk::http::EgressRefused),
    /// Slack refused the message or the webhook (`invalid_payload`, `no_service`,
    /// `channel_is_archived`, …): retrying the same message cannot help.
    #[error("HTTP {status} from {host}{}", code.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Rejected {
        /// The status code.
        status: u16,
        /// The webhook host.
        host: String,
        /// Slack's error code, when the body was one.
        code: Option<String>,
    },
    /// Rate limited (429) or Slack is having trouble (5xx).
    #[error("HTTP {status} from {host}")]
    Unavailable {
        /// The status code.
        status: u16,
        /// The webhook host.
        host: String,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
    },
    /// The title template could not be rendered for this event.
    #[error("title: {0}")]
    Template(TemplateError),
}

impl From<SlackError> for HandlerError {
    fn from(e: SlackError) -> Self {
        let reason = e.to_string();
        match e {
            SlackError::Network(_) => HandlerError::retryable(reason),
            SlackError::Unavailable { retry_after, .. } => HandlerError::Retryable {
                reason,
                retry_after,
            },
            _ => HandlerError::permanent(reason),
        }
    }
}
