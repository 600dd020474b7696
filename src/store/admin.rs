//! Reads and maintenance on the store: listing, decrypted reads, key rotation, purge, backup.
//!
//! These are synchronous (they run on their own connection, from the CLI or from
//! `spawn_blocking` in the admin API) and may run in another process while the server is
//! serving: SQLite's locking and the busy timeout serialize them with the writer thread. Every
//! state change and every decrypted read writes its audit record in the same transaction.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wardhook_sdk::Event;

use super::audit_hook::{record_audit, AuditAction, AuditActor, AuditEvent};
use super::keys::{self, WriteKeyCache};
use super::payload::{decode_body, StoredQuarantine};
use super::writer::db_time;
use super::{Store, StoreError};
use crate::audit::AppendedRecord;
use crate::crypto::RecordPlace;

/// Who is asking, for the audit trail: the OS user at the CLI, or an admin token id.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The OS user name (CLI) — a short identifier.
    pub user: String,
    /// Which channel served the request: `cli` or `admin_api`.
    pub via: &'static str,
}

impl Requester {
    /// The user running the CLI: `$SUDO_USER` under sudo, else `$USER`/`$LOGNAME`, else the
    /// numeric uid (`uid:0`).
    pub fn cli_user() -> Self {
        Self {
            // Under `sudo -u wardhook`, the person is the one who ran sudo, not the account.
            user: ["SUDO_USER", "USER", "LOGNAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| {
                    // No login name in the environment (a service, a container): the numeric
                    // uid still says who, and /proc/self is owned by it.
                    use std::os::unix::fs::MetadataExt as _;
                    std::fs::metadata("/proc/self")
                        .map_or_else(|_| "unknown".to_owned(), |m| format!("uid:{}", m.uid()))
                }),
            via: "cli",
        }
    }

    /// An admin API caller: `user` holds the admin token's id (never the token itself), and
    /// the audit actor becomes `admin_token:<id>`.
    pub fn admin_token(token_id: &str) -> Self {
        Self {
            user: token_id.to_owned(),
            via: "admin_api",
        }
    }

    pub(crate) fn actor(&self) -> AuditActor {
        if self.via == "admin_api" {
            AuditActor::AdminToken(self.user.clone())
        } else {
            AuditActor::CliUser(self.user.clone())
        }
    }
}

/// Filters of `deliveries list` and `quarantine list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Only this status (`accepted`, `purged`; `quarantined` for quarantine).
    pub status: Option<String>,
    /// At most this many rows (newest first); 0 means 100.
    pub limit: usize,
}

/// One line of `deliveries list`: metadata only, nothing decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliverySummary {
    /// Delivery id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Event type.
    pub event_type: String,
    /// When received (RFC 3339 UTC).
    pub received_at: String,
    /// `accepted` or `purged`.
    pub status: String,
    /// Jobs enqueued for it.
    pub jobs: i64,
}

/// One line of `quarantine list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineSummary {
    /// Quarantine id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Why it could not be normalized (field paths only).
    pub reason: String,
    /// When received (RFC 3339 UTC).
    pub received_at: String,
    /// `quarantined` or `purged`.
    pub status: String,
}

/// A decrypted quarantine entry.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    /// Its metadata.
    pub summary: QuarantineSummary,
    /// The raw body as received.
    pub body: Vec<u8>,
    /// The request's content type.
    pub content_type: Option<String>,
    /// The headers the signature check used.
    pub signature_headers: Vec<(String, String)>,
}

/// id, source, key id, key period, nonce, ciphertext of a row to re-encrypt.
type RotationRow = (String, String, i64, String, Vec<u8>, Vec<u8>);

