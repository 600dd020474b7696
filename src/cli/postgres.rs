//! The offline commands that work with `[storage] backend = "postgres"`: `audit verify` (every
//! node's chain), `purge`, `dlq list|retry` and `deliveries list|show|replay`. The others read the SQLite store
//! directly and refuse with [`SQLITE_ONLY`] rather than looking at a database file that is not
//! in use.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::{OfflineConfig, StorageBackend};
use crate::crypto::Keyring;
use crate::store::admin::ListFilter;
use crate::store::admin::Requester;
use crate::store::jobs::DeadFilter;
use crate::store::postgres::{verify_audit, PgSettings, PgStore};
use crate::store::{Storage, StoreError};

/// Why a SQLite-only command refuses.
pub const SQLITE_ONLY: &str = "this command reads the SQLite store and is not available yet with \
     [storage] backend = \"postgres\" (there: serve, check-config, audit verify, purge, \
     dlq list, dlq retry, deliveries list|show|replay)";

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
    let (runtime, store) = open(offline, pg)?;
    let cutoff = Utc::now() - older_than;
    let r = runtime.block_on(store.purge(cutoff, Requester::cli_user()))?;
    super::intake::print_purge(cutoff, &r, out)?;
    Ok(())
}

/// `dlq list`.
pub fn dlq_list(
    offline: &OfflineConfig,
    pg: &PgSettings,
    filter: DeadFilter,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (runtime, store) = open(offline, pg)?;
    let rows = runtime.block_on(store.list_dead(filter))?;
    super::dlq::print_dead(&rows, json, out)?;
    Ok(())
}

/// `dlq retry JOB` or `dlq retry --all [filters]`.
pub fn dlq_retry(
    offline: &OfflineConfig,
    pg: &PgSettings,
    filter: DeadFilter,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (runtime, store) = open(offline, pg)?;
    let n = runtime.block_on(store.retry_dead(filter, Requester::cli_user()))?;
    super::dlq::print_retried(n, out)?;
    Ok(())
}

/// `deliveries replay ID [--handler NAME]`.
pub fn replay(
    offline: &OfflineConfig,
    pg: &PgSettings,
    delivery_id: &str,
    handler: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (runtime, store) = open(offline, pg)?;
    let n = runtime.block_on(store.replay(
        delivery_id.to_owned(),
        handler.map(str::to_owned),
        Requester::cli_user(),
    ))?;
    super::dlq::print_replayed(n, delivery_id, out)?;
    Ok(())
}

/// `deliveries list`.
pub fn deliveries_list(
    offline: &OfflineConfig,
    pg: &PgSettings,
    filter: ListFilter,
    format: super::intake::OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (runtime, store) = open(offline, pg)?;
    let rows = runtime.block_on(store.list_deliveries(filter))?;
    super::intake::print_deliveries(&rows, format, out)?;
    Ok(())
}

/// `deliveries show ID` (an audited read).
pub fn deliveries_show(
    offline: &OfflineConfig,
    pg: &PgSettings,
    id: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (runtime, store) = open(offline, pg)?;
    let event = runtime.block_on(store.show_delivery(id.to_owned(), Requester::cli_user()))?;
    super::intake::print_event(&event, out)?;
    Ok(())
}
