//! The SQLite audit table: its schema, and the [`ChainReader`], [`ChainWriter`] and
//! [`RecordStream`] the audit module's chain, mirror, purge and verification run on.
//!
//! Implemented for `rusqlite::Connection` (and `Transaction`, which derefs to it), so the code
//! that appends inside its own transaction keeps calling `crate::audit::append(&tx, …)`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction};

use crate::audit::{
    AuditError, ChainReader, ChainRow, ChainWriter, Filter, RecordStream, RecordVisitor,
    StoredRecord, VerifyReport,
};

/// The columns of a record, in [`record_from_row`] order.
pub(crate) const COLUMNS: &str =
    "seq, ts, actor, action, outcome, delivery_id, source, call_ref, remote_addr, detail, prev_mac, mac";

/// The append statement, formatted once (the statement cache looks it up by its text on every
/// record).
static INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    )
});

/// Create the audit tables, indexes and append-only triggers if absent. Idempotent; called from
/// the store's migrations.
///
/// The triggers refuse `UPDATE` on audit rows always and `DELETE` unless
/// [`crate::audit::purge_older_than`] has issued a permit for that prefix inside its transaction
/// ([`ChainWriter::delete_through`]): a guard against bugs (a payload purge that forgets a
/// `WHERE`), not against someone with the database file — that is what the MAC chain and
/// checkpoints are for.
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
        -- Time ranges are sequence ranges (`first_seq_at_or_after`): no index on `ts`.
        DROP INDEX IF EXISTS audit_log_ts;
        -- Call refs are found through the index levels (`levels`), not a B-tree index that
        -- would write a random page per record.
        DROP INDEX IF EXISTS audit_log_call_ref;
        CREATE INDEX IF NOT EXISTS audit_log_delivery ON audit_log(delivery_id) WHERE delivery_id IS NOT NULL;
        CREATE TABLE IF NOT EXISTS audit_purge_permit (through_seq INTEGER NOT NULL) STRICT;
        CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
        WHEN NOT EXISTS (SELECT 1 FROM audit_purge_permit WHERE OLD.seq <= through_seq)
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only; use audit purge'); END;",
    )?;
    // `audit_log_action` once indexed every record; it leaves out the intake's now. Rebuilt
    // once, in one savepoint (this may run inside the caller's transaction).
    let action_index: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'audit_log_action'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if action_index.as_deref() != Some(ACTION_INDEX) {
        let started = std::time::Instant::now();
        conn.execute_batch(&format!(
            "SAVEPOINT audit_action_index;
             DROP INDEX IF EXISTS audit_log_action;
             {ACTION_INDEX};
             RELEASE audit_action_index;"
        ))?;
        // Once per database, at the first start of this version: a scan of the whole log.
        if action_index.is_some() {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "rebuilt the audit log's action index without intake records"
            );
        }
    }
    Ok(())
}

/// The records of one action, for "the last backup", "the last purge" and searches by action:
/// every action but the intake's two, which make up nearly all records and would each write a
/// page of this index per delivery. A search for those runs along `seq`, where most records
/// match anyway.
const ACTION_INDEX: &str = "CREATE INDEX audit_log_action ON audit_log(action, seq) \
     WHERE action NOT IN ('delivery_accepted', 'delivery_duplicate')";

/// The condition `audit_log_action` indexes. SQLite uses a partial index only for a query whose
/// `WHERE` contains the index's own condition, so a query for one action that is not the
/// intake's repeats it ([`action_condition`]).
const NOT_INTAKE: &str = "action NOT IN ('delivery_accepted', 'delivery_duplicate')";

/// `action = <placeholder>` for `action`, written so SQLite can use `audit_log_action`.
pub(crate) fn action_condition(action: crate::audit::Action, placeholder: &str) -> String {
    use crate::audit::Action::{DeliveryAccepted, DeliveryDuplicate};
    if matches!(action, DeliveryAccepted | DeliveryDuplicate) {
        format!("action = {placeholder}")
    } else {
        format!("action = {placeholder} AND {NOT_INTAKE}")
    }
}

