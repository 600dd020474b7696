//! What is encrypted for each stored delivery and quarantine entry.
//!
//! Besides the canonical event, the raw body and the headers the signature was checked over are
//! kept (encrypted), so a stored delivery can be re-verified or re-normalized later and a
//! quarantined one can be repaired and replayed. Nothing here is ever stored in plaintext.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use wardhook_sdk::Event;

use chrono::{DateTime, SecondsFormat, Utc};

use super::StoreError;
use crate::crypto::RecordPlace;

/// The plaintext of a delivery's ciphertext.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// Format version of this structure.
    pub v: u8,
    /// The canonical event.
    pub event: Event,
    /// The raw body as received, base64.
    pub body_b64: String,
    /// The request's content type.
    pub content_type: Option<String>,
    /// The headers the signature check used.
    pub signature_headers: Vec<(String, String)>,
}

/// The plaintext of a quarantine entry's ciphertext.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredQuarantine {
    /// Format version of this structure.
    pub v: u8,
    /// The raw body as received, base64.
    pub body_b64: String,
    /// The request's content type.
    pub content_type: Option<String>,
    /// The headers the signature check used.
    pub signature_headers: Vec<(String, String)>,
}

pub(crate) fn encode_body(body: &[u8]) -> String {
    STANDARD.encode(body)
}

/// Decode a stored body (for `quarantine show`).
pub fn decode_body(b64: &str) -> Result<Vec<u8>, StoreError> {
    STANDARD
        .decode(b64)
        .map_err(|_| StoreError::Corrupt("stored body is not base64"))
}

/// The timestamp format of every `*_at` column: fixed width, so text order is time order.
pub(crate) fn db_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Where a delivery's payload is sealed (its AAD): a row moved to another id, source or key
/// does not open.
pub(crate) fn delivery_place<'a>(id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "delivery",
        id,
        source,
        key_id,
    }
}

/// Where a quarantined body is sealed (its AAD).
pub(crate) fn quarantine_place<'a>(id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "quarantine",
        id,
        source,
        key_id,
    }
}