fn where_clause(filter: &ListFilter) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(s) = &filter.source {
        args.push(s.clone());
        clauses.push(format!("source = ?{}", args.len()));
    }
    if let Some(t) = filter.since {
        args.push(db_time(t));
        clauses.push(format!("received_at >= ?{}", args.len()));
    }
    if let Some(t) = filter.until {
        args.push(db_time(t));
        clauses.push(format!("received_at < ?{}", args.len()));
    }
    if let Some(s) = &filter.status {
        args.push(s.clone());
        clauses.push(format!("status = ?{}", args.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn limit(filter: &ListFilter) -> i64 {
    if filter.limit == 0 {
        100
    } else {
        filter.limit as i64
    }
}

/// `deliveries list`: metadata of stored deliveries, newest first.
#[tracing::instrument(skip(store))]
pub fn list_deliveries(
    store: &Store,
    filter: &ListFilter,
) -> Result<Vec<DeliverySummary>, StoreError> {
    let conn = store.connection()?;
    let (clause, args) = where_clause(filter);
    let sql = format!(
        "SELECT d.id, d.source, d.event_type, d.received_at, d.status,
                (SELECT COUNT(*) FROM jobs j WHERE j.delivery_id = d.id)
         FROM deliveries d {clause} ORDER BY d.received_at DESC, d.id DESC LIMIT {}",
        limit(filter)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        Ok(DeliverySummary {
            id: r.get(0)?,
            source: r.get(1)?,
            event_type: r.get(2)?,
            received_at: r.get(3)?,
            status: r.get(4)?,
            jobs: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `quarantine list`: metadata of quarantined deliveries, newest first.
#[tracing::instrument(skip(store))]
pub fn list_quarantine(
    store: &Store,
    filter: &ListFilter,
) -> Result<Vec<QuarantineSummary>, StoreError> {
    let conn = store.connection()?;
    let (clause, args) = where_clause(filter);
    let sql = format!(
        "SELECT id, source, reason, received_at, status FROM quarantine {clause}
         ORDER BY received_at DESC, id DESC LIMIT {}",
        limit(filter)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), summary_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineSummary> {
    Ok(QuarantineSummary {
        id: r.get(0)?,
        source: r.get(1)?,
        reason: r.get(2)?,
        received_at: r.get(3)?,
        status: r.get(4)?,
    })
}

/// Write the audit records of a committed transaction to the mirror, if configured: the
/// mirror appends every committed record it does not have yet, in order, under its file lock,
/// so this is safe while the server and other commands write too. A failure is logged; the
/// next write (or the server's next start) fills the gap.
pub(crate) fn mirror(store: &Store, conn: &Connection) {
    if let Some(m) = &store.shared.options.audit_mirror {
        if let Err(e) = m.catch_up(conn) {
            tracing::error!(error = %e, "audit mirror catch-up failed");
        }
    }
}

/// `deliveries show ID`: decrypt one delivery. The read itself is audited (`payload_read`) in
/// the same transaction as the decryption, so there is no read without its record.
#[tracing::instrument(skip(store, who), fields(via = who.via))]
pub fn show_delivery(store: &Store, id: &str, who: &Requester) -> Result<Event, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let opened = super::sealed::open_delivery(&tx, store.keyring(), id)?;
    let ev = delivery_read_event(
        who,
        id,
        &opened.source,
        opened.call_ref.as_deref(),
        opened.key_id,
    );
    record_audit(&tx, store.keyring(), &ev)?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(opened.stored.event)
}

/// The `payload_read` fact of one decrypted delivery, whichever backend decrypted it.
pub(crate) fn delivery_read_event<'a>(
    who: &Requester,
    id: &'a str,
    source: &'a str,
    call_ref: Option<&'a str>,
    key_id: i64,
) -> AuditEvent<'a> {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::PayloadRead);
    ev.delivery_id = Some(id);
    ev.source = Some(source);
    ev.call_ref = call_ref;
    ev.object_kind = Some("delivery");
    ev.via = Some(who.via);
    ev.key_id = Some(key_id);
    ev
}

/// `quarantine show ID`: decrypt one quarantined body (audited like [`show_delivery`]).
#[tracing::instrument(skip(store, who), fields(via = who.via))]
pub fn show_quarantine(
    store: &Store,
    id: &str,
    who: &Requester,
) -> Result<QuarantineEntry, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = tx
        .query_row(
            "SELECT id, source, reason, received_at, status, key_id, nonce, ciphertext
             FROM quarantine WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    summary_row(r)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ))
            },
        )
        .optional()?;
    let (summary, key_id, nonce, ciphertext) =
        row.ok_or(StoreError::NotFound("quarantine entry"))?;
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(&tx, store.keyring(), key_id)?;
    let entry = open_quarantine(&key, summary, key_id, &nonce, &ciphertext)?;
    let ev = quarantine_read_event(who, &entry.summary.id, &entry.summary.source, key_id);
    record_audit(&tx, store.keyring(), &ev)?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(entry)
}

/// Decrypt a quarantined body, whichever backend stored it.
pub(crate) fn open_quarantine(
    key: &crate::crypto::DataKey,
    summary: QuarantineSummary,
    key_id: i64,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<QuarantineEntry, StoreError> {
    let plain = key.open(
        &RecordPlace {
            kind: "quarantine",
            id: &summary.id,
            source: &summary.source,
            key_id,
        },
        nonce,
        ciphertext,
    )?;
    let stored: StoredQuarantine = serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt("stored payload is not the expected JSON"))?;
    Ok(QuarantineEntry {
        summary,
        body: decode_body(&stored.body_b64)?,
        content_type: stored.content_type,
        signature_headers: stored.signature_headers,
    })
}

/// The `payload_read` fact of one decrypted quarantine entry.
pub(crate) fn quarantine_read_event<'a>(
    who: &Requester,
    id: &'a str,
    source: &'a str,
    key_id: i64,
) -> AuditEvent<'a> {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::PayloadRead);
    ev.source = Some(source);
    ev.object_id = Some(id);
    ev.object_kind = Some("quarantine");
    ev.via = Some(who.via);
    ev.key_id = Some(key_id);
    ev
}

