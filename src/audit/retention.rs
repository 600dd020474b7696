//! Retention of the audit table itself: 6 years by default (HIPAA 164.316(b)(2)(i)), set in
//! days (`[audit] retention_days`) like the rest of the config.
//!
//! Payload purges (the store's `purge`) never touch `audit_log`; the delete trigger created by
//! [`super::migrate`] refuses them. Only [`purge_older_than`] deletes audit rows, only a prefix
//! of the chain, only past the retention, and it records itself — including the new chain
//! anchor, so the shortened chain still verifies.

use chrono::{DateTime, Duration, Utc};

use super::chain::{append, format_ts, AppendedRecord};
use super::record::{Action, Actor, AuditRecord, DetailKey, Digest, Outcome};
use super::source::ChainWriter;
use super::AuditError;
use crate::crypto::Keyring;

/// How long audit records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days; the default is 6 × 366, six years whatever the leap years.
    pub days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { days: 6 * 366 }
    }
}

impl Retention {
    /// The latest cutoff this retention allows at `now`: records at or after it must be kept.
    pub fn earliest_allowed_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_signed(Duration::days(i64::from(self.days)))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// What an audit purge did.
#[derive(Debug, Clone)]
pub struct PurgeReport {
    /// Records deleted.
    pub deleted: u64,
    /// The last deleted sequence number, if any were deleted.
    pub through_seq: Option<u64>,
    /// The `audit_purged` record that documents the purge (mirror it after commit).
    pub record: AppendedRecord,
}

/// Delete the audit records older than `cutoff` — the longest prefix of the chain whose records
/// are all older — and append an `audit_purged` record, inside `tx`. Refuses a cutoff later than
/// the retention allows. Deleting a prefix only (never from the middle) keeps the rest of the
/// chain verifiable from the anchor recorded here.
pub fn purge_older_than(
    tx: &(impl ChainWriter + ?Sized),
    keyring: &Keyring,
    retention: Retention,
    cutoff: DateTime<Utc>,
    actor: Actor,
) -> Result<PurgeReport, AuditError> {
    let allowed = retention.earliest_allowed_cutoff(Utc::now());
    if cutoff > allowed {
        return Err(AuditError::RetentionViolation {
            earliest_allowed: format_ts(allowed),
            days: retention.days,
        });
    }
    let cutoff_ts = format_ts(cutoff);
    // Prefix end: just before the first record young enough to keep, or the head if none is.
    let bounds = tx.bounds()?;
    let through = match tx.first_seq_from(&cutoff_ts)? {
        Some(k) => k.checked_sub(1),
        None => bounds.map(|(_, last)| last),
    };
    let mut record = AuditRecord::new(actor, Action::AuditPurged, Outcome::Success)
        .with_detail(DetailKey::CutoffUnix, cutoff.timestamp());
    let mut deleted = 0;
    let mut through_seq = None;
    if let (Some(through), Some((first, _))) = (through, bounds) {
        if through >= first {
            let anchor_mac = tx.mac_at(through)?.ok_or(AuditError::InvalidField {
                field: "audit purge anchor",
                rule: "a record present in the log",
            })?;
            deleted = tx.delete_through(through)?;
            through_seq = Some(through);
            record = record
                .with_detail(
                    DetailKey::ThroughSeq,
                    i64::try_from(through).unwrap_or(i64::MAX),
                )
                .with_detail(DetailKey::AnchorMac, Digest::parse(&anchor_mac)?);
        }
    }
    record = record.with_detail(DetailKey::Count, i64::try_from(deleted).unwrap_or(i64::MAX));
    let record = append(tx, keyring, &record)?;
    Ok(PurgeReport {
        deleted,
        through_seq,
        record,
    })
}
