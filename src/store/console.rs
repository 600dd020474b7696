//! What the operator console needs from the database, whichever database that is.
//!
//! The admin API, the dashboard, `/metrics` and `wardhook tokens` read and write through
//! [`Console`] (and the delivery reads already on [`super::Storage`]), so `admin/` holds no SQL
//! and the console works the same on SQLite and on PostgreSQL. On PostgreSQL every query spans
//! the whole cluster: the console on any node shows every node's deliveries, jobs, dead letters
//! and audit records, because they all live in the one database.
//!
//! The trait carries data, not policy: token hashing and constant-time comparison, the health
//! arithmetic (rates, percentiles, hourly buckets) and the HTTP edge stay in `admin/`, shared by
//! both backends. Methods return boxed futures, like [`super::Storage`], so the trait stays
//! object-safe.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreFuture;
use crate::audit::commands::SearchArgs;
use crate::audit::{AuditRecord, StoredRecord};

/// An admin token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything operators and auditors may do.
    Admin,
    /// Metadata, payload reveal, replay and retry.
    Operator,
    /// Metadata and the audit log; never decrypted payloads.
    Auditor,
}

impl Role {
    /// `admin`, `operator` or `auditor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }

    /// Parse the stored / typed form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The id inside the token, used in audit records.
    pub id: String,
    /// The human name given at creation.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Creation time (RFC 3339 UTC).
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// A token row as stored: its metadata and the SHA-256 of the whole token text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Its metadata.
    pub info: TokenInfo,
    /// SHA-256 of the token text (the text itself is never stored).
    pub hash: Vec<u8>,
}

/// What inserting a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenInsert {
    /// Stored, with its audit record.
    Created,
    /// An active token already has that name; nothing stored.
    NameTaken,
}

/// Builds the audit record of a revocation from the revoked token's id (known only inside the
/// revoking transaction).
pub type RevokeRecord = Box<dyn FnOnce(&str) -> AuditRecord + Send>;

/// One audit record that counts toward a source's health: `delivery_accepted`,
/// `delivery_duplicate`, `delivery_quarantined` or `delivery_rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEvent {
    /// The source it names.
    pub source: String,
    /// The action.
    pub action: String,
    /// The record's time (RFC 3339 UTC, as in the audit log).
    pub ts: String,
    /// How many events it stands for: a rejection tally's `count`, else 1.
    pub count: i64,
}

/// One attempt of a handler, for its success rate and latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSample {
    /// The handler.
    pub handler: String,
    /// Whether the attempt succeeded (`result = 'ok'`).
    pub ok: bool,
    /// How long it took.
    pub latency_ms: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A handler's queue now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerQueue {
    /// The handler.
    pub handler: String,
    /// Jobs pending, waiting or running.
    pub queued: u64,
    /// Dead letters.
    pub dead: u64,
}

/// The raw numbers the console's health view is computed from (the arithmetic is the console's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthData {
    /// Source audit records since the window start.
    pub source_events: Vec<SourceEvent>,
    /// Attempts started since the window start.
    pub attempts: Vec<AttemptSample>,
    /// Per handler, every handler with jobs.
    pub queues: Vec<HandlerQueue>,
    /// Jobs pending, waiting or running.
    pub queue_depth: u64,
    /// The earliest `next_attempt_at` of a pending job.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Dead letters now.
    pub dead_letters: u64,
}

/// A delivery's metadata as the console shows it (nothing decrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryMeta {
    /// Its id.
    pub id: String,
    /// The source.
    pub source: String,
    /// The event type.
    pub event_type: String,
    /// When it was accepted (RFC 3339 UTC).
    pub received_at: String,
    /// `accepted` or `purged`.
    pub status: String,
}

/// One job of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    /// The job id.
    pub job_id: i64,
    /// Its handler.
    pub handler: String,
    /// `pending`, `waiting`, `running`, `done` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
}

/// The error of an audit filter that does not parse (a bad time, source or action).
pub const BAD_AUDIT_FILTER: &str = "invalid audit filter";

/// The audit filter `args` describe, with call ids turned into their blind index by `keyring`.
pub(crate) fn audit_filter(
    args: &SearchArgs,
    keyring: &crate::crypto::Keyring,
) -> Result<crate::audit::Filter, super::StoreError> {
    args.to_filter(keyring)
        .map_err(|_| super::StoreError::InvalidArgument(BAD_AUDIT_FILTER.to_owned()))
}

/// One record of an export page and the node whose chain holds it (`None` on SQLite's single
/// chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPageRow {
    /// The PostgreSQL node that wrote it.
    pub node: Option<String>,
    /// The record.
    pub record: StoredRecord,
}

/// Where an export page ended: the next page starts after this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    /// The record's time (PostgreSQL orders by it first).
    pub ts: String,
    /// Its node (PostgreSQL).
    pub node: Option<String>,
    /// Its sequence number in its chain.
    pub seq: u64,
}

