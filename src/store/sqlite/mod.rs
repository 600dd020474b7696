//! The embedded SQLite backend: one server, one file.
//!
//! One SQLite file in WAL mode with `synchronous=FULL`. A single writer thread owns the write
//! connection and does *group commit*: requests that arrive while a commit is in flight are
//! batched into the next transaction (dedup check, encrypted insert, job rows, audit rows for
//! each), which is fsync'd once, and only then does every waiting request get its answer. So the
//! 2xx the listener sends is always after the fsync, while the cost of the fsync is shared.
//!
//! Blocking SQLite work never runs on the async executor: intake talks to the writer thread over
//! a channel, and the read and maintenance functions ([`reads`], [`jobs`], purge, rotation,
//! backup) are synchronous (the [`crate::store::Storage`] implementation in `storage.rs` runs
//! them on the blocking pool; the CLI calls them directly).
//!
//! Intake preparation (blind indexes, serialization, sealing, audit facts) is the shared
//! `store::prepare`; what is here is SQL and the writer thread.
//!
//! When storage cannot commit (disk full, I/O error, locked beyond the busy timeout, corrupt),
//! the error is [`StoreError::Unavailable`]: the listener answers 503 with `Retry-After`, and
//! [`Store::check_ready`] reports not-ready until a write succeeds again.

mod alerts;
mod artifacts;
pub(crate) mod audit;
pub mod audit_log;
mod backup;
mod bloom;
mod console;
mod console_audit;
mod console_bulk;
mod console_calls;
mod dedup;
pub mod emergency;
pub mod forward;
mod health;
pub mod jobs;
pub(crate) mod keys;
pub(crate) mod levels;
mod maintenance;
mod phone_backfill;
mod purge;
pub mod reads;
pub mod realtime;
mod relay_buffer;
pub mod reverify;
mod rotate;
mod schema;
mod sealed;
mod storage;
mod tokens;
mod writer;

// The audit module's chain, mirror, purge and verification, on real SQLite files (they
// tamper with the table directly, so they live with the SQL).
#[cfg(test)]
mod audit_mirror_tests;
#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod levels_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::crypto::Keyring;
use crate::normalize::{IntakeInput, NormalizeError, Normalized};
use crate::store::types::{IntakeOutcome, JobSpec, QuarantineId};
use crate::store::StoreError;

pub use backup::{
    backup_to, backup_to_with_progress, manifest_path, BackupReport, MANIFEST_FORMAT,
};
pub use levels::IndexShape;
pub use maintenance::SqliteMaintenance;
pub use phone_backfill::index_caller_phones;
pub use purge::{purge_older_than, purge_with_progress, PURGE_CHUNK};
pub use relay_buffer::SqliteRelayBuffer;
pub use rotate::rotate_keys;
pub use schema::SCHEMA_VERSION;

/// Tuning knobs for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most requests folded into one transaction. 1 gives one fsync'd transaction per request
    /// (the baseline the benchmark compares group commit against).
    pub max_batch: usize,
    /// How long a write waits for a lock held by another process (a CLI `purge`, a backup)
    /// before giving up with [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
    /// Requests that may wait for the writer; beyond this, intake waits for room (backpressure).
    pub queue_capacity: usize,
    /// A hard cap on the database size in pages (`PRAGMA max_page_count`). Hitting it behaves
    /// exactly like a full disk, which is how the disk-full tests run.
    pub max_db_pages: Option<u64>,
    /// Where committed audit records are mirrored (daily JSONL), if configured.
    pub audit_mirror: Option<Arc<crate::audit::Mirror>>,
    /// The sizes of the blind-index levels in `<db>.index` ([`levels`]).
    pub index_shape: IndexShape,
    /// WAL size in frames (4 KiB pages) at which the writer makes the WAL start over from its
    /// beginning ([`writer`]). Each restart holds up the next batch for a few milliseconds.
    pub wal_restart_frames: i64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 8192,
            max_db_pages: None,
            audit_mirror: None,
            index_shape: IndexShape::DEFAULT,
            wal_restart_frames: writer::WAL_RESTART_FRAMES,
        }
    }
}

