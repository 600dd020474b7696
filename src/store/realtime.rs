//! Real-time replies' shared parts: a reply is kept as a finished pseudo-job of its delivery
//! (handler [`REPLY_HANDLER`]), sealed like a handler output under the day's data key, so a
//! retry gets the same answer and purge and crypto-shredding cover it too. The same on both
//! backends; each backend's `realtime` module writes and reads the row.

use super::types::Reply;
use super::StoreError;
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, ObjectId, Outcome};
use crate::crypto::RecordPlace;

/// The SQLite functions at their former paths.
pub use super::sqlite::realtime::{load_reply, record_reply};

/// The pseudo-handler name replies are stored under.
pub const REPLY_HANDLER: &str = "@realtime";

/// Where a stored reply is sealed (its AAD).
pub(crate) fn place<'a>(delivery_id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "realtime_reply",
        id: delivery_id,
        source,
        key_id,
    }
}

/// The plaintext a reply is sealed as.
pub(crate) fn plaintext(reply: &Reply) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    serde_json::to_vec(reply)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| StoreError::Corrupt("reply not serializable"))
}

/// The `realtime_replied` audit record: which reply kind, its status and latency, no content.
pub(crate) fn replied_record(
    delivery_id: &str,
    source: &str,
    fallback: bool,
    status: u16,
    latency_ms: i64,
) -> AuditRecord {
    let mut audit = AuditRecord::new(
        Actor::sender(source).unwrap_or(Actor::System),
        Action::RealtimeReplied,
        Outcome::Success,
    );
    audit.delivery_id = ObjectId::parse(delivery_id).ok();
    audit.source = Code::parse(source).ok();
    if let Ok(c) = Code::parse(if fallback { "fallback" } else { "computed" }) {
        audit.detail.insert(DetailKey::Result, c);
    }
    audit.detail.insert(DetailKey::Status, i64::from(status));
    audit.detail.insert(DetailKey::LatencyMs, latency_ms);
    audit
}

/// Decrypt a stored reply.
pub(crate) fn open_reply(
    key: &crate::crypto::DataKey,
    delivery_id: &str,
    source: &str,
    key_id: i64,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Reply, StoreError> {
    let plain = key.open(&place(delivery_id, source, key_id), nonce, ciphertext)?;
    serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt("stored reply is not the expected JSON"))
}
