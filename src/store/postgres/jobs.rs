//! The dispatch queue on PostgreSQL, shared by every node.
//!
//! A worker claims in a short transaction: due `pending` jobs, and `running` jobs whose lease
//! has expired (their node died or stalled), locked `FOR UPDATE SKIP LOCKED` so two nodes never
//! pick the same row; the chosen one becomes `running` with a lease (database clock, so node
//! clock skew cannot shorten it) and this node as `lease_owner`. The handler runs outside any
//! transaction; finishing records the attempt and the next state only if the job is still
//! this claim's (same `attempts` count, still `running`), so a node that lost its lease cannot
//! overwrite the outcome of the node that took over. The idempotency key is built from the
//! delivery id and handler, so a takeover calls the handler with the same key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use wardhook_sdk::{AppData, Event};

use super::{audit, keys, PgStore};
use crate::store::caller_phone::caller_ref_of;
use crate::store::jobs::{attempt_audit_records, open_output, output_place};
use crate::store::prepare::period_of;
use crate::store::types::{AttemptRecord, AttemptResult, ClaimedJob, NextStep, Predecessors};
use crate::store::StoreError;

/// Candidates locked per claim: enough to skip excluded handlers and parked jobs.
const CLAIM_WINDOW: i64 = 16;

/// With several nodes a `running` job is not an orphan just because this node starts: it may
/// be another node's. Expired leases are claimable anyway, so only this node's own leases
/// (left by its previous run under the same node id) are released early.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn recover_orphaned(store: &PgStore) -> Result<u64, StoreError> {
    let client = store.client().await?;
    let n = client
        .execute(
            "UPDATE jobs SET status = 'pending', lease_until = NULL, lease_owner = NULL,
                             next_attempt_at = now(), updated_at = now()
             WHERE status = 'running' AND lease_owner = $1",
            &[&store.node_id()],
        )
        .await?;
    Ok(n)
}

