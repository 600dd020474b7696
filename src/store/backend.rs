//! The storage boundary: what a serving node needs from its database on the delivery path,
//! whichever database that is.
//!
//! Two backends implement [`Storage`]: the embedded SQLite [`super::Store`] (one server, one file,
//! group commit on a writer thread) and [`super::postgres::PgStore`] (several stateless nodes
//! sharing one PostgreSQL). Both keep the same guarantees — dedup, encryption and enqueue in
//! one transaction answered only after commit, `Unavailable` when storage cannot commit, one
//! audit record per change in the same transaction — and the same encrypted formats, so the
//! code above this trait cannot tell them apart.
//!
//! Methods return boxed futures rather than using `async fn` in the trait so the trait stays
//! object-safe: the listener and the dispatcher hold an `Arc<dyn Storage>` chosen at start-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wardhook_sdk::{AppData, Event};

use super::caller_phone::CallerPhone;
use super::types::{
    AttemptRecord, AttemptSummary, ClaimedJob, DeadFilter, DeadLetter, DeliverySummary,
    IntakeOutcome, JobSpec, ListFilter, NextStep, PurgeProgress, PurgeReport, QuarantineEntry,
    QuarantineId, QuarantineSummary, Reply, Requester,
};
use super::StoreError;
use crate::audit::AuditRecord;
use crate::normalize::{IntakeInput, NormalizeError, Normalized};

/// The future every [`Storage`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

pub use super::types::Predecessors;

