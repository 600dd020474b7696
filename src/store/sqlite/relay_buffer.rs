//! The relay buffer on SQLite (the seam and its guarantees: `store::relay_buffer`).
//!
//! The tables live in the relay's own database file (`[storage] path` of its config, the file
//! whose `audit_log` holds the relay's audit chain), so a record and its audit entry commit in
//! one transaction.
//!
//! One writer thread owns the write connection (`synchronous=FULL`: every commit is fsync'd
//! before `put` returns; `secure_delete=ON`: deleted ciphertext is overwritten) and folds
//! requests that arrive while a commit is in flight into the next transaction (group commit).
//! One writer also makes the pull cursor (`seq`) grow in commit order. Pulls read through a
//! second connection on the blocking pool.
//!
//! Retries: each delivery's dedup index (an HMAC under the relay's own key of what makes "the
//! same delivery", see `normalize::DedupKey`) is kept for `dedup_window` after it was received,
//! hand-over or not, so a sender's retry gets `duplicate` with the first relay id while the
//! inside node deduplicates again on intake (its own index) for anything older.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::audit::Mirror;
use crate::crypto::Keyring;
use crate::store::relay_buffer::{
    buffered_record, dedup_cutoff, duplicate_record, handed_over_record, Backlog, BufferError,
    BufferFuture, Buffered, NewSealed, Puller, RelayBuffer, RelayBufferSettings, SealedRow,
    DEDUP_PURGE_CHUNK,
};
use crate::store::{StoreError, StoreFuture};

/// What a caller hears when its write was not committed (a storage error or a panicking step).
const WRITE_FAILED: &str = "relay buffer write failed";
/// Most `put`s folded into one transaction.
const MAX_GROUP: usize = 64;

/// A `put` waiting for the writer, with where its answer goes.
type PendingPut = (
    Box<NewSealed>,
    oneshot::Sender<Result<Buffered, BufferError>>,
);

enum Op {
    Put(
        Box<NewSealed>,
        oneshot::Sender<Result<Buffered, BufferError>>,
    ),
    Ack(
        Vec<i64>,
        Option<Puller>,
        oneshot::Sender<Result<u64, StoreError>>,
    ),
}

/// The relay's sealed buffer. Cheap to share behind an `Arc`.
pub struct SqliteRelayBuffer {
    ops: std::sync::mpsc::SyncSender<Op>,
    reader: Arc<Mutex<Connection>>,
    /// Tests only: the next group of puts panics after its inserts, as a bug would.
    #[cfg(test)]
    panic_next_put: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for SqliteRelayBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRelayBuffer").finish_non_exhaustive()
    }
}

fn db_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt("relay_sealed.received_at"))
}

/// Bytes of sealed data in the buffer.
fn sealed_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let bytes: i64 = conn.query_row(
        "SELECT COALESCE(SUM(length(enc) + length(ciphertext)), 0) FROM relay_sealed",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsync'd at every commit, so a 200 to the sender is after the fsync.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted (handed-over) ciphertext is overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Create the buffer's tables if absent. The audit tables are the store's (`audit_log`).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS relay_sealed (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            received_at TEXT NOT NULL,
            key_id TEXT NOT NULL,
            enc BLOB NOT NULL,
            ciphertext BLOB NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS relay_dedup (
            dedup_index TEXT PRIMARY KEY,
            id TEXT NOT NULL,
            received_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS relay_dedup_received ON relay_dedup(received_at);",
    )?;
    crate::store::sqlite::audit_log::migrate(conn)?;
    Ok(())
}

/// What the writer thread keeps.
struct Writer {
    conn: Connection,
    keyring: Keyring,
    mirror: Option<Mirror>,
    max_bytes: u64,
    bytes: u64,
    dedup_window: Duration,
    wake: Arc<tokio::sync::Notify>,
    #[cfg(test)]
    panic_next_put: Arc<std::sync::atomic::AtomicBool>,
}

