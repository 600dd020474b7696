//! Payload data keys: one random key per (UTC day, key generation), stored wrapped.
//!
//! Writers ask for the key of the period a delivery was received in; readers ask for a key by
//! id. Unwrapped keys are cached in memory (zeroized on drop) so that the hot path costs one
//! hash-map lookup, not an unwrap per record.

use std::collections::HashMap;

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto::{DataKey, Keyring};
pub(crate) use crate::store::prepare::period_of;
use crate::store::StoreError;

/// The key generation new writes use (bumped by `keys rotate`).
pub(crate) fn current_generation(conn: &Connection) -> Result<i64, StoreError> {
    let text: String = conn
        .prepare_cached("SELECT value FROM store_meta WHERE name = 'key_generation'")?
        .query_row([], |r| r.get(0))?;
    text.parse()
        .map_err(|_| StoreError::Corrupt("store_meta.key_generation is not an integer"))
}

/// Writer-side cache: (period, generation) → (key id, key).
pub(crate) type WriteKeyCache = HashMap<(String, i64), (i64, DataKey)>;

/// The key for writing into `period` at `generation`, created (random, wrapped) on first use.
/// Must be called inside the write transaction: a key row created in a batch that rolls back
/// disappears with it, so the caller clears its cache when a batch fails.
pub(crate) fn key_for_write(
    conn: &Connection,
    keyring: &Keyring,
    cache: &mut WriteKeyCache,
    period: &str,
    generation: i64,
) -> Result<(i64, DataKey), StoreError> {
    if let Some((id, key)) = cache.get(&(period.to_owned(), generation)) {
        return Ok((*id, key.clone()));
    }
    let existing: Option<(i64, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT key_id, wrapped FROM data_keys WHERE period = ?1 AND generation = ?2",
        )?
        .query_row(params![period, generation], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (key_id, key) = match existing {
        Some((key_id, Some(wrapped))) => (
            key_id,
            DataKey::unwrap_from(keyring, key_id, period, &wrapped)?,
        ),
        Some((_, None)) => return Err(StoreError::KeyDestroyed),
        None => {
            let now = Utc::now().to_rfc3339();
            // The key id is part of the wrapping AAD, so the row is created first with an
            // empty placeholder and the wrapped key written once the id is known (same
            // transaction, so nobody ever sees the placeholder).
            let key_id: i64 = conn
                .prepare_cached(
                    "INSERT INTO data_keys (period, generation, wrapped, created_at)
                     VALUES (?1, ?2, x'', ?3) RETURNING key_id",
                )?
                .query_row(params![period, generation, now], |r| r.get(0))?;
            let key = DataKey::generate();
            let wrapped = key.wrap(keyring, key_id, period)?;
            conn.prepare_cached("UPDATE data_keys SET wrapped = ?1 WHERE key_id = ?2")?
                .execute(params![wrapped, key_id])?;
            (key_id, key)
        }
    };
    cache.insert((period.to_owned(), generation), (key_id, key.clone()));
    Ok((key_id, key))
}

/// The key with id `key_id`, for reading. Fails with [`StoreError::KeyDestroyed`] when the
/// period was purged (crypto-shredded).
pub(crate) fn key_for_read(
    conn: &Connection,
    keyring: &Keyring,
    key_id: i64,
) -> Result<DataKey, StoreError> {
    let row: Option<(String, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT period, wrapped FROM data_keys WHERE key_id = ?1")?
        .query_row(params![key_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => Err(StoreError::NotFound("data key")),
        Some((_, None)) => Err(StoreError::KeyDestroyed),
        Some((period, Some(wrapped))) => {
            Ok(DataKey::unwrap_from(keyring, key_id, &period, &wrapped)?)
        }
    }
}
