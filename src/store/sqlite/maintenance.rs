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
use crate::audit::Action;
use crate::audit::{ExportFormat, Mirror};
use crate::crypto::Keyring;
use crate::store::admin::{Requester, RotationProgress, RotationReport};
use crate::store::archive::ArchiveExtras;
use crate::store::emergency::EmergencyExport;
use crate::store::maintenance::{
    export_records, search_records, verify_chain, AuditVerdict, BackupOutcome, Check, Maintenance,
    VerifyOptions,
};
use crate::store::phone_backfill::PhoneIndexReport;
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

    /// For checks that decrypt nothing and verify nothing (`doctor` when the master key is not
    /// usable): a keyring no data was sealed under, so nothing could be read with it.
    pub fn without_key(path: &Path, audit_dir: &Path) -> Result<Self, StoreError> {
        Self::new(path, crate::store::open::unusable_keyring(), audit_dir)
    }

    fn read_only(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A running server may hold the write lock for a moment.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::levels::attach(&conn, &self.path);
        Ok(conn)
    }

    /// `PRAGMA integrity_check` on a read-only connection.
    fn integrity_check(&self) -> Check {
        const NAME: &str = "storage.path (database)";
        let shown = self.path.display();
        let fix_open = "run doctor as the service user (it must reach the database's -wal/-shm files), or stop the service and retry";
        let conn = match Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(c) => c,
            Err(e) => return Check::fail(NAME, format!("cannot open {shown}: {e}"), fix_open),
        };
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let rows: Result<Vec<String>, rusqlite::Error> = conn
            .prepare("PRAGMA integrity_check(20)")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get::<_, String>(0))?.collect());
        match rows {
            Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {
                Check::ok(NAME, format!("{shown}: PRAGMA integrity_check ok"))
            }
            Ok(rows) => Check::fail(
                NAME,
                format!(
                    "{shown}: PRAGMA integrity_check reports {} problem(s), first: {}",
                    rows.len(),
                    rows.first().map(String::as_str).unwrap_or("(none)")
                ),
                "stop the service, keep the damaged file aside, restore the latest backup (deploy/INSTALL.md, restore) and let senders retry",
            ),
            Err(e) => Check::fail(
                NAME,
                format!("{shown}: integrity check could not run: {e}"),
                if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
                {
                    "storage.path does not point at a wardhook database"
                } else {
                    fix_open
                },
            ),
        }
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

    fn index_caller_phones(
        &self,
        batch: usize,
        who: &Requester,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PhoneIndexReport, StoreError> {
        super::index_caller_phones(self.store()?, batch, who, progress)
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
        extras: Option<ArchiveExtras<'_>>,
    ) -> Result<EmergencyExport, StoreError> {
        crate::store::emergency::export(
            self.store()?,
            since,
            until,
            reason,
            who,
            out,
            progress,
            extras,
        )
    }

    fn audit_search(&self, args: &SearchArgs, out: &mut dyn Write) -> Result<u64, StoreError> {
        search_records(&self.read_only()?, &self.keyring, args, out)
    }

    fn audit_export(
        &self,
        format: ExportFormat,
        args: &SearchArgs,
        out: &mut dyn Write,
        progress: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        export_records(
            &self.read_only()?,
            &self.keyring,
            format,
            args,
            out,
            progress,
        )
    }

    fn audit_verify(
        &self,
        options: VerifyOptions<'_>,
        out: &mut dyn Write,
    ) -> Result<AuditVerdict, StoreError> {
        verify_chain(
            &self.read_only()?,
            &self.keyring,
            &self.audit_dir,
            &options,
            out,
        )
    }

    fn has_audit_log(&self) -> Result<bool, StoreError> {
        let n: i64 = self.read_only()?.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn audit_details(
        &self,
        action: Action,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.read_only()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT ts, detail FROM audit_log WHERE {} ORDER BY seq DESC LIMIT ?2",
            super::audit_log::action_condition(action, "?1")
        ))?;
        let rows = stmt.query_map(
            rusqlite::params![action.as_str(), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn health(&self) -> Vec<Check> {
        vec![self.integrity_check()]
    }
}