impl SqliteRelayBuffer {
    /// Open the buffer in the relay's database at `path` (already created `0600` by the
    /// relay's [`crate::store::Store`]), and start its writer thread; `mirror` is the relay's
    /// audit mirror, caught up after each commit.
    pub fn open(
        path: &Path,
        keyring: Keyring,
        mirror: Option<Mirror>,
        settings: RelayBufferSettings,
    ) -> Result<Self, StoreError> {
        let RelayBufferSettings {
            max_bytes,
            dedup_window,
            wake,
        } = settings;
        let conn = open_connection(path)?;
        migrate(&conn)?;
        let bytes = sealed_bytes(&conn)?;
        let reader = open_connection(path)?;
        let (ops, rx) = std::sync::mpsc::sync_channel(1024);
        #[cfg(test)]
        let panic_next_put = Arc::<std::sync::atomic::AtomicBool>::default();
        let mut writer = Writer {
            conn,
            keyring,
            mirror,
            max_bytes,
            bytes,
            dedup_window,
            wake,
            #[cfg(test)]
            panic_next_put: Arc::clone(&panic_next_put),
        };
        std::thread::Builder::new()
            .name("relay-buffer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError::Io {
                path: "relay-buffer thread".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ops,
            reader: Arc::new(Mutex::new(reader)),
            #[cfg(test)]
            panic_next_put,
        })
    }

    async fn put_now(&self, record: NewSealed) -> Result<Buffered, BufferError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Put(Box::new(record), tx))
            .map_err(BufferError::Store)?;
        rx.await
            .unwrap_or(Err(BufferError::Store(StoreError::Unavailable(
                WRITE_FAILED,
            ))))
    }

    async fn ack_now(&self, seqs: Vec<i64>, puller: Option<Puller>) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Ack(seqs, puller, tx))?;
        rx.await
            .unwrap_or(Err(StoreError::Unavailable(WRITE_FAILED)))
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.ops
            .send(op)
            .map_err(|_| StoreError::Unavailable("relay buffer writer stopped"))
    }

    async fn read_batch(&self, after: i64, max: usize) -> Result<Vec<SealedRow>, StoreError> {
        let reader = self.reader.clone();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, received_at, key_id, enc, ciphertext FROM relay_sealed
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, max], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, id, received, key_id, enc, ciphertext) = row?;
                out.push(SealedRow {
                    seq,
                    id,
                    received_at: parse_time(&received)?,
                    key_id,
                    enc,
                    ciphertext,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn read_backlog(&self) -> Result<Backlog, StoreError> {
        let reader = self.reader.clone();
        blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            let (records, bytes, oldest): (i64, i64, Option<String>) = conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(enc) + length(ciphertext)), 0),
                        MIN(received_at) FROM relay_sealed",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(Backlog {
                records: u64::try_from(records).unwrap_or(0),
                bytes: u64::try_from(bytes).unwrap_or(0),
                oldest: oldest.as_deref().map(parse_time).transpose()?,
            })
        })
        .await
    }
}

impl RelayBuffer for SqliteRelayBuffer {
    fn put(&self, record: NewSealed) -> BufferFuture<'_> {
        Box::pin(self.put_now(record))
    }

    fn ack(&self, seqs: Vec<i64>, puller: Option<Puller>) -> StoreFuture<'_, u64> {
        Box::pin(self.ack_now(seqs, puller))
    }

    fn batch_after(&self, after: i64, max: usize) -> StoreFuture<'_, Vec<SealedRow>> {
        Box::pin(self.read_batch(after, max))
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        Box::pin(self.read_backlog())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(StoreError::Unavailable("relay buffer read panicked")))
}

impl Writer {
    /// Serve operations until every [`RelayBuffer`] handle is gone. A panic while applying a
    /// group (a bug) costs that group, not the relay: its transaction rolls back, its callers
    /// are answered unavailable (senders get 503 and retry, an acknowledgement is repeated by
    /// the next pull), the size count is read again from the table, and the loop goes on.
    fn run(&mut self, rx: &std::sync::mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut puts = Vec::new();
            let mut acks = Vec::new();
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Put(r, tx) => puts.push((r, tx)),
                    Op::Ack(seqs, who, tx) => acks.push((seqs, who, tx)),
                }
                if puts.len() + acks.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for (seqs, who, tx) in acks {
                    let _ = tx.send(self.ack(&seqs, who.as_ref()));
                }
                if !puts.is_empty() {
                    self.put_group(puts);
                }
            }));
            if step.is_err() {
                tracing::error!(
                    "relay buffer write panicked; its callers are answered unavailable and the \
                     writer goes on"
                );
                self.recount_bytes();
            }
        }
    }

    /// Read the sealed size from the table again (after a group that may have counted records
    /// it then rolled back).
    fn recount_bytes(&mut self) {
        match sealed_bytes(&self.conn) {
            Ok(bytes) => self.bytes = bytes,
            Err(e) => tracing::error!(error = %e, "relay buffer cannot recount its size"),
        }
    }

    /// One transaction for a group of puts; every caller gets its own answer after the commit.
    fn put_group(&mut self, puts: Vec<PendingPut>) {
        let mut answers: Vec<Result<Buffered, BufferError>> = Vec::with_capacity(puts.len());
        let bytes_before = self.bytes;
        let result = (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (r, _) in &puts {
                answers.push(put_one(
                    &tx,
                    &self.keyring,
                    r,
                    &mut self.bytes,
                    self.max_bytes,
                )?);
            }
            #[cfg(test)]
            if self
                .panic_next_put
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                panic!("injected: a bug after the inserts");
            }
            tx.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                if let Some(m) = &self.mirror {
                    if let Err(e) = m.catch_up(&self.conn) {
                        tracing::error!(error = %e, "audit mirror catch-up failed");
                    }
                }
                if answers.iter().any(|a| matches!(a, Ok(Buffered::Stored(_)))) {
                    self.wake.notify_waiters();
                }
                for ((_, tx), answer) in puts.into_iter().zip(answers) {
                    let _ = tx.send(answer);
                }
            }
            Err(e) => {
                self.bytes = bytes_before;
                tracing::error!(error = %e, "relay buffer cannot commit; senders are asked to retry");
                for (_, tx) in puts {
                    let _ = tx.send(Err(BufferError::Store(StoreError::Unavailable(
                        "relay buffer cannot commit",
                    ))));
                }
            }
        }
    }

    fn ack(&mut self, seqs: &[i64], who: Option<&Puller>) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deleted = 0u64;
        let mut freed = 0u64;
        for seq in seqs {
            let row: Option<(String, i64)> = tx
                .query_row(
                    "DELETE FROM relay_sealed WHERE seq = ?1
                     RETURNING id, length(enc) + length(ciphertext)",
                    [seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, size)) = row {
                deleted += 1;
                freed += u64::try_from(size).unwrap_or(0);
                crate::audit::append(&tx, &self.keyring, &handed_over_record(&id, who))?;
            }
        }
        let cutoff = dedup_cutoff(self.dedup_window);
        tx.execute(
            "DELETE FROM relay_dedup WHERE rowid IN
               (SELECT rowid FROM relay_dedup WHERE received_at < ?1 LIMIT ?2)",
            params![db_time(cutoff), DEDUP_PURGE_CHUNK],
        )?;
        tx.commit()?;
        self.bytes = self.bytes.saturating_sub(freed);
        if let Some(m) = &self.mirror {
            if let Err(e) = m.catch_up(&self.conn) {
                tracing::error!(error = %e, "audit mirror catch-up failed");
            }
        }
        Ok(deleted)
    }
}

