//! [`ForwardStore`] on PostgreSQL: this node's chain (sequence numbers count per node), and the
//! forwarding cursor per node and name in `audit_forward_cursor`.
//!
//! The table is created on first use, under a transaction-scoped advisory lock so that nodes
//! starting together do not race on `CREATE TABLE IF NOT EXISTS`; it sits outside the versioned
//! schema because only nodes that forward need it. Like [`PgChain`], the methods block on the
//! runtime: call them from a blocking thread (the forwarder does).

use tokio::runtime::Handle;

use super::audit_chain::PgChain;
use super::PgStore;
use crate::audit::forward::ForwardStore;
use crate::audit::{AuditError, ChainReader, ChainRow};
use crate::store::StoreError;

/// Advisory lock key for creating the cursor table ("wardfwd1" in ASCII).
const CURSOR_TABLE_LOCK: i64 = 0x7761_7264_6677_6431;

/// This node's chain and cursors.
#[derive(Debug, Clone)]
pub struct PgForward {
    chain: PgChain,
    store: PgStore,
    handle: Handle,
}

impl PgForward {
    /// Over `store`'s node, queried on the runtime behind `handle`.
    pub fn new(store: &PgStore, handle: Handle) -> Self {
        Self {
            chain: PgChain::new(store, store.node_id(), handle.clone()),
            store: store.clone(),
            handle,
        }
    }

    fn run<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, AuditError> {
        self.handle
            .block_on(work)
            .map_err(|e| AuditError::Backend(e.to_string()))
    }
}

impl ChainReader for PgForward {
    fn head(&self) -> Result<Option<(u64, String, String)>, AuditError> {
        self.chain.head()
    }

    fn rows_after(&self, after: u64, limit: usize) -> Result<Vec<ChainRow>, AuditError> {
        self.chain.rows_after(after, limit)
    }

    fn mac_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        self.chain.mac_at(seq)
    }

    fn purge_anchor_detail(&self) -> Result<Option<String>, AuditError> {
        self.chain.purge_anchor_detail()
    }

    fn genesis(&self) -> String {
        self.chain.genesis()
    }

    fn location(&self) -> String {
        self.chain.location()
    }
}

impl ForwardStore for PgForward {
    fn prepare_cursor(&self) -> Result<(), AuditError> {
        self.run(async {
            let mut client = self.store.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CURSOR_TABLE_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS audit_forward_cursor (
                     node_id    TEXT NOT NULL,     -- whose chain
                     name       TEXT NOT NULL,     -- [audit_forward] name
                     seq        BIGINT NOT NULL,   -- last sequence number the collector confirmed
                     updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                     PRIMARY KEY (node_id, name)
                 );",
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn cursor(&self, name: &str) -> Result<Option<u64>, AuditError> {
        self.run(async {
            let client = self.store.client().await?;
            let row = client
                .query_opt(
                    "SELECT seq FROM audit_forward_cursor WHERE node_id = $1 AND name = $2",
                    &[&self.store.node_id(), &name],
                )
                .await?;
            Ok(row.map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
        })
    }

    fn set_cursor(&self, name: &str, seq: u64) -> Result<(), AuditError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.run(async {
            let client = self.store.client().await?;
            client
                .execute(
                    "INSERT INTO audit_forward_cursor (node_id, name, seq) VALUES ($1, $2, $3)
                     ON CONFLICT (node_id, name) DO UPDATE SET seq = excluded.seq, updated_at = now()",
                    &[&self.store.node_id(), &name, &seq],
                )
                .await?;
            Ok(())
        })
    }

    fn node(&self) -> Option<String> {
        Some(self.store.node_id().to_owned())
    }
}
