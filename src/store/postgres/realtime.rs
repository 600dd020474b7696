//! Real-time replies on PostgreSQL, kept exactly as the SQLite store keeps them: a finished
//! pseudo-job `@realtime` of the delivery holding the sealed reply, so a retry that lands on any
//! node gets the same answer, and purge covers it.

use chrono::Utc;

use super::{audit, keys, PgStore};
use crate::store::caller_phone::CallerPhone;
use crate::store::prepare::period_of;
use crate::store::realtime::{open_reply, place, replied_record, REPLY_HANDLER};
use crate::store::types::Reply;
use crate::store::StoreError;

/// Store the reply given for `delivery_id`; the first one stored wins (a racing retry on
/// another node inserts nothing and writes no audit record).
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn record_reply(
    store: &PgStore,
    delivery_id: &str,
    source: &str,
    reply: &Reply,
    latency_ms: i64,
    caller_phone: Option<CallerPhone>,
) -> Result<(), StoreError> {
    let plain = crate::store::realtime::plaintext(reply)?;
    let now = Utc::now();
    let mut client = store.client().await?;
    let (key_id, key) = keys::key_for_write(store, &mut client, &period_of(now)).await?;
    let sealed = key.seal(&place(delivery_id, source, key_id), &plain)?;
    let tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO jobs (delivery_id, handler, position, status, attempts, next_attempt_at,
                               created_at, updated_at, out_key_id, out_nonce, out_ciphertext)
             VALUES ($1, $2, -1, 'done', 1, $3, $3, $3, $4, $5, $6)
             ON CONFLICT (delivery_id, handler) DO NOTHING",
            &[
                &delivery_id,
                &REPLY_HANDLER,
                &now,
                &key_id,
                &sealed.nonce,
                &sealed.ciphertext,
            ],
        )
        .await?;
    if inserted > 0 {
        if let Some(caller_ref) = caller_phone.and_then(|p| store.keyring().caller_ref(p.expose()))
        {
            // The event's own caller, indexed at intake, wins.
            tx.execute(
                "UPDATE deliveries SET caller_ref = $2
                 WHERE id = $1 AND caller_ref IS NULL AND status <> 'purged'",
                &[&delivery_id, &caller_ref],
            )
            .await?;
        }
        let record = replied_record(
            delivery_id,
            source,
            reply.fallback,
            reply.status,
            latency_ms,
        );
        audit::append(store, &tx, &record).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The reply stored for `delivery_id`, if any.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn load_reply(
    store: &PgStore,
    delivery_id: &str,
) -> Result<Option<Reply>, StoreError> {
    let client = store.client().await?;
    let Some(row) = client
        .query_opt(
            "SELECT d.source, j.out_key_id, j.out_nonce, j.out_ciphertext
             FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
             WHERE j.delivery_id = $1 AND j.handler = $2 AND j.out_ciphertext IS NOT NULL",
            &[&delivery_id, &REPLY_HANDLER],
        )
        .await?
    else {
        return Ok(None);
    };
    let (source, key_id, nonce, ct): (String, i64, Vec<u8>, Vec<u8>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let key = keys::key_for_read(store, &client, key_id).await?;
    open_reply(&key, delivery_id, &source, key_id, &nonce, &ct).map(Some)
}