/// The lowest `seq` whose record's time is at or after `ts` (an RFC 3339 UTC time in the
/// stored format), or `None` if no record is that recent. Record times never decrease along
/// the chain (`audit::chain` clamps a clock that stepped back to the previous record's time),
/// so a time range is a sequence range: found by bisecting on `seq` — a few dozen rowid
/// lookups — rather than through an index on `ts` that every record would write to.
pub(crate) fn first_seq_at_or_after(conn: &Connection, ts: &str) -> rusqlite::Result<Option<i64>> {
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(seq), max(seq) FROM audit_log")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(mut lo), Some(mut hi)) = (lo, hi) else {
        return Ok(None);
    };
    // The first record at or after `from` (seq has gaps only where a purge cut a prefix).
    let mut first_from =
        conn.prepare_cached("SELECT seq, ts FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let mut at = |from: i64| -> rusqlite::Result<(i64, String)> {
        first_from.query_row([from], |r| Ok((r.get(0)?, r.get(1)?)))
    };
    if at(hi)?.1.as_str() < ts {
        return Ok(None);
    }
    // Smallest `from` in [lo, hi] whose first record is recent enough.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (seq, t) = at(mid)?;
        if t.as_str() >= ts {
            hi = mid;
        } else {
            lo = seq + 1;
        }
    }
    Ok(Some(at(lo)?.0))
}

