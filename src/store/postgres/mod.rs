//! The PostgreSQL backend of [`Storage`]: several stateless wardhook nodes on one database.
//!
//! Same guarantees and the same encrypted formats as the SQLite store, with the concurrency
//! done by the database rather than by one writer thread:
//! - **dedup** by the unique index on `(source, dedup_index)` and `INSERT … ON CONFLICT DO
//!   NOTHING`: of two identical deliveries racing on two nodes, one inserts and the other
//!   waits for it and answers `duplicate` with its id ([`intake`]);
//! - **group commit**: a node's intakes queue for one committer task, which stores all those
//!   waiting in one transaction (one WAL flush, a fixed number of statements) and answers them
//!   after the commit ([`committer`]);
//! - **jobs** claimed with `FOR UPDATE SKIP LOCKED` and a lease; a job whose lease expired
//!   (its node died) is claimable by any node, with the same idempotency key ([`jobs`]);
//! - **console**: tokens, health numbers and audit reads for the operator console, across every
//!   node ([`console`]);
//! - **audit**: one MAC chain per node, each starting from a genesis bound to the node id
//!   ([`audit`], `docs/AUDIT.md`);
//! - **migrations** applied once, under a transaction-scoped advisory lock ([`schema`]);
//! - **data keys** per UTC day and generation, created with `ON CONFLICT` so every node uses
//!   the same key for a period ([`keys`]).
//!
//! Commits are durable before the answer because PostgreSQL's `synchronous_commit` (on by
//! default) flushes the WAL at commit; with synchronous replication it also waits for the
//! standby. Connection loss, pool exhaustion, a full disk or a read-only (failed-over) server
//! are [`StoreError::Unavailable`]: 503 with `Retry-After`, readiness red.

mod alerts;
mod artifacts;
mod audit;
mod audit_chain;
mod committer;
mod console;
mod console_audit;
mod console_bulk;
mod console_calls;
mod dead;
mod diagnose;
mod error;
pub mod forward;
mod health;
mod intake;
mod jobs;
mod keys;
mod maintenance;
mod mirror;
mod offline;
mod phone_backfill;
mod purge;
mod read;
mod realtime;
mod relay_buffer;
mod rotate;
mod schema;
#[cfg(test)]
pub(crate) mod testdb;
#[cfg(test)]
mod tests;
mod tokens;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use wardhook_sdk::{AppData, Event};

use super::backend::{Storage, StoreFuture};
use super::caller_phone::CallerPhone;
use super::types::{
    AttemptRecord, AttemptSummary, ClaimedJob, DeadFilter, DeadLetter, DeliverySummary,
    IntakeOutcome, JobSpec, ListFilter, NextStep, Predecessors, PurgeReport, QuarantineEntry,
    QuarantineId, QuarantineSummary, Reply, Requester,
};
use super::StoreError;
use crate::audit::AuditRecord;
use crate::crypto::Keyring;
use crate::normalize::{IntakeInput, NormalizeError, Normalized};

pub use audit::{verify_audit, NodeChainReport};
pub use audit_chain::{PgChain, PgRecords};
pub use maintenance::{PgMaintenance, BACKUP_PROCEDURE};
pub use mirror::MirrorTask;
pub use relay_buffer::PgRelayBuffer;
pub use schema::SCHEMA_VERSION as PG_SCHEMA_VERSION;

// The connection settings are plain config (`[storage.postgres]`, checked there).
pub use crate::config::{PgSettings, PgTls};

/// Why the PostgreSQL store could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgSetupError {
    /// The URL does not parse (its text is not echoed: it may hold a password).
    #[error("the postgres url is not a valid connection string")]
    Url,
    /// The CA file cannot be read or holds no usable certificate.
    #[error("cannot use postgres ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The pool could not be built.
    #[error("cannot build the postgres connection pool: {0}")]
    Pool(String),
}

/// State shared by every clone of a [`PgStore`].
struct Inner {
    pool: Pool,
    keyring: Arc<Keyring>,
    node_id: String,
    /// This node's audit chain genesis (see [`audit::node_genesis`]).
    genesis: String,
    keys: keys::KeyCache,
    /// False after an unavailable-class failure, until a write succeeds again.
    healthy: AtomicBool,
    /// Commits queued intakes in groups ([`committer`]).
    committer: committer::Committer,
    /// This node's JSONL mirror and signed checkpoints, if configured ([`mirror`]).
    mirror: Option<mirror::NodeMirror>,
    /// The runtime the store was opened on, where every pooled connection is created (see
    /// [`PgStore::client`]).
    home: tokio::runtime::Handle,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node_id", &self.node_id)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL store. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl PgStore {
    /// Connect, apply migrations (once across nodes) and make sure this node's audit chain has
    /// its head row.
    pub async fn open(settings: &PgSettings, keyring: Keyring) -> Result<Self, StoreError> {
        Self::open_with_mirror(settings, keyring, None).await
    }

