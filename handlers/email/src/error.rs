//! Failures rendering or sending one message, each mapped once to retryable or permanent.

use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// What went wrong. Messages name the SMTP host, reply codes and config keys, never
/// addresses, subjects or bodies (they hold patient data).
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// A template could not be rendered for this event.
    #[error("{key}: {source}")]
    Template {
        /// The template's key (`subject`, `to[0]`).
        key: String,
        /// The template error (names the variable, never its value).
        source: TemplateError,
    },
    /// A recipient template rendered something that is not an address.
    #[error("{0}: the rendered value is not an e-mail address")]
    BadAddress(String),
    /// Every recipient template rendered empty.
    #[error("no recipient for this event (every to/cc/bcc entry rendered empty)")]
    NoRecipient,
    /// The message could not be assembled.
    #[error("the message could not be built")]
    Build,
    /// The server answered 4xx: try again later.
    #[error("SMTP {code} from {host} (temporary)")]
    Transient {
        /// The reply code.
        code: String,
        /// The SMTP host.
        host: String,
    },
    /// The server answered 5xx: the message will not be accepted as it is.
    #[error("SMTP {code} from {host}")]
    Rejected {
        /// The reply code.
        code: String,
        /// The SMTP host.
        host: String,
    },
    /// TLS could not be set up (certificate not trusted, name mismatch, STARTTLS not offered).
    #[error(
        "TLS with {host} failed (untrusted or mismatched certificate, or STARTTLS not offered)"
    )]
    Tls {
        /// The SMTP host.
        host: String,
    },
    /// Connecting, the timeout, or the connection dropping.
    #[error("{} talking to {host}", if *.timed_out { "timeout" } else { "network error" })]
    Network {
        /// The SMTP host.
        host: String,
        /// Whether it was the timeout.
        timed_out: bool,
    },
}

impl From<EmailError> for HandlerError {
    fn from(e: EmailError) -> Self {
        let reason = e.to_string();
        match e {
            EmailError::Transient { .. } | EmailError::Network { .. } => {
                HandlerError::retryable(reason)
            }
            _ => HandlerError::permanent(reason),
        }
    }
}
