//! `emergency-export` on SQLite: the deliveries of a time range from one read snapshot, into
//! the archive format of [`crate::store::archive`] (re-exported here, its historical home).

use std::io::Write;

use chrono::{DateTime, Utc};
use rusqlite::{params, TransactionBehavior};

use super::keys;
use super::Store;
use crate::crypto::RecordPlace;
use crate::store::payload::db_time;
use crate::store::payload::StoredDelivery;
use crate::store::types::Requester;
use crate::store::StoreError;

use crate::store::archive::{access_record, ArchiveExtras, ArchiveWriter};
pub use crate::store::archive::{open_archive, ArchiveError, EmergencyExport, MAGIC};

/// Decrypt deliveries received in `[since, until)` into `out`, encrypted under a fresh key;
/// `progress(n)` after each delivery written; then `extras`' records.
#[allow(clippy::too_many_arguments)]
pub fn export(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    reason: &str,
    who: &Requester,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
    extras: Option<ArchiveExtras<'_>>,
) -> Result<EmergencyExport, StoreError> {
    let mut archive = ArchiveWriter::start(out, since, until, reason, who)?;
    let mut conn = store.connection()?;
    // A read transaction: one consistent snapshot of the range, and in WAL mode it never blocks
    // the intake writer however long the export takes. The audit record is written afterwards,
    // in a short write transaction of its own; the archive key is handed out only once that
    // record is committed, so there is no usable archive without its record.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let mut purged = 0u64;
    {
        let mut stmt = tx.prepare(
            "SELECT id, source, key_id, nonce, ciphertext FROM deliveries
             WHERE received_at >= ?1 AND received_at < ?2 ORDER BY received_at, id",
        )?;
        let mut rows = stmt.query(params![db_time(since), db_time(until)])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let source: String = row.get(1)?;
            let key_id: Option<i64> = row.get(2)?;
            let nonce: Option<Vec<u8>> = row.get(3)?;
            let ct: Option<Vec<u8>> = row.get(4)?;
            let (Some(key_id), Some(nonce), Some(ct)) = (key_id, nonce, ct) else {
                purged += 1;
                continue;
            };
            let key = match keys::key_for_read(&tx, store.keyring(), key_id) {
                Ok(k) => k,
                Err(StoreError::KeyDestroyed) => {
                    purged += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let plain = key.open(
                &RecordPlace {
                    kind: "delivery",
                    id: &id,
                    source: &source,
                    key_id,
                },
                &nonce,
                &ct,
            )?;
            let stored: StoredDelivery = serde_json::from_slice(&plain)
                .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
            progress(archive.push(&stored.event)?);
        }
    }
    tx.commit()?;
    let extras = match extras {
        Some(f) => archive.add_extras(f)?,
        None => 0,
    };
    let (count, archive_key_b64) = archive.finish()?;
    let audit = access_record(who, count, reason, since);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    crate::audit::append(&tx, store.keyring(), &audit)?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(EmergencyExport {
        count,
        extras,
        purged,
        archive_key_b64,
    })
}