/// One put inside the group's transaction: a duplicate, a refusal for size, or an insert.
fn put_one(
    tx: &rusqlite::Transaction<'_>,
    keyring: &Keyring,
    r: &NewSealed,
    bytes: &mut u64,
    max_bytes: u64,
) -> Result<Result<Buffered, BufferError>, StoreError> {
    let first: Option<String> = tx
        .query_row(
            "SELECT id FROM relay_dedup WHERE dedup_index = ?1",
            [&r.dedup_index],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(first) = first {
        crate::audit::append(tx, keyring, &duplicate_record(r, &first))?;
        return Ok(Ok(Buffered::Duplicate(first)));
    }
    let size = r.size();
    if bytes.saturating_add(size) > max_bytes {
        return Ok(Err(BufferError::Full));
    }
    tx.execute(
        "INSERT INTO relay_sealed (id, received_at, key_id, enc, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![r.id, db_time(r.received_at), r.key_id, r.enc, r.ciphertext],
    )?;
    tx.execute(
        "INSERT INTO relay_dedup (dedup_index, id, received_at) VALUES (?1, ?2, ?3)",
        params![r.dedup_index, r.id, db_time(r.received_at)],
    )?;
    crate::audit::append(tx, keyring, &buffered_record(r))?;
    *bytes = bytes.saturating_add(size);
    Ok(Ok(Buffered::Stored(r.id.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::store::conformance_relay::sealed;

    #[tokio::test]
    async fn a_panic_inside_a_group_costs_that_group_not_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        crate::fsutil::ensure_private_file(&path).expect("create");
        let keyring = Keyring::from_master(&MasterKey::from_bytes([9; 32]));
        let buffer = SqliteRelayBuffer::open(
            &path,
            keyring.clone(),
            None,
            RelayBufferSettings {
                max_bytes: 250,
                dedup_window: Duration::from_secs(3600),
                wake: Arc::default(),
            },
        )
        .expect("open");
        buffer
            .panic_next_put
            .store(true, std::sync::atomic::Ordering::Release);
        let lost = buffer.put(sealed("r1", "d1", 100)).await;
        assert!(
            matches!(lost, Err(BufferError::Store(StoreError::Unavailable(_)))),
            "the panicking group is answered unavailable: {lost:?}"
        );
        // The writer is still there and nothing of the rolled-back group is stored, indexed or
        // counted: the retry is stored, not answered as a duplicate, and its 132 bytes fit under
        // the cap of 250 only if r1's 132 were not kept in the size count.
        assert_eq!(
            buffer.put(sealed("r2", "d1", 100)).await.expect("r2"),
            Buffered::Stored("r2".into())
        );
        let rows = buffer.batch_after(0, 10).await.expect("batch");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "r2");
        assert_eq!(buffer.ack(vec![rows[0].seq], None).await.expect("ack"), 1);
        assert_eq!(
            buffer.put(sealed("r3", "d3", 100)).await.expect("r3"),
            Buffered::Stored("r3".into())
        );
        let conn = Connection::open(&path).expect("open");
        let report = crate::audit::verify_db(&conn, &keyring, None).expect("verify");
        assert_eq!(report.records, 3, "r2 buffered, handed over, r3 buffered");
    }
}
