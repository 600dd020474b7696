//! Dead letters on PostgreSQL: listing them and putting them back in the queue (`dlq list`,
//! `dlq retry`), with the SQLite store's filters, order and audit records.

use chrono::{DateTime, Utc};

use super::{audit, PgStore};
use crate::store::admin::Requester;
use crate::store::jobs::{retried_record, DeadFilter, DeadLetter};
use crate::store::writer::db_time;
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
    Ok(rows
        .iter()
        .map(|r| DeadLetter {
            job_id: r.get(0),
            delivery_id: r.get(1),
            source: r.get(2),
            event_type: r.get(3),
            handler: r.get(4),
            attempts: i64::from(r.get::<_, i32>(5)),
            last_error: r.get(6),
            updated_at: r.get::<_, Option<DateTime<Utc>>>(7).map(db_time),
        })
        .collect())
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
