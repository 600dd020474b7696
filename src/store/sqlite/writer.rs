//! The writer thread: the only connection that writes during serving, doing group commit.
//!
//! It blocks for one command, then takes whatever else is already queued (up to
//! `max_batch`), runs them all in one `BEGIN IMMEDIATE` transaction, commits (one fsync of the
//! WAL), and only then answers every request. A failure of the transaction as a whole (disk
//! full, I/O, lock timeout) answers every request in the batch with `Unavailable`: nothing of it
//! was stored, so the senders' retries lose nothing.
//!
//! One bad request must not spoil its neighbours. The batch first runs without savepoints (a
//! savepoint per request costs a sub-journal copy of every page the request touches); if any
//! request fails on its own, that attempt is rolled back whole and the batch is run again with
//! each request inside its own savepoint, so only the bad one fails.
//!
//! The writer does as little as possible besides SQL: the request task computes the blind
//! indexes, serializes and encrypts the payload and builds the body of its audit record before
//! queueing ([`prepare`]), using the current period's data key the writer publishes after each
//! commit, so the writer only links each record onto the chain (keeping the chain head in memory
//! for the transaction) and computes its MAC. WAL checkpoints run on a separate thread with its
//! own connection ([`spawn_checkpointer`]) instead of inside a commit, and so do the audit
//! mirror's appends ([`spawn_mirror`]).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::dedup::DedupIndex;
use super::keys::{self, WriteKeyCache};
use super::{levels, Shared};
use crate::audit::{AppendedRecord, ChainCursor, RecordBody};
use crate::crypto::{DataKey, Keyring, Sealed};
use crate::normalize::{IntakeInput, Normalized};
use crate::store::answers::Answers;
use crate::store::audit_hook::{to_record, AuditEvent};
use crate::store::payload::db_time;
use crate::store::prepare::{
    intake_event, period_of, quarantine_body_index, quarantined_event, seal_quarantine,
    IntakeFacts, PreparedDelivery,
};
use crate::store::types::{IntakeOutcome, JobSpec, QuarantineId};
use crate::store::StoreError;

pub(crate) struct IntakeRequest {
    pub input: IntakeInput,
    pub jobs: Vec<JobSpec>,
    pub prepared: Prepared,
    pub reply: oneshot::Sender<Result<IntakeOutcome, StoreError>>,
    /// The requesting thread's hub, to answer with the rest of the batch (`store::answers`).
    pub via: Option<crate::store::answers::Hub>,
}

/// What the request task computes before queueing, so the writer thread does only SQL.
pub(crate) struct Prepared {
    /// Id, blind indexes, period and the serialized payload, kept (zeroized on drop) in case
    /// the writer must seal it itself.
    delivery: PreparedDelivery,
    received: String,
    /// The payload sealed under the published key of its period: (key id, sealed), and the
    /// body of its `delivery_accepted` audit record naming that key. Used only if the writer's
    /// key for the period is still that key id and the delivery is not a duplicate.
    sealed: Option<(i64, Sealed, RecordBody)>,
}

/// The data key new deliveries are sealed with, published by the writer after the commit that
/// created or first used it (so it is always a committed key row).
pub(crate) struct PublishedKey {
    period: String,
    key_id: i64,
    key: DataKey,
}

/// The writer's current data key, read by request tasks in [`prepare`].
#[derive(Default)]
pub(crate) struct KeySlot(RwLock<Option<Arc<PublishedKey>>>);

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySlot(redacted)")
    }
}

impl KeySlot {
    fn get(&self) -> Option<Arc<PublishedKey>> {
        self.0.read().ok().and_then(|k| k.clone())
    }

    fn key_id(&self) -> Option<i64> {
        self.0
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| k.key_id))
    }

    fn set(&self, key: Option<PublishedKey>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = key.map(Arc::new);
        }
    }
}

