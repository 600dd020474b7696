//! Stage 4 of the delivery path: deduplicate, encrypt and commit — durably — before the ack.
//!
//! The [`Storage`] trait is the seam: the listener and the dispatcher hold an `Arc<dyn Storage>`
//! and cannot tell the backends apart. Layout:
//!
//! - backend-neutral: [`types`] (the trait's vocabulary), [`backend`] (the trait),
//!   [`console`] (what the operator console needs: tokens, health numbers, audit reads),
//!   [`payload`] (what is sealed for each stored value), `audit_hook` (the audit records stored
//!   changes write), `prepare` (intake preparation: blind indexes, period, sealing, audit
//!   facts), [`jobs`], [`realtime`] and [`reads`] (record formats and audit facts both backends
//!   share), [`caller_phone`] (a caller's phone a handler's output names, for its blind
//!   index), `rotation` (what `keys rotate` moves, and its statements, for both backends),
//!   [`phone_backfill`] (`deliveries index-phones`: the caller index of deliveries stored
//!   before it existed, derived as intake derives it);
//! - [`sqlite`]: the embedded backend (one server, one file, group commit on a writer thread);
//! - [`postgres`]: the shared backend (several stateless nodes, one database);
//! - [`open`]: settings → the opened backend (server, operator commands, `doctor`,
//!   `check-config`), with the background work it needs;
//! - [`alerts`]: the console alerts' rows, the facts their rules read and the evaluation
//!   lease (reached through [`Storage::alerts`]);
//! - [`relay_buffer`]: a DMZ relay's buffer of sealed deliveries (reached through
//!   [`open::OpenedStorage::relay_buffer`]), on either backend;
//! - [`maintenance`]: the second trait, what operator commands (key rotation, backup,
//!   reverify, emergency export, audit verify/search/export, doctor) need from either backend.
//!
//! Both keep the same guarantees — dedup, encryption and enqueue in one transaction answered
//! only after commit, [`StoreError::Unavailable`] (503 with `Retry-After`) when storage cannot
//! commit, one audit record per change in the same transaction — and the same encrypted
//! formats. The same conformance scenarios run on both.

pub mod admin;
pub mod alerts;
pub mod answers;
pub mod archive;
pub mod artifacts;
mod audit_hook;
pub mod backend;
pub mod caller_phone;
pub mod console;
pub mod console_bulk;
pub mod console_calls;
pub mod jobs;
pub mod maintenance;
pub mod open;
pub mod payload;
pub mod phone_backfill;
pub mod postgres;
pub(crate) mod prepare;
pub mod reads;
pub mod realtime;
pub mod relay_buffer;
pub(crate) mod rotation;
pub mod sqlite;
pub mod types;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_alerts;
#[cfg(test)]
mod conformance_artifacts;
#[cfg(test)]
mod conformance_maintenance;
#[cfg(test)]
mod conformance_relay;

pub use backend::{Storage, StoreFuture};
pub use console::Console;
pub use maintenance::Maintenance;
pub use sqlite::{emergency, reverify, Store, StoreOptions, SCHEMA_VERSION};
pub use types::{
    AttemptRecord, AttemptResult, AttemptSummary, ClaimedJob, DeadFilter, DeadLetter,
    DeliverySummary, IntakeOutcome, JobSpec, ListFilter, NextStep, Predecessors, PurgeProgress,
    PurgeReport, QuarantineEntry, QuarantineId, QuarantineSummary, Reply, Requester,
    RotationProgress, RotationReport,
};

use crate::crypto::AeadError;

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
