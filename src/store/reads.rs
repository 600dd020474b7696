//! What decrypted reads share on both backends: opening a quarantined body and the
//! `payload_read` facts their audit records carry.

use super::audit_hook::{AuditAction, AuditEvent};
use super::payload::{decode_body, quarantine_place, StoredQuarantine};
use super::types::{QuarantineEntry, QuarantineSummary, Requester};
use super::StoreError;

/// The `payload_read` fact of one decrypted delivery, whichever backend decrypted it.
pub(crate) fn delivery_read_event<'a>(
    who: &Requester,
    id: &'a str,
    source: &'a str,
    call_ref: Option<&'a str>,
    key_id: i64,
) -> AuditEvent<'a> {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::PayloadRead);
    ev.delivery_id = Some(id);
    ev.source = Some(source);
    ev.call_ref = call_ref;
    ev.object_kind = Some("delivery");
    ev.via = Some(who.via);
    ev.key_id = Some(key_id);
    ev
}

/// Decrypt a quarantined body, whichever backend stored it.
pub(crate) fn open_quarantine(
    key: &crate::crypto::DataKey,
    summary: QuarantineSummary,
    key_id: i64,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<QuarantineEntry, StoreError> {
    let plain = key.open(
        &quarantine_place(&summary.id, &summary.source, key_id),
        nonce,
        ciphertext,
    )?;
    let stored: StoredQuarantine = serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
    Ok(QuarantineEntry {
        summary,
        body: decode_body(&stored.body_b64)?,
        content_type: stored.content_type,
        signature_headers: stored.signature_headers,
    })
}

/// The `payload_read` fact of one decrypted quarantine entry.
pub(crate) fn quarantine_read_event<'a>(
    who: &Requester,
    id: &'a str,
    source: &'a str,
    key_id: i64,
) -> AuditEvent<'a> {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::PayloadRead);
    ev.source = Some(source);
    ev.object_id = Some(id);
    ev.object_kind = Some("quarantine");
    ev.via = Some(who.via);
    ev.key_id = Some(key_id);
    ev
}
