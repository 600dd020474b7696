//! The writer thread: the only connection that writes during serving, doing group commit.
//!
//! It blocks for one command, then takes whatever else is already queued (up to
//! `max_batch`), runs them all in one `BEGIN IMMEDIATE` transaction — each inside its own
//! savepoint, so one bad request cannot spoil its neighbours — commits (one fsync of the WAL),
//! and only then answers every request. A failure of the transaction as a whole (disk full, I/O,
//! lock timeout) answers every request in the batch with `Unavailable`: nothing of it was
//! stored, so the senders' retries lose nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::audit_hook::{record_audit, AuditAction, AuditActor, AuditEvent};
use super::keys::{self, WriteKeyCache};
use super::payload::{encode_body, StoredDelivery, StoredQuarantine};
use super::{IntakeOutcome, JobSpec, QuarantineId, Shared, StoreError};
use crate::audit::AppendedRecord;
use crate::crypto::{Keyring, RecordPlace};
use crate::normalize::{IntakeInput, Normalized};

/// The timestamp format of every `*_at` column: fixed width, so text order is time order.
pub(crate) fn db_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) struct IntakeRequest {
    pub input: IntakeInput,
    pub normalized: Normalized,
    pub jobs: Vec<JobSpec>,
    pub reply: oneshot::Sender<Result<IntakeOutcome, StoreError>>,
}

pub(crate) struct QuarantineRequest {
    pub input: IntakeInput,
    pub reason: String,
    pub reason_code: &'static str,
    pub received_at: DateTime<Utc>,
    pub reply: oneshot::Sender<Result<QuarantineId, StoreError>>,
}

pub(crate) enum Command {
    Intake(Box<IntakeRequest>),
    Quarantine(Box<QuarantineRequest>),
    Probe(oneshot::Sender<Result<(), StoreError>>),
    /// A standalone audit record (rejection, start/stop, reload), batched like the rest.
    Audit(
        Box<crate::audit::AuditRecord>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
}

enum Answer {
    Intake(IntakeOutcome),
    Quarantine(QuarantineId),
    Probe,
}

pub(super) fn spawn(
    conn: Connection,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("wardhook-store-writer".into())
        .spawn(move || run(conn, &shared, rx))
        .map(drop)
        .map_err(|e| StoreError::Io {
            path: "writer thread".into(),
            reason: e.to_string(),
        })
}

fn run(mut conn: Connection, shared: &Shared, mut rx: mpsc::Receiver<Command>) {
    let max_batch = shared.options.max_batch.max(1);
    let mut cache = WriteKeyCache::new();
    let mut batch: Vec<Command> = Vec::with_capacity(max_batch);
    // Ends when every Store clone (every sender) is dropped.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, shared, &mut cache, &mut batch);
    }
}

fn commit_batch(
    conn: &mut Connection,
    shared: &Shared,
    cache: &mut WriteKeyCache,
    batch: &mut Vec<Command>,
) {
    let mut audit = Vec::with_capacity(batch.len());
    let result = run_batch(conn, &shared.keyring, cache, batch, &mut audit);
    match result {
        Ok(answers) => {
            shared.healthy.store(true, Ordering::Release);
            // The chain in the database is authoritative; a mirror that falls behind catches up
            // on its next write, so a mirror error must not turn a committed delivery into a 503.
            if let Some(mirror) = &shared.options.audit_mirror {
                if let Err(e) = mirror.write(&audit) {
                    tracing::error!(error = %e, "audit mirror write failed");
                }
            }
            for (command, answer) in batch.drain(..).zip(answers) {
                reply(command, answer);
            }
        }
        Err(e) => {
            shared.healthy.store(false, Ordering::Release);
            // Key rows created in the failed transaction are gone with it.
            cache.clear();
            let reason = match e {
                StoreError::Unavailable(reason) => reason,
                _ => "storage error",
            };
            tracing::error!(error = %e, requests = batch.len(), "store commit failed; answering unavailable");
            for command in batch.drain(..) {
                reply(command, Err(StoreError::Unavailable(reason)));
            }
        }
    }
}

