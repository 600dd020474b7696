//! Group commit of intakes on PostgreSQL: the committer task of one store.
//!
//! One durable commit per delivery costs PostgreSQL a WAL flush and half a dozen round trips,
//! and a node's audit head row (locked until commit) lets only one of its intakes commit at a
//! time. So, like the SQLite writer (`store::sqlite::writer`), a per-store task takes the first queued
//! intake, then whatever else is already queued (up to [`MAX_BATCH`]), and commits them all in
//! one transaction on one connection — one WAL flush, a fixed number of statements whatever the
//! batch size — and answers every request only after `COMMIT` returned.
//!
//! The request task does everything but SQL before queueing (id, blind indexes, serialization,
//! sealing under the period's data key at the key generation last seen: [`super::intake`]).
//! The transaction, in statement order:
//! 0. read the current key generation; a delivery sealed under another (a rotation just
//!    happened) is not stored but sent back to be sealed again;
//! 1. insert every delivery with one `INSERT … SELECT … FROM unnest(…) ON CONFLICT (source,
//!    dedup_index) DO NOTHING RETURNING id`, in (source, dedup index) order: two nodes inserting
//!    overlapping batches wait on each other's keys in the same order and cannot deadlock, and
//!    of two copies of one delivery in a batch the earlier one is inserted;
//! 2. for the ones not inserted, read the first delivery's id in one query (a new READ
//!    COMMITTED snapshot, so it sees a racing node's row once the insert has waited for it);
//! 3. insert every job row of the accepted deliveries in one statement;
//! 4. lock this node's audit head (last, so it is held only for the end of the transaction),
//!    chain the `delivery_accepted` / `delivery_duplicate` records onto it in Rust, and insert
//!    them and move the head in one statement.
//!
//! A failure of the transaction as a whole (connection lost, pool exhausted, disk full, a
//! read-only server, a deadlock) answers every member with the same [`StoreError`]: nothing of
//! the batch was stored, so the senders' retries lose nothing. Any other failure might belong
//! to one member only, so the batch is then run again one delivery per transaction and only
//! that one fails.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{error, keys};
use crate::audit::{AuditRecord, StoredRecord};
use crate::crypto::Keyring;
use crate::store::audit_hook::to_record;
use crate::store::prepare::{intake_event, IntakeFacts};
use crate::store::{IntakeOutcome, StoreError};

/// Most intakes committed in one transaction: bounds the statement parameters and the time
/// the head row is held, while far above what a node has in flight at once.
pub(super) const MAX_BATCH: usize = 512;

/// Intakes that may wait for the committer; further requests wait to queue (backpressure).
const QUEUE_CAPACITY: usize = 4096;

/// A delivery ready to store: everything computed, the payload already sealed.
pub(super) struct PreparedIntake {
    /// The id it gets if accepted (part of the sealed payload's AAD).
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub dedup_kind: &'static str,
    pub dedup: String,
    pub call_ref: Option<String>,
    /// The blind index of the caller's phone number, if the event names one.
    pub caller_ref: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The data key generation it was sealed under (see `keys::KeyCache::generation`).
    pub generation: i64,
    pub key_id: i64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// The handlers to enqueue, in route order, if it is accepted.
    pub handlers: Vec<String>,
    pub remote_addr: IpAddr,
}

/// A queued intake and where its answer goes.
struct Request {
    intake: PreparedIntake,
    reply: oneshot::Sender<Answer>,
}

/// The committer's answer to one intake: its outcome, or `Ok(None)` when it was sealed under a
/// data key generation that is no longer current and must be sealed again (nothing stored).
pub(super) type Answer = Result<Option<IntakeOutcome>, StoreError>;

/// What the committer needs of the store. Not the store itself: the task must end when the
/// last store handle (and with it the queue's sender) is dropped.
#[derive(Clone)]
pub(super) struct Context {
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    pub node_id: String,
    /// Where the committer publishes the current key generation (the store's key cache).
    pub generation: Arc<AtomicI64>,
    /// Tests only: panic in the next batch right after its deliveries were inserted, as a bug
    /// in a later step would (the open transaction must come to nothing).
    #[cfg(test)]
    pub panic_after_insert: Arc<std::sync::atomic::AtomicBool>,
}

