//! `wardhook doctor`: checks an installation and says what to fix.
//!
//! The checks read the config file with `toml` directly (only the paths they need), so doctor
//! still runs when the config is otherwise invalid — `wardhook check-config` is the tool for
//! the config's meaning. Each check prints one line, `OK`, `WARN` or `FAIL`, and, unless it is
//! OK, a `fix:` line. Nothing is modified and no secret is printed.
//!
//! | check | FAIL | WARN |
//! | --- | --- | --- |
//! | `keys.master_key_file` | missing, unreadable, group/world-accessible, not 32 bytes of base64 | in the database's folder (a backup of that folder would hold both) |
//! | `server.tls.cert` | unreadable, no certificate, expired, not yet valid | fewer than 30 days left |
//! | `server.tls.key` | missing, world-accessible | group-accessible |
//! | `storage.path` (disk) | under 256 MiB or 2 % free | under 1 GiB or 10 % free |
//! | `storage.path` (database) | `PRAGMA integrity_check` is not `ok`, cannot be opened | not created yet, group/world-accessible |
//! | `postgres (connection)` | cannot connect, settings unreadable, connected to a read-only standby | — |
//! | `postgres (tls)` | TLS required but the connection is not encrypted | `pg_stat_ssl` not readable |
//! | `postgres (schema)` | newer than this build | older (the next `serve` migrates) or absent |
//! | `postgres (replication)` | — | a standby more than 60 s behind (when the role can see `pg_stat_replication`) |
//! | `audit` | the audit chain (on PostgreSQL every node's), this node's checkpoints or its JSONL mirror do not verify under the master key | not checked (no key, no database, no audit log yet) |
//! | `backups` | — | a backup named by a `backup_taken` record still exists and holds a period past retention (`--retention`, else the retention the latest `purge` applied) |
//!
//! One file per group of checks: `files.rs` (master key, TLS files, disk), `database.rs` (the
//! backend's own checks, through [`crate::store::Maintenance::health`]), `audit.rs` (the chain
//! and the backups the audit trail names), `clocks.rs` (senders' clocks). The database is
//! reached only through the store's [`crate::store::Maintenance`] trait, so SQLite and
//! PostgreSQL installations get the same report.
//!
//! Relative paths are resolved against the current folder, as `wardhook serve` does: run
//! doctor from the service's working directory (`/var/lib/wardhook` in `deploy/`).

mod audit;
mod clocks;
mod database;
mod files;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use audit::{check_audit, check_backups};
use clocks::check_sender_clocks;
use database::{check_database, check_postgres};
use files::{check_disk, check_master_key, check_tls};

/// Default path of the database when `storage.path` is not set (as in the config module).
const DEFAULT_STORAGE_PATH: &str = "data/wardhook.db";

/// Default `[audit] dir` (as in the config module).
const DEFAULT_AUDIT_DIR: &str = "data/audit";

/// Where systemd puts `LoadCredential=` files for the packaged unit.
const CREDENTIALS_PREFIX: &str = "/run/credentials/";

pub use crate::store::maintenance::{Check, Status};

/// Every check, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorReport {
    /// The checks.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// The worst status of any check (`Ok` for an empty report).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// True when no check failed (warnings allowed): the exit status should be 0.
    pub fn passed(&self) -> bool {
        self.worst() != Status::Fail
    }

    /// The checks named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks.iter().filter(move |c| c.name == name)
    }
}

/// Doctor could not write its report.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// Writing to the output failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Thresholds; [`Default`] is what `wardhook doctor` uses.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The time certificates are judged at.
    pub now: DateTime<Utc>,
    /// Warn when a certificate has fewer days left than this.
    pub cert_warn_days: i64,
    /// Warn below this many free bytes on the storage volume…
    pub disk_warn_bytes: u64,
    /// …or below this share free (percent).
    pub disk_warn_percent: u64,
    /// Fail below this many free bytes…
    pub disk_fail_bytes: u64,
    /// …or below this share free (percent).
    pub disk_fail_percent: u64,
    /// Payload retention that backups are judged against; `None`: the retention the latest
    /// `purge` applied (the time of its record minus its cutoff).
    pub retention: Option<chrono::Duration>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            now: Utc::now(),
            cert_warn_days: 30,
            disk_warn_bytes: 1 << 30,
            disk_warn_percent: 10,
            disk_fail_bytes: 256 << 20,
            disk_fail_percent: 2,
            retention: None,
        }
    }
}

/// Run every check for the config at `config_path`, print the report to `out`, return it.
///
/// Map [`DoctorReport::passed`] to the exit status (0 when no check failed).
pub fn run_doctor(config_path: &Path, out: &mut impl Write) -> Result<DoctorReport, DoctorError> {
    run_doctor_with(config_path, &DoctorOptions::default(), out)
}