    /// [`PgStore::open`], mirroring this node's committed audit records to `mirror` (its JSONL
    /// files and, if the mirror has a checkpoint policy, signed checkpoints) from a background
    /// task woken after each successful operation. See [`mirror`]. The task runs until every
    /// clone of the store is dropped; use [`PgStore::open_with_mirror_task`] to stop it at a
    /// chosen moment.
    pub async fn open_with_mirror(
        settings: &PgSettings,
        keyring: Keyring,
        mirror: Option<Arc<crate::audit::Mirror>>,
    ) -> Result<Self, StoreError> {
        Ok(Self::open_with_mirror_task(settings, keyring, mirror)
            .await?
            .0)
    }

    /// [`PgStore::open_with_mirror`], returning the mirror task (when there is a mirror) so
    /// that a graceful shutdown can stop it and wait for its last write before the final
    /// checkpoint.
    #[tracing::instrument(skip_all, fields(node_id = %settings.node_id))]
    pub async fn open_with_mirror_task(
        settings: &PgSettings,
        keyring: Keyring,
        mirror: Option<Arc<crate::audit::Mirror>>,
    ) -> Result<(Self, Option<MirrorTask>), StoreError> {
        let store = Self::build(settings, keyring, mirror)?;
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        artifacts::migrate(&mut client).await?;
        alerts::migrate(&mut client).await?;
        audit::ensure_head(&client, &store.inner.node_id, &store.inner.genesis).await?;
        drop(client);
        let task = mirror::start(&store);
        Ok((store, task))
    }

