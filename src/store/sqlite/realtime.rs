//! The replies real-time routes gave, stored with their delivery so a retried request gets the
//! same answer without calling the CRM again.
//!
//! A reply is kept as a finished pseudo-job of the delivery (handler `@realtime`), sealed like a
//! handler output under the day's data key, so purge and crypto-shredding cover it too.

use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::keys::{self, WriteKeyCache};
use super::Store;
use crate::store::caller_phone::CallerPhone;
use crate::store::payload::db_time;
use crate::store::realtime::{open_reply, place, replied_record, REPLY_HANDLER};
use crate::store::types::Reply;
use crate::store::StoreError;

/// Store the reply given for `delivery_id` (first one wins) with its audit record, in the
/// writer's next group commit.
pub async fn record_reply(
    store: &Store,
    delivery_id: &str,
    source: &str,
    reply: &Reply,
    latency_ms: i64,
    caller_phone: Option<CallerPhone>,
) -> Result<(), StoreError> {
    let plain = crate::store::realtime::plaintext(reply)?;
    let (delivery_id, source) = (delivery_id.to_owned(), source.to_owned());
    let (fallback, status) = (reply.fallback, reply.status);
    store
        .apply(Box::new(move |tx, keyring| {
            let now = Utc::now();
            let mut cache = WriteKeyCache::new();
            let generation = keys::current_generation(tx)?;
            let (key_id, key) =
                keys::key_for_write(tx, keyring, &mut cache, &keys::period_of(now), generation)?;
            let sealed = key.seal(&place(&delivery_id, &source, key_id), &plain)?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO jobs (delivery_id, handler, position, status, attempts,
                                             next_attempt_at, created_at, updated_at,
                                             out_key_id, out_nonce, out_ciphertext)
                 VALUES (?1, ?2, -1, 'done', 1, ?3, ?3, ?3, ?4, ?5, ?6)",
                params![
                    delivery_id,
                    REPLY_HANDLER,
                    db_time(now),
                    key_id,
                    sealed.nonce,
                    sealed.ciphertext
                ],
            )?;
            if inserted == 0 {
                return Ok(None);
            }
            if let Some(caller_ref) = caller_phone
                .as_ref()
                .and_then(|p| keyring.caller_ref(p.expose()))
            {
                // The event's own caller, indexed at intake, wins.
                tx.execute(
                    "UPDATE deliveries SET caller_ref = ?2
                     WHERE id = ?1 AND caller_ref IS NULL AND status <> 'purged'",
                    params![delivery_id, caller_ref],
                )?;
            }
            Ok(Some(replied_record(
                &delivery_id,
                &source,
                fallback,
                status,
                latency_ms,
            )))
        }))
        .await
}

/// The reply stored for `delivery_id`, if any.
pub fn load_reply(store: &Store, delivery_id: &str) -> Result<Option<Reply>, StoreError> {
    let conn = store.connection()?;
    let row: Option<(String, i64, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT d.source, j.out_key_id, j.out_nonce, j.out_ciphertext
             FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
             WHERE j.delivery_id = ?1 AND j.handler = ?2 AND j.out_ciphertext IS NOT NULL",
            params![delivery_id, REPLY_HANDLER],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((source, key_id, nonce, ct)) = row else {
        return Ok(None);
    };
    let key = keys::key_for_read(&conn, store.keyring(), key_id)?;
    open_reply(&key, delivery_id, &source, key_id, &nonce, &ct).map(Some)
}
