//! Bulk actions and attempt points on PostgreSQL: the shared statements of
//! [`crate::store::console_bulk`] over every node's jobs; each batch is one transaction.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::store::console_bulk::{
    batch_step, clamp_batch, AttemptPoint, BulkFilter, BulkMatch, BulkStep, Dialect, MatchCounter,
    MAX_ATTEMPT_POINTS,
};
use crate::store::types::DeadLetter;
use crate::store::StoreError;

const DIALECT: Dialect = Dialect {
    placeholder: |n: usize| format!("${n}"),
    time: |p: String| format!("{p}::text::timestamptz"),
    int: |p: String| format!("{p}::text::bigint"),
};

async fn select(
    client: &impl GenericClient,
    filter: &BulkFilter,
    after: i64,
    through: Option<i64>,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let sql = filter.select_sql(after, through, limit, &DIALECT);
    let refs: Vec<&(dyn ToSql + Sync)> = sql
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect();
    Ok(client
        .query(&sql.sql, &refs)
        .await?
        .iter()
        .map(super::dead::dead_letter)
        .collect())
}

/// How many jobs `filter` matches now, a sample, and the highest id counted.
pub(super) async fn bulk_match(
    store: &PgStore,
    filter: &BulkFilter,
) -> Result<BulkMatch, StoreError> {
    let client = store.client().await?;
    let mut counter = MatchCounter::default();
    let mut after = 0;
    while let Some(next) = counter.take(
        filter,
        select(&client, filter, after, None, MatchCounter::PAGE).await?,
    ) {
        after = next;
    }
    Ok(counter.finish())
}

/// Re-queue the next batch of matching jobs after `after` and at most `through`.
pub(super) async fn bulk_requeue(
    store: &PgStore,
    filter: &BulkFilter,
    after: i64,
    through: i64,
    batch: usize,
) -> Result<BulkStep, StoreError> {
    let batch = clamp_batch(batch);
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let rows = select(&tx, filter, after, Some(through), batch).await?;
    let (ids, next_after) = batch_step(filter, &rows, batch);
    let requeued = tx
        .execute(
            "UPDATE jobs SET status = 'pending', attempts = 0, next_attempt_at = now(),
                             lease_until = NULL, lease_owner = NULL, updated_at = now()
             WHERE id = ANY($1) AND status = $2",
            &[&ids, &filter.kind.job_status()],
        )
        .await?;
    tx.commit().await?;
    Ok(BulkStep {
        requeued,
        next_after,
    })
}

/// Attempts started since `since`, optionally of one handler or one source's deliveries,
/// every node's.
pub(super) async fn attempt_points(
    store: &PgStore,
    since: DateTime<Utc>,
    handler: Option<&str>,
    source: Option<&str>,
) -> Result<Vec<AttemptPoint>, StoreError> {
    let client = store.client().await?;
    let limit = i64::try_from(MAX_ATTEMPT_POINTS).unwrap_or(i64::MAX);
    Ok(client
        .query(
            "SELECT j.handler, d.source, a.started_at, a.result, a.latency_ms, a.error
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             JOIN deliveries d ON d.id = j.delivery_id
             WHERE a.started_at >= $1 AND ($2::text IS NULL OR j.handler = $2)
               AND ($3::text IS NULL OR d.source = $3)
             ORDER BY a.started_at LIMIT $4",
            &[&since, &handler, &source, &limit],
        )
        .await?
        .iter()
        .map(|r| AttemptPoint {
            handler: r.get(0),
            source: r.get(1),
            started_at: r.get(2),
            ok: r.get::<_, String>(3) == "ok",
            latency_ms: r.get(4),
            error: r.get(5),
        })
        .collect())
}