/// The store's handle on its committer.
pub(super) struct Committer {
    /// What a new task gets if the running one ends unexpectedly.
    context: Context,
    /// The queue's only long-lived sender and the task; see [`Running`].
    running: std::sync::Mutex<Running>,
    /// See [`Context::panic_after_insert`].
    #[cfg(test)]
    pub(super) panic_after_insert: Arc<std::sync::atomic::AtomicBool>,
}

/// The committer task and its queue. Both `None` once [`Committer::close`] took them.
struct Running {
    queue: Option<mpsc::Sender<Request>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// A new committer task on the current runtime.
    fn start(context: &Context) -> Self {
        let (queue, incoming) = mpsc::channel(QUEUE_CAPACITY);
        Self {
            queue: Some(queue),
            task: Some(tokio::spawn(run(context.clone(), incoming))),
        }
    }
}

const STOPPED: StoreError = StoreError::Unavailable("the intake committer has stopped");

impl Committer {
    /// Start the committer task on the current runtime.
    pub(super) fn spawn(context: Context) -> Self {
        Self {
            running: std::sync::Mutex::new(Running::start(&context)),
            #[cfg(test)]
            panic_after_insert: Arc::clone(&context.panic_after_insert),
            context,
        }
    }

    /// Queue `intake` and wait until its batch committed (or failed).
    ///
    /// Should the task have ended without [`Committer::close`] (a panic outside a batch, a
    /// cancelled task), the intakes it held were answered unavailable as their reply channels
    /// closed (their senders retry, nothing of them was acknowledged), and this intake starts
    /// a new task: a node does not answer 503 for ever after one failure.
    pub(super) async fn submit(&self, intake: PreparedIntake) -> Answer {
        let (reply, answer) = oneshot::channel();
        let queue = {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ended = running.task.as_ref().is_some_and(|t| t.is_finished());
            if ended {
                tracing::error!("the intake committer ended unexpectedly; starting a new one");
                *running = Running::start(&self.context);
            }
            running.queue.clone().ok_or(STOPPED)?
        };
        queue
            .send(Request { intake, reply })
            .await
            .map_err(|_| STOPPED)?;
        drop(queue);
        answer.await.map_err(|_| STOPPED)?
    }

    /// Take no more intakes, commit (or fail) every one already queued, and return once the
    /// task has ended. At a graceful stop this runs after the listener has stopped, so the
    /// intakes still queued are those of requests whose answers were abandoned; they are
    /// committed before the stop record and the final mirror catch-up rather than after them.
    /// Later intakes answer unavailable.
    pub(super) async fn close(&self) {
        let task = {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            drop(running.queue.take());
            running.task.take()
        };
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Tests only: end the task now, wherever it is, as a crash of it would.
    #[cfg(test)]
    pub(super) fn kill(&self) {
        if let Some(task) = &self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .task
        {
            task.abort();
        }
    }
}

/// The committer loop: until every sender is gone, commit what is queued and answer it.
async fn run(context: Context, mut incoming: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = incoming.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (intakes, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| (r.intake, r.reply)).unzip();
        // A panic while committing one batch costs that batch (503, the senders retry), not
        // the committer: without it every later intake would answer "committer has stopped".
        let answers = match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            commit_or_isolate(&context, &intakes),
        ))
        .await
        {
            Ok(answers) => answers,
            Err(_) => {
                tracing::error!(
                    size = intakes.len(),
                    "intake commit panicked; answering unavailable and going on"
                );
                intakes
                    .iter()
                    .map(|_| Err(StoreError::Unavailable("internal error")))
                    .collect()
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A request whose caller went away (client disconnected) needs no answer.
            let _ = reply.send(answer);
        }
    }
}

