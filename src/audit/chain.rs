//! The MAC chain: [`append`] seals a record onto a chain held by a [`ChainWriter`] (the
//! backend's table; SQLite's is created by `store::sqlite::audit_log::migrate`).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::record::AuditRecord;
use super::source::ChainWriter;
use super::AuditError;
use crate::crypto::Keyring;

/// `prev_mac` of the first record ever written: 32 zero bytes, hex.
pub const GENESIS_MAC: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation for the MAC input, so a record MAC can never be confused with another
/// HMAC under a related key.
const MAC_DOMAIN: &[u8] = b"wardhook-audit-v1\0";

/// A record exactly as stored: the column texts the MAC covers. This is what the mirror writes,
/// what search and export return and what verification recomputes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Position in the chain, 1-based, gap-free.
    pub seq: u64,
    /// UTC time, RFC 3339 with microseconds (`2026-11-22T10:00:00.000000Z`). Never earlier than
    /// the previous record's time, so time ranges are sequence ranges.
    pub ts: String,
    /// `system`, `sender:<source>`, `admin_token:<id>` or `cli_user:<user>`.
    pub actor: String,
    /// snake_case [`super::Action`] name.
    pub action: String,
    /// snake_case [`super::Outcome`] name.
    pub outcome: String,
    /// Delivery id, if any.
    pub delivery_id: Option<String>,
    /// Source name, if any.
    pub source: Option<String>,
    /// Blind index of the call id, if any.
    pub call_ref: Option<String>,
    /// Peer IP address, if any.
    pub remote_addr: Option<String>,
    /// Canonical JSON of the detail facts (sorted keys, no whitespace).
    pub detail: String,
    /// MAC of the previous record (or [`GENESIS_MAC`]).
    pub prev_mac: String,
    /// HMAC-SHA256 over this record's content and `prev_mac`, hex.
    pub mac: String,
}

/// The column texts of a record that do not depend on its place in the chain: everything but
/// `seq`, `ts`, `prev_mac` and `mac`. Building it (actor text, canonical detail JSON) is most of
/// the work of an append, so a group committer has request tasks build it and does only the
/// chain link and the MAC while it holds the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordBody {
    actor: String,
    action: String,
    outcome: String,
    delivery_id: Option<String>,
    source: Option<String>,
    call_ref: Option<String>,
    remote_addr: Option<String>,
    detail: String,
}

impl RecordBody {
    /// The texts `record` is stored as.
    pub(crate) fn of(record: &AuditRecord) -> Self {
        Self {
            actor: record.actor.to_text(),
            action: record.action.as_str().to_owned(),
            outcome: record.outcome.as_str().to_owned(),
            delivery_id: record.delivery_id.as_ref().map(|d| d.as_str().to_owned()),
            source: record.source.as_ref().map(|s| s.as_str().to_owned()),
            call_ref: record.call_ref.as_ref().map(|c| c.as_str().to_owned()),
            remote_addr: record.remote_addr.map(|a| a.to_string()),
            detail: record.detail.to_canonical_json(),
        }
    }
}

/// What [`append`] returns: the sealed record, to pass to [`super::Mirror::write`] after commit.
pub type AppendedRecord = StoredRecord;

impl StoredRecord {
    /// `record` as entry `seq` of a chain, linked to `prev_mac` and sealed with its MAC: the one
    /// way every store turns a record into what it writes.
    pub(crate) fn seal(
        keyring: &Keyring,
        record: &AuditRecord,
        seq: u64,
        ts: String,
        prev_mac: String,
    ) -> Self {
        Self::seal_body(keyring, RecordBody::of(record), seq, ts, prev_mac)
    }

    /// [`Self::seal`] of a body built beforehand (off the thread that holds the chain).
    pub(crate) fn seal_body(
        keyring: &Keyring,
        body: RecordBody,
        seq: u64,
        ts: String,
        prev_mac: String,
    ) -> Self {
        let RecordBody {
            actor,
            action,
            outcome,
            delivery_id,
            source,
            call_ref,
            remote_addr,
            detail,
        } = body;
        let mut stored = Self {
            seq,
            ts,
            actor,
            action,
            outcome,
            delivery_id,
            source,
            call_ref,
            remote_addr,
            detail,
            prev_mac,
            mac: String::new(),
        };
        stored.mac = stored.compute_mac(keyring, seq);
        stored
    }

    /// The MAC this record should carry given its content, its `prev_mac` and sequence `seq`.
    /// `seq` is a parameter so the verifier can ask "would this record be valid elsewhere?".
    pub(crate) fn compute_mac(&self, keyring: &Keyring, seq: u64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keyring.audit_mac_key())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(MAC_DOMAIN);
        let seq_text = seq.to_string();
        let fields: [Option<&str>; 11] = [
            Some(&seq_text),
            Some(&self.ts),
            Some(&self.actor),
            Some(&self.action),
            Some(&self.outcome),
            self.delivery_id.as_deref(),
            self.source.as_deref(),
            self.call_ref.as_deref(),
            self.remote_addr.as_deref(),
            Some(&self.detail),
            Some(&self.prev_mac),
        ];
        // Length-prefixed so no two different field lists encode to the same bytes; a distinct
        // marker for NULL so `None` and `Some("")` differ.
        for f in fields {
            match f {
                Some(s) => {
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX - 1);
                    mac.update(&len.to_be_bytes());
                    mac.update(s.as_bytes());
                }
                None => mac.update(&u32::MAX.to_be_bytes()),
            }
        }
        crate::crypto::hex_lower(&mac.finalize().into_bytes())
    }

    /// Constant-time check of the stored MAC against the recomputed one at `seq`.
    pub(crate) fn mac_valid_at(&self, keyring: &Keyring, seq: u64) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.compute_mac(keyring, seq);
        expected.as_bytes().ct_eq(self.mac.as_bytes()).into()
    }
}