/// Progress of `keys rotate`, reported after each committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationProgress {
    /// The generation new writes use and old rows are moved to.
    pub generation: i64,
    /// Rows re-encrypted so far in this run.
    pub done: u64,
    /// Rows that were under older keys when this run started.
    pub total: u64,
}

/// What `keys rotate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// The generation now in use.
    pub generation: i64,
    /// Whether this run resumed an interrupted rotation instead of starting a new one.
    pub resumed: bool,
    /// Rows re-encrypted.
    pub reencrypted: u64,
    /// Old data keys destroyed once nothing referenced them.
    pub keys_destroyed: u64,
}

const ROTATE_BATCH: usize = 256;

/// `keys rotate`: new writes get fresh data keys (a new generation) at once; then every row
/// under an older generation is re-encrypted in batches, each its own transaction, and finally
/// the old keys are destroyed. Resumable: if a run dies, the next run sees the rotation still
/// pending (rows under old keys) and continues it instead of starting another.
#[tracing::instrument(skip(store, who, progress))]
pub fn rotate_keys(
    store: &Store,
    who: &Requester,
    progress: &mut dyn FnMut(RotationProgress),
) -> Result<RotationReport, StoreError> {
    let keyring = store.keyring();
    let mut conn = store.connection()?;
    let pending = |conn: &Connection, generation: i64| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row(
            "SELECT (SELECT COUNT(*) FROM deliveries d JOIN data_keys k ON d.key_id = k.key_id
                     WHERE d.ciphertext IS NOT NULL AND k.generation < ?1)
                  + (SELECT COUNT(*) FROM quarantine q JOIN data_keys k ON q.key_id = k.key_id
                     WHERE q.ciphertext IS NOT NULL AND k.generation < ?1)",
            params![generation],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    };

    // Start a new generation unless an interrupted rotation is still pending.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = keys::current_generation(&tx)?;
    // A completed rotation destroys every older key, so an older key still present means the
    // last run was interrupted.
    let resumed = tx.query_row(
        "SELECT COUNT(*) FROM data_keys WHERE generation < ?1 AND wrapped IS NOT NULL",
        params![current],
        |r| r.get::<_, i64>(0),
    )? > 0;
    let generation = if resumed { current } else { current + 1 };
    if !resumed {
        tx.execute(
            "UPDATE store_meta SET value = ?1 WHERE name = 'key_generation'",
            params![generation.to_string()],
        )?;
        let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
        ev.reason = Some("rotation_started");
        ev.count = Some(generation);
        ev.via = Some(who.via);
        record_audit(&tx, keyring, &ev)?;
    }
    let total = pending(&tx, generation)?;
    tx.commit()?;
    mirror(store, &conn);
    progress(RotationProgress {
        generation,
        done: 0,
        total,
    });

    let mut cache = WriteKeyCache::new();
    let mut done = 0u64;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut moved = 0usize;
        for kind in ["delivery", "quarantine"] {
            let table = if kind == "delivery" {
                "deliveries"
            } else {
                "quarantine"
            };
            let rows: Vec<RotationRow> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT t.id, t.source, t.key_id, k.period, t.nonce, t.ciphertext
                     FROM {table} t JOIN data_keys k ON t.key_id = k.key_id
                     WHERE t.ciphertext IS NOT NULL AND k.generation < ?1 LIMIT ?2"
                ))?;
                let rows =
                    stmt.query_map(params![generation, (ROTATE_BATCH - moved) as i64], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?;
                rows.collect::<Result<_, _>>()?
            };
            for (id, source, old_key_id, period, nonce, ciphertext) in rows {
                let old = keys::key_for_read(&tx, keyring, old_key_id)?;
                let plain = old.open(
                    &RecordPlace {
                        kind,
                        id: &id,
                        source: &source,
                        key_id: old_key_id,
                    },
                    &nonce,
                    &ciphertext,
                )?;
                // Same period, new generation: purge by period keeps working after rotation.
                let (new_key_id, new_key) =
                    keys::key_for_write(&tx, keyring, &mut cache, &period, generation)?;
                let sealed = new_key.seal(
                    &RecordPlace {
                        kind,
                        id: &id,
                        source: &source,
                        key_id: new_key_id,
                    },
                    &plain,
                )?;
                tx.execute(
                    &format!(
                        "UPDATE {table} SET key_id = ?1, nonce = ?2, ciphertext = ?3
                         WHERE id = ?4 AND key_id = ?5"
                    ),
                    params![new_key_id, sealed.nonce, sealed.ciphertext, id, old_key_id],
                )?;
                moved += 1;
            }
        }
        if moved == 0 {
            break;
        }
        match tx.commit() {
            Ok(()) => {}
            Err(e) => {
                cache.clear();
                return Err(e.into());
            }
        }
        done += moved as u64;
        progress(RotationProgress {
            generation,
            done,
            total: total.max(done),
        });
    }

    // Nothing references the old keys any more: destroy them.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let destroyed = tx.execute(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2
         WHERE generation < ?1 AND wrapped IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.key_id = data_keys.key_id AND d.ciphertext IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.key_id = data_keys.key_id AND q.ciphertext IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.out_key_id = data_keys.key_id AND j.out_ciphertext IS NOT NULL)",
        params![generation, db_time(Utc::now())],
    )? as u64;
    let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
    ev.reason = Some("rotation_completed");
    ev.count = Some(done as i64);
    ev.object_kind = Some("data_key");
    ev.via = Some(who.via);
    record_audit(&tx, keyring, &ev)?;
    tx.commit()?;
    mirror(store, &conn);
    // Old wrapped keys must not linger in the WAL.
    checkpoint_truncate(&conn);
    Ok(RotationReport {
        generation,
        resumed,
        reencrypted: done,
        keys_destroyed: destroyed,
    })
}