/// Blind indexes, id, serialization and (when the period's key is published) encryption of a
/// delivery and its audit record's body, on the caller's task rather than the writer thread.
pub(crate) fn prepare(
    keyring: &Keyring,
    slot: &KeySlot,
    input: &IntakeInput,
    n: &mut Normalized,
    jobs: usize,
) -> Result<Prepared, StoreError> {
    let delivery = PreparedDelivery::new(keyring, input, n)?;
    let sealed = match slot.get() {
        Some(k) if k.period == delivery.period => {
            let sealed = delivery.seal(&k.key, k.key_id, input.source.as_str())?;
            let outcome = IntakeOutcome::Accepted {
                delivery_id: delivery.id.clone(),
            };
            let facts = IntakeFacts {
                source: input.source.as_str(),
                call_ref: delivery.call_ref.as_deref(),
                event_type: &delivery.event_type,
                remote_addr: input.client_ip,
                key_id: Some(k.key_id),
                jobs,
            };
            let record = RecordBody::of(&to_record(&intake_event(&facts, &outcome)));
            Some((k.key_id, sealed, record))
        }
        _ => None,
    };
    Ok(Prepared {
        received: db_time(delivery.received_at),
        delivery,
        sealed,
    })
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
    /// A small write of another stage (a real-time reply), committed in the next group commit
    /// with the audit record it returns. May run twice if its batch is retried, so it must be
    /// idempotent (e.g. `INSERT OR IGNORE`).
    Apply(ApplyFn, oneshot::Sender<Result<(), StoreError>>),
}

/// See [`Command::Apply`].
pub(crate) type ApplyFn = Box<
    dyn Fn(
            &rusqlite::Transaction<'_>,
            &Keyring,
        ) -> Result<Option<crate::audit::AuditRecord>, StoreError>
        + Send,
>;

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
    // The checkpointer's connection is opened here, before `Store::open` returns, not on the
    // writer thread: a connection opened later by path could land on another file put there
    // meanwhile (a restored backup, a test's fresh database) and switch it to WAL mode.
    let checkpointer = spawn_checkpointer(&shared);
    let mirror = spawn_mirror(&shared);
    let dedup = DedupIndex::load(
        &conn,
        &shared.path,
        shared.options.busy_timeout,
        Arc::clone(&shared.merged),
    )?;
    // Opened here for the reason the checkpointer's is.
    let merger = super::open_connection(&shared.path, &shared.options).map(|main| {
        levels::spawn_merger(
            &shared.path,
            shared.options.busy_timeout,
            shared.options.index_shape,
            Arc::clone(&shared.merged),
            main,
        )
    });
    let merger = match merger {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the index merger's connection");
            None
        }
    };
    std::thread::Builder::new()
        .name("wardhook-store-writer".into())
        .spawn(move || {
            run(conn, &shared, rx, checkpointer, mirror, dedup);
            // Dropping it merges what is left, then stops the merger.
            drop(merger);
        })
        .map(drop)
        .map_err(|e| StoreError::Io {
            path: "writer thread".into(),
            reason: e.to_string(),
        })
}

/// How often the checkpointer looks at the WAL when it has caught up.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(50);
/// Shortest pause between two checkpoints while it has not caught up (each one fsyncs the
/// database file, so back-to-back checkpoints would mostly be fsyncs).
const CHECKPOINT_BUSY: Duration = Duration::from_millis(10);
/// WAL size (4 KiB frames) beyond which the writer, after a commit, finishes the checkpoint
/// itself: under continuous load the background checkpointer is always a commit or two behind,
/// so the WAL would never restart from its beginning and would grow without bound. The WAL
/// restarts at the writer's next transaction.
///
/// Each of these checkpoints holds up the next batch for several milliseconds (measured: 1.6 to
/// 18.7, median 8.2, mostly waiting on the disk), and every request in flight waits with it: at
/// 8 192 frames that happened about three times a second under load and set the p99
/// acknowledgement time. At 32 768 frames (a WAL of about 130 MiB) it happens a quarter as
/// often (docs/BENCHMARKS.md §19).
pub(super) const WAL_RESTART_FRAMES: i64 = 32_768;

