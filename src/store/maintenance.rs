//! The maintenance boundary: what the offline commands (`keys rotate`, `backup`, `deliveries
//! reverify`, `emergency-export`, `audit verify|search|export`, `doctor`'s audit check) need
//! from the database, whichever database that is.
//!
//! [`Storage`](super::Storage) is what a serving node needs on the delivery path; this trait is
//! what an operator's command needs, and only commands use it. So it is synchronous — an
//! offline command does one thing at a time — and takes callbacks and writers by reference, so
//! output streams straight to the terminal or a file in constant memory. The SQLite side is
//! [`super::sqlite::SqliteMaintenance`]; the PostgreSQL side is
//! [`super::postgres::PgMaintenance`], which runs its async queries on a runtime it owns.
//!
//! How a command gets one: `cli::storage::open_maintenance(config)` opens the backend the config
//! names and returns it as a `Box<dyn Maintenance>`. `purge` is on [`Storage`](super::Storage)
//! already (it runs on both backends and the console may call it too).

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::admin::BackupReport;
use super::archive::{ArchiveExtras, EmergencyExport};
use super::phone_backfill::PhoneIndexReport;
use super::types::{Requester, RotationProgress, RotationReport};
use super::StoreError;
use crate::audit::commands::{SearchArgs, VerifySummary};
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, ExportFormat, ObjectId, Outcome};
use crate::audit::{ChainReader, RecordStream};
use crate::crypto::Keyring;

/// How a check came out (`doctor` prints it as OK, WARN or FAIL; the worst decides its exit
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Works now, needs attention soon.
    Warn,
    /// Broken, or wardhook would refuse to start.
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One thing checked: a backend's finding about its database ([`Maintenance::health`]) or any
/// other `doctor` check, in one shape so `doctor` prints them alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, named by its config key where it has one (`keys.master_key_file`,
    /// `storage.path (database)`, `postgres (tls)`, …).
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// One line: what was found.
    pub message: String,
    /// One line: what to do about it (absent when OK).
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn ok(name: &'static str, message: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, message, None)
    }

    pub(crate) fn warn(
        name: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Warn, message, Some(fix.into()))
    }

    pub(crate) fn fail(
        name: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, message, Some(fix.into()))
    }

    fn new(
        name: &'static str,
        status: Status,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name,
            status,
            message: message.into(),
            fix,
        }
    }
}

/// What `backup` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupOutcome {
    /// The backend wrote a consistent copy (SQLite's online backup).
    Written(BackupReport),
    /// The backend's own tools make the copy (PostgreSQL: `pg_dump` or a base backup); the
    /// text says how and where the procedure is documented.
    UseDatabaseTools(&'static str),
}

/// What `audit verify` found.
#[derive(Debug, Clone)]
pub enum AuditVerdict {
    /// Every chain verified (and the mirror and checkpoints, unless skipped); what this
    /// installation's (this node's) chain and mirror held.
    Intact(Box<VerifySummary>),
    /// The first problem found: the chain (node), sequence number and what is wrong there.
    Tampered(String),
}

/// Options of `audit verify`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The `[audit] dir`: this installation's (this node's) JSONL mirror and checkpoints.
    pub audit_dir: Option<&'a Path>,
    /// Check only the database, not the mirror.
    pub skip_mirror: bool,
    /// Accept a mirror whose oldest files were archived away.
    pub allow_partial_mirror: bool,
}

/// What an offline command asks of its database. See the module docs.
pub trait Maintenance: std::fmt::Debug {
    /// Which backend this is (`sqlite` or `postgres`).
    fn backend_name(&self) -> &'static str;

    /// `keys rotate`: new writes get a new key generation at once, every value sealed under an
    /// older one is re-encrypted, and keys nothing refers to any more are destroyed. Resumable.
    fn rotate_keys(
        &self,
        who: &Requester,
        progress: &mut dyn FnMut(RotationProgress),
    ) -> Result<RotationReport, StoreError>;