/// Send each waiting request its answer. A requester that went away (client hung up) is not an
/// error: its delivery is committed and a retry will be answered `duplicate`.
fn reply(command: Command, answer: Result<Answer, StoreError>) {
    match command {
        Command::Intake(req) => {
            let _ = req.reply.send(answer.and_then(|a| match a {
                Answer::Intake(o) => Ok(o),
                _ => Err(StoreError::Corrupt(
                    "writer answered the wrong request kind",
                )),
            }));
        }
        Command::Quarantine(req) => {
            let _ = req.reply.send(answer.and_then(|a| match a {
                Answer::Quarantine(q) => Ok(q),
                _ => Err(StoreError::Corrupt(
                    "writer answered the wrong request kind",
                )),
            }));
        }
        Command::Probe(reply) | Command::Audit(_, reply) => {
            let _ = reply.send(answer.map(|_| ()));
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    keyring: &Keyring,
    cache: &mut WriteKeyCache,
    batch: &[Command],
    audit: &mut Vec<AppendedRecord>,
) -> Result<Vec<Result<Answer, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read every batch: `keys rotate` in another process may have bumped it.
    let generation = keys::current_generation(&tx)?;
    let mut answers = Vec::with_capacity(batch.len());
    for command in batch {
        tx.execute_batch("SAVEPOINT item")?;
        let audit_len = audit.len();
        let result = match command {
            Command::Intake(req) => {
                intake_one(&tx, keyring, cache, generation, req, audit).map(Answer::Intake)
            }
            Command::Quarantine(req) => {
                quarantine_one(&tx, keyring, cache, generation, req, audit).map(Answer::Quarantine)
            }
            Command::Probe(_) => probe(&tx).map(|()| Answer::Probe),
            Command::Audit(record, _) => crate::audit::append(&tx, keyring, record)
                .map(|appended| {
                    audit.push(appended);
                    Answer::Probe
                })
                .map_err(StoreError::from),
        };
        match result {
            Ok(answer) => {
                tx.execute_batch("RELEASE item")?;
                answers.push(Ok(answer));
            }
            // The whole transaction is lost (SQLite may already have rolled it back).
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                tx.execute_batch("ROLLBACK TO item; RELEASE item")?;
                audit.truncate(audit_len);
                // A key created inside the rolled-back savepoint is gone too.
                cache.clear();
                answers.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok(answers)
}

/// The blind index of a dedup key, scoped to the source.
pub(crate) fn dedup_index(keyring: &Keyring, source: &str, normalized: &Normalized) -> String {
    let mut material = Vec::with_capacity(source.len() + 80);
    material.extend_from_slice(&(source.len() as u64).to_be_bytes());
    material.extend_from_slice(source.as_bytes());
    material.extend_from_slice(&normalized.dedup.index_material());
    keyring.blind_index("dedup", &material)
}

fn intake_one(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    cache: &mut WriteKeyCache,
    generation: i64,
    req: &IntakeRequest,
    audit_out: &mut Vec<AppendedRecord>,
) -> Result<IntakeOutcome, StoreError> {
    let input = &req.input;
    let n = &req.normalized;
    let source = input.source.as_str();
    let dedup = dedup_index(keyring, source, n);
    let call_ref = n.call_id.as_deref().map(|c| keyring.call_ref(c));
    let audit = |action| {
        let mut ev = AuditEvent::new(AuditActor::Sender(source.to_owned()), action);
        ev.source = Some(source);
        ev.call_ref = call_ref.as_deref();
        ev.event_type = Some(n.event_type.as_str());
        ev.remote_addr = Some(input.client_ip);
        ev
    };

    let first: Option<String> = tx
        .prepare_cached("SELECT id FROM deliveries WHERE source = ?1 AND dedup_index = ?2")?
        .query_row(params![source, dedup], |r| r.get(0))
        .optional()?;
    if let Some(first) = first {
        let mut ev = audit(AuditAction::DeliveryDuplicate);
        ev.delivery_id = Some(&first);
        audit_out.push(record_audit(tx, keyring, &ev)?);
        return Ok(IntakeOutcome::Duplicate { delivery_id: first });
    }

    let id = uuid::Uuid::now_v7().to_string();
    let period = keys::period_of(n.received_at);
    let (key_id, key) = keys::key_for_write(tx, keyring, cache, &period, generation)?;
    let stored = StoredDelivery {
        v: 1,
        event: n.to_event(&id, source),
        body_b64: encode_body(&input.body),
        content_type: input.content_type.clone(),
        signature_headers: input.signature_headers.clone(),
    };
    let plain = Zeroizing::new(
        serde_json::to_vec(&stored).map_err(|_| StoreError::Corrupt("cannot serialize payload"))?,
    );
    let sealed = key.seal(
        &RecordPlace {
            kind: "delivery",
            id: &id,
            source,
            key_id,
        },
        &plain,
    )?;
    let received = db_time(n.received_at);
    tx.prepare_cached(
        "INSERT INTO deliveries (id, source, event_type, dedup_kind, dedup_index, call_ref,
                                 received_at, status, key_id, nonce, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'accepted', ?8, ?9, ?10)",
    )?
    .execute(params![
        id,
        source,
        n.event_type.as_str(),
        n.dedup.kind(),
        dedup,
        call_ref,
        received,
        key_id,
        sealed.nonce,
        sealed.ciphertext
    ])?;
    let mut insert_job = tx.prepare_cached(
        "INSERT OR IGNORE INTO jobs (delivery_id, handler, position, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?;
    for (position, job) in req.jobs.iter().enumerate() {
        insert_job.execute(params![id, job.handler, position as i64, received])?;
    }
    let mut ev = audit(AuditAction::DeliveryAccepted);
    ev.delivery_id = Some(&id);
    ev.key_id = Some(key_id);
    ev.count = Some(req.jobs.len() as i64);
    audit_out.push(record_audit(tx, keyring, &ev)?);
    Ok(IntakeOutcome::Accepted { delivery_id: id })
}

fn quarantine_one(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    cache: &mut WriteKeyCache,
    generation: i64,
    req: &QuarantineRequest,
    audit_out: &mut Vec<AppendedRecord>,
) -> Result<QuarantineId, StoreError> {
    let input = &req.input;
    let source = input.source.as_str();
    let id = uuid::Uuid::now_v7().to_string();
    let period = keys::period_of(req.received_at);
    let (key_id, key) = keys::key_for_write(tx, keyring, cache, &period, generation)?;
    let stored = StoredQuarantine {
        v: 1,
        body_b64: encode_body(&input.body),
        content_type: input.content_type.clone(),
        signature_headers: input.signature_headers.clone(),
    };
    let plain = Zeroizing::new(
        serde_json::to_vec(&stored).map_err(|_| StoreError::Corrupt("cannot serialize payload"))?,
    );
    let sealed = key.seal(
        &RecordPlace {
            kind: "quarantine",
            id: &id,
            source,
            key_id,
        },
        &plain,
    )?;
    tx.prepare_cached(
        "INSERT INTO quarantine (id, source, reason, received_at, status, key_id, nonce, ciphertext)
         VALUES (?1, ?2, ?3, ?4, 'quarantined', ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        source,
        req.reason,
        db_time(req.received_at),
        key_id,
        sealed.nonce,
        sealed.ciphertext
    ])?;
    let mut ev = AuditEvent::new(
        AuditActor::Sender(source.to_owned()),
        AuditAction::DeliveryQuarantined,
    );
    ev.source = Some(source);
    ev.object_id = Some(&id);
    ev.reason = Some(req.reason_code);
    ev.key_id = Some(key_id);
    ev.remote_addr = Some(input.client_ip);
    audit_out.push(record_audit(tx, keyring, &ev)?);
    Ok(QuarantineId(id))
}

/// Allocate a page and give it back: succeeds only if the database can grow and commit.
fn probe(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        // 128 KiB: readiness means room for a sizeable delivery, not for any one page.
        "INSERT INTO health_probe (filler) VALUES (zeroblob(131072));
         DELETE FROM health_probe;",
    )?;
    Ok(())
}
