//! Intake preparation both backends share: everything about a delivery or a quarantine entry
//! that needs no database — id, blind indexes, the data key period, the serialized and sealed
//! payload, and the audit facts of the outcome.
//!
//! It runs on the request's task (never on the SQLite writer thread or inside the PostgreSQL
//! transaction), so each backend's commit does only SQL. Because both backends call these, a
//! delivery has the same blind indexes, payload format and AAD whichever one stored it.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::audit_hook::{AuditAction, AuditActor, AuditEvent};
use super::payload::{
    delivery_place, encode_body, quarantine_place, StoredDeliveryRef, StoredQuarantine,
};
use super::phone_backfill::caller_ref_of_event;
use super::types::IntakeOutcome;
use super::StoreError;
use crate::crypto::{DataKey, Keyring, Sealed};
use crate::normalize::{IntakeInput, Normalized};

/// The period a timestamp falls in: its UTC day, `YYYY-MM-DD`.
///
/// Written digit by digit rather than through a strftime pattern, which is interpreted on
/// every call (1 % of an HTTP worker's time per delivery, docs/BENCHMARKS.md §20); years
/// outside 0–9999 keep the pattern's form.
pub(crate) fn period_of(t: DateTime<Utc>) -> String {
    use chrono::Datelike;
    use std::fmt::Write;
    let d = t.date_naive();
    if !(0..=9999).contains(&d.year()) {
        return t.format(PERIOD_PATTERN).to_string();
    }
    let mut s = String::with_capacity(10);
    let _ = write!(s, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
    s
}

/// The period format, as a strftime pattern.
const PERIOD_PATTERN: &str = "%Y-%m-%d";

/// The blind index of a dedup key, scoped to the source.
pub(crate) fn dedup_index(keyring: &Keyring, source: &str, normalized: &Normalized) -> String {
    let mut material = Vec::with_capacity(source.len() + 80);
    material.extend_from_slice(&(source.len() as u64).to_be_bytes());
    material.extend_from_slice(source.as_bytes());
    material.extend_from_slice(&normalized.dedup.index_material());
    keyring.blind_index("dedup", &material)
}

/// The blind index of a quarantined body: a retry of the same body finds its entry.
pub(crate) fn quarantine_body_index(keyring: &Keyring, body: &[u8]) -> String {
    keyring.blind_index("quarantine_body", body)
}

/// A delivery ready for its backend's key and SQL: everything but the sealing key.
pub(crate) struct PreparedDelivery {
    /// The delivery id (UUID v7) if it is accepted; part of the payload's AAD.
    pub id: String,
    /// The blind index of its dedup key.
    pub dedup: String,
    /// The blind index of its call id, if any.
    pub call_ref: Option<String>,
    /// The blind index of the caller's phone number the event names, if any
    /// ([`Keyring::caller_ref`]).
    pub caller_ref: Option<String>,
    /// The data key period it is sealed in (its UTC receive day).
    pub period: String,
    /// The serialized payload ([`StoredDelivery`]), zeroized on drop.
    pub plain: Zeroizing<Vec<u8>>,
    /// The event type (an identifier, stored in plaintext).
    pub event_type: String,
    /// Which dedup rule produced the key (no value).
    pub dedup_kind: &'static str,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

impl PreparedDelivery {
    /// Id, blind indexes, period and the serialized payload of `n`. The event normalize built
    /// is the one sealed: it gets the new delivery id here and is serialized in place.
    pub(crate) fn new(
        keyring: &Keyring,
        input: &IntakeInput,
        n: &mut Normalized,
    ) -> Result<Self, StoreError> {
        let source = input.source.as_str();
        let id = uuid::Uuid::now_v7().to_string();
        let dedup = dedup_index(keyring, source, n);
        let call_ref = n.call_id.as_deref().map(|c| keyring.call_ref(c));
        let caller_ref = caller_ref_of_event(keyring, n.event());
        let period = period_of(n.received_at);
        n.set_delivery_id(&id);
        let plain = plaintext(&StoredDeliveryRef {
            v: 1,
            event: n.event(),
            body: &input.body,
            content_type: input.content_type.as_deref(),
            signature_headers: &input.signature_headers,
        })?;
        Ok(Self {
            id,
            dedup,
            call_ref,
            caller_ref,
            period,
            plain,
            event_type: n.event_type.as_str().to_owned(),
            dedup_kind: n.dedup.kind(),
            received_at: n.received_at,
        })
    }

    /// The payload sealed under data key `key_id` of `source`.
    pub(crate) fn seal(
        &self,
        key: &DataKey,
        key_id: i64,
        source: &str,
    ) -> Result<Sealed, StoreError> {
        Ok(key.seal(&delivery_place(&self.id, source, key_id), &self.plain)?)
    }
}

/// Serialize and seal a quarantined body (with its content type and signature headers) as
/// entry `id` under data key `key_id`.
pub(crate) fn seal_quarantine(
    key: &DataKey,
    key_id: i64,
    id: &str,
    input: &IntakeInput,
) -> Result<Sealed, StoreError> {
    let plain = plaintext(&StoredQuarantine {
        v: 1,
        body_b64: encode_body(&input.body),
        content_type: input.content_type.clone(),
        signature_headers: input.signature_headers.clone(),
    })?;
    Ok(key.seal(&quarantine_place(id, input.source.as_str(), key_id), &plain)?)
}

/// Serialize a payload for sealing, in a buffer zeroized on drop.
fn plaintext(value: &impl serde::Serialize) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|_| StoreError::Corrupt("cannot serialize payload"))
}