/// Size the WAL file is truncated back to when it restarts (SQLite `journal_size_limit`): twice
/// the size it restarts at, so a WAL that restarted on time keeps its file and the next pass
/// overwrites it. Truncated below that size, every pass extends the file again and each fsync
/// then writes the file's metadata too (measured at 32 768 frames: 22.9 µs of writer CPU per
/// delivery with a 64 MiB limit, 20.6 µs with this one, §19). Only a WAL that outgrew this (a long reader held checkpoints back) is
/// truncated.
fn wal_size_limit(restart_frames: i64) -> i64 {
    const FRAME_BYTES: i64 = 4096 + 24;
    restart_frames.saturating_mul(FRAME_BYTES).saturating_mul(2)
}

/// Run WAL checkpoints on their own thread and connection, so the writer's commits only append
/// to the WAL. Returns the channel whose closing stops it, and the WAL size it last saw.
fn spawn_checkpointer(shared: &Shared) -> Option<(std::sync::mpsc::Sender<()>, Arc<AtomicI64>)> {
    let conn = match super::open_connection(&shared.path, &shared.options) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the checkpointer connection; the writer checkpoints");
            return None;
        }
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let frames = Arc::new(AtomicI64::new(0));
    let seen = Arc::clone(&frames);
    let path: PathBuf = shared.path.clone();
    let spawned = std::thread::Builder::new()
        .name("wardhook-ckpt".into())
        .spawn(move || {
            let mut behind = false;
            loop {
                let wait = if behind {
                    CHECKPOINT_BUSY
                } else {
                    CHECKPOINT_IDLE
                };
                let last = matches!(
                    stopped.recv_timeout(wait),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                );
                match checkpoint(&conn, "PASSIVE") {
                    Ok((log, done)) => {
                        seen.store(log, Ordering::Relaxed);
                        behind = done < log;
                    }
                    Err(e) => {
                        tracing::warn!(db = %path.display(), error = %e, "WAL checkpoint failed");
                        behind = false;
                    }
                }
                if last {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Some((stop, frames)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the checkpointer thread; the writer checkpoints");
            None
        }
    }
}

/// How long the mirror thread rests after each step. Each step takes the mirror's file lock and
/// looks at the file's end; waking per commit, that was most of the thread's time under load
/// (docs/BENCHMARKS.md §18). Resting lets the batches of the next few milliseconds queue, and
/// the next step writes them in one `write`. The JSONL mirror trails the database by about
/// this much more; acknowledgements never wait for it.
const MIRROR_PACE: Duration = Duration::from_millis(20);

/// Where the writer sends the audit records of each committed batch for the mirror.
type MirrorQueue = std::sync::mpsc::Sender<Vec<AppendedRecord>>;

/// Append committed audit records to the JSONL mirror on their own thread and connection, so
/// the writer's next batch does not wait for the mirror's file lock, writes and checkpoint
/// fsyncs. Records arrive in commit order; whatever queued meanwhile is written in one step.
/// `None` (no mirror configured, or the thread could not start): the writer mirrors itself.
fn spawn_mirror(shared: &Shared) -> Option<MirrorQueue> {
    let mirror = shared.options.audit_mirror.clone()?;
    // Opened here for the reason the checkpointer's is (see `spawn`).
    let conn = match super::open_connection(&shared.path, &shared.options) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the audit mirror connection; the writer mirrors");
            return None;
        }
    };
    let (queue, queued) = std::sync::mpsc::channel::<Vec<AppendedRecord>>();
    let spawned = std::thread::Builder::new()
        .name("wardhook-mirror".into())
        .spawn(move || {
            // Ends when the writer drops the sender, after writing what it was sent.
            while let Ok(mut records) = queued.recv() {
                while let Ok(more) = queued.try_recv() {
                    records.extend(more);
                }
                // The chain in the database is authoritative; a mirror that falls behind
                // catches up on its next write.
                if let Err(e) = mirror.write(&conn, &records) {
                    tracing::error!(error = %e, "audit mirror write failed");
                }
                std::thread::sleep(MIRROR_PACE);
            }
        });
    match spawned {
        Ok(_) => Some(queue),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the audit mirror thread; the writer mirrors");
            None
        }
    }
}

/// `PRAGMA wal_checkpoint(mode)`: (frames in the WAL, frames checkpointed).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