    fn build(
        settings: &PgSettings,
        keyring: Keyring,
        mirror: Option<Arc<crate::audit::Mirror>>,
    ) -> Result<Self, StoreError> {
        let pool = build_pool(settings).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let genesis = audit::node_genesis(&keyring, &settings.node_id);
        let keyring = Arc::new(keyring);
        let keys = keys::KeyCache::default();
        let committer = committer::Committer::spawn(committer::Context {
            pool: pool.clone(),
            keyring: Arc::clone(&keyring),
            node_id: settings.node_id.clone(),
            generation: Arc::clone(&keys.generation),
            #[cfg(test)]
            panic_after_insert: Arc::default(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                keyring,
                node_id: settings.node_id.clone(),
                genesis,
                keys,
                healthy: AtomicBool::new(true),
                committer,
                mirror: mirror.map(mirror::NodeMirror::new),
                home: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// Copy this node's committed audit records not yet in its mirror now (an offline command
    /// after its own appends); nothing without a mirror.
    pub async fn mirror_catch_up(&self) -> Result<(), StoreError> {
        mirror::catch_up(self).await
    }

    /// Copy this node's committed audit records not yet in `mirror` now, and return once they
    /// are written. An offline command calls this after its appends instead of running the
    /// background task (whose work could still be in flight when the command's runtime shuts
    /// down).
    pub async fn mirror_catch_up_to(
        &self,
        mirror: &Arc<crate::audit::Mirror>,
    ) -> Result<(), StoreError> {
        mirror::catch_up_into(self, Arc::clone(mirror)).await
    }

    /// Stop taking intakes and wait until every queued one is committed or failed (see
    /// `committer::Committer::close`). For a graceful stop, after the listener has stopped.
    pub async fn close_intake(&self) {
        self.inner.committer.close().await;
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// A pooled connection; pool timeouts and connection failures are `Unavailable`.
    ///
    /// The pool is asked from a task on the store's own runtime: a connection is driven by a
    /// task spawned where it is created, and a request handler runs on a listener worker's
    /// runtime, which ends at a graceful stop — taking every connection it created with it, so
    /// that the intakes still queued and the stop record would fail on dead connections.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let pool = self.inner.pool.clone();
        let got = self
            .inner
            .home
            .spawn(async move { pool.get().await })
            .await
            .map_err(|_| StoreError::Unavailable("the store's runtime has stopped"))?;
        got.map_err(|e| {
            let e = error::from_pool(e);
            self.note(&e);
            e
        })
    }

    /// A read-only snapshot of the whole database on `client` (repeatable read): a long read
    /// in pages sees none of the commits made meanwhile, so appends and intakes running beside
    /// it can neither break a verification nor shift an export's pages.
    pub(crate) async fn snapshot(
        client: &mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
        Ok(client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    }

    /// Remember an unavailable-class failure for readiness.
    fn note(&self, e: &StoreError) {
        if e.is_unavailable() {
            self.inner.healthy.store(false, Ordering::Release);
        }
    }

    /// Pass a result through, turning readiness red on an unavailable-class failure and green
    /// again on a success.
    fn track<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => {
                self.inner.healthy.store(true, Ordering::Release);
                // Whatever succeeded may have appended audit records: mirror them soon.
                if let Some(m) = &self.inner.mirror {
                    m.wake();
                }
            }
            Err(e) => self.note(e),
        }
        result
    }
}

/// Check that `settings` make a connection pool (the URL parses, the CA file holds usable
/// certificates) without connecting: what `check-config` can prove offline.
pub fn check_settings(settings: &PgSettings) -> Result<(), PgSetupError> {
    build_pool(settings).map(drop)
}

/// The pool: each connection verified with the configured TLS, at most `pool_size` of them,
/// and a bounded wait so a saturated or unreachable database answers 503 rather than hanging.
fn build_pool(settings: &PgSettings) -> Result<Pool, PgSetupError> {
    let mut config: tokio_postgres::Config = settings.url.parse().map_err(|_| PgSetupError::Url)?;
    config.application_name(format!("wardhook {}", settings.node_id));
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.wait_timeout);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &settings.tls {
        PgTls::Disable => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        PgTls::Require { ca_file } => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(ca_file)?);
            Manager::from_config(config, tls, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.wait_timeout))
        .recycle_timeout(Some(settings.wait_timeout))
        .build()
        .map_err(|e| PgSetupError::Pool(e.to_string()))
}

/// rustls client config for the database connection: the server certificate must chain to a
/// CA in `ca_file` and match the host name, as for any TLS peer.
fn client_tls(path: &std::path::Path) -> Result<rustls::ClientConfig, PgSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |reason: String| PgSetupError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Storage for PgStore {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn console(&self) -> &dyn crate::store::Console {
        self
    }

    fn audit_forward_store(&self) -> Arc<dyn crate::audit::forward::ForwardStore> {
        Arc::new(forward::PgForward::new(
            self,
            tokio::runtime::Handle::current(),
        ))
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
        Box::pin(async move { self.track(intake::intake(self, input, normalized, jobs).await) })
    }

    fn quarantine<'a>(
        &'a self,
        input: IntakeInput,
        reason: &'a NormalizeError,
    ) -> StoreFuture<'a, QuarantineId> {
        Box::pin(async move { self.track(intake::quarantine(self, input, reason).await) })
    }

    fn check_ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.track(intake::probe(self).await) })
    }

    fn record_audit(&self, record: AuditRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.track(audit::record_standalone(self, &record).await) })
    }

    fn recover_orphaned(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.track(jobs::recover_orphaned(self).await) })
    }

    fn claim_next(
        &self,
        exclude: Vec<String>,
        lease: Duration,
        predecessors: Arc<Predecessors>,
    ) -> StoreFuture<'_, Option<ClaimedJob>> {
        Box::pin(
            async move { self.track(jobs::claim_next(self, &exclude, lease, &predecessors).await) },
        )
    }

    fn load_for_dispatch<'a>(&'a self, job: &'a ClaimedJob) -> StoreFuture<'a, (Event, AppData)> {
        Box::pin(async move { self.track(jobs::load_for_dispatch(self, job).await) })
    }

    fn finish_attempt(
        &self,
        job: ClaimedJob,
        record: AttemptRecord,
        next: NextStep,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.track(jobs::finish_attempt(self, &job, &record, next).await) })
    }

    fn queue_stats(&self) -> StoreFuture<'_, (u64, Option<Duration>)> {
        Box::pin(async move { self.track(jobs::queue_stats(self).await) })
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
            let stored = realtime::record_reply(
                self,
                &delivery_id,
                &source,
                &reply,
                latency_ms,
                caller_phone,
            )
            .await;
            self.track(stored)
        })
    }

    fn load_reply(&self, delivery_id: String) -> StoreFuture<'_, Option<Reply>> {
        Box::pin(async move { self.track(realtime::load_reply(self, &delivery_id).await) })
    }

    fn list_deliveries(&self, filter: ListFilter) -> StoreFuture<'_, Vec<DeliverySummary>> {
        Box::pin(async move { self.track(read::list_deliveries(self, &filter).await) })
    }

    fn show_delivery(&self, id: String, who: Requester) -> StoreFuture<'_, Event> {
        Box::pin(async move { self.track(read::show_delivery(self, &id, &who).await) })
    }

    fn list_quarantine(&self, filter: ListFilter) -> StoreFuture<'_, Vec<QuarantineSummary>> {
        Box::pin(async move { self.track(read::list_quarantine(self, &filter).await) })
    }

    fn show_quarantine(&self, id: String, who: Requester) -> StoreFuture<'_, QuarantineEntry> {
        Box::pin(async move { self.track(read::show_quarantine(self, &id, &who).await) })
    }

    fn replay(
        &self,
        delivery_id: String,
        handler: Option<String>,
        who: Requester,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let replayed = dead::replay(self, &delivery_id, handler.as_deref(), &who).await;
            self.track(replayed)
        })
    }

    fn list_dead(&self, filter: DeadFilter) -> StoreFuture<'_, Vec<DeadLetter>> {
        Box::pin(async move { self.track(dead::list_dead(self, &filter).await) })
    }

    fn job_attempts(&self, job_id: i64) -> StoreFuture<'_, Vec<AttemptSummary>> {
        Box::pin(async move { self.track(dead::job_attempts(self, job_id).await) })
    }

    fn retry_dead(&self, filter: DeadFilter, who: Requester) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.track(dead::retry_dead(self, &filter, &who).await) })
    }

    fn purge(&self, cutoff: DateTime<Utc>, who: Requester) -> StoreFuture<'_, PurgeReport> {
        Box::pin(async move { self.track(purge::purge_older_than(self, cutoff, &who).await) })
    }

    fn checkpoint_audit(&self) -> StoreFuture<'_, ()> {
        Box::pin(mirror::checkpoint_now(self))
    }
}