fn checkpoint_truncate(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint after key destruction did not complete");
    }
}

/// What `purge` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Delivery payloads deleted (metadata rows kept for the audit trail).
    pub deliveries: u64,
    /// Quarantined bodies deleted.
    pub quarantined: u64,
    /// Job rows of purged deliveries deleted.
    pub jobs: u64,
    /// Period data keys destroyed (crypto-shredding).
    pub keys_destroyed: u64,
}

/// `purge --older-than`: delete payloads received before `cutoff` (with `secure_delete` on),
/// keep the metadata rows the audit trail refers to, and destroy the data keys of every period
/// that ends before the cutoff, so copies the `DELETE` cannot reach (WAL residue, free pages,
/// old backups) become unreadable too.
#[tracing::instrument(skip(store, who))]
pub fn purge_older_than(
    store: &Store,
    cutoff: DateTime<Utc>,
    who: &Requester,
) -> Result<PurgeReport, StoreError> {
    if cutoff > Utc::now() {
        return Err(StoreError::InvalidArgument(
            "purge cutoff is in the future".into(),
        ));
    }
    let mut conn = store.connection()?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let cut = db_time(cutoff);
    let now = db_time(Utc::now());
    // Attempt records reference their job: they go first (they hold no payload data).
    tx.execute(
        "DELETE FROM attempts WHERE job_id IN
           (SELECT j.id FROM jobs j JOIN deliveries d ON j.delivery_id = d.id
            WHERE d.received_at < ?1)",
        params![cut],
    )?;
    let jobs = tx.execute(
        "DELETE FROM jobs WHERE delivery_id IN
           (SELECT id FROM deliveries WHERE received_at < ?1)",
        params![cut],
    )? as u64;
    let deliveries = tx.execute(
        "UPDATE deliveries SET nonce = NULL, ciphertext = NULL, status = 'purged', purged_at = ?2
         WHERE received_at < ?1 AND status != 'purged'",
        params![cut, now],
    )? as u64;
    let quarantined = tx.execute(
        "UPDATE quarantine SET nonce = NULL, ciphertext = NULL, status = 'purged', purged_at = ?2
         WHERE received_at < ?1 AND status != 'purged'",
        params![cut, now],
    )? as u64;
    // A period (UTC day) is shredded only when it ends at or before the cutoff.
    let candidates: Vec<(i64, String)> = {
        let mut stmt =
            tx.prepare("SELECT key_id, period FROM data_keys WHERE wrapped IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut keys_destroyed = 0u64;
    for (key_id, period) in candidates {
        let Ok(day) = NaiveDate::parse_from_str(&period, "%Y-%m-%d") else {
            continue;
        };
        let end = day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc() + Duration::days(1));
        if end.is_some_and(|end| end <= cutoff) {
            keys_destroyed += tx.execute(
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2
                 WHERE key_id = ?1
                   AND NOT EXISTS (SELECT 1 FROM deliveries WHERE key_id = ?1 AND ciphertext IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM quarantine WHERE key_id = ?1 AND ciphertext IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM jobs WHERE out_key_id = ?1 AND out_ciphertext IS NOT NULL)",
                params![key_id, now],
            )? as u64;
        }
    }
    let report = PurgeReport {
        deliveries,
        quarantined,
        jobs,
        keys_destroyed,
    };
    for record in report.audit_records(who) {
        crate::audit::append(&tx, store.keyring(), &record)?;
    }
    tx.commit()?;
    mirror(store, &conn);
    checkpoint_truncate(&conn);
    Ok(report)
}

impl PurgeReport {
    /// One `purged` record per kind of object, with its count and who asked.
    pub(crate) fn audit_records(&self, who: &Requester) -> Vec<crate::audit::AuditRecord> {
        [
            ("delivery", self.deliveries),
            ("quarantine", self.quarantined),
            ("job", self.jobs),
            ("data_key", self.keys_destroyed),
        ]
        .into_iter()
        .map(|(kind, count)| {
            let mut ev = AuditEvent::new(who.actor(), AuditAction::Purged);
            ev.object_kind = Some(kind);
            ev.count = Some(i64::try_from(count).unwrap_or(i64::MAX));
            ev.via = Some(who.via);
            super::audit_hook::to_record(&ev)
        })
        .collect()
    }
}

/// What `backup` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, hex (recorded in the audit trail).
    pub sha256: String,
}