/// Format a UTC instant the way the log stores it: fixed width, so text order is time order.
///
/// The RFC 3339 writer puts the digits down directly, where the strftime pattern the log's text
/// was defined by ([`TS_PATTERN`]) is interpreted on every call — 3 % of the store writer's time
/// per delivery (docs/BENCHMARKS.md §20). The text is the same, years beyond four digits and
/// leap seconds included (tested below). The store's `*_at` columns use this text too.
pub(crate) fn format_ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The stored timestamp format, as a strftime pattern.
#[cfg(test)]
const TS_PATTERN: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Seal `record` onto the chain inside the caller's transaction and return what was stored.
///
/// The head is read inside `tx`, so several appends in one transaction (group commit) chain
/// onto each other. Open the transaction with `TransactionBehavior::Immediate`: a deferred
/// transaction that reads the head before taking the write lock can lose a race and fail with
/// `SQLITE_BUSY` (never fork the chain — `seq` is the primary key — but fail the commit).
/// Nothing is written to the mirror here: the caller passes the result to
/// [`super::Mirror::write`] once the transaction has committed.
pub fn append(
    tx: &(impl ChainWriter + ?Sized),
    keyring: &Keyring,
    record: &AuditRecord,
) -> Result<AppendedRecord, AuditError> {
    append_at(tx, keyring, record, chrono::Utc::now())
}

/// [`append`] with the clock passed in (tests write records "years ago" to exercise retention).
pub(crate) fn append_at(
    tx: &(impl ChainWriter + ?Sized),
    keyring: &Keyring,
    record: &AuditRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<AppendedRecord, AuditError> {
    let (seq, ts, prev_mac) = link(tx.head()?, now);
    let stored = StoredRecord::seal(keyring, record, seq, ts, prev_mac);
    tx.insert(&stored)?;
    Ok(stored)
}

/// The (seq, ts, prev_mac) of the record that follows `head` at time `now`.
fn link(
    head: Option<(u64, String, String)>,
    now: chrono::DateTime<chrono::Utc>,
) -> (u64, String, String) {
    let (seq, prev_mac, prev_ts) = match head {
        Some((s, m, t)) => (s + 1, m, Some(t)),
        None => (1, GENESIS_MAC.to_owned(), None),
    };
    let now = format_ts(now);
    // Clamp to the predecessor's time if the clock stepped back, keeping time order = seq order.
    let ts = match prev_ts {
        Some(p) if p > now => p,
        _ => now,
    };
    (seq, ts, prev_mac)
}

/// Appends of one transaction that keep the chain head in memory after reading it once, instead
/// of reading it back from the table for every record (a group commit appends one record per
/// request). Only valid while nothing else appends in the same transaction: call
/// [`ChainCursor::forget`] after a rollback to a savepoint, or after code that appends through
/// [`append`] itself.
#[derive(Debug, Default)]
pub(crate) struct ChainCursor {
    /// `None`: not read yet; `Some(None)`: the chain is empty.
    head: Option<Option<(u64, String, String)>>,
}

impl ChainCursor {
    /// Seal `body` onto the chain inside `tx` (see [`append`]), at the current time.
    pub(crate) fn append(
        &mut self,
        tx: &(impl ChainWriter + ?Sized),
        keyring: &Keyring,
        body: RecordBody,
    ) -> Result<AppendedRecord, AuditError> {
        let head = match self.head.take() {
            Some(head) => head,
            None => tx.head()?,
        };
        let (seq, ts, prev_mac) = link(head, chrono::Utc::now());
        let stored = StoredRecord::seal_body(keyring, body, seq, ts, prev_mac);
        tx.insert(&stored)?;
        self.head = Some(Some((seq, stored.mac.clone(), stored.ts.clone())));
        Ok(stored)
    }

    /// Read the head from the table at the next append.
    pub(crate) fn forget(&mut self) {
        self.head = None;
    }
}

/// Append several records in order within one transaction (a group commit).
pub fn append_all(
    tx: &(impl ChainWriter + ?Sized),
    keyring: &Keyring,
    records: &[AuditRecord],
) -> Result<Vec<AppendedRecord>, AuditError> {
    records.iter().map(|r| append(tx, keyring, r)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{NaiveDate, TimeZone, Utc};

    use super::{format_ts, TS_PATTERN};

    /// The fast writer gives the text the log has always stored: same width, same rounding of
    /// the fraction, leap seconds and the ends of the four-digit years included.
    #[test]
    fn timestamps_keep_their_stored_text() {
        let mut instants = vec![
            Utc.with_ymd_and_hms(2026, 12, 5, 9, 4, 1).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_999_999_999)
                .unwrap()
                .and_utc(),
        ];
        let mut nanos: u64 = 1;
        for i in 0..2_000_i64 {
            nanos = nanos
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            instants.push(
                Utc.timestamp_opt(i * 7_919_993, (nanos % 1_000_000_000) as u32)
                    .unwrap(),
            );
        }
        for t in instants {
            assert_eq!(format_ts(t), t.format(TS_PATTERN).to_string(), "{t:?}");
        }
        for far in [
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 12, 0, 0).unwrap(),
        ] {
            assert_eq!(format_ts(far), far.format(TS_PATTERN).to_string());
        }
    }
}
