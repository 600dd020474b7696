//! Bulk actions and attempt points on SQLite: the shared statements of
//! [`crate::store::console_bulk`], run on the blocking pool; each batch is one immediate
//! transaction.

use chrono::{DateTime, Utc};
use rusqlite::{params_from_iter, Connection, TransactionBehavior};

use crate::store::console_bulk::{
    batch_step, clamp_batch, AttemptPoint, BulkFilter, BulkMatch, BulkStep, Dialect, MatchCounter,
    MAX_ATTEMPT_POINTS,
};
use crate::store::payload::db_time;
use crate::store::types::DeadLetter;
use crate::store::{Store, StoreError};

const DIALECT: Dialect = Dialect {
    placeholder: |n: usize| format!("?{n}"),
    time: |p: String| p,
    int: |p: String| format!("CAST({p} AS INTEGER)"),
};

fn select(
    conn: &Connection,
    filter: &BulkFilter,
    after: i64,
    through: Option<i64>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let sql = filter.select_sql(after, through, limit, &DIALECT);
    let mut stmt = conn.prepare(&sql.sql)?;
    let rows = stmt.query_map(params_from_iter(sql.params), super::jobs::dead_letter)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many jobs `filter` matches now, a sample, and the highest id counted.
pub(super) fn bulk_match(store: &Store, filter: &BulkFilter) -> Result<BulkMatch, StoreError> {
    let conn = store.connection()?;
    let mut counter = MatchCounter::default();
    let mut after = 0;
    while let Some(next) = counter.take(
        filter,
        select(&conn, filter, after, None, MatchCounter::PAGE)?,
    ) {
        after = next;
    }
    Ok(counter.finish())
}

/// Re-queue the next batch of matching jobs after `after` and at most `through`.
pub(super) fn bulk_requeue(
    store: &Store,
    filter: &BulkFilter,
    after: i64,
    through: i64,
    batch: usize,
) -> Result<BulkStep, StoreError> {
    let batch = clamp_batch(batch);
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows = select(&tx, filter, after, Some(through), batch)?;
    let (ids, next_after) = batch_step(filter, &rows, batch);
    let now = db_time(Utc::now());
    let mut requeued = 0;
    {
        let mut stmt = tx.prepare(
            "UPDATE jobs SET status = 'pending', attempts = 0, next_attempt_at = ?2,
                             lease_until = NULL, updated_at = ?2
             WHERE id = ?1 AND status = ?3",
        )?;
        for id in ids {
            requeued += stmt.execute(rusqlite::params![id, now, filter.kind.job_status()])? as u64;
        }
    }
    tx.commit()?;
    Ok(BulkStep {
        requeued,
        next_after,
    })
}

/// Attempts started since `since`, optionally of one handler or one source's deliveries.
pub(super) fn attempt_points(
    store: &Store,
    since: DateTime<Utc>,
    handler: Option<&str>,
    source: Option<&str>,
) -> Result<Vec<AttemptPoint>, StoreError> {
    let conn = store.connection()?;
    let mut stmt = conn.prepare(&format!(
        "SELECT j.handler, d.source, a.started_at, a.result, a.latency_ms, a.error
         FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN deliveries d ON d.id = j.delivery_id
         WHERE a.started_at >= ?1 AND (?2 IS NULL OR j.handler = ?2)
           AND (?3 IS NULL OR d.source = ?3)
         ORDER BY a.started_at LIMIT {MAX_ATTEMPT_POINTS}"
    ))?;
    let rows = stmt.query_map(rusqlite::params![db_time(since), handler, source], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (handler, source, started, result, latency_ms, error) = row?;
        let Ok(started_at) = DateTime::parse_from_rfc3339(&started) else {
            continue;
        };
        out.push(AttemptPoint {
            handler,
            source,
            started_at: started_at.with_timezone(&Utc),
            ok: result == "ok",
            latency_ms,
            error,
        });
    }
    Ok(out)
}
