//! The console's health numbers, delivery detail and audit reads on PostgreSQL. None of these
//! queries filters by node: the console on any node shows the whole cluster.

use chrono::{DateTime, Utc};

use super::{audit, PgStore};
use crate::audit::{Filter, StoredRecord};
use crate::store::console::{
    AttemptSample, DeliveryJob, DeliveryMeta, HandlerQueue, HealthData, SourceEvent,
};
use crate::store::payload::db_time;
use crate::store::StoreError;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The raw health numbers since `since`, every node's.
pub(super) async fn health_data(
    store: &PgStore,
    since: DateTime<Utc>,
) -> Result<HealthData, StoreError> {
    let client = store.client().await?;
    let since_text = crate::audit::format_ts(since);
    let mut data = HealthData::default();
    // A `delivery_rejected` record with a `count` stands for that many rejections (tallied per
    // interval by each node's listener); every other record for one.
    for r in client
        .query(
            "SELECT source, action, ts,
                    CASE WHEN action = 'delivery_rejected'
                         THEN COALESCE((detail::jsonb ->> 'count')::bigint, 1) ELSE 1 END
             FROM audit_log
             WHERE ts >= $1 AND source IS NOT NULL AND action IN
               ('delivery_accepted', 'delivery_duplicate', 'delivery_quarantined', 'delivery_rejected')",
            &[&since_text],
        )
        .await?
    {
        data.source_events.push(SourceEvent {
            source: r.get(0),
            action: r.get(1),
            ts: r.get(2),
            count: r.get(3),
        });
    }
    for r in client
        .query(
            "SELECT j.handler, a.result, a.latency_ms, a.started_at
             FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.started_at >= $1",
            &[&since],
        )
        .await?
    {
        data.attempts.push(AttemptSample {
            handler: r.get(0),
            ok: r.get::<_, &str>(1) == "ok",
            latency_ms: r.get(2),
            started_at: r.get(3),
        });
    }
    for r in client
        .query(
            "SELECT handler,
                    COUNT(*) FILTER (WHERE status IN ('pending', 'waiting', 'running')),
                    COUNT(*) FILTER (WHERE status = 'dead')
             FROM jobs GROUP BY handler",
            &[],
        )
        .await?
    {
        data.queues.push(HandlerQueue {
            handler: r.get(0),
            queued: count(r.get(1)),
            dead: count(r.get(2)),
        });
    }
    let totals = client
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE status IN ('pending', 'waiting', 'running')),
                    MIN(next_attempt_at) FILTER (WHERE status = 'pending'),
                    COUNT(*) FILTER (WHERE status = 'dead')
             FROM jobs WHERE status IN ('pending', 'waiting', 'running', 'dead')",
            &[],
        )
        .await?;
    data.queue_depth = count(totals.get(0));
    data.oldest_pending = totals.get(1);
    data.dead_letters = count(totals.get(2));
    Ok(data)
}

/// A delivery's metadata, whichever node accepted it.
pub(super) async fn delivery_meta(
    store: &PgStore,
    id: &str,
) -> Result<Option<DeliveryMeta>, StoreError> {
    let client = store.client().await?;
    Ok(client
        .query_opt(
            "SELECT id, source, event_type, received_at, status FROM deliveries WHERE id = $1",
            &[&id],
        )
        .await?
        .map(|r| DeliveryMeta {
            id: r.get(0),
            source: r.get(1),
            event_type: r.get(2),
            received_at: db_time(r.get(3)),
            status: r.get(4),
        }))
}

/// A delivery's jobs in route order.
pub(super) async fn delivery_jobs(
    store: &PgStore,
    id: &str,
) -> Result<Vec<DeliveryJob>, StoreError> {
    let client = store.client().await?;
    Ok(client
        .query(
            "SELECT id, handler, status, attempts FROM jobs WHERE delivery_id = $1
             ORDER BY position, id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| DeliveryJob {
            job_id: r.get(0),
            handler: r.get(1),
            status: r.get(2),
            attempts: i64::from(r.get::<_, i32>(3)),
        })
        .collect())
}

pub(super) const AUDIT_COLUMNS: &str =
    "seq, ts, actor, action, outcome, delivery_id, source, call_ref, \
                             remote_addr, detail, prev_mac, mac";

/// The newest `limit` records matching `filter`, every node's, oldest first (ties by node and
/// sequence).
pub(super) async fn audit_records(
    store: &PgStore,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<StoredRecord>, StoreError> {
    let (clause, params) = super::audit_chain::where_clause(filter);
    let refs = super::audit_chain::param_refs(&params);
    let client = store.client().await?;
    let sql = format!(
        "SELECT * FROM (SELECT {AUDIT_COLUMNS}, node_id FROM audit_log{clause}
                        ORDER BY ts DESC, node_id DESC, seq DESC LIMIT {limit}) newest
         ORDER BY ts, node_id, seq"
    );
    Ok(client
        .query(&sql, &refs)
        .await?
        .iter()
        .map(audit::stored_from_row)
        .collect())
}
