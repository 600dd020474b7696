//! The dispatch queue's shared parts: how a handler output is sealed, and the audit records of
//! attempts, dead letters, retries and replays — the same on both backends. The queue itself
//! is in each backend (`sqlite::jobs`, `postgres::jobs`).

use super::types::Requester;
use super::StoreError;
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, DetailValue, ObjectId, Outcome};
use crate::crypto::RecordPlace;

/// The SQLite queue functions and the vocabulary, at their former paths.
pub use super::sqlite::jobs::{
    claim_next, delivery_jobs, finish_attempt, job_attempts, list_dead, load_for_dispatch,
    queue_stats, replay, reset_orphaned, retry_dead,
};
pub use super::types::{
    AttemptRecord, AttemptResult, AttemptSummary, ClaimedJob, DeadFilter, DeadLetter, NextStep,
};

/// Decrypt the stored output (`app_data` entry) of finished job `job_id`.
pub(crate) fn open_output(
    key: &crate::crypto::DataKey,
    job_id: i64,
    source: &str,
    key_id: i64,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<serde_json::Value, StoreError> {
    let job_id = job_id.to_string();
    let plain = key.open(&output_place(&job_id, source, key_id), nonce, ciphertext)?;
    serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt("stored handler output is not JSON"))
}

/// Where a handler output is sealed (its AAD): the job, its source and key.
pub(crate) fn output_place<'a>(job_id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "job_output",
        id: job_id,
        source,
        key_id,
    }
}

fn code(s: &str) -> Option<Code> {
    Code::parse(s).ok()
}

/// The audit records of one finished attempt: the attempt itself, and the dead letter when
/// `next` is [`NextStep::Dead`].
pub(crate) fn attempt_audit_records(
    job: &ClaimedJob,
    record: &AttemptRecord,
    next: NextStep,
) -> Vec<AuditRecord> {
    let latency_ms = i64::try_from(record.latency.as_millis()).unwrap_or(i64::MAX);
    let outcome = match record.result {
        AttemptResult::Ok { .. } => Outcome::Success,
        _ => Outcome::Failure,
    };
    let mut audit = AuditRecord::new(Actor::System, Action::HandlerAttempt, outcome);
    audit.delivery_id = ObjectId::parse(&job.delivery_id).ok();
    audit.source = code(&job.source);
    if let Some(h) = code(&job.handler) {
        audit.detail.insert(DetailKey::Handler, h);
    }
    if let Some(host) = record
        .destination
        .as_deref()
        .and_then(|d| DetailValue::host(d).ok())
    {
        audit.detail.insert(DetailKey::Host, host);
    }
    if let Some(s) = record.http_status {
        audit.detail.insert(DetailKey::Status, i64::from(s));
    }
    audit.detail.insert(DetailKey::LatencyMs, latency_ms);
    audit
        .detail
        .insert(DetailKey::Attempt, i64::from(job.attempt));
    if let Some(c) = code(record.result.code()) {
        audit.detail.insert(DetailKey::Result, c);
    }
    let mut records = vec![audit];
    if next == NextStep::Dead {
        let mut dead = AuditRecord::new(Actor::System, Action::DeadLettered, Outcome::Failure);
        dead.delivery_id = ObjectId::parse(&job.delivery_id).ok();
        dead.source = code(&job.source);
        if let Some(h) = code(&job.handler) {
            dead.detail.insert(DetailKey::Handler, h);
        }
        dead.detail
            .insert(DetailKey::Attempt, i64::from(job.attempt));
        records.push(dead);
    }
    records
}

/// The `retried` audit record of one dead letter put back in the queue by `who`.
pub(crate) fn retried_record(
    who: &Requester,
    delivery_id: &str,
    source: &str,
    handler: &str,
) -> AuditRecord {
    let mut audit = AuditRecord::new(who.audit_actor(), Action::Retried, Outcome::Success);
    audit.delivery_id = ObjectId::parse(delivery_id).ok();
    audit.source = code(source);
    if let Some(h) = code(handler) {
        audit.detail.insert(DetailKey::Handler, h);
    }
    if let Some(v) = code(who.via) {
        audit.detail.insert(DetailKey::Via, v);
    }
    audit
}

/// The `replayed` audit record of `deliveries replay`: who, which delivery and handler, how
/// many jobs were re-queued.
pub(crate) fn replayed_record(
    who: &Requester,
    delivery_id: &str,
    source: &str,
    handler: Option<&str>,
    count: u64,
) -> AuditRecord {
    let mut audit = AuditRecord::new(who.audit_actor(), Action::Replayed, Outcome::Success);
    audit.delivery_id = ObjectId::parse(delivery_id).ok();
    audit.source = code(source);
    if let Some(h) = handler.and_then(code) {
        audit.detail.insert(DetailKey::Handler, h);
    }
    audit
        .detail
        .insert(DetailKey::Count, i64::try_from(count).unwrap_or(i64::MAX));
    if let Some(v) = code(who.via) {
        audit.detail.insert(DetailKey::Via, v);
    }
    audit
}