/// State shared by every clone of a [`Store`].
struct Shared {
    path: PathBuf,
    keyring: Arc<Keyring>,
    options: StoreOptions,
    /// False after a commit failed with an unavailable-class error, until a write succeeds.
    healthy: AtomicBool,
    /// The data key the writer last committed with, for sealing on the request task.
    write_key: writer::KeySlot,
    /// How far the index levels have merged, published by their merger.
    merged: Arc<levels::Merged>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The durable intake store. Cheap to clone; all clones share one writer thread.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
    commands: mpsc::Sender<writer::Command>,
}

/// Page cache per connection, KiB (an upper bound, not an allocation). The blind-index B-trees
/// take random inserts, and with SQLite's 2 MiB default the writer re-reads their pages from
/// the WAL on every batch; but a bigger cache is not free either. Every commit that split a
/// B-tree page ends with a walk over the whole cache while the database is under 1 GiB:
/// SQLite's `balance_nonroot` parks a page at the pending-byte page number (1 GiB / page size)
/// while it sorts siblings, and the commit then truncates the cache back to the database size,
/// scanning every cached page. With 64 MiB (16 384 pages) that walk was 15 % of the writer's
/// time under load; 8 MiB holds the index pages a busy day touches and costs an eighth
/// (docs/BENCHMARKS.md §10).
const PAGE_CACHE_KIB: i64 = 8192;

/// Open a connection with the settings every wardhook connection uses.
fn open_connection(path: &Path, options: &StoreOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsync'd at every commit, so an acknowledged delivery survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
    // Statement journals and temporary b-trees in memory rather than in temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Freed pages are zeroed, so deleted ciphertext does not linger in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    if let Some(pages) = options.max_db_pages {
        conn.pragma_update(None, "max_page_count", pages as i64)?;
    }
    Ok(conn)
}

