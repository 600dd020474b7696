//! `purge --older-than` on SQLite, in chunks that leave room for intake.
//!
//! The server's writer thread and this command share one database file, and SQLite lets one
//! transaction write at a time: a purge that held its write transaction over the whole range
//! made every delivery that arrived meanwhile wait past the busy timeout and answer 503. So the
//! purge works in chunks of at most [`PURGE_CHUNK`] rows, each its own transaction with its own
//! `purged` audit records (so the trail says exactly what went, even if the run stops half way),
//! and pauses between chunks for a short random time so a writer polling for the lock finds it
//! free. Data keys are destroyed last, in one short transaction, once every row of their period
//! is gone: a key is never destroyed while something it sealed is still readable.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::Rng as _;
use rusqlite::{params, Connection, TransactionBehavior};

use super::audit::mirror;
use super::checkpoint_truncate;
use super::Store;
use crate::store::payload::db_time;
use crate::store::types::{PurgeProgress, PurgeReport, Requester};
use crate::store::StoreError;

/// Most rows (delivery payloads, quarantined bodies and left-over jobs together) one purge
/// transaction touches.
pub const PURGE_CHUNK: usize = 500;

/// The pause between two chunks is drawn from this range (milliseconds). SQLite's busy handler
/// polls a waiting writer at growing intervals (up to 100 ms); a random pause never falls into
/// step with it, so the writer finds the lock free within a few polls.
const PAUSE_MS: std::ops::RangeInclusive<u64> = 5..=40;

/// How long a chunk waits for the writer's lock: maintenance can wait, intake cannot.
const PURGE_BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// Between two chunks of a long maintenance run: let the intake writer take the lock.
pub(crate) fn pause_for_writer() {
    std::thread::sleep(StdDuration::from_millis(
        rand::thread_rng().gen_range(PAUSE_MS),
    ));
}

/// [`purge_with_progress`] without progress reports.
#[tracing::instrument(skip(store, who))]
pub fn purge_older_than(
    store: &Store,
    cutoff: DateTime<Utc>,
    who: &Requester,
) -> Result<PurgeReport, StoreError> {
    purge_with_progress(store, cutoff, who, &mut |_| {})
}

