//! `keys rotate` on SQLite: move every sealed column to a fresh key generation, then destroy
//! the keys nothing uses any more. What is sealed and the statements are shared with
//! PostgreSQL ([`crate::store::rotation`]).
//!
//! Each batch is its own short transaction, followed by a short random pause so the intake
//! writer gets the lock between batches, and the run is resumable: rows still under an older
//! generation mean a rotation is pending, and the next run finishes it instead of starting
//! another.

use chrono::Utc;
use rusqlite::{params, Connection, TransactionBehavior};

use super::audit::mirror;
use super::audit::record_audit;
use super::keys::{self, WriteKeyCache};
use super::Store;
use crate::store::payload::db_time;
use crate::store::rotation::{self, Dialect, BATCH, BUMP_GENERATION, SEALED_COLUMNS};
use crate::store::types::{Requester, RotationProgress, RotationReport};
use crate::store::StoreError;

/// id, AAD id, source, key id, key period, nonce, ciphertext of a row to re-encrypt.
type RotationRow = (String, String, String, i64, String, Vec<u8>, Vec<u8>);

/// Rows of every kind still sealed under a generation older than `generation`.
fn pending(conn: &Connection, generation: i64) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for set in SEALED_COLUMNS {
        let n: i64 = conn.query_row(
            &set.count_older(Dialect::Sqlite),
            params![generation],
            |r| r.get(0),
        )?;
        total += n.max(0) as u64;
    }
    Ok(total)
}

/// `keys rotate`: new writes get fresh data keys (a new generation) at once; then every
/// sealed value under an older generation is re-encrypted in batches, each its own
/// transaction, and finally every older key nothing refers to is destroyed. Resumable: if a
/// run dies, the next run sees values still under older keys and continues instead of
/// starting another generation; once they are all moved, the next run starts a new one.
#[tracing::instrument(skip(store, who, progress))]
pub fn rotate_keys(
    store: &Store,
    who: &Requester,
    progress: &mut dyn FnMut(RotationProgress),
) -> Result<RotationReport, StoreError> {
    let keyring = store.keyring();
    let mut conn = store.connection()?;

    // Start a new generation unless an interrupted rotation left values under older keys.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = keys::current_generation(&tx)?;
    let resumed = pending(&tx, current)? > 0;
    let generation = if resumed { current } else { current + 1 };
    if !resumed {
        tx.execute(BUMP_GENERATION, params![generation.to_string()])?;
        record_audit(&tx, keyring, &rotation::started(who, generation))?;
    }
    let total = pending(&tx, generation)?;
    tx.commit()?;
    mirror(store, &conn);
    progress(RotationProgress {
        generation,
        done: 0,
        total,
    });

    let mut cache = WriteKeyCache::new();
    let mut done = 0u64;
    loop {
        let moved = match move_batch(&mut conn, store, &mut cache, generation) {
            Ok(n) => n,
            Err(e) => {
                // Key rows created in the rolled-back batch are gone with it.
                cache.clear();
                return Err(e);
            }
        };
        if moved == 0 {
            break;
        }
        done += moved as u64;
        progress(RotationProgress {
            generation,
            done,
            total: total.max(done),
        });
        super::purge::pause_for_writer();
    }

    // Nothing refers to the older keys any more: destroy them.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let destroyed = tx.execute(
        &rotation::destroy_unused_keys(Dialect::Sqlite),
        params![generation, db_time(Utc::now())],
    )? as u64;
    record_audit(&tx, keyring, &rotation::completed(who, done))?;
    tx.commit()?;
    mirror(store, &conn);
    // Old wrapped keys must not linger in the WAL.
    super::checkpoint_truncate(&conn);
    Ok(RotationReport {
        generation,
        resumed,
        reencrypted: done,
        keys_destroyed: destroyed,
    })
}

/// Re-encrypt up to [`BATCH`] values of any kind in one transaction; how many moved.
fn move_batch(
    conn: &mut Connection,
    store: &Store,
    cache: &mut WriteKeyCache,
    generation: i64,
) -> Result<usize, StoreError> {
    let keyring = store.keyring();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut moved = 0usize;
    for set in SEALED_COLUMNS {
        if moved >= BATCH {
            break;
        }
        let rows: Vec<RotationRow> = {
            let mut stmt = tx.prepare(&set.select_older(Dialect::Sqlite))?;
            let rows = stmt.query_map(params![generation, (BATCH - moved) as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (row_id, aad_id, source, old_key_id, period, nonce, ciphertext) in rows {
            let old = keys::key_for_read(&tx, keyring, old_key_id)?;
            let plain = old.open(
                &(set.place)(&aad_id, &source, old_key_id),
                &nonce,
                &ciphertext,
            )?;
            // Same period, new generation: purge by period keeps working after rotation.
            let (new_key_id, new_key) =
                keys::key_for_write(&tx, keyring, cache, &period, generation)?;
            let sealed = new_key.seal(&(set.place)(&aad_id, &source, new_key_id), &plain)?;
            tx.execute(
                &set.update(Dialect::Sqlite),
                params![
                    new_key_id,
                    sealed.nonce,
                    sealed.ciphertext,
                    row_id,
                    old_key_id
                ],
            )?;
            moved += 1;
        }
    }
    if moved > 0 {
        tx.commit()?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of the schema that holds ciphertext is one `SEALED_COLUMNS` entry names,
    /// so rotation (and the key-destruction check) cannot miss one.
    #[test]
    fn every_ciphertext_column_of_the_schema_is_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("w.db"),
            super::super::tests::keyring(),
            super::super::StoreOptions::default(),
        )
        .expect("open");
        let conn = store.connection().expect("conn");
        let found: Vec<(String, String)> = conn
            .prepare(
                "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c
                 WHERE m.type = 'table'",
            )
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("columns");
        assert!(found.iter().any(|(_, c)| c == "ciphertext"), "{found:?}");
        for (table, column) in found {
            assert!(
                !crate::store::rotation::missed(&table, &column),
                "{table}.{column} holds ciphertext that keys rotate does not move"
            );
        }
    }
}