fn run(
    mut conn: Connection,
    shared: &Shared,
    mut rx: mpsc::Receiver<Command>,
    checkpointer: Option<(std::sync::mpsc::Sender<()>, Arc<AtomicI64>)>,
    mirror: Option<MirrorQueue>,
    dedup: DedupIndex,
) {
    let max_batch = shared.options.max_batch.max(1);
    let mut cache = WriteKeyCache::new();
    let mut batch: Vec<Command> = Vec::with_capacity(max_batch);
    // Sub-journals (one per savepoint on the slow path) and temp b-trees stay in memory.
    if let Err(e) = conn.pragma_update(None, "temp_store", "MEMORY") {
        tracing::warn!(error = %e, "cannot set temp_store");
    }
    let restart_frames = shared.options.wal_restart_frames.max(1);
    let _ = conn.pragma_update(None, "journal_size_limit", wal_size_limit(restart_frames));
    let checkpointer =
        checkpointer.and_then(
            |c| match conn.pragma_update(None, "wal_autocheckpoint", 0) {
                Ok(()) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot turn off automatic checkpoints");
                    None
                }
            },
        );
    let mut state = WriterState {
        cache: &mut cache,
        last_key: None,
        mirror,
        dedup,
    };
    // Ends when every Store clone (every sender) is dropped.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        // A panic in one batch (a bug, or a write of another stage) must not take the writer
        // with it: intake would answer 503 until a restart. The transaction rolled back as it
        // unwound; its requests get 503 (the senders retry) and the writer takes the next.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit_batch(&mut conn, shared, &mut state, &mut batch);
        }));
        if step.is_err() {
            tracing::error!(
                requests = batch.len(),
                "store commit panicked; answering unavailable and going on"
            );
            state.cache.clear();
            state.last_key = None;
            state.dedup.abandon();
            let mut answers = Answers::default();
            for command in batch.drain(..) {
                reply(
                    &mut answers,
                    command,
                    Err(StoreError::Unavailable("internal error")),
                );
            }
            continue;
        }
        if let Some((_, frames)) = &checkpointer {
            if frames.load(Ordering::Relaxed) >= restart_frames {
                frames.store(0, Ordering::Relaxed);
                if let Err(e) = checkpoint(&conn, "PASSIVE") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        }
    }
    // Dropping the sender stops the checkpointer after one last checkpoint.
    drop(checkpointer);
}

/// What the writer keeps between requests and batches.
struct WriterState<'a> {
    cache: &'a mut WriteKeyCache,
    /// (period, generation, key id) of the data key the current batch sealed with.
    last_key: Option<(String, i64, i64)>,
    /// The mirror thread's queue, if it runs.
    mirror: Option<MirrorQueue>,
    /// Which deliveries are stored, for the dedup check.
    dedup: DedupIndex,
}

enum Attempt {
    Done(Vec<Result<Answer, StoreError>>),
    /// A request failed on its own in a batch run without savepoints: run it again with them.
    Retry,
}

/// Commit `batch` in one transaction and answer every request: see the module docs.
fn commit_batch(
    conn: &mut Connection,
    shared: &Shared,
    state: &mut WriterState<'_>,
    batch: &mut Vec<Command>,
) {
    let mut audit = Vec::with_capacity(batch.len());
    match run_isolating_failures(conn, &shared.keyring, state, batch, &mut audit) {
        Ok(Attempt::Done(answers)) => answer_committed(conn, shared, state, batch, answers, audit),
        other => answer_unavailable(shared, state, batch, other.err()),
    }
}

/// Run the batch without savepoints; if a request failed on its own, run it again with a
/// savepoint per request so only that one fails.
fn run_isolating_failures(
    conn: &mut Connection,
    keyring: &Keyring,
    state: &mut WriterState<'_>,
    batch: &[Command],
    audit: &mut Vec<AppendedRecord>,
) -> Result<Attempt, StoreError> {
    let result = run_batch(conn, keyring, state, batch, audit, false);
    if !matches!(result, Ok(Attempt::Retry)) {
        return result;
    }
    audit.clear();
    // Key rows and deliveries created in the rolled-back attempt are gone with it.
    forget_uncommitted_keys(state);
    state.dedup.abandon();
    run_batch(conn, keyring, state, batch, audit, true)
}