/// [`run_doctor`] with explicit thresholds and clock.
pub fn run_doctor_with(
    config_path: &Path,
    options: &DoctorOptions,
    out: &mut impl Write,
) -> Result<DoctorReport, DoctorError> {
    let report = DoctorReport {
        checks: collect(config_path, options),
    };
    writeln!(out, "wardhook doctor: {}", config_path.display())?;
    for c in &report.checks {
        writeln!(out, "{:<4}  {:<24} {}", c.status, c.name, c.message)?;
        if let Some(fix) = &c.fix {
            writeln!(out, "      {:<24} fix: {fix}", "")?;
        }
    }
    let count = |s| report.checks.iter().filter(|c| c.status == s).count();
    writeln!(
        out,
        "{} ok, {} warning(s), {} failure(s); the config's meaning is checked by `wardhook check-config`",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    )?;
    Ok(report)
}

/// The paths doctor needs, read leniently from the config file.
#[derive(Debug, Default)]
struct Paths {
    master_key: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    plain_http: bool,
    storage: PathBuf,
    audit_dir: PathBuf,
    /// `[storage] backend = "postgres"`.
    postgres: bool,
}

fn read_paths(config_path: &Path) -> Result<Paths, Check> {
    let text = std::fs::read_to_string(config_path).map_err(|e| {
        Check::fail(
            "config",
            format!("cannot read {}: {e}", config_path.display()),
            "pass --config PATH with the file the service uses (/etc/wardhook/wardhook.toml in deploy/)",
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Check::fail(
            "config",
            format!(
                "{} is not valid TOML: {}",
                config_path.display(),
                e.message()
            ),
            "fix the syntax; `wardhook check-config` shows the line",
        )
    })?;
    let get = |section: &str, key: &str| -> Option<PathBuf> {
        table
            .get(section)?
            .get(key)?
            .as_str()
            .map(|s| absolute(Path::new(s)))
    };
    let tls = table.get("server").and_then(|s| s.get("tls"));
    let tls_path =
        |key: &str| -> Option<PathBuf> { tls?.get(key)?.as_str().map(|s| absolute(Path::new(s))) };
    Ok(Paths {
        master_key: get("keys", "master_key_file"),
        tls_cert: tls_path("cert"),
        tls_key: tls_path("key"),
        plain_http: table
            .get("server")
            .and_then(|s| s.get("plain_http"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false),
        storage: get("storage", "path")
            .unwrap_or_else(|| absolute(Path::new(DEFAULT_STORAGE_PATH))),
        audit_dir: get("audit", "dir").unwrap_or_else(|| absolute(Path::new(DEFAULT_AUDIT_DIR))),
        postgres: table
            .get("storage")
            .and_then(|s| s.get("backend"))
            .and_then(toml::Value::as_str)
            == Some("postgres"),
    })
}

/// `path` against the current folder, for messages that name the file actually checked.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn collect(config_path: &Path, options: &DoctorOptions) -> Vec<Check> {
    let paths = match read_paths(config_path) {
        Ok(p) => p,
        Err(check) => return vec![check],
    };
    let mut checks = vec![Check::ok(
        "config",
        format!("{} parses as TOML", config_path.display()),
    )];
    let key_checks = check_master_key(&paths);
    let key_usable = key_checks.iter().all(|c| c.status != Status::Fail);
    checks.extend(key_checks);
    checks.extend(check_tls(&paths, options));
    checks.push(check_disk(&paths.storage, options));
    if paths.postgres {
        let (db_checks, store) = check_postgres(config_path);
        let db_usable = db_checks.iter().all(|c| c.status != Status::Fail);
        checks.extend(db_checks);
        let store = match store {
            Some(s) if db_usable => Ok(s),
            _ => Err("the database is not reachable or not healthy".to_owned()),
        };
        checks.push(check_audit(
            store.as_deref().map_err(String::clone),
            &paths.audit_dir,
        ));
        checks.push(Check::ok(
            "backups",
            "made with PostgreSQL's own tools (pg_dump, pg_basebackup; deploy/INSTALL.md, Backups on PostgreSQL); doctor does not see them",
        ));
    } else {
        let db_checks = check_database(&paths);
        let db_usable = db_checks.iter().all(|c| c.status == Status::Ok);
        checks.extend(db_checks);
        let store = database::open_sqlite(&paths, key_usable, db_usable);
        checks.push(check_audit(
            store.as_deref().map_err(String::clone),
            &paths.audit_dir,
        ));
        checks.push(check_backups(&paths, options));
    }
    checks.push(check_sender_clocks(&paths.storage));
    checks
}
