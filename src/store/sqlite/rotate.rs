//! `keys rotate`: move every sealed column of the SQLite store to a fresh key generation, then
//! destroy the keys nothing uses any more.
//!
//! Every encrypted value in the schema is listed once, in [`SEALED_COLUMNS`]: delivery
//! payloads, quarantined bodies, handler outputs and stored real-time replies (both kept in
//! `jobs.out_*`). Rotation re-encrypts what that list names and destroys a key only when no
//! column of the list still refers to it, so a value the list missed would keep its key alive
//! and the next run would find it again; a test compares the list with the schema so a new
//! ciphertext column cannot be forgotten.
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
use crate::crypto::RecordPlace;
use crate::store::audit_hook::{AuditAction, AuditEvent};
use crate::store::payload::db_time;
use crate::store::payload::{delivery_place, quarantine_place};
use crate::store::types::{Requester, RotationProgress, RotationReport};
use crate::store::StoreError;

/// One encrypted value kind of the schema: where it lives and how its AAD is formed.
pub(crate) struct SealedColumns {
    /// For progress, errors and the schema test: `table.ciphertext_column`.
    pub(crate) table: &'static str,
    /// The ciphertext column (NULL once purged).
    pub(crate) ciphertext: &'static str,
    /// The column naming its data key.
    pub(crate) key_column: &'static str,
    /// `FROM … WHERE …` of the rows of this kind sealed under a generation older than `?1`.
    from_older: &'static str,
    /// Selected from `from_older`: row id (text), AAD id, source, key id, key period, nonce,
    /// ciphertext.
    columns: &'static str,
    /// Moves one row: `?1` new key id, `?2` nonce, `?3` ciphertext, `?4` row id, `?5` old key
    /// id (so a row changed meanwhile is left for the next batch).
    update: &'static str,
    /// The AAD of a row of this kind, from its AAD id, source and key id.
    place: for<'a> fn(&'a str, &'a str, i64) -> RecordPlace<'a>,
}

/// Every encrypted value the SQLite schema holds. See the module docs.
pub(crate) const SEALED_COLUMNS: &[SealedColumns] = &[
    SealedColumns {
        table: "deliveries",
        ciphertext: "ciphertext",
        key_column: "key_id",
        from_older: "FROM deliveries t JOIN data_keys k ON k.key_id = t.key_id
                     WHERE t.ciphertext IS NOT NULL AND k.generation < ?1",
        columns: "t.id, t.id, t.source, t.key_id, k.period, t.nonce, t.ciphertext",
        update: "UPDATE deliveries SET key_id = ?1, nonce = ?2, ciphertext = ?3
                 WHERE id = ?4 AND key_id = ?5",
        place: delivery_place,
    },
    SealedColumns {
        table: "quarantine",
        ciphertext: "ciphertext",
        key_column: "key_id",
        from_older: "FROM quarantine t JOIN data_keys k ON k.key_id = t.key_id
                     WHERE t.ciphertext IS NOT NULL AND k.generation < ?1",
        columns: "t.id, t.id, t.source, t.key_id, k.period, t.nonce, t.ciphertext",
        update: "UPDATE quarantine SET key_id = ?1, nonce = ?2, ciphertext = ?3
                 WHERE id = ?4 AND key_id = ?5",
        place: quarantine_place,
    },
    // Handler outputs (`app_data` for later handlers): AAD id is the job id.
    SealedColumns {
        table: "jobs",
        ciphertext: "out_ciphertext",
        key_column: "out_key_id",
        from_older: "FROM jobs t JOIN deliveries d ON d.id = t.delivery_id
                          JOIN data_keys k ON k.key_id = t.out_key_id
                     WHERE t.out_ciphertext IS NOT NULL AND k.generation < ?1
                       AND t.handler <> '@realtime'",
        columns: "CAST(t.id AS TEXT), CAST(t.id AS TEXT), d.source, t.out_key_id, k.period,
                  t.out_nonce, t.out_ciphertext",
        update: "UPDATE jobs SET out_key_id = ?1, out_nonce = ?2, out_ciphertext = ?3
                 WHERE id = ?4 AND out_key_id = ?5",
        place: crate::store::jobs::output_place,
    },
    // Real-time replies, the `@realtime` pseudo-job of a delivery: AAD id is the delivery id.
    SealedColumns {
        table: "jobs",
        ciphertext: "out_ciphertext",
        key_column: "out_key_id",
        from_older: "FROM jobs t JOIN deliveries d ON d.id = t.delivery_id
                          JOIN data_keys k ON k.key_id = t.out_key_id
                     WHERE t.out_ciphertext IS NOT NULL AND k.generation < ?1
                       AND t.handler = '@realtime'",
        columns: "CAST(t.id AS TEXT), t.delivery_id, d.source, t.out_key_id, k.period,
                  t.out_nonce, t.out_ciphertext",
        update: "UPDATE jobs SET out_key_id = ?1, out_nonce = ?2, out_ciphertext = ?3
                 WHERE id = ?4 AND out_key_id = ?5",
        place: crate::store::realtime::place,
    },
    // Captured artifacts' per-file keys (the files themselves are not touched): AAD id is the
    // artifact id.
    SealedColumns {
        table: "artifacts",
        ciphertext: "key_ciphertext",
        key_column: "key_id",
        from_older: "FROM artifacts t JOIN deliveries d ON d.id = t.delivery_id
                          JOIN data_keys k ON k.key_id = t.key_id
                     WHERE t.key_ciphertext IS NOT NULL AND k.generation < ?1",
        columns: "t.id, t.id, d.source, t.key_id, k.period, t.key_nonce, t.key_ciphertext",
        update: "UPDATE artifacts SET key_id = ?1, key_nonce = ?2, key_ciphertext = ?3
                 WHERE id = ?4 AND key_id = ?5",
        place: crate::store::artifacts::key_place,
    },
];