    /// `deliveries index-phones`: give every delivery stored without a caller index (and not
    /// purged) the one intake would have given it, decrypting `batch` deliveries at a time
    /// (clamped to `1..=MAX_BATCH`), with `progress(done, total)` after each batch. Audited by
    /// one record at the start and one at the end. See [`super::phone_backfill`].
    fn index_caller_phones(
        &self,
        batch: usize,
        who: &Requester,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PhoneIndexReport, StoreError>;

    /// `backup --to PATH`, with `progress(done, total)`. The master key is never written and a
    /// target beside it is refused.
    fn backup(
        &self,
        to: &Path,
        master_key_file: Option<&Path>,
        who: &Requester,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<BackupOutcome, StoreError>;

    /// `deliveries reverify`: decrypt a delivery's raw body and signature headers; the read is
    /// audited (`delivery_reverified`).
    fn load_stored_request(&self, id: &str, who: &Requester) -> Result<StoredRequest, StoreError>;

    /// `emergency-export`: decrypt deliveries received in `[since, until)` into an archive
    /// encrypted under a fresh key (returned once), audited (`emergency_access`);
    /// `progress(n)` after each delivery written. `extras`, if given, appends its records
    /// after the deliveries (outside the read snapshot, so it may use the store itself).
    #[allow(clippy::too_many_arguments)]
    fn emergency_export(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: &str,
        who: &Requester,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
        extras: Option<ArchiveExtras<'_>>,
    ) -> Result<EmergencyExport, StoreError>;

    /// `audit search`: matching records as tab-separated lines, oldest first (on PostgreSQL
    /// every node's, each line starting with its node). Returns how many matched.
    fn audit_search(&self, args: &SearchArgs, out: &mut dyn Write) -> Result<u64, StoreError>;

    /// `audit export`: matching records as JSONL or CSV, streamed, with progress for large
    /// ranges on `progress`. Returns how many were written.
    fn audit_export(
        &self,
        format: ExportFormat,
        args: &SearchArgs,
        out: &mut dyn Write,
        progress: &mut dyn Write,
    ) -> Result<u64, StoreError>;

    /// `audit verify`: every chain the database holds (MACs, links, gap-free sequence), this
    /// installation's signed checkpoints and, unless skipped, its JSONL mirror and that the
    /// two agree. A report of what verified goes to `out`.
    fn audit_verify(
        &self,
        options: VerifyOptions<'_>,
        out: &mut dyn Write,
    ) -> Result<AuditVerdict, StoreError>;

    /// Whether the database holds an audit log yet (a SQLite file from before the first
    /// `serve` has none).
    fn has_audit_log(&self) -> Result<bool, StoreError>;

    /// The time and `detail` of the newest `limit` records of `action`, newest first, across
    /// every chain (`doctor` reads its backup and purge records this way).
    fn audit_details(
        &self,
        action: Action,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// `doctor`'s database checks: SQLite's integrity check; on PostgreSQL the connection,
    /// its TLS, the schema version and, where the server shows it, replication lag.
    fn health(&self) -> Vec<Check>;
}

/// Turn an audit module result into a verdict: a verification failure is a finding, anything
/// else an error of the command.
pub(crate) fn verdict(
    result: Result<VerifySummary, crate::audit::AuditError>,
) -> Result<AuditVerdict, StoreError> {
    match result {
        Ok(summary) => Ok(AuditVerdict::Intact(Box::new(summary))),
        Err(e @ crate::audit::AuditError::VerifyFailed { .. }) => {
            Ok(AuditVerdict::Tampered(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `audit search` over a backend's records (the same on both backends; only where the records
/// come from differs).
pub(crate) fn search_records(
    records: &(impl RecordStream + ?Sized),
    keyring: &Keyring,
    args: &SearchArgs,
    out: &mut dyn Write,
) -> Result<u64, StoreError> {
    Ok(crate::audit::commands::search(records, keyring, args, out)?)
}

/// `audit export` over a backend's records.
pub(crate) fn export_records(
    records: &(impl RecordStream + ?Sized),
    keyring: &Keyring,
    format: ExportFormat,
    args: &SearchArgs,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<u64, StoreError> {
    Ok(crate::audit::commands::export(
        records, keyring, format, args, out, progress,
    )?)
}

/// This installation's (node's) chain against its signed checkpoints and JSONL mirror in
/// `options.audit_dir`, else `audit_dir`: the verdict `audit verify` reports.
pub(crate) fn verify_chain(
    chain: &(impl ChainReader + ?Sized),
    keyring: &Keyring,
    audit_dir: &Path,
    options: &VerifyOptions<'_>,
    out: &mut dyn Write,
) -> Result<AuditVerdict, StoreError> {
    verdict(crate::audit::commands::verify(
        chain,
        keyring,
        options.audit_dir.unwrap_or(audit_dir),
        options.skip_mirror,
        options.allow_partial_mirror,
        out,
    ))
}

/// A stored delivery as its sender sent it.
#[derive(Debug)]
pub struct StoredRequest {
    /// The source it arrived on.
    pub source: String,
    /// The raw body bytes.
    pub body: Vec<u8>,
    /// The headers the signature check used (plus `:method` and `:path`).
    pub headers: Vec<(String, String)>,
    /// When wardhook received it.
    pub received_at: DateTime<Utc>,
}

/// The `delivery_reverified` record of a reverify read: who asked and which delivery.
pub(crate) fn reverified_record(id: &str, source: &str, who: &Requester) -> AuditRecord {
    let mut audit = AuditRecord::new(
        Actor::cli_user(&who.user).unwrap_or(Actor::System),
        Action::DeliveryReverified,
        Outcome::Success,
    );
    audit.delivery_id = ObjectId::parse(id).ok();
    audit.source = Code::parse(source).ok();
    if let Ok(v) = Code::parse(who.via) {
        audit.detail.insert(DetailKey::Via, v);
    }
    audit
}
