//! `backup --to PATH`: a consistent copy of the SQLite store while the server keeps serving,
//! with a record of what it holds.
//!
//! A backup is a self-contained database: ciphertext and the data keys wrapped under the
//! master key. Restoring it needs nothing but the master key, which is what disaster recovery
//! requires — and it is also why a later `purge` cannot reach it: destroying a period's key in
//! the live database leaves the backup's own wrapped copy, which the unchanged master key still
//! opens. (Making purge reach existing backups would need a key the backups depend on that
//! lives outside them and can be destroyed per period; that key then has to survive the loss of
//! the host for a restore to work, i.e. be backed up itself, and the problem moves with it.)
//!
//! So instead each backup says which periods it holds: the audit record names the backup's
//! path, SHA-256, size and its oldest and newest period, and a manifest beside the file lists
//! every period. `wardhook doctor` reads those records and warns about backups still on disk
//! that hold periods past retention; destroying them is the operator's step.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::audit::mirror;
use super::Store;
use crate::audit::{DetailKey, FilePath};
use crate::store::audit_hook::{to_record, AuditAction, AuditEvent};
use crate::store::types::Requester;
use crate::store::StoreError;

/// First field of every manifest, so tools can tell the format.
pub const MANIFEST_FORMAT: &str = "wardhook-backup-manifest v1";

/// What `backup` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup file (absolute).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, hex (recorded in the audit trail).
    pub sha256: String,
    /// The periods (UTC days, `YYYY-MM-DD`) whose payloads the backup holds readable, oldest
    /// first: with the master key, each of them decrypts from this file.
    pub periods: Vec<String>,
    /// The manifest written beside the backup.
    pub manifest: PathBuf,
}

/// The manifest file of the backup at `backup`: `<backup>.manifest.json`.
pub fn manifest_path(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// `backup --to PATH`: see [`backup_to_with_progress`].
#[tracing::instrument(skip(store, who))]
pub fn backup_to(
    store: &Store,
    to: &Path,
    master_key_file: Option<&Path>,
    who: &Requester,
) -> Result<BackupReport, StoreError> {
    backup_to_with_progress(store, to, master_key_file, who, &mut |_, _| {})
}

/// A consistent copy through SQLite's online backup API while the server keeps serving,
/// calling `progress(pages_done, pages_total)` as the copy advances. The copy holds only
/// ciphertext and wrapped keys; the master key is never written, and a target in the master
/// key's own folder is refused, because a backup stored next to its key is not encrypted in
/// any useful sense. The target must be a plain path (letters, digits, `_ . -`) so the audit
/// record can name it.
pub fn backup_to_with_progress(
    store: &Store,
    to: &Path,
    master_key_file: Option<&Path>,
    who: &Requester,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BackupReport, StoreError> {
    let shown = to.display().to_string();
    let manifest = manifest_path(to);
    for existing in [to, manifest.as_path()] {
        if existing.exists() {
            return Err(StoreError::InvalidArgument(format!(
                "{} already exists; refusing to overwrite",
                existing.display()
            )));
        }
    }
    let target_dir = absolute_dir(to).ok_or_else(|| {
        StoreError::InvalidArgument(format!("{shown}: its folder does not exist"))
    })?;
    if let Some(key) = master_key_file {
        if absolute_dir(key).as_ref() == Some(&target_dir) {
            return Err(StoreError::InvalidArgument(format!(
                "{shown} is in the master key's folder; keep backups away from the key"
            )));
        }
    }
    let absolute = to
        .file_name()
        .map(|name| target_dir.join(name))
        .ok_or_else(|| StoreError::InvalidArgument(format!("{shown} names no file")))?;
    let recorded = absolute
        .to_str()
        .and_then(|p| FilePath::parse(p).ok())
        .ok_or_else(|| {
            StoreError::InvalidArgument(format!(
                "{shown}: use a path of letters, digits, `_`, `.`, `-` and `/` only, so the audit \
                 trail can record where this copy went"
            ))
        })?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    crate::fsutil::create_new_private(to).map_err(io(to))?;
    let src = store.connection()?;
    let mut dst = Connection::open(to)?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        // Step by step (not run_to_completion) so a large database reports progress, and the
        // writer gets the lock between steps.
        loop {
            let step = backup.step(1024)?;
            let p = backup.progress();
            let total = p.pagecount.max(0) as u64;
            progress(total.saturating_sub(p.remaining.max(0) as u64), total);
            match step {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => {}
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
    // A self-contained file: no -wal next to it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    drop(dst);
    let periods = readable_periods(to)?;
    let (bytes, sha256) = hash_file(to).map_err(io(to))?;

    let taken_at = Utc::now();
    let document = serde_json::json!({
        "format": MANIFEST_FORMAT,
        "backup": absolute.file_name().and_then(|n| n.to_str()),
        "sha256": sha256,
        "bytes": bytes,
        "taken_at": taken_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "oldest_period": periods.first(),
        "newest_period": periods.last(),
        "periods": periods,
    });
    write_private(&manifest, document.to_string().as_bytes()).map_err(io(&manifest))?;

    let mut conn = src;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ev = AuditEvent::new(who.actor(), AuditAction::BackupTaken);
    ev.digest = Some(&sha256);
    ev.via = Some(who.via);
    ev.count = Some(periods.len() as i64);
    let mut record = to_record(&ev);
    record
        .detail
        .insert(DetailKey::Bytes, i64::try_from(bytes).unwrap_or(i64::MAX));
    record.detail.insert(DetailKey::Path, recorded);
    let day_start = |p: Option<&String>| {
        p.and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp())
    };
    if let Some(t) = day_start(periods.first()) {
        record.detail.insert(DetailKey::OldestPeriodUnix, t);
    }
    if let Some(t) = day_start(periods.last()) {
        record.detail.insert(DetailKey::NewestPeriodUnix, t);
    }
    crate::audit::append(&tx, store.keyring(), &record)?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(BackupReport {
        path: absolute,
        bytes,
        sha256,
        periods,
        manifest,
    })
}

/// The periods whose data key is still present in the copy at `path` and seals something
/// readable: exactly what the copy discloses to a holder of the master key.
fn readable_periods(path: &Path) -> Result<Vec<String>, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT DISTINCT k.period FROM data_keys k
         WHERE k.wrapped IS NOT NULL
           AND (EXISTS (SELECT 1 FROM deliveries WHERE key_id = k.key_id AND ciphertext IS NOT NULL)
             OR EXISTS (SELECT 1 FROM quarantine WHERE key_id = k.key_id AND ciphertext IS NOT NULL)
             OR EXISTS (SELECT 1 FROM jobs WHERE out_key_id = k.key_id AND out_ciphertext IS NOT NULL))
         ORDER BY k.period",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Size and SHA-256 (hex), hashed while streaming: a backup can be larger than memory.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hex::encode(hasher.finalize())))
}

/// Write the manifest: a new owner-only file, fsync'd.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = crate::fsutil::create_new_private(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn absolute_dir(p: &Path) -> Option<PathBuf> {
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.canonicalize().ok()
}
