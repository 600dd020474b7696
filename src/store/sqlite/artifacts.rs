//! Captured artifacts on SQLite: the `artifacts` table (created by its own idempotent
//! migration, beside the numbered schema) and its reads and writes. See
//! [`crate::store::artifacts`] for what the rows mean.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use super::keys::{self, WriteKeyCache};
use super::storage::blocking;
use super::Store;
use crate::store::artifacts::{
    captured_record, key_place, read_record, vendor_record, ArtifactFilter, ArtifactReader,
    ArtifactStore, ArtifactSummary, NewArtifact, OpenedArtifact,
};
use crate::store::payload::db_time;
use crate::store::{StoreError, StoreFuture};

/// The table. `key_ciphertext` is the per-file key sealed under the delivery's period data
/// key (listed in `keys rotate`'s sealed columns).
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS artifacts (
             id                TEXT PRIMARY KEY,
             delivery_id       TEXT NOT NULL REFERENCES deliveries(id),
             field             TEXT NOT NULL,     -- configured event field (identifier)
             content_type      TEXT NOT NULL,     -- as the configured allowlist spells it
             size              INTEGER NOT NULL,
             sha256            TEXT NOT NULL,
             key_id            INTEGER REFERENCES data_keys(key_id),
             key_nonce         BLOB,
             key_ciphertext    BLOB,
             captured_at       TEXT NOT NULL,
             vendor_deleted_at TEXT,
             UNIQUE (delivery_id, field)
         );
         CREATE INDEX IF NOT EXISTS artifacts_captured ON artifacts (captured_at);",
    )?;
    Ok(())
}

const SELECT: &str = "SELECT a.id, a.delivery_id, d.source, a.field, a.content_type, a.size,
                             a.sha256, a.captured_at, k.wrapped IS NOT NULL, a.vendor_deleted_at
                      FROM artifacts a JOIN deliveries d ON d.id = a.delivery_id
                      LEFT JOIN data_keys k ON k.key_id = a.key_id";

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactSummary> {
    let deleted: Option<String> = r.get(9)?;
    Ok(ArtifactSummary {
        id: r.get(0)?,
        delivery_id: r.get(1)?,
        source: r.get(2)?,
        field: r.get(3)?,
        content_type: r.get(4)?,
        size: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        sha256: r.get(6)?,
        captured_at: time(&r.get::<_, String>(7)?),
        readable: r.get::<_, Option<bool>>(8)?.unwrap_or(false),
        vendor_deleted_at: deleted.as_deref().map(time),
    })
}

fn by_id(conn: &Connection, id: &str) -> Result<Option<ArtifactSummary>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE a.id = ?1"))?
        .query_row(params![id], summary)
        .optional()?)
}

fn record(store: &Store, new: &NewArtifact) -> Result<ArtifactSummary, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT id FROM artifacts WHERE delivery_id = ?1 AND field = ?2",
            params![new.delivery_id, new.field],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return by_id(&tx, &id)?.ok_or(StoreError::NotFound("artifact"));
    }
    // The delivery's own period: purging that period shreds the artifact with the payload.
    let (source, period): (String, String) = tx
        .query_row(
            "SELECT d.source, k.period FROM deliveries d JOIN data_keys k ON k.key_id = d.key_id
             WHERE d.id = ?1",
            params![new.delivery_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(StoreError::NotFound("delivery"))?;
    let generation = keys::current_generation(&tx)?;
    let (key_id, key) = keys::key_for_write(
        &tx,
        store.keyring(),
        &mut WriteKeyCache::new(),
        &period,
        generation,
    )?;
    let sealed = key.seal(&key_place(&new.id, &source, key_id), &new.file_key)?;
    let now = Utc::now();
    tx.execute(
        "INSERT INTO artifacts (id, delivery_id, field, content_type, size, sha256, key_id,
                                key_nonce, key_ciphertext, captured_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            new.id,
            new.delivery_id,
            new.field,
            new.content_type,
            i64::try_from(new.size).unwrap_or(i64::MAX),
            new.sha256,
            key_id,
            sealed.nonce,
            sealed.ciphertext,
            db_time(now),
        ],
    )?;
    let summary = by_id(&tx, &new.id)?.ok_or(StoreError::NotFound("artifact"))?;
    crate::audit::append(&tx, store.keyring(), &captured_record(&summary))?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(summary)
}

