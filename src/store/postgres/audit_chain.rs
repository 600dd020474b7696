//! The audit module's [`ChainReader`] and [`RecordStream`] on PostgreSQL: one node's chain
//! (for its JSONL mirror, its signed checkpoints and `audit verify`), and every node's records
//! (for `audit search|export`).
//!
//! The audit module's traits are synchronous (the mirror and the verifier are file work on a
//! blocking thread); these run each query on the runtime through [`Handle::block_on`], so call
//! them from a thread that is not itself driving the runtime: a `spawn_blocking` task or an
//! offline command's main thread (whose runtime has a worker thread of its own).

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::PgStore;
use crate::audit::{
    AuditError, ChainReader, ChainRow, Filter, RecordStream, RecordVisitor, StoredRecord,
};
use crate::store::StoreError;

/// The columns of a record, in [`stored_from_row`] order.
const COLUMNS: &str =
    "seq, ts, actor, action, outcome, delivery_id, source, call_ref, remote_addr, detail, prev_mac, mac";

/// A record from a row selected with [`COLUMNS`] (from the first column on).
pub(super) fn stored_from_row(row: &Row, first: usize) -> StoredRecord {
    let seq: i64 = row.get(first);
    StoredRecord {
        seq: u64::try_from(seq).unwrap_or(0),
        ts: row.get(first + 1),
        actor: row.get(first + 2),
        action: row.get(first + 3),
        outcome: row.get(first + 4),
        delivery_id: row.get(first + 5),
        source: row.get(first + 6),
        call_ref: row.get(first + 7),
        remote_addr: row.get(first + 8),
        detail: row.get(first + 9),
        prev_mac: row.get(first + 10),
        mac: row.get(first + 11),
    }
}