/// Commit `intakes` in one transaction; if that fails for a reason that may be one member's
/// own, commit them one per transaction so only that member fails (see the module docs).
pub(super) async fn commit_or_isolate(
    context: &Context,
    intakes: &[PreparedIntake],
) -> Vec<Answer> {
    match commit_batch(context, intakes).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(StoreError::Unavailable(reason)) => intakes
            .iter()
            .map(|_| Err(StoreError::Unavailable(reason)))
            .collect(),
        Err(e) if intakes.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, size = intakes.len(),
                "a batched intake transaction failed; committing its deliveries one by one");
            let mut answers = Vec::with_capacity(intakes.len());
            for one in intakes.chunks(1) {
                answers.push(commit_batch(context, one).await.map(|mut o| o.remove(0)));
            }
            answers
        }
    }
}

/// One transaction for all of `intakes`; the outcomes in the same order, `None` for those
/// sealed under a stale key generation. See the module docs for the statements and why they
/// come in this order.
pub(super) async fn commit_batch(
    context: &Context,
    all: &[PreparedIntake],
) -> Result<Vec<Option<IntakeOutcome>>, StoreError> {
    let mut client = context.pool.get().await.map_err(error::from_pool)?;
    let tx = client.transaction().await?;
    let generation = read_generation(context, &tx).await?;
    let intakes: Vec<&PreparedIntake> = all.iter().filter(|d| d.generation == generation).collect();
    if intakes.is_empty() {
        tx.rollback().await?;
        return Ok(all.iter().map(|_| None).collect());
    }
    let inserted = insert_deliveries(context, &tx, &intakes).await?;
    #[cfg(test)]
    if context.panic_after_insert.swap(false, Ordering::AcqRel) {
        panic!("injected: a bug in a step after the insert");
    }
    let outcomes = outcomes(&tx, &intakes, &inserted).await?;
    enqueue_jobs(&tx, &intakes, &inserted).await?;
    append_audit_records(context, &tx, &intakes, &outcomes).await?;
    tx.commit().await?;
    Ok(in_batch_order(all, generation, outcomes))
}

/// Step 0: the current key generation, published to the store's key cache. Only deliveries
/// sealed under it are stored.
async fn read_generation(context: &Context, tx: &Transaction<'_>) -> Result<i64, StoreError> {
    let generation = keys::current_generation(tx).await?;
    context.generation.store(generation, Ordering::Release);
    Ok(generation)
}

/// Step 1: insert the deliveries in (source, dedup index) order, ties in batch order; the ids
/// actually inserted (the others are duplicates).
async fn insert_deliveries(
    context: &Context,
    tx: &Transaction<'_>,
    intakes: &[&PreparedIntake],
) -> Result<HashSet<String>, StoreError> {
    let mut order: Vec<usize> = (0..intakes.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&intakes[a], &intakes[b]);
        (&x.source, &x.dedup, a).cmp(&(&y.source, &y.dedup, b))
    });
    let column = |f: &dyn Fn(&PreparedIntake) -> String| -> Vec<String> {
        order.iter().map(|&i| f(intakes[i])).collect()
    };
    let ids = column(&|d| d.id.clone());
    let sources = column(&|d| d.source.clone());
    let event_types = column(&|d| d.event_type.clone());
    let dedup_kinds = column(&|d| d.dedup_kind.to_owned());
    let dedups = column(&|d| d.dedup.clone());
    let call_refs: Vec<Option<&str>> = order
        .iter()
        .map(|&i| intakes[i].call_ref.as_deref())
        .collect();
    let caller_refs: Vec<Option<&str>> = order
        .iter()
        .map(|&i| intakes[i].caller_ref.as_deref())
        .collect();
    let received: Vec<DateTime<Utc>> = order.iter().map(|&i| intakes[i].received_at).collect();
    let key_ids: Vec<i64> = order.iter().map(|&i| intakes[i].key_id).collect();
    let nonces: Vec<&[u8]> = order.iter().map(|&i| &intakes[i].nonce[..]).collect();
    let ciphertexts: Vec<&[u8]> = order.iter().map(|&i| &intakes[i].ciphertext[..]).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (id, source, event_type, dedup_kind, dedup_index, call_ref,
                                     received_at, status, key_id, nonce, ciphertext, node_id,
                                     caller_ref)
             SELECT id, source, event_type, dedup_kind, dedup_index, call_ref, received_at,
                    'accepted', key_id, nonce, ciphertext, $11::text, caller_ref
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::int8[], $9::bytea[], $10::bytea[], $12::text[])
                  WITH ORDINALITY AS d (id, source, event_type, dedup_kind, dedup_index,
                                        call_ref, received_at, key_id, nonce, ciphertext,
                                        caller_ref, ord)
             ORDER BY ord
             ON CONFLICT (source, dedup_index) DO NOTHING RETURNING id",
        )
        .await?;
    let inserted = tx
        .query(
            &insert,
            &[
                &ids,
                &sources,
                &event_types,
                &dedup_kinds,
                &dedups,
                &call_refs,
                &received,
                &key_ids,
                &nonces,
                &ciphertexts,
                &context.node_id,
                &caller_refs,
            ],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(inserted)
}

