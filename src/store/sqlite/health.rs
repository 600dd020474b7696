//! The console's health numbers and delivery detail on SQLite.
//!
//! Sources are counted from the audit log (accepted, duplicate, quarantined, rejected records
//! carry the source), because rejections store nothing else; handlers from the attempts table.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use crate::store::console::{
    AttemptSample, DeliveryJob, DeliveryMeta, HandlerQueue, HealthData, SourceEvent,
};
use crate::store::{Store, StoreError};

fn parse_time(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The raw health numbers since `since`.
pub(super) fn health_data(store: &Store, since: DateTime<Utc>) -> Result<HealthData, StoreError> {
    let conn = store.connection()?;
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut data = HealthData::default();
    // The records since `since` are those from this seq on (`first_seq_at_or_after`).
    if let Some(from) = super::audit_log::first_seq_at_or_after(&conn, &since)? {
        // A `delivery_rejected` record with a `count` stands for that many rejections (tallied
        // per interval by the listener); every other record for one.
        let mut stmt = conn.prepare(
            "SELECT source, action, ts,
                    CASE WHEN action = 'delivery_rejected' AND json_valid(detail)
                         THEN COALESCE(json_extract(detail, '$.count'), 1) ELSE 1 END
             FROM audit_log
             WHERE seq >= ?1 AND source IS NOT NULL AND action IN
               ('delivery_accepted', 'delivery_duplicate', 'delivery_quarantined', 'delivery_rejected')",
        )?;
        let rows = stmt.query_map(params![from], |r| {
            Ok(SourceEvent {
                source: r.get(0)?,
                action: r.get(1)?,
                ts: r.get(2)?,
                count: r.get(3)?,
            })
        })?;
        for row in rows {
            data.source_events.push(row?);
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT j.handler, a.result, a.latency_ms, a.started_at
             FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.started_at >= ?1",
        )?;
        let rows = stmt.query_map(params![since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (handler, result, latency_ms, started_at) = row?;
            let Some(started_at) = parse_time(&started_at) else {
                continue;
            };
            data.attempts.push(AttemptSample {
                handler,
                ok: result == "ok",
                latency_ms,
                started_at,
            });
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT handler,
                    SUM(status IN ('pending', 'waiting', 'running')),
                    SUM(status = 'dead')
             FROM jobs GROUP BY handler",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(HandlerQueue {
                handler: r.get(0)?,
                queued: r.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
                dead: r.get::<_, Option<i64>>(2)?.unwrap_or(0).max(0) as u64,
            })
        })?;
        for row in rows {
            data.queues.push(row?);
        }
    }
    let (queue_depth, oldest): (i64, Option<String>) = conn.query_row(
        "SELECT COUNT(*), MIN(CASE WHEN status = 'pending' THEN next_attempt_at END)
         FROM jobs WHERE status IN ('pending', 'waiting', 'running')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    data.queue_depth = queue_depth.max(0) as u64;
    data.oldest_pending = oldest.as_deref().and_then(parse_time);
    let dead: i64 = conn.query_row("SELECT COUNT(*) FROM jobs WHERE status = 'dead'", [], |r| {
        r.get(0)
    })?;
    data.dead_letters = dead.max(0) as u64;
    Ok(data)
}

/// A delivery's metadata.
pub(super) fn delivery_meta(store: &Store, id: &str) -> Result<Option<DeliveryMeta>, StoreError> {
    let conn = store.connection()?;
    Ok(conn
        .query_row(
            "SELECT id, source, event_type, received_at, status FROM deliveries WHERE id = ?1",
            [id],
            |r| {
                Ok(DeliveryMeta {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    event_type: r.get(2)?,
                    received_at: r.get(3)?,
                    status: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// A delivery's jobs in route order.
pub(super) fn delivery_jobs(store: &Store, id: &str) -> Result<Vec<DeliveryJob>, StoreError> {
    Ok(super::jobs::delivery_jobs(store, id)?
        .into_iter()
        .map(|(job_id, handler, status, attempts)| DeliveryJob {
            job_id,
            handler,
            status,
            attempts,
        })
        .collect())
}
