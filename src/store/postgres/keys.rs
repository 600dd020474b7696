//! Payload data keys on PostgreSQL: one per (UTC day, generation), shared by every node.
//!
//! A missing key is created in its own short transaction — `INSERT … ON CONFLICT DO NOTHING`,
//! then the wrap with the new id (the id is part of the wrapping AAD) — and committed before
//! any delivery uses it. Two nodes creating the key of a new day at once end up with the one
//! that committed first: the loser's insert waits on the unique index, does nothing, and
//! reads the winner's key. Because a key is committed before use, a rolled-back intake never
//! leaves a cached key that does not exist, unlike the SQLite writer's in-batch keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::PgStore;
use crate::crypto::DataKey;
use crate::store::StoreError;

/// (period, generation) → (key id, key), and key id → key for reads. Zeroized on drop.
#[derive(Default)]
pub(super) struct KeyCache {
    write: Mutex<HashMap<(String, i64), (i64, DataKey)>>,
    read: Mutex<HashMap<i64, DataKey>>,
    /// The generation this node last read (0: none yet). Intake seals under it without asking
    /// the database; the committer reads the current one in each batch's transaction, stores
    /// it here, and sends back any delivery sealed under another to be sealed again, so a
    /// rotation on any node still takes effect on every node's next commit.
    pub(super) generation: Arc<AtomicI64>,
}

/// The key generation new writes use (bumped by `keys rotate`). Read on every write so a
/// rotation on any node takes effect on all of them.
pub(super) async fn current_generation(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i64, StoreError> {
    let stmt = client
        .prepare_cached("SELECT value FROM store_meta WHERE name = 'key_generation'")
        .await?;
    let text: String = client.query_one(&stmt, &[]).await?.get(0);
    text.parse()
        .map_err(|_| StoreError::Corrupt("store_meta.key_generation is not an integer"))
}

/// The key for writing into `period` at the current generation, created on first use.
pub(super) async fn key_for_write(
    store: &PgStore,
    client: &mut deadpool_postgres::Client,
    period: &str,
) -> Result<(i64, DataKey), StoreError> {
    let (_, key_id, key) = generation_and_key_for_write(store, client, period).await?;
    Ok((key_id, key))
}

/// The key for writing into `period` at the generation this node last read, from the cache
/// only: intake's fast path, checked by the committer (see [`KeyCache::generation`]).
pub(super) fn cached_for_write(store: &PgStore, period: &str) -> Option<(i64, i64, DataKey)> {
    let generation = store.inner.keys.generation.load(Ordering::Acquire);
    lock(&store.inner.keys.write)
        .get(&(period.to_owned(), generation))
        .map(|(id, key)| (generation, *id, key.clone()))
}

/// [`key_for_write`], also returning the generation read: (generation, key id, key).
pub(super) async fn generation_and_key_for_write(
    store: &PgStore,
    client: &mut deadpool_postgres::Client,
    period: &str,
) -> Result<(i64, i64, DataKey), StoreError> {
    let generation = current_generation(&*client).await?;
    store
        .inner
        .keys
        .generation
        .store(generation, Ordering::Release);
    let cache_key = (period.to_owned(), generation);
    if let Some((id, key)) = lock(&store.inner.keys.write).get(&cache_key) {
        return Ok((generation, *id, key.clone()));
    }
    let keyring = store.keyring();
    let tx = client.transaction().await?;
    let created = tx
        .query_opt(
            "INSERT INTO data_keys (period, generation, wrapped, created_at)
             VALUES ($1, $2, ''::bytea, $3)
             ON CONFLICT (period, generation) DO NOTHING RETURNING key_id",
            &[&period, &generation, &Utc::now()],
        )
        .await?;
    let (key_id, key) = match created {
        Some(row) => {
            let key_id: i64 = row.get(0);
            let key = DataKey::generate();
            let wrapped = key.wrap(keyring, key_id, period)?;
            tx.execute(
                "UPDATE data_keys SET wrapped = $1 WHERE key_id = $2",
                &[&wrapped, &key_id],
            )
            .await?;
            (key_id, key)
        }
        None => {
            let row = tx
                .query_one(
                    "SELECT key_id, wrapped FROM data_keys WHERE period = $1 AND generation = $2",
                    &[&period, &generation],
                )
                .await?;
            let key_id: i64 = row.get(0);
            let wrapped: Option<Vec<u8>> = row.get(1);
            let wrapped = wrapped.ok_or(StoreError::KeyDestroyed)?;
            (
                key_id,
                DataKey::unwrap_from(keyring, key_id, period, &wrapped)?,
            )
        }
    };
    tx.commit().await?;
    lock(&store.inner.keys.write).insert(cache_key, (key_id, key.clone()));
    Ok((generation, key_id, key))
}

/// The key with id `key_id`, for reading; [`StoreError::KeyDestroyed`] once purged.
pub(super) async fn key_for_read(
    store: &PgStore,
    client: &impl deadpool_postgres::GenericClient,
    key_id: i64,
) -> Result<DataKey, StoreError> {
    if let Some(key) = lock(&store.inner.keys.read).get(&key_id) {
        return Ok(key.clone());
    }
    let row = client
        .query_opt(
            "SELECT period, wrapped FROM data_keys WHERE key_id = $1",
            &[&key_id],
        )
        .await?
        .ok_or(StoreError::NotFound("data key"))?;
    let period: String = row.get(0);
    let wrapped: Option<Vec<u8>> = row.get(1);
    let wrapped = wrapped.ok_or(StoreError::KeyDestroyed)?;
    let key = DataKey::unwrap_from(store.keyring(), key_id, &period, &wrapped)?;
    lock(&store.inner.keys.read).insert(key_id, key.clone());
    Ok(key)
}

/// Forget cached keys (after a purge destroyed some, so this node stops using them at once).
pub(super) fn forget(store: &PgStore) {
    lock(&store.inner.keys.write).clear();
    lock(&store.inner.keys.read).clear();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