/// Key rows created in a rolled-back transaction or savepoint are gone: drop the cached keys
/// so the next request looks them up (or creates them) again.
fn forget_uncommitted_keys(state: &mut WriterState<'_>) {
    state.cache.clear();
    state.last_key = None;
}

/// The batch is committed: mark storage healthy, publish the data key it used, answer every
/// request, then mirror its audit records.
fn answer_committed(
    conn: &Connection,
    shared: &Shared,
    state: &mut WriterState<'_>,
    batch: &mut Vec<Command>,
    answers: Vec<Result<Answer, StoreError>>,
    audit: Vec<AppendedRecord>,
) {
    shared.healthy.store(true, Ordering::Release);
    publish_key(shared, state);
    // Answer first: the ack waits for the fsync'd commit, not for the mirror.
    let mut replies = Answers::default();
    for (command, answer) in batch.drain(..).zip(answers) {
        reply(&mut replies, command, answer);
    }
    replies.send();
    if audit.is_empty() {
        return;
    }
    let audit = match &state.mirror {
        Some(queue) => match queue.send(audit) {
            Ok(()) => return,
            // The mirror thread is gone (it panicked): mirror here instead.
            Err(std::sync::mpsc::SendError(audit)) => {
                state.mirror = None;
                audit
            }
        },
        None => audit,
    };
    // The chain in the database is authoritative; a mirror that falls behind catches up
    // on its next write, so a mirror error must not turn a committed delivery into a 503.
    // The mirror may read records other processes committed before these from `conn`.
    if let Some(mirror) = &shared.options.audit_mirror {
        if let Err(e) = mirror.write(conn, &audit) {
            tracing::error!(error = %e, "audit mirror write failed");
        }
    }
}

/// Nothing of the batch was stored (`error`, or a request failing even in its savepoint run):
/// mark storage unhealthy and answer every request `Unavailable`, so the senders retry.
fn answer_unavailable(
    shared: &Shared,
    state: &mut WriterState<'_>,
    batch: &mut Vec<Command>,
    error: Option<StoreError>,
) {
    shared.healthy.store(false, Ordering::Release);
    // Key rows and deliveries created in the failed transaction are gone with it.
    forget_uncommitted_keys(state);
    state.dedup.abandon();
    let reason = match &error {
        Some(StoreError::Unavailable(reason)) => *reason,
        _ => "storage error",
    };
    if let Some(e) = &error {
        tracing::error!(error = %e, requests = batch.len(), "store commit failed; answering unavailable");
    }
    let mut answers = Answers::default();
    for command in batch.drain(..) {
        reply(&mut answers, command, Err(StoreError::Unavailable(reason)));
    }
}

/// After a commit, let request tasks seal with the key this batch used (now committed).
fn publish_key(shared: &Shared, state: &mut WriterState<'_>) {
    let Some((period, generation, key_id)) = state.last_key.take() else {
        return;
    };
    if shared.write_key.key_id() == Some(key_id) {
        return;
    }
    if let Some((id, key)) = state.cache.get(&(period.clone(), generation)) {
        if *id == key_id {
            shared.write_key.set(Some(PublishedKey {
                period,
                key_id,
                key: key.clone(),
            }));
        }
    }
}

