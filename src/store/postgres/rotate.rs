//! `keys rotate` on PostgreSQL: the SQLite store's rotation (`store/rotate.rs`) with the same
//! rules, for every node at once.
//!
//! The generation lives in `store_meta`; bumping it makes every node's next commit seal under
//! the new generation (each committer reads it in its transaction and re-seals a batch sealed
//! under another). Then every value under an older generation is re-encrypted in batches, each
//! its own transaction, and finally the older keys nothing refers to are destroyed. Resumable:
//! values still under older keys mean a rotation is pending, and the next run finishes it.

use chrono::Utc;
use deadpool_postgres::GenericClient;

use super::{audit, keys, PgStore};
use crate::crypto::RecordPlace;
use crate::store::admin::{Requester, RotationProgress, RotationReport};
use crate::store::audit_hook::{to_record, AuditAction, AuditEvent};
use crate::store::StoreError;

/// One encrypted value kind of the schema (the PostgreSQL twin of SQLite's `SEALED_COLUMNS`).
struct Sealed {
    table: &'static str,
    ciphertext: &'static str,
    key_column: &'static str,
    /// `FROM … WHERE …` of the rows sealed under a generation older than `$1`.
    from_older: &'static str,
    /// Row id (text), AAD id, source, key id, key period, nonce, ciphertext.
    columns: &'static str,
    /// `$1` new key id, `$2` nonce, `$3` ciphertext, `$4` row id (text), `$5` old key id.
    update: &'static str,
    place: for<'a> fn(&'a str, &'a str, i64) -> RecordPlace<'a>,
}

fn delivery_place<'a>(id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "delivery",
        id,
        source,
        key_id,
    }
}

fn quarantine_place<'a>(id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "quarantine",
        id,
        source,
        key_id,
    }
}

/// Every encrypted value the PostgreSQL schema holds (a test checks the schema against it).
const SEALED: &[Sealed] = &[
    Sealed {
        table: "deliveries",
        ciphertext: "ciphertext",
        key_column: "key_id",
        from_older: "FROM deliveries t JOIN data_keys k ON k.key_id = t.key_id
                     WHERE t.ciphertext IS NOT NULL AND k.generation < $1",
        columns: "t.id, t.id, t.source, t.key_id, k.period, t.nonce, t.ciphertext",
        update: "UPDATE deliveries SET key_id = $1, nonce = $2, ciphertext = $3
                 WHERE id = $4 AND key_id = $5",
        place: delivery_place,
    },
    Sealed {
        table: "quarantine",
        ciphertext: "ciphertext",
        key_column: "key_id",
        from_older: "FROM quarantine t JOIN data_keys k ON k.key_id = t.key_id
                     WHERE t.ciphertext IS NOT NULL AND k.generation < $1",
        columns: "t.id, t.id, t.source, t.key_id, k.period, t.nonce, t.ciphertext",
        update: "UPDATE quarantine SET key_id = $1, nonce = $2, ciphertext = $3
                 WHERE id = $4 AND key_id = $5",
        place: quarantine_place,
    },
    Sealed {
        table: "jobs",
        ciphertext: "out_ciphertext",
        key_column: "out_key_id",
        from_older: "FROM jobs t JOIN deliveries d ON d.id = t.delivery_id
                          JOIN data_keys k ON k.key_id = t.out_key_id
                     WHERE t.out_ciphertext IS NOT NULL AND k.generation < $1
                       AND t.handler <> '@realtime'",
        columns: "t.id::text, t.id::text, d.source, t.out_key_id, k.period, t.out_nonce,
                  t.out_ciphertext",
        update: "UPDATE jobs SET out_key_id = $1, out_nonce = $2, out_ciphertext = $3
                 WHERE id = $4::text::bigint AND out_key_id = $5",
        place: crate::store::jobs::output_place,
    },
    Sealed {
        table: "jobs",
        ciphertext: "out_ciphertext",
        key_column: "out_key_id",
        from_older: "FROM jobs t JOIN deliveries d ON d.id = t.delivery_id
                          JOIN data_keys k ON k.key_id = t.out_key_id
                     WHERE t.out_ciphertext IS NOT NULL AND k.generation < $1
                       AND t.handler = '@realtime'",
        columns: "t.id::text, t.delivery_id, d.source, t.out_key_id, k.period, t.out_nonce,
                  t.out_ciphertext",
        update: "UPDATE jobs SET out_key_id = $1, out_nonce = $2, out_ciphertext = $3
                 WHERE id = $4::text::bigint AND out_key_id = $5",
        place: crate::store::realtime::place,
    },
    // Captured artifacts' per-file keys (the files themselves are not touched).
    Sealed {
        table: "artifacts",
        ciphertext: "key_ciphertext",
        key_column: "key_id",
        from_older: "FROM artifacts t JOIN deliveries d ON d.id = t.delivery_id
                          JOIN data_keys k ON k.key_id = t.key_id
                     WHERE t.key_ciphertext IS NOT NULL AND k.generation < $1",
        columns: "t.id, t.id, d.source, t.key_id, k.period, t.key_nonce, t.key_ciphertext",
        update: "UPDATE artifacts SET key_id = $1, key_nonce = $2, key_ciphertext = $3
                 WHERE id = $4 AND key_id = $5",
        place: crate::store::artifacts::key_place,
    },
];

/// Values re-encrypted per transaction.
const BATCH: i64 = 256;

async fn pending(client: &impl GenericClient, generation: i64) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for set in SEALED {
        let n: i64 = client
            .query_one(
                &format!("SELECT COUNT(*) {}", set.from_older),
                &[&generation],
            )
            .await?
            .get(0);
        total += u64::try_from(n).unwrap_or(0);
    }
    Ok(total)
}

