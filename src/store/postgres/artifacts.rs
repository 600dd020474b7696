//! Captured artifacts on PostgreSQL: the same `artifacts` table as on SQLite (created by its
//! own idempotent migration under an advisory lock, so nodes starting together do not race),
//! shared by every node. See [`crate::store::artifacts`] for what the rows mean.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use zeroize::Zeroizing;

use super::{audit, keys, PgStore};
use crate::store::artifacts::{
    captured_record, key_place, read_record, vendor_record, ArtifactFilter, ArtifactReader,
    ArtifactStore, ArtifactSummary, NewArtifact, OpenedArtifact,
};
use crate::store::{StoreError, StoreFuture};

/// Serialises the table's creation across nodes ("wardart" in ASCII).
const ARTIFACTS_LOCK: i64 = 0x7761_7264_6172_7400;

/// Create the table if missing.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ARTIFACTS_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS artifacts (
             id                TEXT PRIMARY KEY,
             delivery_id       TEXT NOT NULL REFERENCES deliveries (id),
             field             TEXT NOT NULL,
             content_type      TEXT NOT NULL,
             size              BIGINT NOT NULL,
             sha256            TEXT NOT NULL,
             key_id            BIGINT REFERENCES data_keys (key_id),
             key_nonce         BYTEA,
             key_ciphertext    BYTEA,
             captured_at       TIMESTAMPTZ NOT NULL,
             vendor_deleted_at TIMESTAMPTZ,
             UNIQUE (delivery_id, field)
         );
         CREATE INDEX IF NOT EXISTS artifacts_captured ON artifacts (captured_at);",
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

const SELECT: &str = "SELECT a.id, a.delivery_id, d.source, a.field, a.content_type, a.size,
                             a.sha256, a.captured_at, k.wrapped IS NOT NULL, a.vendor_deleted_at
                      FROM artifacts a JOIN deliveries d ON d.id = a.delivery_id
                      LEFT JOIN data_keys k ON k.key_id = a.key_id";

fn summary(r: &Row) -> ArtifactSummary {
    ArtifactSummary {
        id: r.get(0),
        delivery_id: r.get(1),
        source: r.get(2),
        field: r.get(3),
        content_type: r.get(4),
        size: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
        sha256: r.get(6),
        captured_at: r.get(7),
        readable: r.get::<_, Option<bool>>(8).unwrap_or(false),
        vendor_deleted_at: r.get(9),
    }
}