/// Send each waiting request its answer; an intake's goes with the rest of the batch to its
/// thread's hub, if it came with one (sent when `answers` is). A requester that went away
/// (client hung up) is not an error: its delivery is committed and a retry will be answered
/// `duplicate`.
fn reply(answers: &mut Answers, command: Command, answer: Result<Answer, StoreError>) {
    match command {
        Command::Intake(req) => {
            let IntakeRequest { reply, via, .. } = *req;
            let answer = answer.and_then(|a| match a {
                Answer::Intake(o) => Ok(o),
                _ => Err(StoreError::Corrupt(
                    "writer answered the wrong request kind",
                )),
            });
            answers.answer(via.as_ref(), reply, answer);
        }
        Command::Quarantine(req) => {
            let _ = req.reply.send(answer.and_then(|a| match a {
                Answer::Quarantine(q) => Ok(q),
                _ => Err(StoreError::Corrupt(
                    "writer answered the wrong request kind",
                )),
            }));
        }
        Command::Probe(reply) | Command::Audit(_, reply) | Command::Apply(_, reply) => {
            let _ = reply.send(answer.map(|_| ()));
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    keyring: &Keyring,
    state: &mut WriterState<'_>,
    batch: &[Command],
    audit: &mut Vec<AppendedRecord>,
    savepoints: bool,
) -> Result<Attempt, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read every batch: `keys rotate` in another process may have bumped it.
    let generation = keys::current_generation(&tx)?;
    state.dedup.begin(&tx)?;
    // The chain head is read once per transaction and then kept in memory.
    let mut chain = ChainCursor::default();
    let mut answers = Vec::with_capacity(batch.len());
    for command in batch {
        if savepoints {
            tx.execute_batch("SAVEPOINT item")?;
        }
        let audit_len = audit.len();
        let dedup_mark = state.dedup.mark();
        let mut step = Step {
            tx: &tx,
            keyring,
            chain: &mut chain,
            audit,
        };
        let result = run_command(&mut step, state, generation, command);
        match result {
            Ok(answer) => {
                if savepoints {
                    tx.execute_batch("RELEASE item")?;
                }
                answers.push(Ok(answer));
            }
            // The whole transaction is lost (SQLite may already have rolled it back).
            Err(e) if e.is_unavailable() => return Err(e),
            // Dropping `tx` rolls the attempt back; the caller retries with savepoints.
            Err(_) if !savepoints => return Ok(Attempt::Retry),
            Err(e) => {
                tx.execute_batch("ROLLBACK TO item; RELEASE item")?;
                audit.truncate(audit_len);
                state.dedup.forget_since(dedup_mark);
                chain.forget();
                // A key created inside the rolled-back savepoint is gone too.
                forget_uncommitted_keys(state);
                answers.push(Err(e));
            }
        }
    }
    tx.commit()?;
    state.dedup.committed();
    Ok(Attempt::Done(answers))
}

/// What one request's writes work with inside the batch's transaction.
struct Step<'s, 't> {
    tx: &'s Transaction<'t>,
    keyring: &'s Keyring,
    chain: &'s mut ChainCursor,
    /// The batch's appended audit records, mirrored after the commit.
    audit: &'s mut Vec<AppendedRecord>,
}

impl Step<'_, '_> {
    /// Link `body` onto the audit chain; only this and the MAC run on the writer thread.
    fn append(&mut self, body: RecordBody) -> Result<(), StoreError> {
        let appended = self.chain.append(self.tx, self.keyring, body)?;
        self.audit.push(appended);
        Ok(())
    }

    fn record(&mut self, event: &AuditEvent<'_>) -> Result<(), StoreError> {
        self.append(RecordBody::of(&to_record(event)))
    }
}

/// One request's writes inside the batch's transaction.
fn run_command(
    step: &mut Step<'_, '_>,
    state: &mut WriterState<'_>,
    generation: i64,
    command: &Command,
) -> Result<Answer, StoreError> {
    match command {
        Command::Intake(req) => intake_one(step, state, generation, req).map(Answer::Intake),
        Command::Quarantine(req) => {
            quarantine_one(step, state.cache, generation, req).map(Answer::Quarantine)
        }
        Command::Probe(_) => probe(step.tx).map(|()| Answer::Probe),
        Command::Audit(record, _) => step.append(RecordBody::of(record)).map(|()| Answer::Probe),
        Command::Apply(write, _) => {
            // Another stage's write may append to the chain itself: read the head again.
            step.chain.forget();
            let record = write(step.tx, step.keyring);
            step.chain.forget();
            if let Some(record) = record? {
                step.append(RecordBody::of(&record))?;
            }
            Ok(Answer::Probe)
        }
    }
}

fn intake_one(
    step: &mut Step<'_, '_>,
    state: &mut WriterState<'_>,
    generation: i64,
    req: &IntakeRequest,
) -> Result<IntakeOutcome, StoreError> {
    let (tx, keyring) = (step.tx, step.keyring);
    let input = &req.input;
    let p = &req.prepared.delivery;
    let source = input.source.as_str();
    let facts = IntakeFacts {
        source,
        call_ref: p.call_ref.as_deref(),
        event_type: &p.event_type,
        remote_addr: input.client_ip,
        key_id: None,
        jobs: req.jobs.len(),
    };

    if let Some(first) = state.dedup.find(tx, source, &p.dedup)? {
        let outcome = IntakeOutcome::Duplicate { delivery_id: first };
        step.record(&intake_event(&facts, &outcome))?;
        return Ok(outcome);
    }

    let id = p.id.as_str();
    let (key_id, key) = keys::key_for_write(tx, keyring, state.cache, &p.period, generation)?;
    if state.last_key.as_ref().map(|k| k.2) != Some(key_id) {
        state.last_key = Some((p.period.clone(), generation, key_id));
    }
    // Sealed on the request task under the published key, unless the writer's key for the
    // period has changed since (day boundary, `keys rotate`, first delivery after start).
    let prepared = match &req.prepared.sealed {
        Some((k, sealed, record)) if *k == key_id => Some((sealed, record)),
        _ => None,
    };
    let sealed = match prepared {
        Some((sealed, _)) => Cow::Borrowed(sealed),
        None => Cow::Owned(p.seal(&key, key_id, source)?),
    };
    tx.prepare_cached(
        "INSERT INTO deliveries (id, source, event_type, dedup_kind, dedup_index, call_ref,
                                 received_at, status, key_id, nonce, ciphertext, caller_ref)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'accepted', ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        id,
        source,
        p.event_type,
        p.dedup_kind,
        p.dedup,
        p.call_ref,
        req.prepared.received,
        key_id,
        sealed.nonce,
        sealed.ciphertext,
        p.caller_ref
    ])?;
    state.dedup.admit(&p.dedup, tx.last_insert_rowid());
    let mut insert_job = tx.prepare_cached(
        "INSERT OR IGNORE INTO jobs (delivery_id, handler, position, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?;
    for (position, job) in req.jobs.iter().enumerate() {
        insert_job.execute(params![
            id,
            job.handler,
            position as i64,
            req.prepared.received
        ])?;
    }
    let outcome = IntakeOutcome::Accepted {
        delivery_id: id.to_owned(),
    };
    match prepared {
        Some((_, record)) => step.append(record.clone())?,
        None => step.record(&intake_event(
            &IntakeFacts {
                key_id: Some(key_id),
                ..facts
            },
            &outcome,
        ))?,
    }
    Ok(outcome)
}

