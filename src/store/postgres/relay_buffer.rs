//! The relay buffer on PostgreSQL (the seam and its guarantees: `store::relay_buffer`).
//!
//! The tables (`relay_sealed`, `relay_dedup`, `relay_size`; schema v4) live in the relay's
//! database beside its audit chain, so a record and its audit entry commit in one transaction,
//! durable at commit as every PostgreSQL write here (`synchronous_commit`).
//!
//! Order: a storing put first locks the single `relay_size` row (adding its bytes, refused past
//! the cap) and only then draws its `seq`; the lock is held until commit, so positions are drawn
//! in commit order, and a puller that has read up to a cursor never finds a record committed
//! later below it — across several relay nodes on one database too. A retry's dedup insert
//! waits for an identical put in flight (`ON CONFLICT DO NOTHING`) and answers `Duplicate` with
//! its id once it commits.
//!
//! Unlike SQLite's `secure_delete`, PostgreSQL leaves a handed-over row's bytes in the table
//! file until vacuum reuses the space; they are HPKE ciphertext sealed to the inside node's
//! key, which neither the relay nor its database can open.

use chrono::{DateTime, Utc};

use super::audit::append;
use super::PgStore;
use crate::store::relay_buffer::{
    buffered_record, dedup_cutoff, duplicate_record, handed_over_record, Backlog, BufferError,
    BufferFuture, Buffered, NewSealed, Puller, RelayBuffer, RelayBufferSettings, SealedRow,
    DEDUP_PURGE_CHUNK,
};
use crate::store::{StoreError, StoreFuture};

/// The relay's buffer in its PostgreSQL database.
#[derive(Debug)]
pub struct PgRelayBuffer {
    store: PgStore,
    settings: RelayBufferSettings,
}

impl PgRelayBuffer {
    /// The buffer of the relay whose store is `store` (opened, so schema v4 is in place).
    pub fn new(store: PgStore, settings: RelayBufferSettings) -> Self {
        Self { store, settings }
    }

    async fn put_now(&self, r: NewSealed) -> Result<Buffered, BufferError> {
        let stored = self.put_tx(&r).await;
        // A full buffer is a success of the database: readiness stays green.
        let stored = match stored {
            Err(BufferError::Full) => return Err(BufferError::Full),
            Err(BufferError::Store(e)) => Err(e),
            Ok(b) => Ok(b),
        };
        let answer = self.store.track(stored)?;
        if matches!(answer, Buffered::Stored(_)) {
            self.settings.wake.notify_waiters();
        }
        Ok(answer)
    }

    async fn put_tx(&self, r: &NewSealed) -> Result<Buffered, BufferError> {
        let store = &self.store;
        let mut client = store.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let inserted = tx
            .query_opt(
                "INSERT INTO relay_dedup (dedup_index, id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (dedup_index) DO NOTHING RETURNING id",
                &[&r.dedup_index, &r.id, &r.received_at],
            )
            .await
            .map_err(StoreError::from)?;
        if inserted.is_none() {
            let first: String = tx
                .query_one(
                    "SELECT id FROM relay_dedup WHERE dedup_index = $1",
                    &[&r.dedup_index],
                )
                .await
                .map_err(StoreError::from)?
                .get(0);
            append(store, &tx, &duplicate_record(r, &first)).await?;
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Buffered::Duplicate(first));
        }
        let size = i64::try_from(r.size()).unwrap_or(i64::MAX);
        let max = i64::try_from(self.settings.max_bytes).unwrap_or(i64::MAX);
        let room = tx
            .query_opt(
                "UPDATE relay_size SET bytes = bytes + $1 WHERE bytes + $1 <= $2 RETURNING bytes",
                &[&size, &max],
            )
            .await
            .map_err(StoreError::from)?;
        if room.is_none() {
            // Dropping the transaction rolls back the dedup row too.
            return Err(BufferError::Full);
        }
        tx.execute(
            "INSERT INTO relay_sealed (id, received_at, key_id, enc, ciphertext, node_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &r.id,
                &r.received_at,
                &r.key_id,
                &r.enc,
                &r.ciphertext,
                &store.node_id(),
            ],
        )
        .await
        .map_err(StoreError::from)?;
        append(store, &tx, &buffered_record(r)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Buffered::Stored(r.id.clone()))
    }

    async fn ack_tx(&self, seqs: &[i64], who: Option<&Puller>) -> Result<u64, StoreError> {
        let store = &self.store;
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        let mut deleted: Vec<(i64, String, i64)> = tx
            .query(
                "DELETE FROM relay_sealed WHERE seq = ANY($1)
                 RETURNING seq, id, octet_length(enc) + octet_length(ciphertext)",
                &[&seqs],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), i64::from(row.get::<_, i32>(2))))
            .collect();
        deleted.sort_unstable_by_key(|(seq, _, _)| *seq);
        if !deleted.is_empty() {
            let freed: i64 = deleted.iter().map(|(_, _, size)| size).sum();
            tx.execute(
                "UPDATE relay_size SET bytes = GREATEST(bytes - $1, 0)",
                &[&freed],
            )
            .await?;
        }
        for (_, id, _) in &deleted {
            append(store, &tx, &handed_over_record(id, who)).await?;
        }
        tx.execute(
            "DELETE FROM relay_dedup WHERE dedup_index IN
               (SELECT dedup_index FROM relay_dedup WHERE received_at < $1 LIMIT $2)",
            &[
                &dedup_cutoff(self.settings.dedup_window),
                &DEDUP_PURGE_CHUNK,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(deleted.len() as u64)
    }

    async fn read_batch(&self, after: i64, max: usize) -> Result<Vec<SealedRow>, StoreError> {
        let client = self.store.client().await?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT seq, id, received_at, key_id, enc, ciphertext FROM relay_sealed
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &max],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SealedRow {
                seq: r.get(0),
                id: r.get(1),
                received_at: r.get(2),
                key_id: r.get(3),
                enc: r.get(4),
                ciphertext: r.get(5),
            })
            .collect())
    }

    async fn read_backlog(&self) -> Result<Backlog, StoreError> {
        let client = self.store.client().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(octet_length(enc) + octet_length(ciphertext)), 0)::BIGINT,
                        MIN(received_at) FROM relay_sealed",
                &[],
            )
            .await?;
        Ok(Backlog {
            records: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            bytes: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            oldest: row.get::<_, Option<DateTime<Utc>>>(2),
        })
    }
}

impl RelayBuffer for PgRelayBuffer {
    fn put(&self, record: NewSealed) -> BufferFuture<'_> {
        Box::pin(self.put_now(record))
    }

    fn ack(&self, seqs: Vec<i64>, puller: Option<Puller>) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let acked = self.ack_tx(&seqs, puller.as_ref()).await;
            self.store.track(acked)
        })
    }

    fn batch_after(&self, after: i64, max: usize) -> StoreFuture<'_, Vec<SealedRow>> {
        Box::pin(async move { self.store.track(self.read_batch(after, max).await) })
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        Box::pin(async move { self.store.track(self.read_backlog().await) })
    }
}