/// See the module docs. `predecessors` as in the SQLite store: a job whose earlier handlers
/// are not done is parked as `waiting` until they are.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn claim_next(
    store: &PgStore,
    exclude: &[String],
    lease: Duration,
    predecessors: &Predecessors,
) -> Result<Option<ClaimedJob>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let candidates = tx
        .prepare_cached(
            "SELECT j.id, j.delivery_id, j.handler, d.source, j.attempts
             FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
             WHERE ((j.status = 'pending' AND j.next_attempt_at <= now())
                    OR (j.status = 'running' AND j.lease_until < now()))
               AND j.handler <> ALL($1)
             ORDER BY j.next_attempt_at, j.id
             LIMIT $2
             FOR UPDATE OF j SKIP LOCKED",
        )
        .await?;
    let rows = tx.query(&candidates, &[&exclude, &CLAIM_WINDOW]).await?;
    let mut claimed = None;
    for row in rows {
        let (id, delivery_id, handler, source, attempts): (i64, String, String, String, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let before = predecessors.before(&source, &handler);
        if !before.is_empty() {
            let unfinished: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM jobs
                     WHERE delivery_id = $1 AND handler = ANY($2) AND status <> 'done'",
                    &[&delivery_id, &before],
                )
                .await?
                .get(0);
            if unfinished > 0 {
                tx.execute(
                    "UPDATE jobs SET status = 'waiting', lease_until = NULL, lease_owner = NULL,
                                     updated_at = now()
                     WHERE id = $1",
                    &[&id],
                )
                .await?;
                continue;
            }
        }
        let lease_secs = lease.as_secs_f64();
        tx.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                             lease_until = now() + make_interval(secs => $2),
                             lease_owner = $3, updated_at = now()
             WHERE id = $1",
            &[&id, &lease_secs, &store.node_id()],
        )
        .await?;
        let lifetime: i64 = tx
            .query_one("SELECT COUNT(*) FROM attempts WHERE job_id = $1", &[&id])
            .await?
            .get(0);
        claimed = Some(ClaimedJob::claimed(
            id,
            delivery_id,
            handler,
            source,
            i64::from(attempts),
            lifetime,
        ));
        break;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Decrypt the job's event and the outputs of the delivery's finished handlers (`app_data`).
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn load_for_dispatch(
    store: &PgStore,
    job: &ClaimedJob,
) -> Result<(Event, AppData), StoreError> {
    let client = store.client().await?;
    let opened = super::read::open_delivery(store, &client, &job.delivery_id).await?;
    let (source, stored) = (opened.source, opened.stored);
    let mut app_data = AppData::new();
    let outputs = client
        .query(
            "SELECT id, handler, out_key_id, out_nonce, out_ciphertext FROM jobs
             WHERE delivery_id = $1 AND status = 'done' AND out_ciphertext IS NOT NULL
               AND handler NOT LIKE '@%'",
            &[&job.delivery_id],
        )
        .await?;
    for row in outputs {
        let (id, handler, out_key, out_nonce, out_ct): (i64, String, i64, Vec<u8>, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let key = keys::key_for_read(store, &client, out_key).await?;
        let value = open_output(&key, id, &source, out_key, &out_nonce, &out_ct)?;
        app_data.insert(handler, value);
    }
    Ok((stored.event, app_data))
}

/// Record an attempt and move the job to its next state, with the audit records, in one
/// transaction. If the lease was lost to another node meanwhile, the attempt and its audit
/// record are still written (it happened) but the job's state is left to the new owner.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn finish_attempt(
    store: &PgStore,
    job: &ClaimedJob,
    record: &AttemptRecord,
    next: NextStep,
) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let now = Utc::now();
    let output = match (&record.result, next) {
        (AttemptResult::Ok { output, .. }, NextStep::Done) => {
            let (key_id, key) = keys::key_for_write(store, &mut client, &period_of(now)).await?;
            let bytes = serde_json::to_vec(output)
                .map_err(|_| StoreError::Corrupt("handler output is not serializable"))?;
            let job_id = job.id.to_string();
            let sealed = key.seal(&output_place(&job_id, &job.source, key_id), &bytes)?;
            Some((key_id, sealed))
        }
        _ => None,
    };
    let tx = client.transaction().await?;
    let latency_ms = i64::try_from(record.latency.as_millis()).unwrap_or(i64::MAX);
    let attempt = i32::try_from(job.attempt).unwrap_or(i32::MAX);
    let http_status = record.http_status.map(i32::from);
    tx.execute(
        "INSERT INTO attempts (job_id, attempt, started_at, finished_at, result, http_status,
                               latency_ms, destination, error, node_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &job.id,
            &attempt,
            &record.started_at,
            &now,
            &record.result.code(),
            &http_status,
            &latency_ms,
            &record.destination,
            &record.result.reason(),
            &store.node_id(),
        ],
    )
    .await?;
    // This claim's mark: the claim incremented `attempts` to schedule_index + 1.
    let claim_attempts = i32::try_from(job.schedule_index + 1).unwrap_or(i32::MAX);
    let ours = "id = $1 AND status = 'running' AND attempts = $2";
    let updated = match next {
        NextStep::Done => {
            let (out_key, nonce, ct) = match &output {
                Some((k, s)) => (Some(*k), Some(&s.nonce), Some(&s.ciphertext)),
                None => (None, None, None),
            };
            let n = tx
                .execute(
                    &format!(
                        "UPDATE jobs SET status = 'done', lease_until = NULL, lease_owner = NULL,
                                         last_error = NULL, out_key_id = $3, out_nonce = $4,
                                         out_ciphertext = $5, updated_at = $6
                         WHERE {ours}"
                    ),
                    &[&job.id, &claim_attempts, &out_key, &nonce, &ct, &now],
                )
                .await?;
            if n > 0 {
                tx.execute(
                    "UPDATE jobs SET status = 'pending', next_attempt_at = $2, updated_at = $2
                     WHERE delivery_id = $1 AND status = 'waiting'",
                    &[&job.delivery_id, &now],
                )
                .await?;
                // The caller's phone the output names, for a delivery without its own caller.
                if let Some(caller_ref) = caller_ref_of(&record.result, store.keyring()) {
                    tx.execute(
                        "UPDATE deliveries SET caller_ref = $2
                         WHERE id = $1 AND caller_ref IS NULL AND status <> 'purged'",
                        &[&job.delivery_id, &caller_ref],
                    )
                    .await?;
                }
            }
            n
        }
        NextStep::RetryAt(at) => {
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'pending', lease_until = NULL, lease_owner = NULL,
                                     next_attempt_at = $3, last_error = $4, updated_at = $5
                     WHERE {ours}"
                ),
                &[&job.id, &claim_attempts, &at, &record.result.reason(), &now],
            )
            .await?
        }
        NextStep::Dead => {
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'dead', lease_until = NULL, lease_owner = NULL,
                                     last_error = $3, updated_at = $4
                     WHERE {ours}"
                ),
                &[&job.id, &claim_attempts, &record.result.reason(), &now],
            )
            .await?
        }
    };
    if updated == 0 {
        tracing::warn!(
            job = job.id,
            handler = %job.handler,
            "lease lost before the attempt finished; another node owns the job now"
        );
    }
    for audit_record in attempt_audit_records(job, record, next) {
        audit::append(store, &tx, &audit_record).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Queue depth (pending + waiting + running) and the age of the oldest due job.
pub(super) async fn queue_stats(store: &PgStore) -> Result<(u64, Option<Duration>), StoreError> {
    let client = store.client().await?;
    let row = client
        .query_one(
            "SELECT COUNT(*), MIN(next_attempt_at) FILTER (WHERE status = 'pending')
             FROM jobs WHERE status IN ('pending', 'waiting', 'running')",
            &[],
        )
        .await?;
    let depth: i64 = row.get(0);
    let oldest: Option<DateTime<Utc>> = row.get(1);
    let age = oldest.and_then(|t| (Utc::now() - t).to_std().ok());
    Ok((u64::try_from(depth).unwrap_or(0), age))
}