/// What the intake audit record says about one delivery, whatever its outcome.
#[derive(Clone, Copy)]
pub(crate) struct IntakeFacts<'a> {
    /// The source it arrived on.
    pub source: &'a str,
    /// The blind index of its call id.
    pub call_ref: Option<&'a str>,
    /// Its event type.
    pub event_type: &'a str,
    /// The sender's address.
    pub remote_addr: IpAddr,
    /// The data key it was sealed under (recorded when accepted).
    pub key_id: Option<i64>,
    /// Jobs enqueued when accepted.
    pub jobs: usize,
}

/// The `delivery_accepted` or `delivery_duplicate` fact of one intake.
pub(crate) fn intake_event<'a>(
    facts: &IntakeFacts<'a>,
    outcome: &'a IntakeOutcome,
) -> AuditEvent<'a> {
    let action = match outcome {
        IntakeOutcome::Accepted { .. } => AuditAction::DeliveryAccepted,
        IntakeOutcome::Duplicate { .. } => AuditAction::DeliveryDuplicate,
    };
    let mut ev = AuditEvent::new(AuditActor::Sender(facts.source.to_owned()), action);
    ev.source = Some(facts.source);
    ev.call_ref = facts.call_ref;
    ev.event_type = Some(facts.event_type);
    ev.remote_addr = Some(facts.remote_addr);
    ev.delivery_id = Some(outcome.delivery_id());
    if let IntakeOutcome::Accepted { .. } = outcome {
        ev.key_id = facts.key_id;
        ev.count = Some(facts.jobs as i64);
    }
    ev
}

/// The `delivery_quarantined` fact of a new quarantine entry.
pub(crate) fn quarantined_event<'a>(
    input: &'a IntakeInput,
    id: &'a str,
    reason_code: &'static str,
    key_id: i64,
) -> AuditEvent<'a> {
    let source = input.source.as_str();
    let mut ev = AuditEvent::new(
        AuditActor::Sender(source.to_owned()),
        AuditAction::DeliveryQuarantined,
    );
    ev.source = Some(source);
    ev.object_id = Some(id);
    ev.reason = Some(reason_code);
    ev.key_id = Some(key_id);
    ev.remote_addr = Some(input.client_ip);
    ev
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{TimeZone, Utc};

    use super::{period_of, PERIOD_PATTERN};

    /// Periods name data keys: the text must not change, whatever the day.
    #[test]
    fn periods_keep_their_text() {
        let mut days: Vec<_> = (0..3_000_i64)
            .map(|i| Utc.timestamp_opt(i * 86_399 * 29, 0).unwrap())
            .collect();
        days.push(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap());
        days.push(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap());
        days.push(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap());
        days.push(Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap());
        for t in days {
            assert_eq!(period_of(t), t.format(PERIOD_PATTERN).to_string(), "{t:?}");
        }
    }
}
