//! The tamper-evident audit log (HIPAA 164.312(b) "audit controls").
//!
//! Place in the delivery path: every stage that changes state (verify, store, dispatch, admin,
//! CLI) builds an [`AuditRecord`] and calls [`append`] **inside the same database transaction**
//! as the change, so there is no change without its record. This module holds no SQL: the
//! backends implement [`ChainReader`], [`ChainWriter`] and [`RecordStream`] (`source.rs`) over
//! their tables, and the chain, the mirror, purge and verification here use only those. After the transaction commits, the
//! store hands the returned [`AppendedRecord`]s to [`Mirror::write`] (or calls
//! [`Mirror::catch_up`]), which appends them, and any committed record before them not yet
//! mirrored, to daily JSONL files for a SIEM and writes signed checkpoints. The server and CLI
//! commands write the mirror at the same time; a file lock and a re-read of the mirror's last
//! line keep it in sequence order (see `mirror.rs`).
//!
//! Integrity, in three layers:
//! 1. **MAC chain** — each record carries `mac = HMAC-SHA256(audit key, content || prev_mac)`,
//!    so modifying, inserting, deleting or reordering any record breaks the chain at that record.
//! 2. **Signed checkpoints** — an append-only file of Ed25519-signed `(seq, head mac, time)`
//!    lines, so cutting records off the end (which leaves a valid shorter chain) is detected.
//! 3. **JSONL mirror** — an independent copy verifiable with the same key ([`verify_jsonl`]).
//!
//! PHI never enters: every field is a restricted type ([`Code`], [`ObjectId`], [`CallRef`],
//! [`Digest`], integers, IP addresses); none accepts free text. See `docs/AUDIT.md`.

mod chain;
mod checkpoint;
pub mod commands;
mod fhir;
pub mod forward;
mod mirror;
mod query;
mod record;
mod retention;
mod source;
mod tail;
mod verify;

use std::path::PathBuf;

#[cfg(test)]
pub(crate) use chain::append_at;
pub(crate) use chain::format_ts;
pub use chain::{append, append_all, AppendedRecord, StoredRecord, GENESIS_MAC};
pub(crate) use chain::{ChainCursor, RecordBody};
#[cfg(test)]
pub(crate) use checkpoint::write_checkpoint;
pub use checkpoint::{read_checkpoints, BadCheckpoint, Checkpoint};
#[cfg(test)]
pub(crate) use mirror::list_mirror_files;
pub use mirror::Mirror;
pub use query::{count, export, for_each_record, ExportFormat, Filter, Progress};
pub(crate) use query::{export_header, export_line};
pub use record::{
    canonical_json, lifecycle_record, Action, Actor, AuditRecord, CallRef, Code, Detail, DetailKey,
    DetailValue, Digest, FilePath, ObjectId, Outcome, MAX_CODE_LEN, MAX_PATH_LEN,
};
pub use retention::{purge_older_than, PurgeReport, Retention};
pub use source::{ChainReader, ChainRow, ChainWriter, RecordStream, RecordVisitor};
pub(crate) use verify::verify_chain;
pub use verify::{verify_db, verify_jsonl, Problem, VerifyReport};

/// Errors of the audit module. Messages never contain record contents beyond sequence numbers,
/// field names and file paths.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// SQLite failed (locked, disk full, corrupt file).
    #[error("audit storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another database failed (a PostgreSQL query, a pool timeout): its reason, never row
    /// values.
    #[error("audit storage error: {0}")]
    Backend(String),
    /// Reading or writing a mirror, checkpoint or export file failed.
    #[error("audit file error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing an export or search result to the output failed.
    #[error("audit output error: {0}")]
    Output(std::io::Error),
    /// A value offered for a record field is not of the allowed shape (e.g. it looks like free
    /// text). The value itself is not echoed: it may be PHI.
    #[error("invalid audit {field}: must be {rule}")]
    InvalidField {
        /// Which field or type rejected the value.
        field: &'static str,
        /// What the field accepts.
        rule: &'static str,
    },
    /// The log (database or JSONL files) failed verification. `seq` is the first bad sequence
    /// number; everything before it verified.
    #[error("audit log verification failed ({location}) at sequence {seq}: {problem}")]
    VerifyFailed {
        /// First bad sequence number.
        seq: u64,
        /// What is wrong there.
        problem: Problem,
        /// `database` or the JSONL file and line.
        location: String,
    },
    /// A purge asked to delete records younger than the retention period allows.
    #[error(
        "refusing to purge audit records newer than {earliest_allowed}: retention is {days} days"
    )]
    RetentionViolation {
        /// The latest cutoff the retention permits (RFC 3339).
        earliest_allowed: String,
        /// The configured retention in days.
        days: u32,
    },
    /// The JSONL mirror directory could not be set up.
    #[error("cannot open audit mirror in {path}: {reason}")]
    MirrorInit {
        /// The mirror directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl AuditError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
