//! `deliveries index-phones`, the part both backends share: the SQL that walks the deliveries
//! stored without a caller index, how one of them gets its index, and the two audit records of
//! a run.
//!
//! Intake indexes the caller's phone an event names ([`caller_ref_of_event`]); deliveries
//! stored before that index existed (SQLite schema v5, PostgreSQL v3) have `caller_ref` NULL, so
//! "find a call" by phone misses them. A run decrypts each such delivery that is not purged,
//! derives the index from its stored event exactly as intake does, and sets it.
//!
//! The walk is by delivery id (UUID v7, so roughly receive order): a run fixes the highest id
//! at its start (deliveries received later are indexed at intake) and moves a cursor past every
//! row it read, so a delivery whose event names no usable number is read once per run, never
//! again by the same run. The next run reads those again (nothing marks "no number" apart from
//! NULL, which a handler's output may still fill): a rerun costs one decryption per delivery
//! still without an index. Each batch is its own short transaction that only writes indexes;
//! the reads and decryptions happen before it, outside any write lock.
//!
//! Decrypting is audited the way `keys rotate` audits its bulk decryption: the payloads never
//! leave the process, so the run writes one `callers_indexed` record when it starts (how many
//! deliveries it will read) and one when it ends (how many it read and indexed), not one
//! `payload_read` per delivery. Neither names a number, a call or a delivery.

use std::borrow::Cow;

use wardhook_sdk::Event;

use super::payload::{delivery_place, StoredDelivery};
use super::rotation::Dialect;
use super::types::Requester;
use super::StoreError;
use crate::audit::{Action, AuditRecord, Code, DetailKey, Outcome};
use crate::crypto::{DataKey, Keyring};

/// Deliveries read per batch unless the operator asks for another size.
pub const DEFAULT_BATCH: usize = 256;
/// The largest batch a run accepts (each batch's indexes are written in one transaction).
pub const MAX_BATCH: usize = 5_000;

/// `batch` within `1..=MAX_BATCH`.
pub(crate) fn clamp_batch(batch: usize) -> i64 {
    i64::try_from(batch.clamp(1, MAX_BATCH)).unwrap_or(1)
}

/// The blind index of the caller's phone `event` names, if it names a usable number: what
/// intake stores in `deliveries.caller_ref` and what a backfilled row gets, so both agree.
pub(crate) fn caller_ref_of_event(keyring: &Keyring, event: &Event) -> Option<String> {
    event
        .caller
        .phone
        .as_deref()
        .and_then(|p| keyring.caller_ref(p))
}

/// The deliveries a run reads: no caller index, not purged, payload still sealed.
const WAITING: &str = "caller_ref IS NULL AND status <> 'purged' AND ciphertext IS NOT NULL";

/// The highest delivery id now stored (a run reads nothing above it).
pub(crate) const LAST_ID: &str = "SELECT MAX(id) FROM deliveries";

/// How many deliveries up to id `?1` wait for an index.
pub(crate) fn count_waiting(dialect: Dialect) -> Cow<'static, str> {
    owned(
        dialect,
        format!("SELECT COUNT(*) FROM deliveries WHERE {WAITING} AND id <= ?1"),
    )
}

/// Up to `?3` waiting deliveries with ids in `(?1, ?2]`, in id order: id, source, key id,
/// nonce, ciphertext.
pub(crate) fn select_batch(dialect: Dialect) -> Cow<'static, str> {
    owned(
        dialect,
        format!(
            "SELECT id, source, key_id, nonce, ciphertext FROM deliveries
             WHERE {WAITING} AND id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
        ),
    )
}

/// Sets delivery `?1`'s index to `?2` unless it got one meanwhile (a handler's output) or was
/// purged.
pub(crate) fn set_caller_ref(dialect: Dialect) -> Cow<'static, str> {
    owned(
        dialect,
        "UPDATE deliveries SET caller_ref = ?2
         WHERE id = ?1 AND caller_ref IS NULL AND status <> 'purged'"
            .to_owned(),
    )
}

fn owned(dialect: Dialect, sql: String) -> Cow<'static, str> {
    Cow::Owned(dialect.sql(&sql).into_owned())
}

/// One waiting delivery as [`select_batch`] reads it.
pub(crate) struct Waiting {
    /// The delivery id (also the cursor).
    pub id: String,
    /// Its source (part of the AAD).
    pub source: String,
    /// The data key it is sealed under.
    pub key_id: i64,
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// Its sealed payload.
    pub ciphertext: Vec<u8>,
}

impl Waiting {
    /// Decrypt the payload with its data key and derive the caller index its event names.
    pub(crate) fn caller_ref(
        &self,
        key: &DataKey,
        keyring: &Keyring,
    ) -> Result<Option<String>, StoreError> {
        let plain = key.open(
            &delivery_place(&self.id, &self.source, self.key_id),
            &self.nonce,
            &self.ciphertext,
        )?;
        let stored: StoredDelivery = serde_json::from_slice(&plain)
            .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
        Ok(caller_ref_of_event(keyring, &stored.event))
    }
}

/// A `callers_indexed` record of `who`'s run: `reason`, `object_kind` = `delivery`, `count`.
fn run_record(who: &Requester, reason: &str, count: u64) -> AuditRecord {
    let mut record = AuditRecord::new(who.audit_actor(), Action::CallersIndexed, Outcome::Success);
    for (key, value) in [
        (DetailKey::Reason, reason),
        (DetailKey::ObjectKind, "delivery"),
    ] {
        if let Ok(value) = Code::parse(value) {
            record.detail.insert(key, value);
        }
    }
    if let Ok(via) = Code::parse(who.via) {
        record.detail.insert(DetailKey::Via, via);
    }
    record.detail.insert(DetailKey::Count, saturating(count));
    record
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The audit record of a run's start: `waiting` deliveries it will read (decrypt).
pub(crate) fn started(who: &Requester, waiting: u64) -> AuditRecord {
    run_record(who, "indexing_started", waiting)
}

/// The audit record of a finished run: deliveries read (decrypted) as `count`, those given an
/// index as `indexed`.
pub(crate) fn completed(who: &Requester, report: &PhoneIndexReport) -> AuditRecord {
    let mut record = run_record(who, "indexing_completed", report.read);
    record
        .detail
        .insert(DetailKey::Indexed, saturating(report.indexed));
    record
}

/// What `deliveries index-phones` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhoneIndexReport {
    /// Deliveries read (decrypted): those without an index when the run started.
    pub read: u64,
    /// Of those, how many now have one (the others name no usable phone number).
    pub indexed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_read_only_waiting_rows_in_both_dialects() {
        let pg = select_batch(Dialect::Postgres);
        assert!(pg.contains("$3") && !pg.contains('?'), "{pg}");
        let lite = select_batch(Dialect::Sqlite);
        assert!(lite.contains("caller_ref IS NULL") && lite.contains("<> 'purged'"));
        assert!(set_caller_ref(Dialect::Sqlite).contains("caller_ref IS NULL"));
        assert_eq!(clamp_batch(0), 1);
        assert_eq!(clamp_batch(usize::MAX), MAX_BATCH as i64);
    }
}