/// `purge --older-than`: delete payloads received before `cutoff` (with `secure_delete` on),
/// keep the metadata rows the audit trail refers to, and destroy the data key of every period
/// that ends at or before the cutoff once nothing it sealed is left. Destroying the key makes
/// the copies a `DELETE` cannot reach *in this database* unreadable (WAL residue, free pages);
/// a backup holds its own copy of the wrapped keys, and with the master key it still reads its
/// periods — see `docs/HIPAA.md`, "Disposal".
pub fn purge_with_progress(
    store: &Store,
    cutoff: DateTime<Utc>,
    who: &Requester,
    progress: &mut dyn FnMut(PurgeProgress),
) -> Result<PurgeReport, StoreError> {
    if cutoff > Utc::now() {
        return Err(StoreError::InvalidArgument(
            "purge cutoff is in the future".into(),
        ));
    }
    let mut conn = store.connection()?;
    conn.busy_timeout(PURGE_BUSY_TIMEOUT)?;
    let cut = db_time(cutoff);
    // Counted (and left-over jobs found) outside any write transaction: reads never block the
    // writer in WAL mode.
    let total: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM deliveries WHERE received_at < ?1 AND status <> 'purged')
              + (SELECT COUNT(*) FROM quarantine WHERE received_at < ?1 AND status <> 'purged')",
        params![cut],
        |r| r.get(0),
    )?;
    let total = total.max(0) as u64;
    // Jobs of deliveries purged by an earlier run (e.g. re-created by a replay).
    let mut leftover_jobs: Vec<i64> = {
        let mut stmt = conn.prepare(
            "SELECT j.id FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
             WHERE d.received_at < ?1 AND d.status = 'purged'",
        )?;
        let rows = stmt.query_map(params![cut], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    progress(PurgeProgress { done: 0, total });

    let mut report = PurgeReport {
        deliveries: 0,
        quarantined: 0,
        jobs: 0,
        keys_destroyed: 0,
    };
    let mut cursor = Cursor::default();
    let mut chunks = 0u64;
    loop {
        let chunk = purge_chunk(
            &mut conn,
            store,
            &cut,
            cutoff,
            who,
            &mut cursor,
            &mut leftover_jobs,
            chunks == 0,
        )?;
        let Some(chunk) = chunk else { break };
        chunks += 1;
        report.deliveries += chunk.deliveries;
        report.quarantined += chunk.quarantined;
        report.jobs += chunk.jobs;
        let done = report.deliveries + report.quarantined;
        progress(PurgeProgress {
            done,
            total: total.max(done),
        });
        if chunk.deliveries + chunk.quarantined + chunk.jobs == 0 {
            break;
        }
        pause_for_writer();
    }

    report.keys_destroyed = destroy_period_keys(&mut conn, store, cutoff, who)?;
    mirror(store, &conn);
    // Most of the WAL is copied without blocking anyone; the truncating checkpoint that follows
    // (so destroyed keys and deleted ciphertext leave the WAL file) then has little left to do,
    // and waits for the lock only briefly.
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    conn.busy_timeout(StdDuration::from_secs(1))?;
    checkpoint_truncate(&conn);
    Ok(report)
}

/// Where the next chunk's scans start: rows received before these instants are done.
#[derive(Debug, Default)]
struct Cursor {
    deliveries: String,
    quarantine: String,
}

/// One transaction's worth: up to [`PURGE_CHUNK`] rows, with their `purged` records. `None`
/// when there was nothing left (and this is not the first chunk, which is always recorded, so
/// an empty purge still says who ran it and with which cutoff).
#[allow(clippy::too_many_arguments)]
fn purge_chunk(
    conn: &mut Connection,
    store: &Store,
    cut: &str,
    cutoff: DateTime<Utc>,
    who: &Requester,
    cursor: &mut Cursor,
    leftover_jobs: &mut Vec<i64>,
    first: bool,
) -> Result<Option<PurgeReport>, StoreError> {
    let now = db_time(Utc::now());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids = |sql: &str, from: &str, limit: usize| -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = tx.prepare_cached(sql)?;
        let rows = stmt.query_map(params![cut, from, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let deliveries = ids(
        "SELECT id, received_at FROM deliveries
         WHERE received_at < ?1 AND received_at >= ?2 AND status <> 'purged'
         ORDER BY received_at LIMIT ?3",
        &cursor.deliveries,
        PURGE_CHUNK,
    )?;
    let quarantine = ids(
        "SELECT id, received_at FROM quarantine
         WHERE received_at < ?1 AND received_at >= ?2 AND status <> 'purged'
         ORDER BY received_at LIMIT ?3",
        &cursor.quarantine,
        PURGE_CHUNK - deliveries.len(),
    )?;
    let room = PURGE_CHUNK.saturating_sub(deliveries.len() + quarantine.len());
    let leftovers: Vec<i64> = leftover_jobs
        .drain(..room.min(leftover_jobs.len()))
        .collect();
    if !first && deliveries.is_empty() && quarantine.is_empty() && leftovers.is_empty() {
        return Ok(None);
    }
    let as_json = |v: &[(String, String)]| {
        serde_json::to_string(&v.iter().map(|(id, _)| id).collect::<Vec<_>>())
            .map_err(|_| StoreError::Corrupt("ids not serializable"))
    };
    let delivery_ids = as_json(&deliveries)?;
    let leftover_ids = serde_json::to_string(&leftovers)
        .map_err(|_| StoreError::Corrupt("ids not serializable"))?;
    // Attempt records reference their job: they go first (they hold no payload data).
    tx.execute(
        "DELETE FROM attempts WHERE job_id IN
           (SELECT id FROM jobs WHERE delivery_id IN (SELECT value FROM json_each(?1)))
           OR job_id IN (SELECT value FROM json_each(?2))",
        params![delivery_ids, leftover_ids],
    )?;
    let jobs = tx.execute(
        "DELETE FROM jobs WHERE delivery_id IN (SELECT value FROM json_each(?1))
                             OR id IN (SELECT value FROM json_each(?2))",
        params![delivery_ids, leftover_ids],
    )? as u64;
    let purged_deliveries = tx.execute(
        "UPDATE deliveries SET nonce = NULL, ciphertext = NULL, caller_ref = NULL, status = 'purged',
                               purged_at = ?2
         WHERE id IN (SELECT value FROM json_each(?1)) AND status <> 'purged'",
        params![delivery_ids, now],
    )? as u64;
    let quarantined = tx.execute(
        "UPDATE quarantine SET nonce = NULL, ciphertext = NULL, status = 'purged', purged_at = ?2
         WHERE id IN (SELECT value FROM json_each(?1)) AND status <> 'purged'",
        params![as_json(&quarantine)?, now],
    )? as u64;
    let chunk = PurgeReport {
        deliveries: purged_deliveries,
        quarantined,
        jobs,
        keys_destroyed: 0,
    };
    for record in chunk.row_records(who, cutoff) {
        crate::audit::append(&tx, store.keyring(), &record)?;
    }
    tx.commit()?;
    mirror(store, conn);
    if let Some((_, at)) = deliveries.last() {
        cursor.deliveries.clone_from(at);
    }
    if let Some((_, at)) = quarantine.last() {
        cursor.quarantine.clone_from(at);
    }
    Ok(Some(chunk))
}

/// Destroy the key of every period (UTC day) that ends at or before the cutoff and seals
/// nothing readable any more, with its `purged` record (`object_kind` = `data_key`).
fn destroy_period_keys(
    conn: &mut Connection,
    store: &Store,
    cutoff: DateTime<Utc>,
    who: &Requester,
) -> Result<u64, StoreError> {
    let now = db_time(Utc::now());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let candidates: Vec<(i64, String)> = {
        let mut stmt =
            tx.prepare("SELECT key_id, period FROM data_keys WHERE wrapped IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut destroyed = 0u64;
    for (key_id, period) in candidates {
        let Ok(day) = NaiveDate::parse_from_str(&period, "%Y-%m-%d") else {
            continue;
        };
        let end = day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc() + Duration::days(1));
        if end.is_some_and(|end| end <= cutoff) {
            destroyed += tx.execute(
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
        deliveries: 0,
        quarantined: 0,
        jobs: 0,
        keys_destroyed: destroyed,
    };
    crate::audit::append(&tx, store.keyring(), &report.key_record(who, cutoff))?;
    tx.commit()?;
    Ok(destroyed)
}