/// A record from a row selected with [`COLUMNS`].
pub(crate) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<StoredRecord> {
    let seq: i64 = row.get(0)?;
    Ok(StoredRecord {
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

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_of(v: Option<i64>) -> Option<u64> {
    v.and_then(|s| u64::try_from(s).ok())
}

/// `WHERE …` of a search filter and its parameters. A call ref is looked up through the index
/// levels attached to `conn`, if any ([`super::levels::call_ref_condition`]).
pub(crate) fn where_clause(conn: &Connection, filter: &Filter) -> (String, Vec<SqlValue>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    // Times become sequence bounds (`first_seq_at_or_after`); on an error reading them, the
    // same bound on `ts` (a scan, but the same records).
    let since = filter.since.map(|t| {
        let ts = crate::audit::format_ts(t);
        match first_seq_at_or_after(conn, &ts) {
            Ok(Some(seq)) => ("seq >= ?", SqlValue::Integer(seq)),
            // No record that recent: none matches.
            Ok(None) => ("seq < ?", SqlValue::Integer(i64::MIN)),
            Err(_) => ("ts >= ?", SqlValue::Text(ts)),
        }
    });
    let until = filter.until.and_then(|t| {
        let ts = crate::audit::format_ts(t);
        match first_seq_at_or_after(conn, &ts) {
            Ok(Some(seq)) => Some(("seq < ?", SqlValue::Integer(seq))),
            // Every record is older: no bound.
            Ok(None) => None,
            Err(_) => Some(("ts < ?", SqlValue::Text(ts))),
        }
    });
    let mut push = |cond: &str, v: SqlValue| {
        params.push(v);
        conds.push(cond.replace('?', &format!("?{}", params.len())));
    };
    for (cond, v) in since.into_iter().chain(until) {
        push(cond, v);
    }
    if let Some(c) = &filter.call_ref {
        let cond = super::levels::call_ref_condition(conn, "?", c.as_str());
        push(&cond, SqlValue::Text(c.as_str().to_owned()));
    }
    if let Some(s) = &filter.source {
        push("source = ?", SqlValue::Text(s.as_str().to_owned()));
    }
    if let Some(a) = filter.action {
        push(
            &action_condition(a, "?"),
            SqlValue::Text(a.as_str().to_owned()),
        );
    }
    if let Some(a) = &filter.actor {
        push(
            "(actor = ? OR substr(actor, instr(actor, ':') + 1) = ?)",
            SqlValue::Text(a.as_str().to_owned()),
        );
    }
    if let Some(d) = &filter.delivery_id {
        push("delivery_id = ?", SqlValue::Text(d.as_str().to_owned()));
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (clause, params)
}

impl ChainReader for Connection {
    fn head(&self) -> Result<Option<(u64, String, String)>, AuditError> {
        // Cached: group commit reads the head once per appended record.
        let row = self
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

    fn rows_after(&self, after: u64, limit: usize) -> Result<Vec<ChainRow>, AuditError> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![seq_param(after), i64::try_from(limit).unwrap_or(i64::MAX)],
            record_from_row,
        )?;
        let mut out = Vec::new();
        for row in rows {
            match row {
                Ok(r) => out.push(ChainRow::Record(Box::new(r))),
                Err(
                    rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..),
                ) => {
                    // Nothing after an unreadable row is needed: verification stops there.
                    out.push(ChainRow::Malformed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn mac_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        Ok(self
            .prepare_cached("SELECT mac FROM audit_log WHERE seq = ?1")?
            .query_row([seq_param(seq)], |r| r.get(0))
            .optional()?)
    }

    fn purge_anchor_detail(&self) -> Result<Option<String>, AuditError> {
        Ok(self
            .query_row(
                &format!(
                    "SELECT detail FROM audit_log WHERE {}
                 AND json_valid(detail) AND json_extract(detail, '$.through_seq') IS NOT NULL
                 ORDER BY seq DESC LIMIT 1",
                    action_condition(crate::audit::Action::AuditPurged, "?1")
                ),
                [crate::audit::Action::AuditPurged.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
    }

    fn in_snapshot(
        &self,
        walk: &mut dyn FnMut() -> Result<VerifyReport, AuditError>,
    ) -> Result<VerifyReport, AuditError> {
        // A savepoint works inside or outside a transaction.
        self.execute_batch("SAVEPOINT audit_verify")?;
        let result = walk();
        let released = self.execute_batch("RELEASE audit_verify");
        let report = result?;
        released?;
        Ok(report)
    }
}

impl ChainWriter for Connection {
    fn insert(&self, r: &StoredRecord) -> Result<(), AuditError> {
        let seq = i64::try_from(r.seq).map_err(|_| AuditError::InvalidField {
            field: "seq",
            rule: "below 2^63",
        })?;
        self.prepare_cached(&INSERT)?.execute(params![
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

    fn bounds(&self) -> Result<Option<(u64, u64)>, AuditError> {
        let (first, last): (Option<i64>, Option<i64>) =
            self.query_row("SELECT min(seq), max(seq) FROM audit_log", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(seq_of(first).zip(seq_of(last)))
    }

    fn first_seq_from(&self, ts: &str) -> Result<Option<u64>, AuditError> {
        Ok(seq_of(first_seq_at_or_after(self, ts)?))
    }

    fn delete_through(&self, through: u64) -> Result<u64, AuditError> {
        let through = seq_param(through);
        self.execute(
            "INSERT INTO audit_purge_permit (through_seq) VALUES (?1)",
            [through],
        )?;
        let n = self.execute("DELETE FROM audit_log WHERE seq <= ?1", [through])?;
        self.execute("DELETE FROM audit_purge_permit", [])?;
        Ok(n as u64)
    }
}

/// A transaction is its connection: appends inside it chain onto each other.
macro_rules! via_connection {
    ($t:ty) => {
        impl ChainReader for $t {
            fn head(&self) -> Result<Option<(u64, String, String)>, AuditError> {
                ChainReader::head(&**self)
            }
            fn rows_after(&self, after: u64, limit: usize) -> Result<Vec<ChainRow>, AuditError> {
                (**self).rows_after(after, limit)
            }
            fn mac_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
                (**self).mac_at(seq)
            }
            fn purge_anchor_detail(&self) -> Result<Option<String>, AuditError> {
                (**self).purge_anchor_detail()
            }
            fn in_snapshot(
                &self,
                walk: &mut dyn FnMut() -> Result<VerifyReport, AuditError>,
            ) -> Result<VerifyReport, AuditError> {
                (**self).in_snapshot(walk)
            }
        }
        impl ChainWriter for $t {
            fn insert(&self, r: &StoredRecord) -> Result<(), AuditError> {
                (**self).insert(r)
            }
            fn bounds(&self) -> Result<Option<(u64, u64)>, AuditError> {
                (**self).bounds()
            }
            fn first_seq_from(&self, ts: &str) -> Result<Option<u64>, AuditError> {
                (**self).first_seq_from(ts)
            }
            fn delete_through(&self, through: u64) -> Result<u64, AuditError> {
                (**self).delete_through(through)
            }
        }
    };
}

via_connection!(Transaction<'_>);

impl RecordStream for Connection {
    fn count(&self, filter: &Filter) -> Result<u64, AuditError> {
        let (clause, params) = where_clause(self, filter);
        let n: i64 = self.query_row(
            &format!("SELECT count(*) FROM audit_log{clause}"),
            params_from_iter(params),
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn for_each(&self, filter: &Filter, visit: &mut RecordVisitor<'_>) -> Result<u64, AuditError> {
        let (clause, params) = where_clause(self, filter);
        let mut stmt = self.prepare(&format!(
            "SELECT {COLUMNS} FROM audit_log{clause} ORDER BY seq"
        ))?;
        // One row at a time straight off the cursor: constant memory.
        let mut rows = stmt.query(params_from_iter(params))?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            visit(None, &record_from_row(row)?)?;
            n += 1;
        }
        Ok(n)
    }
}
