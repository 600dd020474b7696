//! Stage 3 of the delivery path: turn a verified delivery into the canonical [`Event`] and decide
//! what makes it "the same delivery" when a sender retries.
//!
//! Input is an [`IntakeInput`], which public code can only build from a
//! [`VerifiedDelivery`](crate::verify::VerifiedDelivery): nothing unverified reaches normalization
//! or storage. Each sender preset keeps its fields in a different envelope (see
//! [`Envelope`]); normalization is tolerant of extra and missing optional fields and strict about
//! what the preset needs. A delivery that is authentic but cannot be normalized is not dropped:
//! the caller stores it in quarantine (encrypted) with the [`NormalizeError`] as the reason.
//!
//! Error messages name fields by their path in the envelope and never quote payload content,
//! because they end up in logs, the audit trail and 400 responses.

mod envelope;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use wardhook_sdk::Event;

pub use envelope::Envelope;

/// The pieces of a verified delivery that intake needs, owned so that they can cross to the
/// writer thread.
///
/// Public code builds it only with [`IntakeInput::from_verified`]; the plain constructor exists
/// for this crate's tests, so the "only verified data reaches storage" rule holds at the
/// public boundary.
#[derive(Debug, Clone)]
pub struct IntakeInput {
    pub(crate) source: String,
    pub(crate) envelope: Envelope,
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) key_index: usize,
    pub(crate) sender_delivery_id: Option<String>,
    pub(crate) signed_at: Option<DateTime<Utc>>,
    pub(crate) signature_headers: Vec<(String, String)>,
    pub(crate) client_ip: IpAddr,
}

impl IntakeInput {
    /// Take what intake needs from a verified delivery.
    pub fn from_verified(v: &crate::verify::VerifiedDelivery) -> Self {
        Self::from(v.clone())
    }
}

impl From<crate::verify::VerifiedDelivery> for IntakeInput {
    /// Take what intake needs from a verified delivery, moving its body rather than copying it.
    fn from(v: crate::verify::VerifiedDelivery) -> Self {
        let mut input = Self {
            source: v.source().to_owned(),
            envelope: Envelope::for_preset_name(v.preset().name()),
            body: Vec::new(),
            content_type: v.content_type().map(str::to_owned),
            key_index: v.key_index(),
            sender_delivery_id: v.sender_delivery_id().map(str::to_owned),
            signed_at: v.signed_at(),
            signature_headers: v.signature_headers().to_vec(),
            client_ip: v.client_ip(),
        };
        input.body = v.into_body();
        input
    }
}

