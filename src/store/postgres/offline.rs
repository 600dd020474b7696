//! The operator commands on PostgreSQL that read payloads: `deliveries reverify` and
//! `emergency-export`, with the SQLite store's audit records.

use chrono::{DateTime, Utc};

use super::{audit, keys, read, PgStore};
use crate::crypto::RecordPlace;
use crate::store::admin::Requester;
use crate::store::archive::{access_record, ArchiveWriter};
use crate::store::maintenance::StoredRequest;
use crate::store::payload::{decode_body, StoredDelivery};
use crate::store::StoreError;

/// Decrypt delivery `id`'s raw body and signature headers; the read is audited
/// (`delivery_reverified`) in the same transaction.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn load_stored_request(
    store: &PgStore,
    id: &str,
    who: &Requester,
) -> Result<StoredRequest, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let opened = read::open_delivery(store, &tx, id).await?;
    let record = crate::store::maintenance::reverified_record(id, &opened.source, who);
    audit::append(store, &tx, &record).await?;
    tx.commit().await?;
    Ok(StoredRequest {
        source: opened.source,
        body: decode_body(&opened.stored.body_b64)?,
        headers: opened.stored.signature_headers,
        received_at: opened.stored.event.received_at,
    })
}

/// Deliveries read per round trip while exporting.
const PAGE: i64 = 200;

/// Decrypt the deliveries received in `[since, until)` (every node's) into `archive`, from one
/// repeatable-read snapshot; returns how many in range were already purged. The caller
/// finishes the archive and then writes the `emergency_access` record
/// ([`record_emergency_access`]) before handing the archive key out.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn export_deliveries(
    store: &PgStore,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    archive: &mut ArchiveWriter<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    let mut client = store.client().await?;
    let mut purged = 0u64;
    {
        let tx = PgStore::snapshot(&mut client).await?;
        let mut after: (Option<DateTime<Utc>>, String) = (None, String::new());
        loop {
            let rows = tx
                .query(
                    "SELECT id, source, key_id, nonce, ciphertext, received_at FROM deliveries
                     WHERE received_at >= $1 AND received_at < $2
                       AND ($3::timestamptz IS NULL OR (received_at, id) > ($3, $4))
                     ORDER BY received_at, id LIMIT $5",
                    &[&since, &until, &after.0, &after.1, &PAGE],
                )
                .await?;
            for row in &rows {
                let id: String = row.get(0);
                let source: String = row.get(1);
                let (Some(key_id), Some(nonce), Some(ct)) = (
                    row.get::<_, Option<i64>>(2),
                    row.get::<_, Option<Vec<u8>>>(3),
                    row.get::<_, Option<Vec<u8>>>(4),
                ) else {
                    purged += 1;
                    continue;
                };
                let key = match keys::key_for_read(store, &tx, key_id).await {
                    Ok(k) => k,
                    Err(StoreError::KeyDestroyed) => {
                        purged += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let place = RecordPlace {
                    kind: "delivery",
                    id: &id,
                    source: &source,
                    key_id,
                };
                let plain = key.open(&place, &nonce, &ct)?;
                let stored: StoredDelivery = serde_json::from_slice(&plain)
                    .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
                progress(archive.push(&stored.event)?);
            }
            let Some(last) = rows.last() else { break };
            after = (Some(last.get(5)), last.get(0));
            if rows.len() < PAGE as usize {
                break;
            }
        }
        tx.commit().await?;
    }
    Ok(purged)
}

/// The `emergency_access` record of a finished export.
pub(super) async fn record_emergency_access(
    store: &PgStore,
    who: &Requester,
    count: u64,
    reason: &str,
    since: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    audit::append(store, &tx, &access_record(who, count, reason, since)).await?;
    tx.commit().await?;
    Ok(())
}
