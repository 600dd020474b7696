//! [`Maintenance`] on PostgreSQL.
//!
//! An offline command owns a small runtime (one worker thread, so the audit module's
//! synchronous readers can wait on queries from the command's own thread) and this node's
//! store. Audited commands append to this node's chain and then bring this node's JSONL mirror
//! up to date, as on SQLite.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::audit_chain::{PgChain, PgRecords};
use super::{PgSettings, PgStore};
use crate::audit::commands::SearchArgs;
use crate::audit::Action;
use crate::audit::{ExportFormat, Mirror};
use crate::crypto::Keyring;
use crate::store::admin::{Requester, RotationProgress, RotationReport};
use crate::store::archive::{ArchiveExtras, ArchiveWriter, EmergencyExport};
use crate::store::maintenance::{
    export_records, search_records, verify_chain, AuditVerdict, BackupOutcome, Check, Maintenance,
    StoredRequest, VerifyOptions,
};
use crate::store::phone_backfill::PhoneIndexReport;
use crate::store::StoreError;

/// What `backup` says on PostgreSQL: the database's own tools make the copy.
pub const BACKUP_PROCEDURE: &str = "with [storage] backend = \"postgres\" the database is backed \
     up with PostgreSQL's own tools, not by wardhook: `pg_dump --format=custom` for a logical \
     copy, or `pg_basebackup` with WAL archiving for point-in-time recovery. Both hold only \
     ciphertext and wrapped keys; back up the master key separately and keep it apart. The \
     procedure, including restore and what a later purge does not reach, is in deploy/INSTALL.md, \
     \"Backups on PostgreSQL\"";

/// This node's store for an offline command.
pub struct PgMaintenance {
    // Dropped before the runtime its connections live on.
    store: PgStore,
    tls: super::PgTls,
    mirror: Arc<Mirror>,
    audit_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for PgMaintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMaintenance")
            .field("node_id", &self.store.node_id())
            .finish_non_exhaustive()
    }
}

impl PgMaintenance {
    /// Connect as node `settings.node_id`, with this node's mirror in `audit_dir`.
    pub fn open(
        settings: &PgSettings,
        keyring: Keyring,
        audit_dir: &Path,
    ) -> Result<Self, StoreError> {
        Self::open_as(settings, keyring, audit_dir, true)
    }

    /// For `doctor`: connect without migrating or writing anything. Fails only when the
    /// settings cannot make a pool; an unreachable server shows in [`Maintenance::health`].
    pub fn inspect(
        settings: &PgSettings,
        keyring: Keyring,
        audit_dir: &Path,
    ) -> Result<Self, StoreError> {
        Self::open_as(settings, keyring, audit_dir, false)
    }

    fn open_as(
        settings: &PgSettings,
        keyring: Keyring,
        audit_dir: &Path,
        migrate: bool,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io {
                path: "async runtime".into(),
                reason: e.to_string(),
            })?;
        let mirror = Arc::new(Mirror::new(audit_dir)?);
        // The mirror is written explicitly after this command's own appends, never before
        // `audit verify` has looked at the database.
        let store = if migrate {
            runtime.block_on(PgStore::open(settings, keyring))?
        } else {
            let _guard = runtime.enter();
            PgStore::build(settings, keyring, None)?
        };
        Ok(Self {
            store,
            tls: settings.tls.clone(),
            mirror,
            audit_dir: audit_dir.to_owned(),
            runtime,
        })
    }

    /// Every node's records, for search and export.
    fn records(&self) -> PgRecords {
        PgRecords::new(&self.store, self.runtime.handle().clone())
    }

    fn own_chain(&self) -> PgChain {
        PgChain::new(
            &self.store,
            self.store.node_id(),
            self.runtime.handle().clone(),
        )
    }

    /// After an audited command: copy this node's new records to its mirror. A failure is
    /// logged, not fatal (the next writer catches up), as on SQLite.
    fn mirror(&self) {
        if let Err(e) = self.mirror.catch_up(&self.own_chain()) {
            tracing::error!(error = %e, "audit mirror catch-up failed");
        }
    }
}

impl Maintenance for PgMaintenance {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn rotate_keys(
        &self,
        who: &Requester,
        progress: &mut dyn FnMut(RotationProgress),
    ) -> Result<RotationReport, StoreError> {
        let report = self
            .runtime
            .block_on(super::rotate::rotate_keys(&self.store, who, progress));
        self.mirror();
        report
    }