/// `backup --to PATH`: a consistent copy through SQLite's online backup API while the server
/// keeps serving. The copy holds only ciphertext and wrapped keys; the master key is never
/// written, and a target in the master key's own folder is refused, because a backup stored
/// next to its key is not encrypted in any useful sense.
#[tracing::instrument(skip(store, who))]
pub fn backup_to(
    store: &Store,
    to: &Path,
    master_key_file: Option<&Path>,
    who: &Requester,
) -> Result<BackupReport, StoreError> {
    backup_to_with_progress(store, to, master_key_file, who, &mut |_, _| {})
}

/// [`backup_to`], calling `progress(pages_done, pages_total)` as the copy advances.
pub fn backup_to_with_progress(
    store: &Store,
    to: &Path,
    master_key_file: Option<&Path>,
    who: &Requester,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BackupReport, StoreError> {
    let shown = to.display().to_string();
    if to.exists() {
        return Err(StoreError::InvalidArgument(format!(
            "{shown} already exists; refusing to overwrite"
        )));
    }
    let target_dir = absolute_dir(to);
    if let Some(key) = master_key_file {
        if target_dir.is_some() && absolute_dir(key) == target_dir {
            return Err(StoreError::InvalidArgument(format!(
                "{shown} is in the master key's folder; keep backups away from the key"
            )));
        }
    }
    let io = |e: std::io::Error| StoreError::Io {
        path: shown.clone(),
        reason: e.to_string(),
    };
    // Create it owner-only before SQLite writes anything into it (its journal takes the
    // same mode).
    crate::fsutil::create_new_private(to).map_err(io)?;
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
    // Hashed while streaming: a backup can be larger than memory.
    let (bytes_len, sha256) = {
        use std::io::Read as _;
        let mut file = std::fs::File::open(to).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        (len, hex::encode(hasher.finalize()))
    };
    let mut conn = src;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ev = AuditEvent::new(who.actor(), AuditAction::BackupTaken);
    ev.count = Some(bytes_len as i64);
    ev.digest = Some(&sha256);
    ev.via = Some(who.via);
    let _: AppendedRecord = record_audit(&tx, store.keyring(), &ev)?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(BackupReport {
        path: to.to_owned(),
        bytes: bytes_len,
        sha256,
    })
}

fn absolute_dir(p: &Path) -> Option<PathBuf> {
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.canonicalize().ok()
}