/// Step 2: each delivery's outcome, in batch order — accepted, or a duplicate answered with the
/// first delivery's id (read in one query, in a new READ COMMITTED snapshot, so it sees a racing
/// node's row once the insert has waited for it).
async fn outcomes(
    tx: &Transaction<'_>,
    intakes: &[&PreparedIntake],
    inserted: &HashSet<String>,
) -> Result<Vec<IntakeOutcome>, StoreError> {
    let missed: Vec<&PreparedIntake> = intakes
        .iter()
        .copied()
        .filter(|d| !inserted.contains(&d.id))
        .collect();
    let mut first_ids: HashMap<(String, String), String> = HashMap::new();
    if !missed.is_empty() {
        let sources: Vec<&str> = missed.iter().map(|d| d.source.as_str()).collect();
        let dedups: Vec<&str> = missed.iter().map(|d| d.dedup.as_str()).collect();
        let select = tx
            .prepare_cached(
                "SELECT d.source, d.dedup_index, d.id FROM deliveries d
                 JOIN unnest($1::text[], $2::text[]) AS k (source, dedup_index)
                   ON d.source = k.source AND d.dedup_index = k.dedup_index",
            )
            .await?;
        for row in tx.query(&select, &[&sources, &dedups]).await? {
            first_ids.insert((row.get(0), row.get(1)), row.get(2));
        }
    }
    let mut outcomes = Vec::with_capacity(intakes.len());
    for &d in intakes {
        if inserted.contains(&d.id) {
            outcomes.push(IntakeOutcome::Accepted {
                delivery_id: d.id.clone(),
            });
        } else {
            let first =
                first_ids
                    .get(&(d.source.clone(), d.dedup.clone()))
                    .ok_or(StoreError::Corrupt(
                        "a delivery was neither inserted nor found by its dedup key",
                    ))?;
            outcomes.push(IntakeOutcome::Duplicate {
                delivery_id: first.clone(),
            });
        }
    }
    Ok(outcomes)
}