    fn index_caller_phones(
        &self,
        batch: usize,
        who: &Requester,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PhoneIndexReport, StoreError> {
        let report = self
            .runtime
            .block_on(super::phone_backfill::index_caller_phones(
                &self.store,
                batch,
                who,
                progress,
            ));
        self.mirror();
        report
    }

    fn backup(
        &self,
        _to: &Path,
        _master_key_file: Option<&Path>,
        _who: &Requester,
        _progress: &mut dyn FnMut(u64, u64),
    ) -> Result<BackupOutcome, StoreError> {
        Ok(BackupOutcome::UseDatabaseTools(BACKUP_PROCEDURE))
    }

    fn load_stored_request(&self, id: &str, who: &Requester) -> Result<StoredRequest, StoreError> {
        let loaded =
            self.runtime
                .block_on(super::offline::load_stored_request(&self.store, id, who));
        self.mirror();
        loaded
    }

    fn emergency_export(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: &str,
        who: &Requester,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
        extras: Option<ArchiveExtras<'_>>,
    ) -> Result<EmergencyExport, StoreError> {
        let mut archive = ArchiveWriter::start(out, since, until, reason, who)?;
        let exported = (|| -> Result<EmergencyExport, StoreError> {
            let purged = self.runtime.block_on(super::offline::export_deliveries(
                &self.store,
                since,
                until,
                &mut archive,
                progress,
            ))?;
            // Outside the runtime: the extras may drive a runtime of their own.
            let extras = match extras {
                Some(f) => archive.add_extras(f)?,
                None => 0,
            };
            let (count, archive_key_b64) = archive.finish()?;
            self.runtime
                .block_on(super::offline::record_emergency_access(
                    &self.store,
                    who,
                    count,
                    reason,
                    since,
                ))?;
            Ok(EmergencyExport {
                count,
                extras,
                purged,
                archive_key_b64,
            })
        })();
        self.mirror();
        exported
    }

    fn audit_search(&self, args: &SearchArgs, out: &mut dyn Write) -> Result<u64, StoreError> {
        search_records(&self.records(), self.store.keyring(), args, out)
    }

    fn audit_export(
        &self,
        format: ExportFormat,
        args: &SearchArgs,
        out: &mut dyn Write,
        progress: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        let keyring = self.store.keyring();
        export_records(&self.records(), keyring, format, args, out, progress)
    }

    /// Every node's chain in the database first (MACs, links, each ending at its node's head
    /// row), then this node's chain against this node's signed checkpoints and JSONL mirror:
    /// run it on each node to cover every node's checkpoints.
    fn audit_verify(
        &self,
        options: VerifyOptions<'_>,
        out: &mut dyn Write,
    ) -> Result<AuditVerdict, StoreError> {
        let nodes = match self
            .runtime
            .block_on(super::audit::verify_audit(&self.store))
        {
            Ok(nodes) => nodes,
            Err(StoreError::Audit(reason)) => return Ok(AuditVerdict::Tampered(reason)),
            Err(e) => return Err(e),
        };
        for n in &nodes {
            writeln!(
                out,
                "node {}: {} records verified (sequence {}..{})",
                n.node_id,
                n.report.records,
                n.report.first_seq.unwrap_or(0),
                n.report.last_seq.unwrap_or(0)
            )?;
        }
        writeln!(
            out,
            "database: {} node chain{} OK; this node ({}) against its checkpoints and mirror:",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            self.store.node_id()
        )?;
        let keyring = self.store.keyring();
        let found = verify_chain(&self.own_chain(), keyring, &self.audit_dir, &options, out)?;
        Ok(match found {
            AuditVerdict::Tampered(reason) => {
                AuditVerdict::Tampered(format!("node {}: {reason}", self.store.node_id()))
            }
            intact => intact,
        })
    }

    fn has_audit_log(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn audit_details(
        &self,
        action: Action,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.runtime.block_on(async {
            let client = self.store.client().await?;
            let rows = client
                .query(
                    "SELECT ts, detail FROM audit_log WHERE action = $1
                     ORDER BY ts DESC, node_id, seq DESC LIMIT $2",
                    &[&action.as_str(), &limit],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn health(&self) -> Vec<Check> {
        self.runtime
            .block_on(super::diagnose::findings(&self.store, &self.tls))
    }
}
