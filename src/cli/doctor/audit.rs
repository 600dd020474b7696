//! `doctor`'s audit checks: the chain (every node's on PostgreSQL) with this installation's
//! checkpoints and mirror, and the backups the audit trail names.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{Check, DoctorOptions, Paths};
use crate::audit::Action;
use crate::store::maintenance::{AuditVerdict, VerifyOptions};
use crate::store::sqlite::SqliteMaintenance;
use crate::store::Maintenance;

pub(super) fn check_audit(store: Result<&dyn Maintenance, String>, audit_dir: &Path) -> Check {
    const NAME: &str = "audit";
    let not_checked = |why: &str| {
        Check::warn(
            NAME,
            format!("audit chain not checked: {why}"),
            "fix the checks above, then run doctor again (or `wardhook audit verify`)",
        )
    };
    let store = match store {
        Ok(s) => s,
        Err(why) => return not_checked(&why),
    };
    match store.has_audit_log() {
        Ok(true) => {}
        Ok(false) => {
            return not_checked(
                "the database has no audit log yet (created by the first `wardhook serve`)",
            )
        }
        Err(e) => return not_checked(&e.to_string()),
    }
    let options = VerifyOptions {
        audit_dir: Some(audit_dir),
        skip_mirror: !audit_dir.is_dir(),
        allow_partial_mirror: true,
    };
    match store.audit_verify(options, &mut std::io::sink()) {
        Ok(AuditVerdict::Intact(summary)) => {
            let db = &summary.database;
            // Warnings (e.g. no checkpoint file yet) do not make the chain wrong: shown as a note.
            let note = db
                .warnings
                .iter()
                .chain(summary.mirror.iter().flat_map(|m| m.warnings.iter()))
                .next()
                .map(|w| format!(" (note: {w})"))
                .unwrap_or_default();
            let head = db
                .last_seq
                .map_or_else(|| "empty".to_owned(), |seq| format!("head at sequence {seq}"));
            let mirror = match &summary.mirror {
                Some(_) => format!("mirror in {} agrees", audit_dir.display()),
                None => format!("no mirror at {}", audit_dir.display()),
            };
            Check::ok(
                NAME,
                format!(
                    "chain verifies: {} record(s), {head}, {} checkpoint(s) matched; {mirror}{note}",
                    db.records, db.checkpoints_matched
                ),
            )
        }
        Ok(AuditVerdict::Tampered(reason)) => Check::fail(
            NAME,
            format!("audit chain broken: {reason}"),
            "treat as a security incident: preserve the database and the audit folder as they are, run `wardhook audit verify` for details, compare with the shipped mirror copy; a wrong master key also fails here",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("audit chain could not be verified: {e}"),
            "run `wardhook audit verify` for details",
        ),
    }
}

/// One `backup_taken` record: where the copy went and the start of its oldest period.
struct RecordedBackup {
    path: PathBuf,
    oldest_period: Option<DateTime<Utc>>,
}

/// How many backups to name in one line.
const BACKUPS_NAMED: usize = 5;

/// Backups still on disk that hold periods past retention. The audit trail is the list of
/// backups (each `backup_taken` record names its path and oldest period); a backup keeps every
/// period it holds readable with the master key, whatever `purge` did since.
pub(super) fn check_backups(paths: &Paths, options: &DoctorOptions) -> Check {
    const NAME: &str = "backups";
    let Ok(store) = SqliteMaintenance::without_key(&paths.storage, &paths.audit_dir) else {
        return Check::ok(NAME, "no database, so no backups recorded");
    };
    let details = |action: &str, limit: usize| -> Vec<(String, serde_json::Value)> {
        Action::parse(action)
            .ok()
            .and_then(|a| store.audit_details(a, limit).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(ts, d)| Some((ts, serde_json::from_str(&d).ok()?)))
            .collect()
    };
    let unix = |v: &serde_json::Value| v.as_i64().and_then(|t| DateTime::from_timestamp(t, 0));
    let recorded: Vec<RecordedBackup> = details("backup_taken", usize::MAX)
        .into_iter()
        .filter_map(|(_, d)| {
            Some(RecordedBackup {
                path: PathBuf::from(d["path"].as_str()?),
                oldest_period: unix(&d["oldest_period_unix"]),
            })
        })
        .collect();
    let present: Vec<&RecordedBackup> = recorded.iter().filter(|b| b.path.exists()).collect();
    if present.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "{} backup(s) recorded in the audit trail, none still at its recorded path",
                recorded.len()
            ),
        );
    }
    // The retention the latest purge applied: the time of its record minus its cutoff.
    let from_purge = || {
        details("purged", 1).into_iter().find_map(|(ts, d)| {
            let at = DateTime::parse_from_rfc3339(&ts).ok()?.with_timezone(&Utc);
            Some(at - unix(&d["cutoff_unix"])?)
        })
    };
    let Some(retention) = options.retention.or_else(from_purge) else {
        return Check::ok(
            NAME,
            format!(
                "{} backup(s) on disk; not judged against retention: no purge recorded yet (pass --retention)",
                present.len()
            ),
        );
    };
    let cutoff = options.now - retention;
    // A period (UTC day) is past retention once it has ended before the cutoff, as purge judges.
    let past: Vec<String> = present
        .iter()
        .filter(|b| {
            b.oldest_period
                .is_some_and(|start| start + chrono::Duration::days(1) <= cutoff)
        })
        .map(|b| {
            format!(
                "{} (oldest period {})",
                b.path.display(),
                b.oldest_period
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    let days = retention.num_days();
    if past.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "{} backup(s) on disk; none holds a period past the {days}-day retention",
                present.len()
            ),
        );
    }
    let more = past.len().saturating_sub(BACKUPS_NAMED);
    let mut named = past
        .iter()
        .take(BACKUPS_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        named.push_str(&format!(" and {more} more"));
    }
    Check::warn(
        NAME,
        format!(
            "{} backup(s) hold periods past the {days}-day retention and still decrypt them with the master key: {named}",
            past.len()
        ),
        "purge does not reach backups: destroy these copies and their .manifest.json (shred, or per the media-disposal policy) wherever they were copied; if your policy keeps backups longer, run doctor with --retention <policy>",
    )
}