/// What a serving node asks of its database. See the module docs.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Which backend this is (`sqlite` or `postgres`), for logs and refusals.
    fn backend_name(&self) -> &'static str;

    /// The chain and durable cursor audit forwarding uses (`audit::forward`): the file's chain
    /// on SQLite, this node's on PostgreSQL. Call from within the runtime.
    fn audit_forward_store(&self) -> Arc<dyn crate::audit::forward::ForwardStore>;

    /// What the operator console reads and writes (tokens, health numbers, audit reads).
    fn console(&self) -> &dyn super::Console;

    /// Captured artifacts (call recordings, transcripts): their rows and sealed file keys.
    fn artifacts(&self) -> &dyn super::artifacts::ArtifactStore;

    /// Console alerts: their rows, the facts the built-in rules read, and which node evaluates.
    fn alerts(&self) -> &dyn super::alerts::AlertStore;

    /// Deduplicate, encrypt and commit a normalized delivery with one job per matched handler,
    /// and its audit record; answer only after the commit is durable.
    ///
    /// The event `normalized` carries (built once, by normalize) is the one sealed, not a copy;
    /// on success it carries the delivery id (for a duplicate, the first delivery's), so a
    /// real-time route's handlers can use it as it was stored.
    fn intake<'a>(
        &'a self,
        input: IntakeInput,
        normalized: &'a mut Normalized,
        jobs: Vec<JobSpec>,
    ) -> StoreFuture<'a, IntakeOutcome>;

    /// Keep an authentic delivery that could not be normalized, encrypted. A retry of the same
    /// body gets the same entry back.
    fn quarantine<'a>(
        &'a self,
        input: IntakeInput,
        reason: &'a NormalizeError,
    ) -> StoreFuture<'a, QuarantineId>;

    /// For `/readyz`: Ok when a small write transaction can commit now.
    fn check_ready(&self) -> StoreFuture<'_, ()>;

    /// Append a standalone audit record (rejection, start/stop, reload).
    fn record_audit(&self, record: AuditRecord) -> StoreFuture<'_, ()>;

    /// Before workers start: make jobs a dead process left `running` claimable again. Returns
    /// how many were re-queued.
    fn recover_orphaned(&self) -> StoreFuture<'_, u64>;

    /// Claim the next due job whose handler is not in `exclude`, with a lease of `lease`. A job
    /// whose `predecessors` (the route plan's ordering) are not done is parked as `waiting`.
    fn claim_next(
        &self,
        exclude: Vec<String>,
        lease: Duration,
        predecessors: Arc<Predecessors>,
    ) -> StoreFuture<'_, Option<ClaimedJob>>;

    /// Decrypt a claimed job's event and the outputs of the delivery's finished handlers.
    fn load_for_dispatch<'a>(&'a self, job: &'a ClaimedJob) -> StoreFuture<'a, (Event, AppData)>;

    /// Record an attempt and move the job to `next` (done, retry, dead letter), with its audit
    /// records, in one transaction.
    fn finish_attempt(
        &self,
        job: ClaimedJob,
        record: AttemptRecord,
        next: NextStep,
    ) -> StoreFuture<'_, ()>;

    /// Queue depth (pending + waiting + running) and the age of the oldest due job.
    fn queue_stats(&self) -> StoreFuture<'_, (u64, Option<Duration>)>;

    /// Keep the reply a real-time route gave for `delivery_id` (the first one wins), with its
    /// audit record, so a retry gets the same answer. `caller_phone`, a number the route's
    /// handlers' outputs named, indexes the delivery for "find a call" in the same transaction
    /// when the event named no caller of its own.
    fn record_reply(
        &self,
        delivery_id: String,
        source: String,
        reply: Reply,
        latency_ms: i64,
        caller_phone: Option<CallerPhone>,
    ) -> StoreFuture<'_, ()>;

    /// The reply stored for `delivery_id`, if any.
    fn load_reply(&self, delivery_id: String) -> StoreFuture<'_, Option<Reply>>;

    /// `deliveries list`: metadata of stored deliveries, newest first; nothing decrypted.
    fn list_deliveries(&self, filter: ListFilter) -> StoreFuture<'_, Vec<DeliverySummary>>;

    /// `deliveries show`: decrypt one delivery's event, audited (`payload_read`) with who asked
    /// in the same transaction.
    fn show_delivery(&self, id: String, who: Requester) -> StoreFuture<'_, Event>;

    /// `quarantine list`: metadata of quarantined deliveries, newest first.
    fn list_quarantine(&self, filter: ListFilter) -> StoreFuture<'_, Vec<QuarantineSummary>>;

    /// `quarantine show`: decrypt one quarantined body, audited like [`Storage::show_delivery`].
    fn show_quarantine(&self, id: String, who: Requester) -> StoreFuture<'_, QuarantineEntry>;

    /// `deliveries replay`: run the delivery's handlers again (all finished or dead jobs, or
    /// one handler's, created if missing), audited with who asked. Returns the jobs re-queued.
    fn replay(
        &self,
        delivery_id: String,
        handler: Option<String>,
        who: Requester,
    ) -> StoreFuture<'_, u64>;

    /// The dead letters matching `filter`, newest first (`dlq list`).
    fn list_dead(&self, filter: DeadFilter) -> StoreFuture<'_, Vec<DeadLetter>>;

    /// Every attempt of a job, oldest first (`dlq show`).
    fn job_attempts(&self, job_id: i64) -> StoreFuture<'_, Vec<AttemptSummary>>;

    /// Put the matching dead letters back in the queue with a fresh schedule, audited with who
    /// asked (`dlq retry`). Returns how many.
    fn retry_dead(&self, filter: DeadFilter, who: Requester) -> StoreFuture<'_, u64>;

    /// `purge --older-than`: delete payloads received before `cutoff` and destroy the data keys
    /// of the periods that ended before it, audited with who asked.
    fn purge(&self, cutoff: DateTime<Utc>, who: Requester) -> StoreFuture<'_, PurgeReport>;

    /// Sign an audit checkpoint of this node's chain now, after bringing its JSONL mirror up to
    /// date (at start and stop), so truncating the newest records is detectable even when
    /// fewer than a checkpoint interval were written. Nothing when no mirror is configured.
    fn checkpoint_audit(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// [`Storage::purge`], reporting progress as it goes. A backend that purges in one step
    /// reports nothing.
    fn purge_with_progress(
        &self,
        cutoff: DateTime<Utc>,
        who: Requester,
        progress: Box<dyn FnMut(PurgeProgress) + Send>,
    ) -> StoreFuture<'_, PurgeReport> {
        drop(progress);
        self.purge(cutoff, who)
    }
}