/// Step 3: the job rows of the accepted deliveries, in one statement.
async fn enqueue_jobs(
    tx: &Transaction<'_>,
    intakes: &[&PreparedIntake],
    inserted: &HashSet<String>,
) -> Result<(), StoreError> {
    let (mut job_ids, mut job_handlers, mut job_positions, mut job_times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in intakes.iter().filter(|d| inserted.contains(&d.id)) {
        for (position, handler) in d.handlers.iter().enumerate() {
            job_ids.push(d.id.as_str());
            job_handlers.push(handler.as_str());
            job_positions.push(i32::try_from(position).unwrap_or(i32::MAX));
            job_times.push(d.received_at);
        }
    }
    if !job_ids.is_empty() {
        let enqueue = tx
            .prepare_cached(
                "INSERT INTO jobs (delivery_id, handler, position, next_attempt_at, created_at)
                 SELECT d, h, p, t, t
                 FROM unnest($1::text[], $2::text[], $3::int4[], $4::timestamptz[])
                      AS j (d, h, p, t)
                 ON CONFLICT (delivery_id, handler) DO NOTHING",
            )
            .await?;
        tx.execute(
            &enqueue,
            &[&job_ids, &job_handlers, &job_positions, &job_times],
        )
        .await?;
    }
    Ok(())
}

/// Step 4: lock this node's audit head (last, so it is held only for the end of the
/// transaction), chain the `delivery_accepted` / `delivery_duplicate` records onto it, and
/// insert them and move the head in one statement.
async fn append_audit_records(
    context: &Context,
    tx: &Transaction<'_>,
    intakes: &[&PreparedIntake],
    outcomes: &[IntakeOutcome],
) -> Result<(), StoreError> {
    let head = tx
        .prepare_cached("SELECT seq, mac, ts FROM audit_heads WHERE node_id = $1 FOR UPDATE")
        .await?;
    let head = tx
        .query_opt(&head, &[&context.node_id])
        .await?
        .ok_or(StoreError::Corrupt("this node's audit head row is missing"))?;
    let (mut seq, mut prev_mac, prev_ts): (i64, String, String) =
        (head.get(0), head.get(1), head.get(2));
    let now = crate::audit::format_ts(Utc::now());
    // Clamp to the predecessor's time if the clock stepped back: time order = seq order.
    let ts = if prev_ts > now { prev_ts } else { now };
    let records: Vec<StoredRecord> = intakes
        .iter()
        .zip(outcomes)
        .map(|(d, outcome)| {
            seq += 1;
            let next =
                u64::try_from(seq).map_err(|_| StoreError::Corrupt("audit head sequence"))?;
            let record = StoredRecord::seal(
                &context.keyring,
                &audit_record(d, outcome),
                next,
                ts.clone(),
                prev_mac.clone(),
            );
            prev_mac.clone_from(&record.mac);
            Ok(record)
        })
        .collect::<Result<_, StoreError>>()?;
    let seqs: Vec<i64> = (seq + 1 - records.len() as i64..=seq).collect();
    let text =
        |f: &dyn Fn(&StoredRecord) -> String| -> Vec<String> { records.iter().map(f).collect() };
    let opt = |f: &dyn Fn(&StoredRecord) -> Option<String>| -> Vec<Option<String>> {
        records.iter().map(f).collect()
    };
    let append = tx
        .prepare_cached(
            "WITH appended AS (
                 INSERT INTO audit_log (node_id, seq, ts, actor, action, outcome, delivery_id,
                                        source, call_ref, remote_addr, detail, prev_mac, mac)
                 SELECT $1::text, r.* FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[],
                                            $6::text[], $7::text[], $8::text[], $9::text[],
                                            $10::text[], $11::text[], $12::text[], $13::text[])
                      AS r
             )
             UPDATE audit_heads SET seq = $14, mac = $15, ts = $16 WHERE node_id = $1",
        )
        .await?;
    tx.execute(
        &append,
        &[
            &context.node_id,
            &seqs,
            &text(&|r| r.ts.clone()),
            &text(&|r| r.actor.clone()),
            &text(&|r| r.action.clone()),
            &text(&|r| r.outcome.clone()),
            &opt(&|r| r.delivery_id.clone()),
            &opt(&|r| r.source.clone()),
            &opt(&|r| r.call_ref.clone()),
            &opt(&|r| r.remote_addr.clone()),
            &text(&|r| r.detail.clone()),
            &text(&|r| r.prev_mac.clone()),
            &text(&|r| r.mac.clone()),
            &seq,
            &prev_mac,
            &ts,
        ],
    )
    .await?;
    Ok(())
}

/// The outcomes of the stored deliveries spread back over the whole batch: `None` for those
/// sealed under a generation other than `generation`.
fn in_batch_order(
    all: &[PreparedIntake],
    generation: i64,
    outcomes: Vec<IntakeOutcome>,
) -> Vec<Option<IntakeOutcome>> {
    let mut outcomes = outcomes.into_iter();
    all.iter()
        .map(|d| {
            if d.generation == generation {
                outcomes.next()
            } else {
                None
            }
        })
        .collect()
}

/// The `delivery_accepted` or `delivery_duplicate` record of one intake.
fn audit_record(d: &PreparedIntake, outcome: &IntakeOutcome) -> AuditRecord {
    let facts = IntakeFacts {
        source: &d.source,
        call_ref: d.call_ref.as_deref(),
        event_type: &d.event_type,
        remote_addr: d.remote_addr,
        key_id: Some(d.key_id),
        jobs: d.handlers.len(),
    };
    to_record(&intake_event(&facts, outcome))
}
