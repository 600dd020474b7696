//! Opening a stored delivery's sealed payload: the one place that knows how a delivery row's
//! ciphertext, key id and AAD fit together, for every reader (show, dispatch, reverify).

use rusqlite::{params, Connection, OptionalExtension};

use super::keys;
use crate::crypto::Keyring;
use crate::store::payload::{delivery_place, StoredDelivery};
use crate::store::StoreError;

/// A decrypted delivery and the row facts readers need for their audit records.
#[derive(Debug)]
pub(crate) struct OpenedDelivery {
    pub source: String,
    pub call_ref: Option<String>,
    pub key_id: i64,
    pub stored: StoredDelivery,
}

/// Decrypt delivery `id`. `KeyDestroyed` once its payload was purged.
pub(crate) fn open_delivery(
    conn: &Connection,
    keyring: &Keyring,
    id: &str,
) -> Result<OpenedDelivery, StoreError> {
    type Row = (
        String,
        Option<i64>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<String>,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT source, key_id, nonce, ciphertext, call_ref FROM deliveries WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let (source, key_id, nonce, ciphertext, call_ref) =
        row.ok_or(StoreError::NotFound("delivery"))?;
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(conn, keyring, key_id)?;
    let plain = key.open(&delivery_place(id, &source, key_id), &nonce, &ciphertext)?;
    let stored: StoredDelivery = serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
    Ok(OpenedDelivery {
        source,
        call_ref,
        key_id,
        stored,
    })
}