/// Rows re-encrypted per transaction.
const ROTATE_BATCH: usize = 256;

/// id, AAD id, source, key id, key period, nonce, ciphertext of a row to re-encrypt.
type RotationRow = (String, String, String, i64, String, Vec<u8>, Vec<u8>);

/// Rows of every kind still sealed under a generation older than `generation`.
fn pending(conn: &Connection, generation: i64) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for set in SEALED_COLUMNS {
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) {}", set.from_older),
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
        tx.execute(
            "UPDATE store_meta SET value = ?1 WHERE name = 'key_generation'",
            params![generation.to_string()],
        )?;
        let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
        ev.reason = Some("rotation_started");
        ev.count = Some(generation);
        ev.via = Some(who.via);
        record_audit(&tx, keyring, &ev)?;
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
    let unused: String = SEALED_COLUMNS
        .iter()
        .map(|s| {
            format!(
                " AND NOT EXISTS (SELECT 1 FROM {t} WHERE {t}.{k} = data_keys.key_id AND {t}.{c} IS NOT NULL)",
                t = s.table,
                k = s.key_column,
                c = s.ciphertext
            )
        })
        .collect();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let destroyed = tx.execute(
        &format!(
            "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2
             WHERE generation < ?1 AND wrapped IS NOT NULL{unused}"
        ),
        params![generation, db_time(Utc::now())],
    )? as u64;
    let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
    ev.reason = Some("rotation_completed");
    ev.count = Some(done as i64);
    ev.object_kind = Some("data_key");
    ev.via = Some(who.via);
    record_audit(&tx, keyring, &ev)?;
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

/// Re-encrypt up to [`ROTATE_BATCH`] values of any kind in one transaction; how many moved.
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
        if moved >= ROTATE_BATCH {
            break;
        }
        let rows: Vec<RotationRow> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {} {} LIMIT ?2",
                set.columns, set.from_older
            ))?;
            let rows = stmt.query_map(params![generation, (ROTATE_BATCH - moved) as i64], |r| {
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
                set.update,
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

    /// Every column of the schema that holds ciphertext is one [`SEALED_COLUMNS`] entry names,
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
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("tables");
        let mut found = Vec::new();
        for table in tables {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .expect("prepare")
                .query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("columns");
            for column in columns {
                if column.contains("ciphertext") || column.contains("wrapped") {
                    found.push((table.clone(), column));
                }
            }
        }
        for (table, column) in found {
            if (table.as_str(), column.as_str()) == ("data_keys", "wrapped") {
                continue; // the keys themselves, destroyed rather than re-encrypted
            }
            assert!(
                SEALED_COLUMNS
                    .iter()
                    .any(|s| s.table == table && s.ciphertext == column),
                "{table}.{column} holds ciphertext that keys rotate does not move"
            );
        }
    }
}
