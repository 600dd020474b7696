//! The dispatch queue: claiming due jobs, recording attempts, dead letters, retries and replays.
//!
//! A job is one handler for one delivery, created in the intake transaction. Workers claim due
//! jobs one at a time in a short transaction (status `running`, a lease), run the handler
//! outside any transaction, then record the attempt and the job's next state — with its audit
//! record — in one transaction. Handlers later in a route wait (`waiting`) until the earlier
//! ones are done, so `app_data` chaining sees their outputs; a finished job wakes them.
//!
//! With SQLite one server owns the database, so a job still `running` when the server starts
//! was orphaned by a crash: [`reset_orphaned`] puts it back, and it runs again with the same
//! idempotency key. Job states: `pending` → `running` → `done` | `pending` (retry) | `dead`;
//! `waiting` until predecessors are done.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use wardhook_sdk::{AppData, Event};

use super::keys::{self, WriteKeyCache};
use super::Store;
use crate::store::caller_phone::caller_ref_of;
use crate::store::jobs::{
    attempt_audit_records, open_output, output_place, replayed_record, retried_record,
};
use crate::store::payload::db_time;
pub use crate::store::types::{
    AttemptRecord, AttemptResult, AttemptSummary, ClaimedJob, DeadFilter, DeadLetter, NextStep,
};
use crate::store::types::{Predecessors, Requester};
use crate::store::StoreError;

/// Put jobs left `running` by a crashed server back in the queue, due now.
pub fn reset_orphaned(store: &Store) -> Result<u64, StoreError> {
    let conn = store.connection()?;
    let n = conn.execute(
        "UPDATE jobs SET status = 'pending', lease_until = NULL, next_attempt_at = ?1,
                         updated_at = ?1
         WHERE status = 'running'",
        params![db_time(Utc::now())],
    )?;
    Ok(n as u64)
}

/// Claim the next due job whose handler is not in `exclude` (open circuits, saturated
/// handlers). A `running` job whose lease has run out counts as due: its attempt was lost (a
/// worker step that failed after the claim) and it is taken over with the same idempotency key;
/// the lease is longer than twice the handler timeout, so no attempt is still running then.
/// `predecessors` names, per source and handler, the handlers that must be done first (earlier
/// in the same route); a job whose predecessors are not done is parked as `waiting`.
pub fn claim_next(
    store: &Store,
    exclude: &[String],
    lease: Duration,
    predecessors: &Predecessors,
) -> Result<Option<ClaimedJob>, StoreError> {
    let mut conn = store.connection()?;
    // Dispatch state may lose its last transaction on power loss: a job then runs again with
    // the same idempotency key, which at-least-once delivery allows. Intake keeps FULL.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let now = Utc::now();
    let now_s = db_time(now);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let candidates: Vec<(i64, String, String, String, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT j.id, j.delivery_id, j.handler, d.source, j.attempts
             FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
             WHERE (j.status = 'pending' AND j.next_attempt_at <= ?1)
                OR (j.status = 'running' AND j.lease_until <= ?1)
             ORDER BY j.next_attempt_at, j.id LIMIT 64",
        )?;
        let rows = stmt.query_map(params![now_s], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut claimed = None;
    for (id, delivery_id, handler, source, attempts) in candidates {
        if exclude.contains(&handler) {
            continue;
        }
        let before = predecessors.before(&source, &handler);
        if !before.is_empty() {
            let mut unfinished = 0i64;
            for p in before {
                let state: Option<String> = tx
                    .prepare_cached(
                        "SELECT status FROM jobs WHERE delivery_id = ?1 AND handler = ?2",
                    )?
                    .query_row(params![delivery_id, p], |r| r.get(0))
                    .optional()?;
                if state.is_some_and(|s| s != "done") {
                    unfinished += 1;
                }
            }
            if unfinished > 0 {
                tx.execute(
                    "UPDATE jobs SET status = 'waiting', updated_at = ?2 WHERE id = ?1",
                    params![id, now_s],
                )?;
                continue;
            }
        }
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        tx.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = ?2,
                             updated_at = ?3
             WHERE id = ?1",
            params![id, db_time(lease_until), now_s],
        )?;
        let lifetime: i64 = tx.query_row(
            "SELECT COUNT(*) FROM attempts WHERE job_id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        claimed = Some(ClaimedJob::claimed(
            id,
            delivery_id,
            handler,
            source,
            attempts,
            lifetime,
        ));
        break;
    }
    tx.commit()?;
    Ok(claimed)
}