/// See the module docs.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn rotate_keys(
    store: &PgStore,
    who: &Requester,
    progress: &mut dyn FnMut(RotationProgress),
) -> Result<RotationReport, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    // The row lock serialises two rotations started at once on different nodes.
    let current: String = tx
        .query_one(
            "SELECT value FROM store_meta WHERE name = 'key_generation' FOR UPDATE",
            &[],
        )
        .await?
        .get(0);
    let current: i64 = current
        .parse()
        .map_err(|_| StoreError::Corrupt("store_meta.key_generation is not an integer"))?;
    let resumed = pending(&tx, current).await? > 0;
    let generation = if resumed { current } else { current + 1 };
    if !resumed {
        tx.execute(
            "UPDATE store_meta SET value = $1 WHERE name = 'key_generation'",
            &[&generation.to_string()],
        )
        .await?;
        let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
        ev.reason = Some("rotation_started");
        ev.count = Some(generation);
        ev.via = Some(who.via);
        audit::append(store, &tx, &to_record(&ev)).await?;
    }
    let total = pending(&tx, generation).await?;
    tx.commit().await?;
    progress(RotationProgress {
        generation,
        done: 0,
        total,
    });

    let mut done = 0u64;
    loop {
        let moved = move_batch(store, &mut client, generation).await?;
        if moved == 0 {
            break;
        }
        done += moved;
        progress(RotationProgress {
            generation,
            done,
            total: total.max(done),
        });
    }

    let unused: String = SEALED
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
    let tx = client.transaction().await?;
    let destroyed = tx
        .execute(
            &format!(
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = $2
                 WHERE generation < $1 AND wrapped IS NOT NULL{unused}"
            ),
            &[&generation, &Utc::now()],
        )
        .await?;
    let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
    ev.reason = Some("rotation_completed");
    ev.count = Some(i64::try_from(done).unwrap_or(i64::MAX));
    ev.object_kind = Some("data_key");
    ev.via = Some(who.via);
    audit::append(store, &tx, &to_record(&ev)).await?;
    tx.commit().await?;
    keys::forget(store);
    Ok(RotationReport {
        generation,
        resumed,
        reencrypted: done,
        keys_destroyed: destroyed,
    })
}

/// Re-encrypt up to [`BATCH`] values of any kind in one transaction; how many moved.
async fn move_batch(
    store: &PgStore,
    client: &mut deadpool_postgres::Client,
    generation: i64,
) -> Result<u64, StoreError> {
    let mut moved = 0i64;
    // New keys are created (and committed) before the batch's transaction uses them.
    let mut plan = Vec::new();
    for (i, set) in SEALED.iter().enumerate() {
        if moved >= BATCH {
            break;
        }
        let rows = client
            .query(
                &format!("SELECT {} {} LIMIT $2", set.columns, set.from_older),
                &[&generation, &(BATCH - moved)],
            )
            .await?;
        moved += i64::try_from(rows.len()).unwrap_or(0);
        plan.extend(rows.into_iter().map(|r| (i, r)));
    }
    if plan.is_empty() {
        return Ok(0);
    }
    let mut sealed_rows = Vec::with_capacity(plan.len());
    for (i, row) in &plan {
        let set = &SEALED[*i];
        let (row_id, aad_id, source): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let old_key_id: i64 = row.get(3);
        let period: String = row.get(4);
        let nonce: Vec<u8> = row.get(5);
        let ciphertext: Vec<u8> = row.get(6);
        let old = keys::key_for_read(store, &*client, old_key_id).await?;
        let plain = old.open(
            &(set.place)(&aad_id, &source, old_key_id),
            &nonce,
            &ciphertext,
        )?;
        // Same period, new generation: purge by period keeps working after rotation.
        let (new_key_id, new_key) = keys::key_for_write(store, client, &period).await?;
        let sealed = new_key.seal(&(set.place)(&aad_id, &source, new_key_id), &plain)?;
        sealed_rows.push((*i, row_id, old_key_id, new_key_id, sealed));
    }
    let tx = client.transaction().await?;
    for (i, row_id, old_key_id, new_key_id, sealed) in &sealed_rows {
        tx.execute(
            SEALED[*i].update,
            &[
                new_key_id,
                &sealed.nonce,
                &sealed.ciphertext,
                row_id,
                old_key_id,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(sealed_rows.len()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::SEALED;
    use crate::store::postgres::testdb::TestDb;

    /// Every ciphertext column of the PostgreSQL schema is one [`SEALED`] entry names, so
    /// rotation (and the key-destruction check) cannot miss one.
    #[tokio::test]
    async fn every_ciphertext_column_of_the_schema_is_rotated() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let _store = crate::store::postgres::PgStore::open(
            &db.settings("n1"),
            crate::store::sqlite::tests::keyring(),
        )
        .await
        .expect("open");
        let rows = db
            .client()
            .await
            .query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema()
                   AND (column_name LIKE '%ciphertext%' OR column_name LIKE '%wrapped%')",
                &[],
            )
            .await
            .expect("columns");
        assert!(!rows.is_empty(), "the schema has ciphertext columns");
        for row in rows {
            let (table, column): (String, String) = (row.get(0), row.get(1));
            if (table.as_str(), column.as_str()) == ("data_keys", "wrapped") {
                continue;
            }
            assert!(
                SEALED
                    .iter()
                    .any(|s| s.table == table && s.ciphertext == column),
                "{table}.{column} holds ciphertext that keys rotate does not move"
            );
        }
    }
}
