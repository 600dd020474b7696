//! Stage 4 of the delivery path: deduplicate, encrypt and commit — durably — before the ack.
//!
//! One SQLite file in WAL mode with `synchronous=FULL`. A single writer thread owns the write
//! connection and does *group commit*: requests that arrive while a commit is in flight are
//! batched into the next transaction (dedup check, encrypted insert, job rows, audit rows for
//! each), which is fsync'd once, and only then does every waiting request get its answer. So the
//! 2xx the listener sends is always after the fsync, while the cost of the fsync is shared.
//!
//! Blocking SQLite work never runs on the async executor: intake talks to the writer thread over
//! a channel, and the read/admin functions in [`admin`] are synchronous (call them from
//! `spawn_blocking` inside the server).
//!
//! When storage cannot commit (disk full, I/O error, locked beyond the busy timeout, corrupt),
//! the error is [`StoreError::Unavailable`]: the listener answers 503 with `Retry-After`, and
//! [`Store::check_ready`] reports not-ready until a write succeeds again.

pub mod admin;
mod audit_hook;
pub mod backend;
mod backup;
pub mod emergency;
pub mod jobs;
mod keys;
pub mod maintenance;
pub mod payload;
pub mod postgres;
mod purge;
pub mod realtime;
pub mod reverify;
mod rotate;
mod schema;
mod sealed;
pub mod sqlite;
mod writer;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_maintenance;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::crypto::{AeadError, Keyring};
use crate::normalize::{IntakeInput, NormalizeError, Normalized};

pub use backend::{Storage, StoreFuture};
pub use maintenance::Maintenance;
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 8192,
            max_db_pages: None,
            audit_mirror: None,
        }
    }
}

/// A handler the route table matched for a delivery; becomes one `jobs` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The `[[handlers]] name`.
    pub handler: String,
}

impl JobSpec {
    /// A job for `handler`.
    pub fn new(handler: impl Into<String>) -> Self {
        Self {
            handler: handler.into(),
        }
    }
}

/// What intake decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Committed (fsync'd) as a new delivery; jobs enqueued. Answer 200 `accepted`.
    Accepted {
        /// The new delivery's id.
        delivery_id: String,
    },
    /// A retry of a delivery already stored; nothing enqueued. Answer 200 `duplicate`.
    Duplicate {
        /// The id of the first delivery.
        delivery_id: String,
    },
}

impl IntakeOutcome {
    /// The delivery id to answer with.
    pub fn delivery_id(&self) -> &str {
        match self {
            Self::Accepted { delivery_id } | Self::Duplicate { delivery_id } => delivery_id,
        }
    }
}

/// The id of a quarantine entry, returned to the sender in the 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineId(pub String);

impl std::fmt::Display for QuarantineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Store errors. Messages carry SQL/OS reasons, ids and field names — never payload content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Storage cannot commit right now: disk full, I/O error, locked beyond the busy timeout,
    /// corrupt file, or the writer is gone. Answer 503 with `Retry-After`; nothing was stored.
    #[error("storage unavailable ({0})")]
    Unavailable(&'static str),
    /// Any other SQLite failure (a bug or a schema mismatch rather than a condition to retry).
    #[error("storage error: {0}")]
    Sqlite(rusqlite::Error),
    /// Any other PostgreSQL failure: SQLSTATE and the server's message, never the detail
    /// (which can quote row values).
    #[error("postgres error: {0}")]
    Postgres(String),
    /// The database was written by a newer wardhook.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found in the file.
        found: usize,
        /// Highest version this build knows.
        supported: usize,
    },
    /// A ciphertext or wrapped key did not authenticate: tampering, a row moved, or the wrong
    /// master key.
    #[error("decryption failed: {0}")]
    Crypto(#[from] AeadError),
    /// The payload's period key was destroyed by `purge` (crypto-shredded).
    #[error("payload was purged: its data key has been destroyed")]
    KeyDestroyed,
    /// No such object.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database content is not what this build wrote.
    #[error("database content is invalid: {0}")]
    Corrupt(&'static str),
    /// A caller-supplied argument is unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file outside the database (backup target) could not be used.
    #[error("cannot use {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS reason.
        reason: String,
    },
    /// The audit chain could not be appended to (it refused a record or its table failed).
    #[error("audit: {0}")]
    Audit(String),
    /// Writing command output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl StoreError {
    /// True when the right answer is 503 with `Retry-After`: the condition is expected to pass
    /// (space freed, lock released) and the sender should retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        if let rusqlite::Error::SqliteFailure(err, _) = &e {
            let reason = match err.code {
                C::DiskFull => Some("disk full"),
                C::SystemIoFailure => Some("I/O error"),
                C::DatabaseBusy | C::DatabaseLocked => Some("database locked"),
                C::ReadOnly => Some("database read-only"),
                C::CannotOpen => Some("cannot open database"),
                C::DatabaseCorrupt | C::NotADatabase => Some("database corrupt"),
                C::OutOfMemory => Some("out of memory"),
                _ => None,
            };
            if let Some(reason) = reason {
                return Self::Unavailable(reason);
            }
        }
        Self::Sqlite(e)
    }
}

impl From<crate::audit::AuditError> for StoreError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            // Disk full inside the audit insert is the same condition as anywhere else.
            crate::audit::AuditError::Sqlite(e) => Self::from(e),
            other => Self::Audit(other.to_string()),
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
    // 64 MiB of page cache (an upper bound, not an allocation): the blind-index B-trees take
    // random inserts, and with SQLite's 2 MiB default the writer re-reads their pages from
    // the WAL on every batch.
    conn.pragma_update(None, "cache_size", -65536)?;
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
        sqlite::audit_log::migrate(&conn)?;
        restrict_permissions(path);
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            keyring: Arc::new(keyring),
            options: options.clone(),
            healthy: AtomicBool::new(true),
            write_key: writer::KeySlot::default(),
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
    pub(crate) fn connection(&self) -> Result<Connection, StoreError> {
        open_connection(&self.shared.path, &self.shared.options)
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// Deduplicate, encrypt and commit a normalized delivery, with one job row per matched
    /// handler, and answer only after the transaction is fsync'd.
    #[tracing::instrument(skip_all, fields(source = %input.source(), event_type = %normalized.event_type.as_str()))]
    pub async fn intake(
        &self,
        input: IntakeInput,
        normalized: Normalized,
        jobs: Vec<JobSpec>,
    ) -> Result<IntakeOutcome, StoreError> {
        // Blind indexes, serialization and encryption here, on the caller's task: the single
        // writer thread is the bottleneck, so it only runs SQL.
        let prepared = writer::prepare(
            &self.shared.keyring,
            &self.shared.write_key,
            &input,
            &normalized,
        )?;
        let (reply, answer) = oneshot::channel();
        self.send(writer::Command::Intake(Box::new(writer::IntakeRequest {
            input,
            normalized,
            jobs,
            prepared,
            reply,
        })))
        .await?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped"))?
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
    for suffix in ["", "-wal", "-shm"] {
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
