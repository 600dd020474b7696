//! The configured store for an offline command, whichever backend the config names.
//!
//! Two doors, one per trait: [`OfflineStore`] is the [`Storage`] the delivery-path commands use
//! (`purge`, `dlq`, `deliveries list|show|replay`, `quarantine`, `tokens`), and [`open_maintenance`]
//! returns the backend's [`Maintenance`] for the operator commands (`keys rotate`, `backup`,
//! `deliveries reverify`, `emergency-export`, `audit verify|search|export`). Both serve SQLite
//! and PostgreSQL with one code path.

use std::path::Path;

use anyhow::Context as _;

use crate::config::{Config, OfflineConfig, StorageBackend};
use crate::crypto::Keyring;
use crate::store::open::StoreSettings;
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::{Maintenance, Storage, StoreError, StoreFuture};

/// The PostgreSQL settings when that is the backend.
pub fn settings(offline: &OfflineConfig) -> Option<&PgSettings> {
    match &offline.storage_backend {
        StorageBackend::Postgres(pg) => Some(pg),
        StorageBackend::Sqlite => None,
    }
}

/// An opened store and the runtime its futures run on.
#[derive(Debug)]
pub struct OfflineStore {
    // Dropped before the runtime that its tasks belong to.
    storage: Box<dyn Storage>,
    /// On PostgreSQL, this node's store again, to bring its mirror up to date after each
    /// operation (the SQLite store does that itself).
    pg: Option<(PgStore, std::sync::Arc<crate::audit::Mirror>)>,
    runtime: tokio::runtime::Runtime,
}

impl OfflineStore {
    /// Open the store `config` names: the SQLite file (which must exist) or the PostgreSQL
    /// database.
    pub fn open(config: &Path) -> anyhow::Result<Self> {
        let offline = Config::load_offline(config)?;
        // One worker thread: the mirror's reads of a PostgreSQL chain wait on queries from a
        // blocking thread, which needs a runtime driving I/O meanwhile.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (storage, pg): (Box<dyn Storage>, _) = match settings(&offline) {
            Some(pg) => {
                let (store, mirror) = open_postgres(&runtime, &offline, pg)?;
                (Box::new(store.clone()), Some((store, mirror)))
            }
            None => (Box::new(super::open_sqlite(&offline)?), None),
        };
        Ok(Self {
            storage,
            pg,
            runtime,
        })
    }

    /// Run one operation to completion.
    pub fn run<T>(
        &self,
        op: impl for<'a> FnOnce(&'a dyn Storage) -> StoreFuture<'a, T>,
    ) -> Result<T, StoreError> {
        let result = self.runtime.block_on(op(self.storage.as_ref()));
        self.mirror();
        result
    }

    /// Run any future built from the store to completion (for commands whose errors are their
    /// own, like `tokens`).
    pub fn block_on<T>(
        &self,
        op: impl for<'a> FnOnce(
            &'a dyn Storage,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
    ) -> T {
        let result = self.runtime.block_on(op(self.storage.as_ref()));
        self.mirror();
        result
    }

    /// On PostgreSQL, copy this node's new audit records to its mirror (the SQLite store does
    /// that itself). As on SQLite, a failed mirror write is logged; the next writer catches up.
    fn mirror(&self) {
        if let Some((pg, mirror)) = &self.pg {
            if let Err(e) = self.runtime.block_on(pg.mirror_catch_up_to(mirror)) {
                tracing::error!(error = %e, "audit mirror catch-up failed");
            }
        }
    }
}

/// This node's store, and its mirror (written after each operation, not by a background task).
fn open_postgres(
    runtime: &tokio::runtime::Runtime,
    offline: &OfflineConfig,
    pg: &PgSettings,
) -> anyhow::Result<(PgStore, std::sync::Arc<crate::audit::Mirror>)> {
    let keyring = Keyring::from_master(&offline.master_key);
    let mirror = std::sync::Arc::new(crate::audit::Mirror::new(&offline.audit.dir)?);
    let store = runtime
        .block_on(PgStore::open(pg, keyring))
        .context("cannot open the postgres store")?;
    Ok((store, mirror))
}

/// The [`Maintenance`] of the backend `config` names: the SQLite file (which must exist) or
/// the PostgreSQL database, with this node's `[audit] dir` for its mirror and checkpoints.
pub fn open_maintenance(config: &Path) -> anyhow::Result<Box<dyn Maintenance>> {
    let offline = Config::load_offline(config)?;
    let keyring = Keyring::from_master(&offline.master_key);
    let opened = crate::store::open::open_maintenance(&StoreSettings::offline(&offline), keyring);
    match settings(&offline) {
        Some(_) => Ok(opened.context("cannot open the postgres store")?),
        None => {
            anyhow::ensure!(
                offline.storage_path.exists(),
                "no database at {}",
                offline.storage_path.display()
            );
            Ok(opened?)
        }
    }
}