impl Store {
    /// Open (creating if needed) the database at `path`, apply migrations and start the writer
    /// thread. The folder is created `0700` and the database file `0600` before SQLite opens it,
    /// so its `-wal` and `-shm` (which SQLite creates with the main file's mode) are `0600` too,
    /// whatever the umask.
    #[tracing::instrument(skip(keyring, options), fields(path = %path.display()))]
    pub fn open(path: &Path, keyring: Keyring, options: StoreOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::fsutil::create_private_dir_all(parent).map_err(|e| StoreError::Io {
                path: parent.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        crate::fsutil::ensure_private_file(path).map_err(|e| StoreError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut conn = open_connection(path, &options)?;
        schema::migrate(&mut conn)?;
        audit_log::migrate(&conn)?;
        artifacts::migrate(&conn)?;
        alerts::migrate(&conn)?;
        let merged = Arc::new(levels::Merged::default());
        levels::prepare(
            &conn,
            path,
            options.index_shape,
            options.busy_timeout,
            &merged,
        )?;
        restrict_permissions(path);
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            keyring: Arc::new(keyring),
            options: options.clone(),
            healthy: AtomicBool::new(true),
            write_key: writer::KeySlot::default(),
            merged,
        });
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        writer::spawn(conn, Arc::clone(&shared), rx)?;
        Ok(Self {
            shared,
            commands: tx,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Open an extra connection for reads or admin work (the caller's thread blocks on it).
    /// The index file is attached, for call searches.
    pub(crate) fn connection(&self) -> Result<Connection, StoreError> {
        let conn = open_connection(&self.shared.path, &self.shared.options)?;
        levels::attach(&conn, &self.shared.path);
        Ok(conn)
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// Deduplicate, encrypt and commit a normalized delivery, with one job row per matched
    /// handler, and answer only after the transaction is fsync'd.
    /// The event in `normalized` is the one sealed; afterwards it carries the delivery id
    /// (for a duplicate, the first delivery's).
    ///
    /// Its span is DEBUG: at INFO the subscriber would build one per delivery, and the access
    /// line already names the delivery and its outcome. It names the source only: no log
    /// carries an event type (docs/TELEMETRY.md).
    #[tracing::instrument(level = "debug", skip_all, fields(source = %input.source()))]
    pub async fn intake(
        &self,
        input: IntakeInput,
        normalized: &mut Normalized,
        jobs: Vec<JobSpec>,
    ) -> Result<IntakeOutcome, StoreError> {
        // Blind indexes, serialization and encryption here, on the caller's task: the single
        // writer thread is the bottleneck, so it only runs SQL.
        let prepared = writer::prepare(
            &self.shared.keyring,
            &self.shared.write_key,
            &input,
            normalized,
            jobs.len(),
        )?;
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Intake(Box::new(writer::IntakeRequest {
            input,
            jobs,
            prepared,
            reply,
            via: crate::store::answers::here(),
        })))
        .await?;
        let outcome = answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))??;
        normalized.set_delivery_id(outcome.delivery_id());
        Ok(outcome)
    }

    /// Store an authentic delivery that could not be normalized, encrypted, for repair or
    /// replay. The reason's text (paths only, no content) is kept with the entry.
    #[tracing::instrument(skip_all, fields(source = %input.source(), reason = reason.code()))]
    pub async fn quarantine(
        &self,
        input: IntakeInput,
        reason: &NormalizeError,
    ) -> Result<QuarantineId, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Quarantine(Box::new(
            writer::QuarantineRequest {
                input,
                reason: reason.to_string(),
                reason_code: reason.code(),
                received_at: chrono::Utc::now(),
                reply,
            },
        )))
        .await?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))?
    }

    /// For `/readyz`: Ok when the writer is running and the last write succeeded. After a
    /// failure, each call probes with a small write transaction, so readiness comes back by
    /// itself once space is freed or the lock is released.
    #[tracing::instrument(skip(self))]
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        if self.commands.is_closed() {
            return Err(StoreError::Unavailable("writer stopped"));
        }
        if self.shared.healthy.load(Ordering::Acquire) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Probe(reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))?
    }

    /// Write a signed audit checkpoint now (at start and stop), so truncating the newest
    /// records is detectable even when fewer than a checkpoint interval were written.
    pub async fn checkpoint_audit(&self) -> Result<(), StoreError> {
        let Some(mirror) = self.shared.options.audit_mirror.clone() else {
            return Ok(());
        };
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = store.connection()?;
            mirror.catch_up(&conn)?;
            mirror.checkpoint_now(&conn)?;
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|_| StoreError::Unavailable("checkpoint task failed"))?
    }

    /// Append a standalone audit record (a rejected delivery, server start/stop, a reload) in
    /// the writer's next group commit, and mirror it.
    pub async fn record_audit(&self, record: crate::audit::AuditRecord) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Audit(Box::new(record), reply))
            .await?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))?
    }

    /// Run a small idempotent write in the writer's next group commit (see
    /// `writer::Command::Apply`), with the audit record it returns.
    pub(crate) async fn apply(&self, write: writer::ApplyFn) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Apply(write, reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))?
    }

    async fn send(&self, command: writer::Command) -> Result<(), StoreError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))
    }
}

/// Make the database and its WAL/SHM owner-only, also when an older version created them with
/// a looser mode. Best effort: failure is logged, not fatal, because the files hold only
/// ciphertext and blind indexes.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm", ".index", ".index-wal", ".index-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            if let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!(file = %p.display(), error = %e, "cannot restrict database file permissions");
            }
        }
    }
}

/// Copy the WAL into the database and truncate it, so destroyed wrapped keys and deleted
/// ciphertext do not linger in WAL frames.
pub(crate) fn checkpoint_truncate(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint after key destruction did not complete");
    }
}
