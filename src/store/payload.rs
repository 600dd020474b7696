//! What is encrypted for each stored delivery and quarantine entry.
//!
//! Besides the canonical event, the raw body and the headers the signature was checked over are
//! kept (encrypted), so a stored delivery can be re-verified or re-normalized later and a
//! quarantined one can be repaired and replayed. Nothing here is ever stored in plaintext.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use wardhook_sdk::Event;

use chrono::{DateTime, Utc};

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

/// A [`StoredDelivery`] as written: the same fields and format, borrowed from the request
/// (the event normalize built, the body as received, base64-encoded straight into the output)
/// so that sealing copies nothing.
#[derive(Serialize)]
pub(crate) struct StoredDeliveryRef<'a> {
    pub v: u8,
    pub event: &'a Event,
    #[serde(rename = "body_b64", serialize_with = "body_as_base64")]
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    pub signature_headers: &'a [(String, String)],
}

fn body_as_base64<S: serde::Serializer>(body: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&base64::display::Base64Display::new(body, &STANDARD))
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

/// The timestamp format of every `*_at` column: the audit log's ([`crate::audit::format_ts`]),
/// fixed width, so text order is time order.
pub(crate) fn db_time(t: DateTime<Utc>) -> String {
    crate::audit::format_ts(t)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The borrowed writer produces exactly what the owned format reads (and writes).
    #[test]
    fn borrowed_delivery_payload_has_the_stored_format() {
        let event = Event {
            delivery_id: "0190-id".into(),
            source: "nextphone".into(),
            event_type: "call.ended".into(),
            call_id: Some("c1".into()),
            occurred_at: None,
            received_at: Utc::now(),
            caller: wardhook_sdk::Caller::default(),
            data: serde_json::json!({ "summary": "x", "n": [1, 2] }),
        };
        let body = b"{\"any\":\"bytes \xff\"}".to_vec();
        let headers = vec![("x-sig".to_owned(), "v1=ab".to_owned())];
        let written = serde_json::to_vec(&StoredDeliveryRef {
            v: 1,
            event: &event,
            body: &body,
            content_type: Some("application/json"),
            signature_headers: &headers,
        })
        .unwrap();
        let owned = serde_json::to_vec(&StoredDelivery {
            v: 1,
            event: event.clone(),
            body_b64: encode_body(&body),
            content_type: Some("application/json".into()),
            signature_headers: headers.clone(),
        })
        .unwrap();
        assert_eq!(written, owned);
        let read: StoredDelivery = serde_json::from_slice(&written).unwrap();
        assert_eq!(read.event, event);
        assert_eq!(decode_body(&read.body_b64).unwrap(), body);
    }
}
