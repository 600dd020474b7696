//! Failures building or sending one message, each mapped once to retryable or permanent.

use wardhook_sdk::template::TemplateError;
use wardhook_sdk::HandlerError;

/// What went wrong. Messages name the destination (`host:port`), ACK codes and config keys,
/// never message content: an `MSA-3` or `ERR` text from the receiver may quote the patient, so
/// it is not kept either.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Hl7Error {
    /// A segment template could not be rendered for this event.
    #[error("{key}: {source}")]
    Template {
        /// The template's key (`segments[2]`, `message` for a default segment).
        key: String,
        /// The template error (names the variable, never its value).
        source: TemplateError,
    },
    /// A rendered segment is not one well-formed body segment.
    #[error("{key}: {reason}")]
    Segment {
        /// The template's key.
        key: String,
        /// What is wrong with the rendered text (never the text).
        reason: &'static str,
    },
    /// No connection: refused, unreachable, name not resolved, or the connect timeout.
    #[error("cannot connect to {destination}{}", if *.timed_out { " (timeout)" } else { "" })]
    Connect {
        /// `host:port`.
        destination: String,
        /// Whether it was the timeout.
        timed_out: bool,
    },
    /// The TLS handshake failed on the certificate (untrusted, expired, wrong name) or the
    /// receiver refused ours: retrying does not change a certificate.
    #[error("TLS with {destination} failed: the certificate was not accepted")]
    Certificate {
        /// `host:port`.
        destination: String,
    },
    /// The connection failed while sending or reading, or closed before a whole ACK.
    #[error("connection to {destination} failed before an ACK arrived")]
    Io {
        /// `host:port`.
        destination: String,
    },
    /// No ACK within `ack_timeout_secs` (or the invocation's deadline).
    #[error("no ACK from {destination} in time")]
    AckTimeout {
        /// `host:port`.
        destination: String,
    },
    /// The answer is not an HL7 ACK (no `MSH`/`MSA`, or over the size limit).
    #[error("the answer from {destination} is not an HL7 ACK")]
    MalformedAck {
        /// `host:port`.
        destination: String,
    },
    /// The ACK's `MSA-2` is not this message's control id.
    #[error("the ACK from {destination} acknowledges another message (MSA-2 does not match)")]
    ControlIdMismatch {
        /// `host:port`.
        destination: String,
    },
    /// `AE`/`CE`: the receiver had an error processing the message; it may succeed later.
    #[error("ACK {code} (error) from {destination}")]
    AckError {
        /// `AE` or `CE`.
        code: &'static str,
        /// `host:port`.
        destination: String,
    },
    /// `AR`/`CR`: the receiver rejected the message; sending it again will not help.
    #[error("ACK {code} (reject) from {destination}")]
    AckReject {
        /// `AR` or `CR`.
        code: &'static str,
        /// `host:port`.
        destination: String,
    },
}

impl Hl7Error {
    /// Whether another attempt can help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Io { .. }
                | Self::AckTimeout { .. }
                | Self::MalformedAck { .. }
                | Self::ControlIdMismatch { .. }
                | Self::AckError { .. }
        )
    }
}

impl From<Hl7Error> for HandlerError {
    fn from(e: Hl7Error) -> Self {
        let reason = e.to_string();
        if e.is_retryable() {
            HandlerError::retryable(reason)
        } else {
            HandlerError::permanent(reason)
        }
    }
}