impl IntakeInput {
    /// Test-only constructor: a delivery as if verification had passed.
    #[cfg(test)]
    pub(crate) fn for_test(source: &str, envelope: Envelope, body: &[u8]) -> Self {
        Self {
            source: source.to_owned(),
            envelope,
            body: body.to_vec(),
            content_type: Some(envelope.default_content_type().to_owned()),
            key_index: 0,
            sender_delivery_id: None,
            signed_at: None,
            signature_headers: Vec::new(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// Test-only: set the sender's delivery id as a verifier would (e.g. `webhook-id`).
    #[cfg(test)]
    pub(crate) fn with_sender_delivery_id(mut self, id: &str) -> Self {
        self.sender_delivery_id = Some(id.to_owned());
        self
    }

    /// The source the delivery arrived on.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The envelope mapping chosen from the source's preset.
    pub fn envelope(&self) -> Envelope {
        self.envelope
    }

    /// The client address, for the audit trail.
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// Which configured secret matched, for the audit trail.
    pub fn key_index(&self) -> usize {
        self.key_index
    }
}

/// A sender's event type: a short identifier such as `call.ended` or `end-of-call-report`.
///
/// Event types are stored in plaintext (they drive routing, `deliveries list` and the console,
/// and `phi = "none"` handlers see them), so they must not be able to carry free text, which
/// could be PHI ("Jane Roe DOB 1980 positive"). An event type is therefore an identifier: 1 to
/// [`EventType::MAX_LEN`] bytes of ASCII letters, digits and `.` `_` `-` `:` `/` `~`, beginning
/// with a letter, digit or `/` (RingCentral names events by API path) — no spaces. Anything else sends the delivery to quarantine, where the body
/// is stored encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(String);

impl EventType {
    /// Longest accepted event type (RingCentral's event paths with account and extension ids
    /// come close to 80).
    pub const MAX_LEN: usize = 128;

    /// Accept an identifier (surrounding white space is ignored); refuse free text.
    pub fn parse(text: &str) -> Result<Self, NormalizeError> {
        let text = text.trim();
        let Some(first) = text.bytes().next() else {
            return Err(NormalizeError::BadEventType("empty"));
        };
        if text.len() > Self::MAX_LEN {
            return Err(NormalizeError::BadEventType("longer than 128 bytes"));
        }
        if !(first.is_ascii_alphanumeric() || first == b'/') {
            return Err(NormalizeError::BadEventType(
                "not an identifier (it must begin with a letter, digit or /)",
            ));
        }
        if !text.bytes().all(is_identifier_byte) {
            return Err(NormalizeError::BadEventType(
                "not an identifier (only letters, digits and . _ - : / ~ are allowed)",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The event type.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies "the same delivery" when a sender retries, in DESIGN.md's order of
/// preference. Only ever stored as a keyed blind index, scoped per source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupKey {
    /// The sender's own per-event delivery id (Standard Webhooks `webhook-id`, Telnyx `data.id`).
    SenderDeliveryId(String),
    /// No per-event id: the event type and the call it is about. Two different events of one
    /// call (`call.answered`, `call.ended`) therefore stay distinct.
    EventOfCall {
        /// The event type.
        event_type: String,
        /// The sender's call id.
        call_id: String,
    },
    /// Neither: SHA-256 of the raw body, so only a byte-identical retry is a duplicate.
    BodySha256([u8; 32]),
}

impl DedupKey {
    /// The bytes that go into the blind index: tagged by kind and length-prefixed, so no value
    /// of one kind can collide with another kind's.
    pub fn index_material(&self) -> Vec<u8> {
        fn push(out: &mut Vec<u8>, part: &[u8]) {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        let mut out = Vec::with_capacity(64);
        match self {
            Self::SenderDeliveryId(id) => {
                out.push(1);
                push(&mut out, id.as_bytes());
            }
            Self::EventOfCall {
                event_type,
                call_id,
            } => {
                out.push(2);
                push(&mut out, event_type.as_bytes());
                push(&mut out, call_id.as_bytes());
            }
            Self::BodySha256(hash) => {
                out.push(3);
                push(&mut out, hash);
            }
        }
        out
    }

    /// Which rule produced the key, for the metadata and the audit trail (no value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SenderDeliveryId(_) => "sender_delivery_id",
            Self::EventOfCall { .. } => "event_of_call",
            Self::BodySha256(_) => "body_sha256",
        }
    }
}

/// A normalized delivery: the canonical event (built once, here; the store fills in the
/// delivery id it assigns) and the dedup key. Reads of the event's fields go through
/// `Deref<Target = Event>`; `event_type` is the checked identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The sender's event type, checked to be an identifier (the event carries its text).
    pub event_type: EventType,
    /// The event handlers see and the store seals: the same value on the whole request path.
    event: Event,
    /// What makes a retry recognisable.
    pub dedup: DedupKey,
}

impl Normalized {
    /// The canonical event. Its `delivery_id` is empty until the store has committed it.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The canonical event, for handlers that run after intake (real-time routes).
    pub fn into_event(self) -> Event {
        self.event
    }

    /// Set the delivery id the store assigned (or, for a duplicate, the first delivery's).
    pub(crate) fn set_delivery_id(&mut self, id: &str) {
        self.event.delivery_id.clear();
        self.event.delivery_id.push_str(id);
    }
}

impl std::ops::Deref for Normalized {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// Why an authentic delivery could not be normalized. The delivery is quarantined with this as
/// its reason; messages name envelope paths only, never payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The body is not valid JSON (position only: serde's own message can quote the input).
    #[error("body is not valid JSON (line {line}, column {column})")]
    InvalidJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },
    /// The body is valid JSON but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// The body is not valid `application/x-www-form-urlencoded` UTF-8.
    #[error("body is not valid form-encoded UTF-8")]
    InvalidForm,
    /// A field the preset requires is absent.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's path in the envelope.
        field: &'static str,
        /// What was expected, e.g. "a string".
        expected: &'static str,
    },
    /// The event type is not an identifier (see [`EventType`]).
    #[error("event type is {0}")]
    BadEventType(&'static str),
    /// An identifier (call id, delivery id) is empty or longer than 256 bytes.
    #[error("field `{0}` is empty or longer than 256 bytes")]
    BadIdentifier(&'static str),
    /// A delivery handed over by the DMZ relay names a source this node does not configure:
    /// kept for an operator (who adds the source or discards it), never stored as a delivery.
    #[error("source is not configured on this node (received through the relay)")]
    UnknownSource,
}

impl NormalizeError {
    /// A short machine code for the audit trail and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::InvalidForm => "invalid_form",
            Self::MissingField(_) => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::BadEventType(_) => "bad_event_type",
            Self::BadIdentifier(_) => "bad_identifier",
            Self::UnknownSource => "unknown_source",
        }
    }
}

/// Normalize a verified delivery received at `received_at`.
pub fn normalize(
    input: &IntakeInput,
    received_at: DateTime<Utc>,
) -> Result<Normalized, NormalizeError> {
    normalize_parts(
        &input.source,
        input.envelope,
        &input.body,
        input.content_type.as_deref(),
        input.sender_delivery_id.clone(),
        input.signed_at,
        received_at,
    )
}

/// Normalize a body by `envelope`'s rules alone, as [`normalize`] does once verification is
/// done (without the verifier's delivery id and signing time).
///
/// Exists so that the fuzz target can drive every envelope with arbitrary bytes; a
/// [`Normalized`] by itself reaches no storage, which takes only verified input.
pub fn normalize_body(
    envelope: Envelope,
    body: &[u8],
    content_type: Option<&str>,
    received_at: DateTime<Utc>,
) -> Result<Normalized, NormalizeError> {
    normalize_parts("", envelope, body, content_type, None, None, received_at)
}

fn normalize_parts(
    source: &str,
    envelope: Envelope,
    body: &[u8],
    content_type: Option<&str>,
    sender_delivery_id: Option<String>,
    signed_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> Result<Normalized, NormalizeError> {
    let fields = envelope.extract(body, content_type)?;
    let event_type = EventType::parse(&fields.event_type)?;
    let call_id = fields
        .call_id
        .map(|id| check_identifier(id, "call_id"))
        .transpose()?;
    let sender_id = sender_delivery_id
        .or(fields.event_id)
        .map(|id| check_identifier(id, "delivery id"))
        .transpose()?;
    let dedup = match (sender_id, &call_id) {
        (Some(id), _) => DedupKey::SenderDeliveryId(id),
        (None, Some(call_id)) => DedupKey::EventOfCall {
            event_type: event_type.as_str().to_owned(),
            call_id: call_id.clone(),
        },
        (None, None) => DedupKey::BodySha256(Sha256::digest(body).into()),
    };
    let event = Event {
        delivery_id: String::new(),
        source: source.to_owned(),
        event_type: event_type.as_str().to_owned(),
        call_id,
        occurred_at: fields.occurred_at.or(signed_at),
        received_at,
        caller: fields.caller,
        data: fields.data,
    };
    Ok(Normalized {
        event_type,
        event,
        dedup,
    })
}

/// The bytes an event type may hold: no white space, quotes, brackets or other punctuation that
/// sentences are made of.
fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/' | b'~')
}

fn check_identifier(id: String, field: &'static str) -> Result<String, NormalizeError> {
    let trimmed = id.trim();
    if trimmed.is_empty() || trimmed.len() > 256 {
        return Err(NormalizeError::BadIdentifier(field));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests;