fn backend(e: StoreError) -> AuditError {
    AuditError::Backend(e.to_string())
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// One node's chain.
#[derive(Debug, Clone)]
pub struct PgChain {
    store: PgStore,
    node_id: String,
    handle: Handle,
}

impl PgChain {
    /// `node_id`'s chain, queried on the runtime behind `handle`.
    pub fn new(store: &PgStore, node_id: &str, handle: Handle) -> Self {
        Self {
            store: store.clone(),
            node_id: node_id.to_owned(),
            handle,
        }
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, AuditError> {
        self.handle
            .block_on(async {
                let client = self.store.client().await?;
                Ok::<_, StoreError>(client.query(sql, params).await?)
            })
            .map_err(backend)
    }
}

impl ChainReader for PgChain {
    fn head(&self) -> Result<Option<(u64, String, String)>, AuditError> {
        let rows = self.query(
            "SELECT seq, mac, ts FROM audit_log WHERE node_id = $1 ORDER BY seq DESC LIMIT 1",
            &[&self.node_id],
        )?;
        Ok(rows.first().map(|r| {
            (
                u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                r.get(1),
                r.get(2),
            )
        }))
    }

    fn rows_after(&self, after: u64, limit: usize) -> Result<Vec<ChainRow>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            &format!(
                "SELECT {COLUMNS} FROM audit_log WHERE node_id = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            ),
            &[&self.node_id, &seq_param(after), &limit],
        )?;
        Ok(rows
            .iter()
            .map(|r| ChainRow::Record(Box::new(stored_from_row(r, 0))))
            .collect())
    }

    fn mac_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        let rows = self.query(
            "SELECT mac FROM audit_log WHERE node_id = $1 AND seq = $2",
            &[&self.node_id, &seq_param(seq)],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// PostgreSQL has no audit purge (its chains are append-only by trigger), so no anchor.
    fn purge_anchor_detail(&self) -> Result<Option<String>, AuditError> {
        Ok(None)
    }

    fn genesis(&self) -> String {
        super::audit::node_genesis(self.store.keyring(), &self.node_id)
    }

    fn location(&self) -> String {
        format!("node {}", self.node_id)
    }
}

/// Every node's records, for search and export.
#[derive(Debug, Clone)]
pub struct PgRecords {
    store: PgStore,
    handle: Handle,
}

/// Records fetched per round trip while streaming a search or export.
const PAGE: i64 = 2000;

impl PgRecords {
    /// Every chain in `store`'s database, queried on the runtime behind `handle`.
    pub fn new(store: &PgStore, handle: Handle) -> Self {
        Self {
            store: store.clone(),
            handle,
        }
    }
}

/// The ` WHERE …` clause of `filter` (empty when it filters nothing) and its parameters.
pub(super) fn where_clause(filter: &Filter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let (conds, params) = conditions(filter);
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (clause, params)
}

/// `params` as the statement parameters tokio-postgres takes.
pub(super) fn param_refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `WHERE` conditions of a search filter over `audit_log`, numbering parameters from `$1`.
pub(super) fn conditions(filter: &Filter) -> (Vec<String>, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut push = |cond: &str, v: String| {
        params.push(Box::new(v));
        conds.push(cond.replace('?', &format!("${}", params.len())));
    };
    if let Some(t) = filter.since {
        push("ts >= ?", crate::audit::format_ts(t));
    }
    if let Some(t) = filter.until {
        push("ts < ?", crate::audit::format_ts(t));
    }
    if let Some(c) = &filter.call_ref {
        push("call_ref = ?", c.as_str().to_owned());
    }
    if let Some(s) = &filter.source {
        push("source = ?", s.as_str().to_owned());
    }
    if let Some(a) = filter.action {
        push("action = ?", a.as_str().to_owned());
    }
    if let Some(a) = &filter.actor {
        push(
            "(actor = ? OR substr(actor, strpos(actor, ':') + 1) = ?)",
            a.as_str().to_owned(),
        );
    }
    if let Some(d) = &filter.delivery_id {
        push("delivery_id = ?", d.as_str().to_owned());
    }
    (conds, params)
}

impl RecordStream for PgRecords {
    fn has_nodes(&self) -> bool {
        true
    }

    fn count(&self, filter: &Filter) -> Result<u64, AuditError> {
        let (clause, params) = where_clause(filter);
        let refs = param_refs(&params);
        let n: i64 = self
            .handle
            .block_on(async {
                let client = self.store.client().await?;
                let row = client
                    .query_one(&format!("SELECT count(*) FROM audit_log{clause}"), &refs)
                    .await?;
                Ok::<_, StoreError>(row.get(0))
            })
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Pages in `(ts, node_id, seq)` order, each page after the last row of the previous one:
    /// time order across nodes, sequence order within each chain (a node's times never go
    /// back along its chain).
    fn for_each(&self, filter: &Filter, visit: &mut RecordVisitor<'_>) -> Result<u64, AuditError> {
        let (mut conds, params) = conditions(filter);
        let n = params.len();
        conds.push(format!(
            "(${a}::text IS NULL OR (ts, node_id, seq) > (${a}, ${b}, ${c}))",
            a = n + 1,
            b = n + 2,
            c = n + 3
        ));
        let sql = format!(
            "SELECT node_id, {COLUMNS} FROM audit_log WHERE {}
             ORDER BY ts, node_id, seq LIMIT {PAGE}",
            conds.join(" AND ")
        );
        let mut after: (Option<String>, String, i64) = (None, String::new(), 0);
        let mut visited = 0;
        loop {
            let mut refs = param_refs(&params);
            refs.push(&after.0);
            refs.push(&after.1);
            refs.push(&after.2);
            let rows = self
                .handle
                .block_on(async {
                    let client = self.store.client().await?;
                    Ok::<_, StoreError>(client.query(&sql, &refs).await?)
                })
                .map_err(backend)?;
            for row in &rows {
                let node: String = row.get(0);
                let record = stored_from_row(row, 1);
                visit(Some(&node), &record)?;
                visited += 1;
            }
            let Some(last) = rows.last() else { break };
            let next = (Some(last.get::<_, String>(2)), last.get(0), last.get(1));
            after = next;
            if rows.len() < PAGE as usize {
                break;
            }
        }
        Ok(visited)
    }
}
