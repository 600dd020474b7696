//! The configured store for an offline command, whichever backend the config names.
//!
//! `purge`, `dlq list|show|retry`, `deliveries list|show|replay`, `quarantine list|show` and
//! `tokens` go through the [`Storage`] trait, so one code path serves SQLite and PostgreSQL. The other
//! commands read the SQLite store directly and refuse on PostgreSQL with [`SQLITE_ONLY`] rather
//! than looking at a database file that is not in use; `audit verify` walks every node's chain
//! there ([`audit_verify`]).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{Config, OfflineConfig, StorageBackend};
use crate::crypto::Keyring;
use crate::store::postgres::{verify_audit, PgSettings, PgStore};
use crate::store::{Storage, StoreError, StoreFuture};

/// Why a SQLite-only command refuses.
pub const SQLITE_ONLY: &str = "this command reads the SQLite store and is not available yet with \
     [storage] backend = \"postgres\" (there: serve, check-config, audit verify, purge, \
     dlq, deliveries list|show|replay, quarantine, tokens)";

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
    runtime: tokio::runtime::Runtime,
}

impl OfflineStore {
    /// Open the store `config` names: the SQLite file (which must exist) or the PostgreSQL
    /// database.
    pub fn open(config: &Path) -> anyhow::Result<Self> {
        let offline = Config::load_offline(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let storage: Box<dyn Storage> = match settings(&offline) {
            Some(pg) => Box::new(open_postgres(&runtime, &offline, pg)?),
            None => Box::new(super::open_sqlite(&offline)?),
        };
        Ok(Self { storage, runtime })
    }

    /// Run one operation to completion.
    pub fn run<T>(
        &self,
        op: impl for<'a> FnOnce(&'a dyn Storage) -> StoreFuture<'a, T>,
    ) -> Result<T, StoreError> {
        self.runtime.block_on(op(self.storage.as_ref()))
    }

    /// Run any future built from the store to completion (for commands whose errors are their
    /// own, like `tokens`).
    pub fn block_on<T>(
        &self,
        op: impl for<'a> FnOnce(
            &'a dyn Storage,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
    ) -> T {
        self.runtime.block_on(op(self.storage.as_ref()))
    }
}

fn open_postgres(
    runtime: &tokio::runtime::Runtime,
    offline: &OfflineConfig,
    pg: &PgSettings,
) -> anyhow::Result<PgStore> {
    let keyring = Keyring::from_master(&offline.master_key);
    runtime
        .block_on(PgStore::open(pg, keyring))
        .context("cannot open the postgres store")
}

/// `audit verify`: every node's chain. Exit code `tampered` names the node and first bad record.
pub fn audit_verify(
    offline: &OfflineConfig,
    pg: &PgSettings,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let store = open_postgres(&runtime, offline, pg)?;
    match runtime.block_on(verify_audit(&store)) {
        Ok(nodes) => {
            for n in &nodes {
                writeln!(
                    out,
                    "node {}: {} records verified (sequence {}..{})",
                    n.node_id,
                    n.report.records,
                    n.report.first_seq.unwrap_or(0),
                    n.report.last_seq.unwrap_or(0)
                )?;
            }
            writeln!(
                out,
                "audit log OK: {} node chain{}; signed checkpoints and the JSONL mirror are SQLite-only",
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" }
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Audit(reason)) => {
            eprintln!("wardhook: error: {reason}");
            Ok(ExitCode::from(super::EXIT_AUDIT_TAMPERED))
        }
        Err(e) => Err(e.into()),
    }
}
