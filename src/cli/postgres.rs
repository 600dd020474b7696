//! The offline commands that work with `[storage] backend = "postgres"`: `audit verify` (every
//! node's chain), `purge`, `dlq list|show|retry`, `deliveries list|show|replay` and `quarantine
//! list|show`. The others read the SQLite store
//! directly and refuse with [`SQLITE_ONLY`] rather than looking at a database file that is not
//! in use.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::{OfflineConfig, StorageBackend};
use crate::crypto::Keyring;
use crate::store::admin::Requester;
use crate::store::postgres::{verify_audit, PgSettings, PgStore};
use crate::store::{Storage, StoreError, StoreFuture};

/// Why a SQLite-only command refuses.
pub const SQLITE_ONLY: &str = "this command reads the SQLite store and is not available yet with \
     [storage] backend = \"postgres\" (there: serve, check-config, audit verify, purge, \
     dlq, deliveries list|show|replay, quarantine)";

/// The PostgreSQL settings when that is the backend.
pub fn settings(offline: &OfflineConfig) -> Option<&PgSettings> {
    match &offline.storage_backend {
        StorageBackend::Postgres(pg) => Some(pg),
        StorageBackend::Sqlite => None,
    }
}

fn open(
    offline: &OfflineConfig,
    pg: &PgSettings,
) -> anyhow::Result<(tokio::runtime::Runtime, PgStore)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let keyring = Keyring::from_master(&offline.master_key);
    let store = runtime
        .block_on(PgStore::open(pg, keyring))
        .context("cannot open the postgres store")?;
    Ok((runtime, store))
}

/// `audit verify`: every node's chain. Exit code `tampered` names the node and first bad record.
pub fn audit_verify(
    offline: &OfflineConfig,
    pg: &PgSettings,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let (runtime, store) = open(offline, pg)?;
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

/// `purge --older-than`.
pub fn purge(
    offline: &OfflineConfig,
    pg: &PgSettings,
    older_than: chrono::Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let cutoff = Utc::now() - older_than;
    let r = run(offline, pg, |s| s.purge(cutoff, Requester::cli_user()))?;
    super::intake::print_purge(cutoff, &r, out)?;
    Ok(())
}

/// Open the store and run one operation on it to completion (the commands print the result
/// with the same functions as for SQLite).
pub fn run<T>(
    offline: &OfflineConfig,
    pg: &PgSettings,
    op: impl for<'a> FnOnce(&'a PgStore) -> StoreFuture<'a, T>,
) -> anyhow::Result<T> {
    let (runtime, store) = open(offline, pg)?;
    Ok(runtime.block_on(op(&store))?)
}