fn quarantine_one(
    step: &mut Step<'_, '_>,
    cache: &mut WriteKeyCache,
    generation: i64,
    req: &QuarantineRequest,
) -> Result<QuarantineId, StoreError> {
    let (tx, keyring) = (step.tx, step.keyring);
    let input = &req.input;
    let source = input.source.as_str();
    let body_index = quarantine_body_index(keyring, &input.body);
    let existing: Option<String> = tx
        .prepare_cached("SELECT id FROM quarantine WHERE source = ?1 AND body_index = ?2 AND status = 'quarantined'")?
        .query_row(params![source, body_index], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        // A retry of the same unparseable body: it is already kept; answer with its entry.
        return Ok(QuarantineId(id));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let period = period_of(req.received_at);
    let (key_id, key) = keys::key_for_write(tx, keyring, cache, &period, generation)?;
    let sealed = seal_quarantine(&key, key_id, &id, input)?;
    tx.prepare_cached(
        "INSERT INTO quarantine (id, source, reason, received_at, status, key_id, nonce, ciphertext,
                                 body_index)
         VALUES (?1, ?2, ?3, ?4, 'quarantined', ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        source,
        req.reason,
        db_time(req.received_at),
        key_id,
        sealed.nonce,
        sealed.ciphertext,
        body_index
    ])?;
    step.record(&quarantined_event(input, &id, req.reason_code, key_id))?;
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
