//! The audit table and the MAC chain: [`migrate`] creates it, [`append`] seals a record onto it.

use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::record::AuditRecord;
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

/// What [`append`] returns: the sealed record, to pass to [`super::Mirror::write`] after commit.
pub type AppendedRecord = StoredRecord;

pub(crate) const COLUMNS: &str =
    "seq, ts, actor, action, outcome, delivery_id, source, call_ref, remote_addr, detail, prev_mac, mac";

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
        let mut stored = Self {
            seq,
            ts,
            actor: record.actor.to_text(),
            action: record.action.as_str().to_owned(),
            outcome: record.outcome.as_str().to_owned(),
            delivery_id: record.delivery_id.as_ref().map(|d| d.as_str().to_owned()),
            source: record.source.as_ref().map(|s| s.as_str().to_owned()),
            call_ref: record.call_ref.as_ref().map(|c| c.as_str().to_owned()),
            remote_addr: record.remote_addr.map(|a| a.to_string()),
            detail: record.detail.to_canonical_json(),
            prev_mac,
            mac: String::new(),
        };
        stored.mac = stored.compute_mac(keyring, seq);
        stored
    }

    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let seq: i64 = row.get(0)?;
        Ok(Self {
            seq: u64::try_from(seq).unwrap_or(0),
            ts: row.get(1)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            outcome: row.get(4)?,
            delivery_id: row.get(5)?,
            source: row.get(6)?,
            call_ref: row.get(7)?,
            remote_addr: row.get(8)?,
            detail: row.get(9)?,
            prev_mac: row.get(10)?,
            mac: row.get(11)?,
        })
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
        hex::encode(mac.finalize().into_bytes())
    }

    /// Constant-time check of the stored MAC against the recomputed one at `seq`.
    pub(crate) fn mac_valid_at(&self, keyring: &Keyring, seq: u64) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.compute_mac(keyring, seq);
        expected.as_bytes().ct_eq(self.mac.as_bytes()).into()
    }
}

/// Create the audit tables, indexes and append-only triggers if absent. Idempotent; call it from
/// the store's migrations.
///
/// The triggers refuse `UPDATE` on audit rows always and `DELETE` unless [`super::purge_older_than`]
/// has issued a permit for that prefix inside its transaction: a guard against bugs (a payload
/// purge that forgets a `WHERE`), not against someone with the database file — that is what the
/// MAC chain and checkpoints are for.
pub fn migrate(conn: &Connection) -> Result<(), AuditError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS audit_log (
            seq INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            delivery_id TEXT,
            source TEXT,
            call_ref TEXT,
            remote_addr TEXT,
            detail TEXT NOT NULL,
            prev_mac TEXT NOT NULL,
            mac TEXT NOT NULL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log(ts);
        CREATE INDEX IF NOT EXISTS audit_log_call_ref ON audit_log(call_ref) WHERE call_ref IS NOT NULL;
        CREATE INDEX IF NOT EXISTS audit_log_delivery ON audit_log(delivery_id) WHERE delivery_id IS NOT NULL;
        CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log(action, seq);
        CREATE TABLE IF NOT EXISTS audit_purge_permit (through_seq INTEGER NOT NULL) STRICT;
        CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
        WHEN NOT EXISTS (SELECT 1 FROM audit_purge_permit WHERE OLD.seq <= through_seq)
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only; use audit purge'); END;",
    )?;
    Ok(())
}

/// The chain head: the newest record's `(seq, mac, ts)`, or `None` for an empty log.
pub fn head(conn: &Connection) -> Result<Option<(u64, String, String)>, AuditError> {
    // Cached: group commit reads the head once per appended record.
    let row = conn
        .prepare_cached("SELECT seq, mac, ts FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    Ok(row.map(|(s, m, t)| (u64::try_from(s).unwrap_or(0), m, t)))
}

/// Format a UTC instant the way the log stores it: fixed width, so text order is time order.
pub(crate) fn format_ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Seal `record` onto the chain inside the caller's transaction and return what was stored.
///
/// The head is read inside `tx`, so several appends in one transaction (group commit) chain
/// onto each other. Open the transaction with `TransactionBehavior::Immediate`: a deferred
/// transaction that reads the head before taking the write lock can lose a race and fail with
/// `SQLITE_BUSY` (never fork the chain — `seq` is the primary key — but fail the commit).
/// Nothing is written to the mirror here: the caller passes the result to
/// [`super::Mirror::write`] once the transaction has committed.
pub fn append(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    record: &AuditRecord,
) -> Result<AppendedRecord, AuditError> {
    append_at(tx, keyring, record, chrono::Utc::now())
}

/// [`append`] with the clock passed in (tests write records "years ago" to exercise retention).
pub(crate) fn append_at(
    tx: &Connection,
    keyring: &Keyring,
    record: &AuditRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<AppendedRecord, AuditError> {
    let (seq, prev_mac, prev_ts) = match head(tx)? {
        Some((s, m, t)) => (s + 1, m, Some(t)),
        None => (1, GENESIS_MAC.to_owned(), None),
    };
    let now = format_ts(now);
    // Clamp to the predecessor's time if the clock stepped back, keeping time order = seq order.
    let ts = match prev_ts {
        Some(p) if p > now => p,
        _ => now,
    };
    let stored = StoredRecord::seal(keyring, record, seq, ts, prev_mac);
    insert_stored(tx, &stored)?;
    Ok(stored)
}

/// Append several records in order within one transaction (a group commit).
pub fn append_all(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    records: &[AuditRecord],
) -> Result<Vec<AppendedRecord>, AuditError> {
    records.iter().map(|r| append(tx, keyring, r)).collect()
}

pub(crate) fn insert_stored(conn: &Connection, r: &StoredRecord) -> Result<(), AuditError> {
    let seq = i64::try_from(r.seq).map_err(|_| AuditError::InvalidField {
        field: "seq",
        rule: "below 2^63",
    })?;
    conn.prepare_cached(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        seq,
        r.ts,
        r.actor,
        r.action,
        r.outcome,
        r.delivery_id,
        r.source,
        r.call_ref,
        r.remote_addr,
        r.detail,
        r.prev_mac,
        r.mac
    ])?;
    Ok(())
}
