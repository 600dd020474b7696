//! Dead letters and re-runs on PostgreSQL: listing dead letters and putting them back in the
//! queue (`dlq list`, `dlq retry`), and replaying a delivery (`deliveries replay`), with the
//! SQLite store's filters, order, rules and audit records.

use chrono::{DateTime, Utc};

use super::{audit, PgStore};
use crate::store::jobs::{replayed_record, retried_record};
use crate::store::payload::db_time;
use crate::store::types::{AttemptSummary, DeadFilter, DeadLetter, Requester};
use crate::store::StoreError;

/// The filter as SQL: each condition applies only when its parameter is not NULL.
const DEAD_WHERE: &str = "j.status = 'dead'
    AND ($1::text IS NULL OR j.handler = $1)
    AND ($2::text IS NULL OR d.source = $2)
    AND ($3::bigint IS NULL OR j.id = $3)";

/// The dead letters matching `filter`, newest first (at most `limit`, 0 = 100).
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn list_dead(
    store: &PgStore,
    filter: &DeadFilter,
) -> Result<Vec<DeadLetter>, StoreError> {
    let client = store.client().await?;
    let limit = i64::try_from(if filter.limit == 0 { 100 } else { filter.limit }).unwrap_or(100);
    let rows = client
        .query(
            &format!(
                "SELECT j.id, j.delivery_id, d.source, d.event_type, j.handler, j.attempts,
                        j.last_error, j.updated_at
                 FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
                 WHERE {DEAD_WHERE}
                 ORDER BY j.updated_at DESC, j.id DESC LIMIT $4"
            ),
            &[&filter.handler, &filter.source, &filter.job_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(dead_letter).collect())
}

/// Put the matching dead letters back in the queue, due now, with a fresh retry schedule;
/// one `retried` audit record each, in the same transaction.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn retry_dead(
    store: &PgStore,
    filter: &DeadFilter,
    who: &Requester,
) -> Result<u64, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            &format!(
                "UPDATE jobs j SET status = 'pending', attempts = 0, next_attempt_at = now(),
                                   updated_at = now()
                 FROM deliveries d
                 WHERE d.id = j.delivery_id AND {DEAD_WHERE}
                 RETURNING j.delivery_id, d.source, j.handler"
            ),
            &[&filter.handler, &filter.source, &filter.job_id],
        )
        .await?;
    for r in &rows {
        let record = retried_record(who, r.get(0), r.get(1), r.get(2));
        audit::append(store, &tx, &record).await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Run a delivery's handlers again: all of its finished or dead jobs, or one handler's —
/// created if the delivery never had a job for it. Audited (`replayed`) with who asked.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn replay(
    store: &PgStore,
    delivery_id: &str,
    handler: Option<&str>,
    who: &Requester,
) -> Result<u64, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let source: String = tx
        .query_opt(
            "SELECT source FROM deliveries WHERE id = $1 AND status = 'accepted'",
            &[&delivery_id],
        )
        .await?
        .ok_or(StoreError::NotFound("delivery"))?
        .get(0);
    let requeue = "UPDATE jobs SET status = 'pending', attempts = 0, next_attempt_at = now(),
                                   lease_until = NULL, lease_owner = NULL, updated_at = now()
                   WHERE delivery_id = $1 AND status IN ('done', 'dead')";
    let n = match handler {
        Some(h) => {
            let updated = tx
                .execute(&format!("{requeue} AND handler = $2"), &[&delivery_id, &h])
                .await?;
            if updated > 0 {
                updated
            } else {
                // A job that exists but is not finished is left alone (0); a missing one is
                // created after the delivery's others.
                tx.execute(
                    "INSERT INTO jobs (delivery_id, handler, position, status, attempts,
                                       next_attempt_at, created_at, updated_at)
                     SELECT $1, $2, COALESCE(MAX(position) + 1, 0), 'pending', 0,
                            now(), now(), now()
                     FROM jobs WHERE delivery_id = $1
                     ON CONFLICT (delivery_id, handler) DO NOTHING",
                    &[&delivery_id, &h],
                )
                .await?
            }
        }
        None => {
            tx.execute(
                &format!("{requeue} AND handler NOT LIKE '@%'"),
                &[&delivery_id],
            )
            .await?
        }
    };
    let record = replayed_record(who, delivery_id, &source, handler, n);
    audit::append(store, &tx, &record).await?;
    tx.commit().await?;
    Ok(n)
}

/// Every attempt of a job, oldest first (`dlq show`).
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn job_attempts(
    store: &PgStore,
    job_id: i64,
) -> Result<Vec<AttemptSummary>, StoreError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT attempt, started_at, result, http_status, latency_ms, destination, error
             FROM attempts WHERE job_id = $1 ORDER BY id",
            &[&job_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AttemptSummary {
            attempt: i64::from(r.get::<_, i32>(0)),
            started_at: db_time(r.get::<_, DateTime<Utc>>(1)),
            result: r.get(2),
            http_status: r.get::<_, Option<i32>>(3).map(i64::from),
            latency_ms: r.get(4),
            destination: r.get(5),
            error: r.get(6),
        })
        .collect())
}

/// A dead letter from a row of `j.id, j.delivery_id, d.source, d.event_type, j.handler,
/// j.attempts, j.last_error, j.updated_at` (the dead-letter list and the bulk actions).
pub(super) fn dead_letter(r: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        job_id: r.get(0),
        delivery_id: r.get(1),
        source: r.get(2),
        event_type: r.get(3),
        handler: r.get(4),
        attempts: i64::from(r.get::<_, i32>(5)),
        last_error: r.get(6),
        updated_at: r.get::<_, Option<DateTime<Utc>>>(7).map(db_time),
    }
}
