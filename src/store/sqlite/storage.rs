//! The SQLite store behind the [`Storage`] trait.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wardhook_sdk::{AppData, Event};

use super::Store;
use crate::audit::AuditRecord;
use crate::normalize::{IntakeInput, NormalizeError, Normalized};
use crate::store::backend::{Storage, StoreFuture};
use crate::store::caller_phone::CallerPhone;
use crate::store::types::{
    AttemptRecord, AttemptSummary, ClaimedJob, DeadFilter, DeadLetter, DeliverySummary,
    IntakeOutcome, JobSpec, ListFilter, NextStep, Predecessors, PurgeProgress, PurgeReport,
    QuarantineEntry, QuarantineId, QuarantineSummary, Reply, Requester,
};
use crate::store::StoreError;

/// Run blocking SQLite work off the async executor.
pub(super) fn blocking<T, F>(store: &Store, work: F) -> StoreFuture<'static, T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| StoreError::Unavailable("storage task failed"))?
    })
}

/// The SQLite store delegates to its existing functions: intake, quarantine and audit go
/// through the writer thread's group commit, the queue functions run on the blocking pool.
impl Storage for Store {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    fn console(&self) -> &dyn crate::store::Console {
        self
    }

    fn audit_forward_store(&self) -> Arc<dyn crate::audit::forward::ForwardStore> {
        Arc::new(super::forward::SqliteForward::new(self.clone()))
    }

    fn artifacts(&self) -> &dyn crate::store::artifacts::ArtifactStore {
        self
    }

    fn alerts(&self) -> &dyn crate::store::alerts::AlertStore {
        self
    }

    fn intake<'a>(
        &'a self,
        input: IntakeInput,
        normalized: &'a mut Normalized,
        jobs: Vec<JobSpec>,
    ) -> StoreFuture<'a, IntakeOutcome> {
        Box::pin(Store::intake(self, input, normalized, jobs))
    }

    fn quarantine<'a>(
        &'a self,
        input: IntakeInput,
        reason: &'a NormalizeError,
    ) -> StoreFuture<'a, QuarantineId> {
        Box::pin(Store::quarantine(self, input, reason))
    }

    fn check_ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(Store::check_ready(self))
    }

    fn record_audit(&self, record: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(Store::record_audit(self, record))
    }

    fn recover_orphaned(&self) -> StoreFuture<'_, u64> {
        blocking(self, super::jobs::reset_orphaned)
    }

    fn claim_next(
        &self,
        exclude: Vec<String>,
        lease: Duration,
        predecessors: Arc<Predecessors>,
    ) -> StoreFuture<'_, Option<ClaimedJob>> {
        blocking(self, move |s| {
            super::jobs::claim_next(s, &exclude, lease, &predecessors)
        })
    }

    fn load_for_dispatch<'a>(&'a self, job: &'a ClaimedJob) -> StoreFuture<'a, (Event, AppData)> {
        let job = job.clone();
        blocking(self, move |s| super::jobs::load_for_dispatch(s, &job))
    }

    fn finish_attempt(
        &self,
        job: ClaimedJob,
        record: AttemptRecord,
        next: NextStep,
    ) -> StoreFuture<'_, ()> {
        blocking(self, move |s| {
            super::jobs::finish_attempt(s, &job, &record, next)
        })
    }

    fn queue_stats(&self) -> StoreFuture<'_, (u64, Option<Duration>)> {
        blocking(self, super::jobs::queue_stats)
    }

    fn record_reply(
        &self,
        delivery_id: String,
        source: String,
        reply: Reply,
        latency_ms: i64,
        caller_phone: Option<CallerPhone>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            super::realtime::record_reply(
                self,
                &delivery_id,
                &source,
                &reply,
                latency_ms,
                caller_phone,
            )
            .await
        })
    }

    fn load_reply(&self, delivery_id: String) -> StoreFuture<'_, Option<Reply>> {
        blocking(self, move |s| super::realtime::load_reply(s, &delivery_id))
    }

    fn list_deliveries(&self, filter: ListFilter) -> StoreFuture<'_, Vec<DeliverySummary>> {
        blocking(self, move |s| super::reads::list_deliveries(s, &filter))
    }

    fn show_delivery(&self, id: String, who: Requester) -> StoreFuture<'_, Event> {
        blocking(self, move |s| super::reads::show_delivery(s, &id, &who))
    }

    fn list_quarantine(&self, filter: ListFilter) -> StoreFuture<'_, Vec<QuarantineSummary>> {
        blocking(self, move |s| super::reads::list_quarantine(s, &filter))
    }

    fn show_quarantine(&self, id: String, who: Requester) -> StoreFuture<'_, QuarantineEntry> {
        blocking(self, move |s| super::reads::show_quarantine(s, &id, &who))
    }

    fn replay(
        &self,
        delivery_id: String,
        handler: Option<String>,
        who: Requester,
    ) -> StoreFuture<'_, u64> {
        blocking(self, move |s| {
            super::jobs::replay(s, &delivery_id, handler.as_deref(), &who)
        })
    }

    fn list_dead(&self, filter: DeadFilter) -> StoreFuture<'_, Vec<DeadLetter>> {
        blocking(self, move |s| super::jobs::list_dead(s, &filter))
    }

    fn job_attempts(&self, job_id: i64) -> StoreFuture<'_, Vec<AttemptSummary>> {
        blocking(self, move |s| super::jobs::job_attempts(s, job_id))
    }

    fn retry_dead(&self, filter: DeadFilter, who: Requester) -> StoreFuture<'_, u64> {
        blocking(self, move |s| super::jobs::retry_dead(s, &filter, &who))
    }

    fn purge(&self, cutoff: DateTime<Utc>, who: Requester) -> StoreFuture<'_, PurgeReport> {
        blocking(self, move |s| super::purge_older_than(s, cutoff, &who))
    }

    fn purge_with_progress(
        &self,
        cutoff: DateTime<Utc>,
        who: Requester,
        mut progress: Box<dyn FnMut(PurgeProgress) + Send>,
    ) -> StoreFuture<'_, PurgeReport> {
        blocking(self, move |s| {
            super::purge_with_progress(s, cutoff, &who, &mut *progress)
        })
    }

    fn checkpoint_audit(&self) -> StoreFuture<'_, ()> {
        Box::pin(Store::checkpoint_audit(self))
    }
}
