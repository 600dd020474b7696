//! Operator reads on PostgreSQL: `deliveries list` and `quarantine list` (metadata only),
//! `deliveries show` and `quarantine show` (decrypted, audited as `payload_read` in the same
//! transaction as the decryption, so there is no read without its record), plus the delivery
//! decryption dispatch shares.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use wardhook_sdk::Event;

use super::{audit, keys, PgStore};
use crate::store::audit_hook::to_record;
use crate::store::payload::db_time;
use crate::store::payload::{delivery_place, StoredDelivery};
use crate::store::reads::{delivery_read_event, open_quarantine, quarantine_read_event};
use crate::store::types::{
    DeliverySummary, ListFilter, QuarantineEntry, QuarantineSummary, Requester,
};
use crate::store::StoreError;

/// A decrypted delivery and the row facts readers need for their audit records.
pub(super) struct OpenedDelivery {
    pub source: String,
    pub call_ref: Option<String>,
    pub key_id: i64,
    pub stored: StoredDelivery,
}

/// Decrypt delivery `id`; `KeyDestroyed` once its payload was purged.
pub(super) async fn open_delivery(
    store: &PgStore,
    client: &impl GenericClient,
    id: &str,
) -> Result<OpenedDelivery, StoreError> {
    let row = client
        .query_opt(
            "SELECT source, key_id, nonce, ciphertext, call_ref FROM deliveries WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound("delivery"))?;
    let source: String = row.get(0);
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (
        row.get::<_, Option<i64>>(1),
        row.get::<_, Option<Vec<u8>>>(2),
        row.get::<_, Option<Vec<u8>>>(3),
    ) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(store, client, key_id).await?;
    let plain = key.open(&delivery_place(id, &source, key_id), &nonce, &ciphertext)?;
    let stored: StoredDelivery = serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
    Ok(OpenedDelivery {
        source,
        call_ref: row.get(4),
        key_id,
        stored,
    })
}

/// `deliveries list` and `quarantine list` filters as SQL over unprefixed columns: each
/// condition applies only when its parameter is not NULL.
const LIST_WHERE: &str = "($1::text IS NULL OR source = $1)
    AND ($2::timestamptz IS NULL OR received_at >= $2)
    AND ($3::timestamptz IS NULL OR received_at < $3)
    AND ($4::text IS NULL OR status = $4)";

fn list_limit(filter: &ListFilter) -> i64 {
    i64::try_from(if filter.limit == 0 { 100 } else { filter.limit }).unwrap_or(100)
}

fn list_params<'a>(
    filter: &'a ListFilter,
    limit: &'a i64,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 5] {
    [
        &filter.source,
        &filter.since,
        &filter.until,
        &filter.status,
        limit,
    ]
}

/// `deliveries list`: metadata of stored deliveries, newest first (at most `limit`, 0 = 100).
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn list_deliveries(
    store: &PgStore,
    filter: &ListFilter,
) -> Result<Vec<DeliverySummary>, StoreError> {
    let client = store.client().await?;
    let limit = list_limit(filter);
    let rows = client
        .query(
            &format!(
                "SELECT d.id, d.source, d.event_type, d.received_at, d.status,
                    (SELECT COUNT(*) FROM jobs j WHERE j.delivery_id = d.id)
             FROM deliveries d WHERE {LIST_WHERE}
             ORDER BY d.received_at DESC, d.id DESC LIMIT $5"
            ),
            &list_params(filter, &limit),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeliverySummary {
            id: r.get(0),
            source: r.get(1),
            event_type: r.get(2),
            received_at: db_time(r.get::<_, DateTime<Utc>>(3)),
            status: r.get(4),
            jobs: r.get(5),
        })
        .collect())
}

/// `deliveries show ID`: the decrypted event, with its `payload_read` record.
#[tracing::instrument(skip_all, fields(node = %store.node_id(), via = who.via))]
pub(super) async fn show_delivery(
    store: &PgStore,
    id: &str,
    who: &Requester,
) -> Result<Event, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let opened = open_delivery(store, &tx, id).await?;
    let ev = delivery_read_event(
        who,
        id,
        &opened.source,
        opened.call_ref.as_deref(),
        opened.key_id,
    );
    audit::append(store, &tx, &to_record(&ev)).await?;
    tx.commit().await?;
    Ok(opened.stored.event)
}

/// `quarantine list`: metadata of quarantined deliveries, newest first.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn list_quarantine(
    store: &PgStore,
    filter: &ListFilter,
) -> Result<Vec<QuarantineSummary>, StoreError> {
    let client = store.client().await?;
    let limit = list_limit(filter);
    let rows = client
        .query(
            &format!(
                "SELECT id, source, reason, received_at, status FROM quarantine
                 WHERE {LIST_WHERE} ORDER BY received_at DESC, id DESC LIMIT $5"
            ),
            &list_params(filter, &limit),
        )
        .await?;
    Ok(rows.iter().map(quarantine_summary).collect())
}

fn quarantine_summary(r: &tokio_postgres::Row) -> QuarantineSummary {
    QuarantineSummary {
        id: r.get(0),
        source: r.get(1),
        reason: r.get(2),
        received_at: db_time(r.get::<_, DateTime<Utc>>(3)),
        status: r.get(4),
    }
}

/// `quarantine show ID`: the decrypted body as received, with its `payload_read` record.
#[tracing::instrument(skip_all, fields(node = %store.node_id(), via = who.via))]
pub(super) async fn show_quarantine(
    store: &PgStore,
    id: &str,
    who: &Requester,
) -> Result<QuarantineEntry, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT id, source, reason, received_at, status, key_id, nonce, ciphertext
             FROM quarantine WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound("quarantine entry"))?;
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (
        row.get::<_, Option<i64>>(5),
        row.get::<_, Option<Vec<u8>>>(6),
        row.get::<_, Option<Vec<u8>>>(7),
    ) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(store, &tx, key_id).await?;
    let entry = open_quarantine(&key, quarantine_summary(&row), key_id, &nonce, &ciphertext)?;
    let ev = quarantine_read_event(who, &entry.summary.id, &entry.summary.source, key_id);
    audit::append(store, &tx, &to_record(&ev)).await?;
    tx.commit().await?;
    Ok(entry)
}