/// Decrypt the job's event and the outputs of the delivery's finished handlers (`app_data`).
pub fn load_for_dispatch(store: &Store, job: &ClaimedJob) -> Result<(Event, AppData), StoreError> {
    let conn = store.connection()?;
    let opened = super::sealed::open_delivery(&conn, store.keyring(), &job.delivery_id)?;
    let (source, stored) = (opened.source, opened.stored);
    let mut app_data = AppData::new();
    let mut stmt = conn.prepare_cached(
        "SELECT id, handler, out_key_id, out_nonce, out_ciphertext FROM jobs
         WHERE delivery_id = ?1 AND status = 'done' AND out_ciphertext IS NOT NULL
           AND handler NOT LIKE '@%'",
    )?;
    let outputs = stmt
        .query_map(params![job.delivery_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, handler, out_key, out_nonce, out_ct) in outputs {
        let key = keys::key_for_read(&conn, store.keyring(), out_key)?;
        let value = open_output(&key, id, &source, out_key, &out_nonce, &out_ct)?;
        app_data.insert(handler, value);
    }
    Ok((stored.event, app_data))
}

/// Record an attempt and move the job to its next state, with the audit records, in one
/// transaction; wake handlers waiting on this one when it is done.
pub fn finish_attempt(
    store: &Store,
    job: &ClaimedJob,
    record: &AttemptRecord,
    next: NextStep,
) -> Result<(), StoreError> {
    let mut conn = store.connection()?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let now = Utc::now();
    let now_s = db_time(now);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let latency_ms = i64::try_from(record.latency.as_millis()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO attempts (job_id, attempt, started_at, finished_at, result, http_status,
                               latency_ms, destination, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            job.id,
            job.attempt,
            db_time(record.started_at),
            now_s,
            record.result.code(),
            record.http_status,
            latency_ms,
            record.destination,
            record.result.reason(),
        ],
    )?;
    // Only the holder of the current lease moves the job on. A late finish after the lease ran
    // out and the job was taken over is recorded as an attempt but changes nothing (claiming
    // bumps `attempts`, so the claim's count no longer matches).
    let claimed_attempts = i64::from(job.schedule_index).saturating_add(1);
    let owned: i64 = tx.query_row(
        "SELECT COUNT(*) FROM jobs WHERE id = ?1 AND status = 'running' AND attempts = ?2",
        params![job.id, claimed_attempts],
        |r| r.get(0),
    )?;
    let next = if owned == 0 {
        tracing::warn!(
            job = job.id,
            "a late finish after the job's lease was taken over; its state is left alone"
        );
        None
    } else {
        Some(next)
    };
    match next {
        None => {}
        Some(NextStep::Done) => {
            let (out_key, nonce, ct) = match &record.result {
                AttemptResult::Ok { output, .. } => {
                    let mut cache = WriteKeyCache::new();
                    let generation = keys::current_generation(&tx)?;
                    let (key_id, key) = keys::key_for_write(
                        &tx,
                        store.keyring(),
                        &mut cache,
                        &keys::period_of(now),
                        generation,
                    )?;
                    let job_id = job.id.to_string();
                    let bytes = serde_json::to_vec(output)
                        .map_err(|_| StoreError::Corrupt("handler output is not serializable"))?;
                    let sealed = key.seal(&output_place(&job_id, &job.source, key_id), &bytes)?;
                    (Some(key_id), Some(sealed.nonce), Some(sealed.ciphertext))
                }
                _ => (None, None, None),
            };
            tx.execute(
                "UPDATE jobs SET status = 'done', lease_until = NULL, last_error = NULL,
                                 out_key_id = ?2, out_nonce = ?3, out_ciphertext = ?4,
                                 updated_at = ?5
                 WHERE id = ?1",
                params![job.id, out_key, nonce, ct, now_s],
            )?;
            tx.execute(
                "UPDATE jobs SET status = 'pending', next_attempt_at = ?2, updated_at = ?2
                 WHERE delivery_id = ?1 AND status = 'waiting'",
                params![job.delivery_id, now_s],
            )?;
            // The caller's phone the output names, for a delivery without its own caller.
            if let Some(caller_ref) = caller_ref_of(&record.result, store.keyring()) {
                tx.execute(
                    "UPDATE deliveries SET caller_ref = ?2
                     WHERE id = ?1 AND caller_ref IS NULL AND status <> 'purged'",
                    params![job.delivery_id, caller_ref],
                )?;
            }
        }
        Some(NextStep::RetryAt(at)) => {
            tx.execute(
                "UPDATE jobs SET status = 'pending', lease_until = NULL, next_attempt_at = ?2,
                                 last_error = ?3, updated_at = ?4
                 WHERE id = ?1",
                params![job.id, db_time(at), record.result.reason(), now_s],
            )?;
        }
        Some(NextStep::Dead) => {
            tx.execute(
                "UPDATE jobs SET status = 'dead', lease_until = NULL, last_error = ?2,
                                 updated_at = ?3
                 WHERE id = ?1",
                params![job.id, record.result.reason(), now_s],
            )?;
        }
    }
    // A late finish is on record as an attempt only: no dead letter for a job it no longer holds.
    let audit_records = match next {
        Some(step) => attempt_audit_records(job, record, step),
        None => attempt_audit_records(job, record, NextStep::Done)
            .into_iter()
            .take(1)
            .collect(),
    };
    for audit in audit_records {
        crate::audit::append(&tx, store.keyring(), &audit)?;
    }
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(())
}

fn dead_where(f: &DeadFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut clause = String::from("j.status = 'dead'");
    let mut args = Vec::new();
    if let Some(h) = &f.handler {
        args.push(Value::Text(h.clone()));
        clause.push_str(&format!(" AND j.handler = ?{}", args.len()));
    }
    if let Some(s) = &f.source {
        args.push(Value::Text(s.clone()));
        clause.push_str(&format!(" AND d.source = ?{}", args.len()));
    }
    if let Some(id) = f.job_id {
        args.push(Value::Integer(id));
        clause.push_str(&format!(" AND j.id = ?{}", args.len()));
    }
    (clause, args)
}

/// The dead letters matching `filter`, newest first.
pub fn list_dead(store: &Store, filter: &DeadFilter) -> Result<Vec<DeadLetter>, StoreError> {
    let conn = store.connection()?;
    let (clause, args) = dead_where(filter);
    let limit = if filter.limit == 0 { 100 } else { filter.limit };
    let sql = format!(
        "SELECT j.id, j.delivery_id, d.source, d.event_type, j.handler, j.attempts, j.last_error,
                j.updated_at
         FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
         WHERE {clause} ORDER BY j.updated_at DESC, j.id DESC LIMIT {limit}"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), dead_letter)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A dead letter from a row of `j.id, j.delivery_id, d.source, d.event_type, j.handler,
/// j.attempts, j.last_error, j.updated_at` (the dead-letter list and the bulk actions).
pub(super) fn dead_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        job_id: r.get(0)?,
        delivery_id: r.get(1)?,
        source: r.get(2)?,
        event_type: r.get(3)?,
        handler: r.get(4)?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

/// Every attempt of a job, oldest first.
pub fn job_attempts(store: &Store, job_id: i64) -> Result<Vec<AttemptSummary>, StoreError> {
    let conn = store.connection()?;
    let mut stmt = conn.prepare(
        "SELECT attempt, started_at, result, http_status, latency_ms, destination, error
         FROM attempts WHERE job_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![job_id], |r| {
        Ok(AttemptSummary {
            attempt: r.get(0)?,
            started_at: r.get(1)?,
            result: r.get(2)?,
            http_status: r.get(3)?,
            latency_ms: r.get(4)?,
            destination: r.get(5)?,
            error: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The jobs of one delivery: (job id, handler, status, attempts).
pub fn delivery_jobs(
    store: &Store,
    delivery_id: &str,
) -> Result<Vec<(i64, String, String, i64)>, StoreError> {
    let conn = store.connection()?;
    let mut stmt = conn.prepare(
        "SELECT id, handler, status, attempts FROM jobs WHERE delivery_id = ?1 ORDER BY position, id",
    )?;
    let rows = stmt.query_map(params![delivery_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `dlq retry`: put matching dead letters back in the queue, due now, with a fresh retry
/// schedule. Audited (`retried`) with who asked.
pub fn retry_dead(store: &Store, filter: &DeadFilter, who: &Requester) -> Result<u64, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (clause, args) = dead_where(filter);
    let ids: Vec<(i64, String, String, String)> = {
        let sql = format!(
            "SELECT j.id, j.delivery_id, j.handler, d.source FROM jobs j
             JOIN deliveries d ON d.id = j.delivery_id WHERE {clause}"
        );
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let now_s = db_time(Utc::now());
    for (id, delivery_id, handler, source) in &ids {
        tx.execute(
            "UPDATE jobs SET status = 'pending', attempts = 0, next_attempt_at = ?2,
                             updated_at = ?2
             WHERE id = ?1",
            params![id, now_s],
        )?;
        let audit = retried_record(who, delivery_id, source, handler);
        crate::audit::append(&tx, store.keyring(), &audit)?;
    }
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(ids.len() as u64)
}

/// `deliveries replay ID [--handler NAME]`: run a delivery's handlers again (all of its jobs,
/// or one handler — created if the delivery never had a job for it). Audited (`replayed`).
pub fn replay(
    store: &Store,
    delivery_id: &str,
    handler: Option<&str>,
    who: &Requester,
) -> Result<u64, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let source: String = tx
        .query_row(
            "SELECT source FROM deliveries WHERE id = ?1 AND status = 'accepted'",
            params![delivery_id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::NotFound("delivery"))?;
    let now_s = db_time(Utc::now());
    let n = match handler {
        Some(h) => {
            let updated = tx.execute(
                "UPDATE jobs SET status = 'pending', attempts = 0, next_attempt_at = ?3,
                                 updated_at = ?3
                 WHERE delivery_id = ?1 AND handler = ?2 AND status IN ('done', 'dead')",
                params![delivery_id, h, now_s],
            )?;
            if updated == 0 {
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE delivery_id = ?1 AND handler = ?2)",
                    params![delivery_id, h],
                    |r| r.get(0),
                )?;
                if exists {
                    0
                } else {
                    let position: i64 = tx.query_row(
                        "SELECT COALESCE(MAX(position) + 1, 0) FROM jobs WHERE delivery_id = ?1",
                        params![delivery_id],
                        |r| r.get(0),
                    )?;
                    tx.execute(
                        "INSERT INTO jobs (delivery_id, handler, position, status, attempts,
                                           next_attempt_at, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
                        params![delivery_id, h, position, now_s],
                    )?
                }
            } else {
                updated
            }
        }
        None => tx.execute(
            "UPDATE jobs SET status = 'pending', attempts = 0, next_attempt_at = ?2,
                             updated_at = ?2
             WHERE delivery_id = ?1 AND status IN ('done', 'dead') AND handler NOT LIKE '@%'",
            params![delivery_id, now_s],
        )?,
    };
    let audit = replayed_record(who, delivery_id, &source, handler, n as u64);
    crate::audit::append(&tx, store.keyring(), &audit)?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(n as u64)
}

/// Queue depth (pending + waiting + running) and the age of the oldest due job, for metrics
/// and health views.
pub fn queue_stats(store: &Store) -> Result<(u64, Option<Duration>), StoreError> {
    let conn: Connection = store.connection()?;
    let (depth, oldest): (i64, Option<String>) = conn.query_row(
        "SELECT COUNT(*),
                MIN(CASE WHEN status = 'pending' THEN next_attempt_at END)
         FROM jobs WHERE status IN ('pending', 'waiting', 'running')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let age = oldest
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .and_then(|t| (Utc::now() - t.with_timezone(&Utc)).to_std().ok());
    Ok((depth as u64, age))
}
