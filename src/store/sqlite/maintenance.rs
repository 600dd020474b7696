//! [`Maintenance`] on SQLite.
//!
//! The audit commands read the file through a read-only connection and never open the store:
//! opening it starts a writer and catches the mirror up, and `audit verify` must look at the
//! database and the mirror as they are, not copy a tampered record into the mirror first. The
//! other commands open the store (migrations, writer, the mirror every audited command writes)
//! on first use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::audit::commands::SearchArgs;
use crate::audit::{ExportFormat, Mirror};
use crate::crypto::Keyring;
use crate::store::admin::{Requester, RotationProgress, RotationReport};
use crate::store::emergency::EmergencyExport;
use crate::store::maintenance::{verdict, AuditVerdict, BackupOutcome, Maintenance, VerifyOptions};
use crate::store::reverify::StoredRequest;
use crate::store::{Store, StoreError, StoreOptions};

/// The SQLite file an offline command works on.
pub struct SqliteMaintenance {
    path: PathBuf,
    keyring: Keyring,
    audit_dir: PathBuf,
    store: OnceLock<Store>,
}

impl std::fmt::Debug for SqliteMaintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMaintenance")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteMaintenance {
    /// The database at `path` (which must exist), its mirror in `audit_dir`.
    pub fn new(path: &Path, keyring: Keyring, audit_dir: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                reason: "no database there".into(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            keyring,
            audit_dir: audit_dir.to_owned(),
            store: OnceLock::new(),
        })
    }

    /// The store, opened on first use with the audit mirror every audited command writes.
    fn store(&self) -> Result<&Store, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let mirror = Mirror::new(&self.audit_dir)?;
        let store = Store::open(
            &self.path,
            self.keyring.clone(),
            StoreOptions {
                audit_mirror: Some(Arc::new(mirror)),
                ..StoreOptions::default()
            },
        )?;
        Ok(self.store.get_or_init(|| store))
    }

    fn read_only(&self) -> Result<Connection, StoreError> {
        Ok(Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?)
    }
}

impl Maintenance for SqliteMaintenance {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    fn rotate_keys(
        &self,
        who: &Requester,
        progress: &mut dyn FnMut(RotationProgress),
    ) -> Result<RotationReport, StoreError> {
        crate::store::admin::rotate_keys(self.store()?, who, progress)
    }

    fn backup(
        &self,
        to: &Path,
        master_key_file: Option<&Path>,
        who: &Requester,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<BackupOutcome, StoreError> {
        crate::store::admin::backup_to_with_progress(
            self.store()?,
            to,
            master_key_file,
            who,
            progress,
        )
        .map(BackupOutcome::Written)
    }

    fn load_stored_request(&self, id: &str, who: &Requester) -> Result<StoredRequest, StoreError> {
        crate::store::reverify::load_stored_request(self.store()?, id, who)
    }

    fn emergency_export(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: &str,
        who: &Requester,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EmergencyExport, StoreError> {
        crate::store::emergency::export(self.store()?, since, until, reason, who, out, progress)
    }

    fn audit_search(&self, args: &SearchArgs, out: &mut dyn Write) -> Result<u64, StoreError> {
        let conn = self.read_only()?;
        Ok(crate::audit::commands::search(
            &conn,
            &self.keyring,
            args,
            out,
        )?)
    }

    fn audit_export(
        &self,
        format: ExportFormat,
        args: &SearchArgs,
        out: &mut dyn Write,
        progress: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        let conn = self.read_only()?;
        Ok(crate::audit::commands::export(
            &conn,
            &self.keyring,
            format,
            args,
            out,
            progress,
        )?)
    }

    fn audit_verify(
        &self,
        options: VerifyOptions<'_>,
        out: &mut dyn Write,
    ) -> Result<AuditVerdict, StoreError> {
        let conn = self.read_only()?;
        let dir = options.audit_dir.unwrap_or(&self.audit_dir);
        verdict(crate::audit::commands::verify(
            &conn,
            &self.keyring,
            dir,
            options.skip_mirror,
            options.allow_partial_mirror,
            out,
        ))
    }
}
