//! The canonical event: one shape for every sender.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who called, as far as the sender told us. Every field is PHI and optional: senders differ in
/// what they know about a caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The caller's phone number as the sender gave it (often E.164).
    pub phone: Option<String>,
    /// The caller's name, when the receptionist collected it.
    pub name: Option<String>,
    /// The caller's e-mail address, when collected.
    pub email: Option<String>,
}

/// A verified, stored delivery in the shape handlers see.
///
/// The same structure whatever the sender, so that one adapter serves every provider; `data`
/// keeps the sender's own payload for fields the canonical part does not name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// wardhook's id for this delivery; stable across retries of the same delivery.
    pub delivery_id: String,
    /// The configured source the delivery arrived on (`/hooks/{source}`).
    pub source: String,
    /// The sender's event type, e.g. `call.ended`.
    pub event_type: String,
    /// The sender's id of the call this event is about, when it has one.
    pub call_id: Option<String>,
    /// When the sender says the event happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When wardhook received it.
    pub received_at: DateTime<Utc>,
    /// The caller, as far as known.
    pub caller: Caller,
    /// The sender's payload (the part below the envelope), untouched.
    pub data: serde_json::Value,
}