async fn by_id(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<ArtifactSummary>, StoreError> {
    Ok(client
        .query_opt(&format!("{SELECT} WHERE a.id = $1"), &[&id])
        .await?
        .as_ref()
        .map(summary))
}

async fn record(store: &PgStore, new: NewArtifact) -> Result<ArtifactSummary, StoreError> {
    let mut client = store.client().await?;
    let existing = client
        .query_opt(
            "SELECT id FROM artifacts WHERE delivery_id = $1 AND field = $2",
            &[&new.delivery_id, &new.field],
        )
        .await?;
    if let Some(row) = existing {
        let id: String = row.get(0);
        return by_id(&client, &id)
            .await?
            .ok_or(StoreError::NotFound("artifact"));
    }
    // The delivery's own period: purging that period shreds the artifact with the payload.
    let row = client
        .query_opt(
            "SELECT d.source, k.period FROM deliveries d JOIN data_keys k ON k.key_id = d.key_id
             WHERE d.id = $1",
            &[&new.delivery_id],
        )
        .await?
        .ok_or(StoreError::NotFound("delivery"))?;
    let (source, period): (String, String) = (row.get(0), row.get(1));
    let (key_id, key) = keys::key_for_write(store, &mut client, &period).await?;
    let sealed = key.seal(&key_place(&new.id, &source, key_id), &new.file_key)?;
    let size = i64::try_from(new.size).unwrap_or(i64::MAX);
    let tx = client.transaction().await?;
    let inserted = tx
        .execute(
            "INSERT INTO artifacts (id, delivery_id, field, content_type, size, sha256, key_id,
                                    key_nonce, key_ciphertext, captured_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (delivery_id, field) DO NOTHING",
            &[
                &new.id,
                &new.delivery_id,
                &new.field,
                &new.content_type,
                &size,
                &new.sha256,
                &key_id,
                &sealed.nonce,
                &sealed.ciphertext,
                &Utc::now(),
            ],
        )
        .await?;
    if inserted == 0 {
        // Another node recorded this field first: theirs stands.
        let row = tx
            .query_one(
                "SELECT id FROM artifacts WHERE delivery_id = $1 AND field = $2",
                &[&new.delivery_id, &new.field],
            )
            .await?;
        let id: String = row.get(0);
        let summary = by_id(&tx, &id)
            .await?
            .ok_or(StoreError::NotFound("artifact"))?;
        tx.commit().await?;
        return Ok(summary);
    }
    let summary = by_id(&tx, &new.id)
        .await?
        .ok_or(StoreError::NotFound("artifact"))?;
    audit::append(store, &tx, &captured_record(&summary)).await?;
    tx.commit().await?;
    Ok(summary)
}

async fn list(
    store: &PgStore,
    filter: &ArtifactFilter,
) -> Result<Vec<ArtifactSummary>, StoreError> {
    let client = store.client().await?;
    let since: Option<DateTime<Utc>> = filter.since;
    let rows = client
        .query(
            &format!(
                "{SELECT} WHERE ($1::text IS NULL OR a.delivery_id = $1)
                   AND ($2::timestamptz IS NULL OR a.captured_at >= $2)
                 ORDER BY a.captured_at DESC, a.id LIMIT $3"
            ),
            &[&filter.delivery_id, &since, &filter.effective_limit()],
        )
        .await?;
    Ok(rows.iter().map(summary).collect())
}

async fn open(
    store: &PgStore,
    id: &str,
    reader: &ArtifactReader,
) -> Result<OpenedArtifact, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let summary = by_id(&tx, id)
        .await?
        .ok_or(StoreError::NotFound("artifact"))?;
    if let ArtifactReader::Handler { delivery_id, .. } = reader {
        if *delivery_id != summary.delivery_id {
            return Err(StoreError::NotFound("artifact"));
        }
    }
    // Read in this transaction, not taken from this node's key cache: a purge run by the CLI
    // or another node destroys the key without clearing this process's cache, and the file
    // key sealed here outlives the purge (the payloads it covered are gone already).
    if !summary.readable {
        return Err(StoreError::KeyDestroyed);
    }
    let row = tx
        .query_one(
            "SELECT key_id, key_nonce, key_ciphertext FROM artifacts WHERE id = $1",
            &[&id],
        )
        .await?;
    let (key_id, nonce, ciphertext): (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>) =
        (row.get(0), row.get(1), row.get(2));
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(store, &tx, key_id).await?;
    let file_key = key.open(&key_place(id, &summary.source, key_id), &nonce, &ciphertext)?;
    audit::append(store, &tx, &read_record(&summary, reader)).await?;
    tx.commit().await?;
    Ok(OpenedArtifact {
        summary,
        file_key: Zeroizing::new(file_key.to_vec()),
    })
}

async fn vendor_deletion(
    store: &PgStore,
    id: &str,
    host: &str,
    status: Option<u16>,
    deleted: bool,
) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let summary = by_id(&tx, id)
        .await?
        .ok_or(StoreError::NotFound("artifact"))?;
    if deleted {
        tx.execute(
            "UPDATE artifacts SET vendor_deleted_at = $2 WHERE id = $1",
            &[&id, &Utc::now()],
        )
        .await?;
    }
    audit::append(store, &tx, &vendor_record(&summary, host, status, deleted)).await?;
    tx.commit().await?;
    Ok(())
}

impl ArtifactStore for PgStore {
    fn record_artifact(&self, new: NewArtifact) -> StoreFuture<'_, ArtifactSummary> {
        Box::pin(async move { self.track(record(self, new).await) })
    }

    fn delivery_artifacts(&self, delivery_id: String) -> StoreFuture<'_, Vec<ArtifactSummary>> {
        Box::pin(async move {
            let filter = ArtifactFilter {
                delivery_id: Some(delivery_id),
                since: None,
                limit: 1000,
            };
            let mut rows = self.track(list(self, &filter).await)?;
            rows.reverse();
            Ok(rows)
        })
    }

    fn artifact(&self, id: String) -> StoreFuture<'_, Option<ArtifactSummary>> {
        Box::pin(async move {
            let client = self.track(self.client().await)?;
            self.track(by_id(&client, &id).await)
        })
    }

    fn list_artifacts(&self, filter: ArtifactFilter) -> StoreFuture<'_, Vec<ArtifactSummary>> {
        Box::pin(async move { self.track(list(self, &filter).await) })
    }

    fn open_artifact(&self, id: String, reader: ArtifactReader) -> StoreFuture<'_, OpenedArtifact> {
        Box::pin(async move { self.track(open(self, &id, &reader).await) })
    }

    fn record_vendor_deletion(
        &self,
        id: String,
        host: String,
        status: Option<u16>,
        deleted: bool,
    ) -> StoreFuture<'_, ()> {
        Box::pin(
            async move { self.track(vendor_deletion(self, &id, &host, status, deleted).await) },
        )
    }
}
