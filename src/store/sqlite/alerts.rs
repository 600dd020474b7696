//! Console alerts on SQLite: the `alerts` table (created by its own idempotent migration,
//! beside the numbered schema) and the fact queries of the built-in rules. See
//! [`crate::store::alerts`] for what the rows mean. One server evaluates everything, so the
//! evaluation lease is always held.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::storage::blocking;
use super::Store;
use crate::audit::Action;
use crate::store::alerts::{
    new_id, transition_record, Alert, AlertFacts, AlertState, AlertStore, AttemptFact, NewAlert,
    SourceFact,
};
use crate::store::payload::db_time;
use crate::store::types::Requester;
use crate::store::{StoreError, StoreFuture};

/// The table. The partial unique index is what makes opening idempotent: one unresolved row
/// per key.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS alerts (
             id              TEXT PRIMARY KEY,
             key             TEXT NOT NULL,     -- rule:subject
             rule            TEXT NOT NULL,
             subject         TEXT NOT NULL,     -- configured name, node id or 'audit'
             summary         TEXT NOT NULL,     -- configured names and numbers only
             state           TEXT NOT NULL,     -- open | acknowledged | resolved
             opened_at       TEXT NOT NULL,
             acknowledged_at TEXT,
             acknowledged_by TEXT,
             resolved_at     TEXT
         );
         CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved ON alerts (key)
             WHERE state <> 'resolved';
         CREATE INDEX IF NOT EXISTS alerts_opened ON alerts (opened_at);",
    )?;
    Ok(())
}

const SELECT: &str = "SELECT id, rule, subject, summary, state, opened_at, acknowledged_at,
                             acknowledged_by, resolved_at FROM alerts";

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let opt = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(r.get::<_, Option<String>>(i)?.as_deref().map(time))
    };
    Ok(Alert {
        id: r.get(0)?,
        rule: r.get(1)?,
        subject: r.get(2)?,
        summary: r.get(3)?,
        state: AlertState::parse(&r.get::<_, String>(4)?),
        opened_at: time(&r.get::<_, String>(5)?),
        acknowledged_at: opt(6)?,
        acknowledged_by: r.get(7)?,
        resolved_at: opt(8)?,
    })
}

fn by_id(conn: &Connection, id: &str) -> Result<Option<Alert>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE id = ?1"))?
        .query_row(params![id], alert)
        .optional()?)
}

fn open(store: &Store, new: &NewAlert) -> Result<Option<Alert>, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = new_id();
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO alerts (id, key, rule, subject, summary, state, opened_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6)",
        params![
            id,
            new.key(),
            new.rule,
            new.subject,
            new.summary,
            db_time(Utc::now())
        ],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    let row = by_id(&tx, &id)?.ok_or(StoreError::NotFound("alert"))?;
    crate::audit::append(
        &tx,
        store.keyring(),
        &transition_record(Action::AlertOpened, &row, None),
    )?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(Some(row))
}

fn resolve(store: &Store, key: &str) -> Result<Option<Alert>, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<String> = tx
        .query_row(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?2
             WHERE key = ?1 AND state <> 'resolved' RETURNING id",
            params![key, db_time(Utc::now())],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    let row = by_id(&tx, &id)?.ok_or(StoreError::NotFound("alert"))?;
    crate::audit::append(
        &tx,
        store.keyring(),
        &transition_record(Action::AlertResolved, &row, None),
    )?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(Some(row))
}

fn acknowledge(store: &Store, id: &str, who: &Requester) -> Result<Option<Alert>, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if by_id(&tx, id)?.is_none() {
        return Err(StoreError::NotFound("alert"));
    }
    let changed = tx.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = ?2, acknowledged_by = ?3
         WHERE id = ?1 AND state = 'open'",
        params![id, db_time(Utc::now()), who.user],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    let row = by_id(&tx, id)?.ok_or(StoreError::NotFound("alert"))?;
    crate::audit::append(
        &tx,
        store.keyring(),
        &transition_record(Action::AlertAcknowledged, &row, Some(who)),
    )?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(Some(row))
}

fn list(store: &Store, resolved: usize) -> Result<Vec<Alert>, StoreError> {
    let conn = store.connection()?;
    let mut out: Vec<Alert> = conn
        .prepare(&format!(
            "{SELECT} WHERE state <> 'resolved' ORDER BY opened_at DESC, id"
        ))?
        .query_map([], alert)?
        .collect::<Result<_, _>>()?;
    let limit = i64::try_from(resolved.min(1000)).unwrap_or(1000);
    let done = conn
        .prepare(&format!(
            "{SELECT} WHERE state = 'resolved' ORDER BY resolved_at DESC, id LIMIT ?1"
        ))?
        .query_map(params![limit], alert)?
        .collect::<Result<Vec<_>, _>>()?;
    out.extend(done);
    Ok(out)
}

fn facts(store: &Store, attempts: u32, since: DateTime<Utc>) -> Result<AlertFacts, StoreError> {
    let conn = store.connection()?;
    // The newest attempts by id (the primary key), so the query never scans the whole table.
    let attempts = conn
        .prepare(
            "SELECT j.handler, a.result = 'ok', a.started_at
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE a.id > (SELECT COALESCE(MAX(id), 0) FROM attempts) - ?1
             ORDER BY a.id",
        )?
        .query_map(params![i64::from(attempts)], |r| {
            Ok(AttemptFact {
                handler: r.get(0)?,
                ok: r.get(1)?,
                started_at: time(&r.get::<_, String>(2)?),
            })
        })?
        .collect::<Result<_, _>>()?;
    let dead_letters = conn
        .prepare(
            "SELECT handler, COUNT(*) FROM jobs WHERE status = 'dead'
             GROUP BY handler ORDER BY handler",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let sources = conn
        .prepare(
            "SELECT source, COUNT(*), MAX(received_at) FROM deliveries
             WHERE received_at >= ?1 GROUP BY source ORDER BY source",
        )?
        .query_map(params![db_time(since)], |r| {
            Ok(SourceFact {
                source: r.get(0)?,
                received: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                last_received: r.get::<_, Option<String>>(2)?.as_deref().map(time),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(AlertFacts {
        attempts,
        dead_letters,
        sources,
    })
}

impl AlertStore for Store {
    fn open_alert(&self, alert: NewAlert) -> StoreFuture<'_, Option<Alert>> {
        blocking(self, move |s| open(s, &alert))
    }

    fn resolve_alert(&self, key: String) -> StoreFuture<'_, Option<Alert>> {
        blocking(self, move |s| resolve(s, &key))
    }

    fn acknowledge_alert(&self, id: String, who: Requester) -> StoreFuture<'_, Option<Alert>> {
        blocking(self, move |s| acknowledge(s, &id, &who))
    }

    fn list_alerts(&self, resolved: usize) -> StoreFuture<'_, Vec<Alert>> {
        blocking(self, move |s| list(s, resolved))
    }

    fn alert_facts(&self, attempts: u32, since: DateTime<Utc>) -> StoreFuture<'_, AlertFacts> {
        blocking(self, move |s| facts(s, attempts, since))
    }

    fn lead_alerts(&self, _ttl: std::time::Duration) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(true) })
    }

    fn alert_node(&self) -> String {
        "local".to_owned()
    }
}