impl AuditPageRow {
    /// The cursor that continues after this row.
    pub fn cursor(&self) -> AuditCursor {
        AuditCursor {
            ts: self.record.ts.clone(),
            node: self.node.clone(),
            seq: self.record.seq,
        }
    }
}

/// What checking the audit log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCheck {
    /// Every chain verified.
    Ok {
        /// Records verified.
        records: u64,
        /// First sequence number (of the one chain on SQLite; the lowest on PostgreSQL).
        first_seq: Option<u64>,
        /// Last sequence number (the highest on PostgreSQL).
        last_seq: Option<u64>,
        /// Signed checkpoints that matched (SQLite).
        checkpoints_matched: u64,
        /// Records in the JSONL mirror, when it was checked.
        mirror_records: Option<u64>,
        /// Things worth knowing that are not tampering.
        warnings: Vec<String>,
    },
    /// A chain failed to verify.
    Failed {
        /// The first bad sequence number, when known.
        seq: Option<u64>,
        /// What is wrong (no record content).
        problem: String,
        /// Where (database, mirror file, node).
        location: String,
    },
}

/// What the operator console asks of its database. See the module docs.
pub trait Console: Send + Sync {
    /// Create what the console keeps beside the store if it is missing (safe at every start).
    fn prepare_console(&self) -> StoreFuture<'_, ()>;

    /// Store a new token and its `token_created` audit record in one transaction.
    fn create_token(&self, token: StoredToken, record: AuditRecord)
        -> StoreFuture<'_, TokenInsert>;

    /// Every token, newest first (revoked ones included, for the record).
    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenInfo>>;

    /// Revoke the active token named `name`, with the audit record `record` builds from its id,
    /// in one transaction. `None` when no active token has that name.
    fn revoke_token(&self, name: String, record: RevokeRecord) -> StoreFuture<'_, Option<String>>;

    /// The token with id `id`, if any.
    fn token_by_id(&self, id: String) -> StoreFuture<'_, Option<StoredToken>>;

    /// The raw health numbers since `since` (cluster-wide on PostgreSQL).
    fn health_data(&self, since: DateTime<Utc>) -> StoreFuture<'_, HealthData>;

    /// A delivery's metadata; `None` if there is no such delivery.
    fn delivery_meta(&self, id: String) -> StoreFuture<'_, Option<DeliveryMeta>>;

    /// A delivery's jobs in route order.
    fn delivery_jobs(&self, id: String) -> StoreFuture<'_, Vec<DeliveryJob>>;

    /// The newest `limit` audit records matching `args`, oldest first (every node's on
    /// PostgreSQL). An unusable filter is [`super::StoreError::InvalidArgument`].
    fn audit_records(&self, args: SearchArgs, limit: usize) -> StoreFuture<'_, Vec<StoredRecord>>;

    /// Verify the audit log: the chain(s) and, on SQLite, the signed checkpoints and the JSONL
    /// mirror in `audit_dir`.
    fn audit_check(&self, audit_dir: PathBuf) -> StoreFuture<'_, AuditCheck>;

    /// Up to `limit` records matching `args` that come after `after` (from the first when
    /// `None`), in export order: sequence order on SQLite; `(time, node, sequence)` on
    /// PostgreSQL, every node's. The console streams an export by asking page after page, so
    /// its memory does not grow with the log. An unusable filter is
    /// [`super::StoreError::InvalidArgument`].
    fn audit_page(
        &self,
        args: SearchArgs,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<AuditPageRow>>;

    /// One page of deliveries matching `query`, newest first (every node's on PostgreSQL),
    /// with the blind index the call id was compared through. See
    /// [`super::console_calls`].
    fn find_calls(
        &self,
        query: super::console_calls::CallQuery,
    ) -> StoreFuture<'_, super::console_calls::CallSearch>;

    /// How many jobs `filter` matches now (every node's on PostgreSQL), a sample, and the
    /// highest job id counted. See [`super::console_bulk`].
    fn bulk_match(
        &self,
        filter: super::console_bulk::BulkFilter,
    ) -> StoreFuture<'_, super::console_bulk::BulkMatch>;

    /// Re-queue, in one transaction, up to `batch` (clamped) jobs matching `filter` whose id is
    /// above `after` and at most `through`; the caller records the bulk action once.
    fn bulk_requeue(
        &self,
        filter: super::console_bulk::BulkFilter,
        after: i64,
        through: i64,
        batch: usize,
    ) -> StoreFuture<'_, super::console_bulk::BulkStep>;

    /// Handler attempts started since `since` (at most
    /// [`super::console_bulk::MAX_ATTEMPT_POINTS`]), of one handler and/or one source's
    /// deliveries when given, oldest first.
    fn attempt_points(
        &self,
        since: DateTime<Utc>,
        handler: Option<String>,
        source: Option<String>,
    ) -> StoreFuture<'_, Vec<super::console_bulk::AttemptPoint>>;
}