fn list(store: &Store, filter: &ArtifactFilter) -> Result<Vec<ArtifactSummary>, StoreError> {
    let conn = store.connection()?;
    let mut stmt = conn.prepare(&format!(
        "{SELECT} WHERE (?1 IS NULL OR a.delivery_id = ?1) AND (?2 IS NULL OR a.captured_at >= ?2)
         ORDER BY a.captured_at DESC, a.id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.delivery_id,
            filter.since.map(db_time),
            filter.effective_limit()
        ],
        summary,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn open(store: &Store, id: &str, reader: &ArtifactReader) -> Result<OpenedArtifact, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let summary = by_id(&tx, id)?.ok_or(StoreError::NotFound("artifact"))?;
    if let ArtifactReader::Handler { delivery_id, .. } = reader {
        if *delivery_id != summary.delivery_id {
            return Err(StoreError::NotFound("artifact"));
        }
    }
    let (key_id, nonce, ciphertext): (Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>) = tx
        .query_row(
            "SELECT key_id, key_nonce, key_ciphertext FROM artifacts WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(&tx, store.keyring(), key_id)?;
    let file_key = key.open(&key_place(id, &summary.source, key_id), &nonce, &ciphertext)?;
    crate::audit::append(&tx, store.keyring(), &read_record(&summary, reader))?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(OpenedArtifact {
        summary,
        file_key: Zeroizing::new(file_key.to_vec()),
    })
}

fn vendor_deletion(
    store: &Store,
    id: &str,
    host: &str,
    status: Option<u16>,
    deleted: bool,
) -> Result<(), StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let summary = by_id(&tx, id)?.ok_or(StoreError::NotFound("artifact"))?;
    if deleted {
        tx.execute(
            "UPDATE artifacts SET vendor_deleted_at = ?2 WHERE id = ?1",
            params![id, db_time(Utc::now())],
        )?;
    }
    crate::audit::append(
        &tx,
        store.keyring(),
        &vendor_record(&summary, host, status, deleted),
    )?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(())
}

impl ArtifactStore for Store {
    fn record_artifact(&self, new: NewArtifact) -> StoreFuture<'_, ArtifactSummary> {
        blocking(self, move |s| record(s, &new))
    }

    fn delivery_artifacts(&self, delivery_id: String) -> StoreFuture<'_, Vec<ArtifactSummary>> {
        blocking(self, move |s| {
            let mut rows = list(
                s,
                &ArtifactFilter {
                    delivery_id: Some(delivery_id),
                    since: None,
                    limit: 1000,
                },
            )?;
            rows.reverse();
            Ok(rows)
        })
    }

    fn artifact(&self, id: String) -> StoreFuture<'_, Option<ArtifactSummary>> {
        blocking(self, move |s| by_id(&s.connection()?, &id))
    }

    fn list_artifacts(&self, filter: ArtifactFilter) -> StoreFuture<'_, Vec<ArtifactSummary>> {
        blocking(self, move |s| list(s, &filter))
    }

    fn open_artifact(&self, id: String, reader: ArtifactReader) -> StoreFuture<'_, OpenedArtifact> {
        blocking(self, move |s| open(s, &id, &reader))
    }

    fn record_vendor_deletion(
        &self,
        id: String,
        host: String,
        status: Option<u16>,
        deleted: bool,
    ) -> StoreFuture<'_, ()> {
        blocking(self, move |s| {
            vendor_deletion(s, &id, &host, status, deleted)
        })
    }
}
