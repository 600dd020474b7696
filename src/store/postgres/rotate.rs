//! `keys rotate` on PostgreSQL: the SQLite store's rotation with the same rules, list of sealed
//! values and statements ([`crate::store::rotation`]), for every node at once.
//!
//! The generation lives in `store_meta`; bumping it makes every node's next commit seal under
//! the new generation (each committer reads it in its transaction and re-seals a batch sealed
//! under another). Then every value under an older generation is re-encrypted in batches, each
//! its own transaction, and finally the older keys nothing refers to are destroyed. Resumable:
//! values still under older keys mean a rotation is pending, and the next run finishes it.

use chrono::Utc;
use deadpool_postgres::GenericClient;

use super::{audit, keys, PgStore};
use crate::store::admin::{Requester, RotationProgress, RotationReport};
use crate::store::audit_hook::to_record;
use crate::store::rotation::{self, Dialect, BATCH, BUMP_GENERATION, SEALED_COLUMNS};
use crate::store::StoreError;

async fn pending(client: &impl GenericClient, generation: i64) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for set in SEALED_COLUMNS {
        let n: i64 = client
            .query_one(&set.count_older(Dialect::Postgres), &[&generation])
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
            &*Dialect::Postgres.sql(BUMP_GENERATION),
            &[&generation.to_string()],
        )
        .await?;
        let started = rotation::started(who, generation);
        audit::append(store, &tx, &to_record(&started)).await?;
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

    let tx = client.transaction().await?;
    let destroyed = tx
        .execute(
            &rotation::destroy_unused_keys(Dialect::Postgres),
            &[&generation, &Utc::now()],
        )
        .await?;
    let completed = rotation::completed(who, done);
    audit::append(store, &tx, &to_record(&completed)).await?;
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
    let mut moved = 0usize;
    // New keys are created (and committed) before the batch's transaction uses them.
    let mut plan = Vec::new();
    for (i, set) in SEALED_COLUMNS.iter().enumerate() {
        if moved >= BATCH {
            break;
        }
        let left = i64::try_from(BATCH - moved).unwrap_or(0);
        let rows = client
            .query(&set.select_older(Dialect::Postgres), &[&generation, &left])
            .await?;
        moved += rows.len();
        plan.extend(rows.into_iter().map(|r| (i, r)));
    }
    if plan.is_empty() {
        return Ok(0);
    }
    let mut sealed_rows = Vec::with_capacity(plan.len());
    for (i, row) in &plan {
        let set = &SEALED_COLUMNS[*i];
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
            &SEALED_COLUMNS[*i].update(Dialect::Postgres),
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
    use crate::store::postgres::testdb::TestDb;

    /// Every ciphertext column of the PostgreSQL schema is one `SEALED_COLUMNS` entry names, so
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
                 WHERE table_schema = current_schema()",
                &[],
            )
            .await
            .expect("columns");
        assert!(
            rows.iter().any(|r| r.get::<_, String>(1) == "ciphertext"),
            "the schema has ciphertext columns"
        );
        for row in rows {
            let (table, column): (String, String) = (row.get(0), row.get(1));
            assert!(
                !crate::store::rotation::missed(&table, &column),
                "{table}.{column} holds ciphertext that keys rotate does not move"
            );
        }
    }
}
