//! The audit log on PostgreSQL: one MAC chain per node.
//!
//! Why per node: a single chain across nodes needs every append of every node serialized on one
//! lock held until commit, which makes the slowest commit anywhere the pace of all intake. With
//! a chain per node, each node's appends serialize on its own head row (`audit_heads`, locked
//! `FOR UPDATE` by the appending transaction, so records chain in commit order) and nodes append
//! in parallel.
//!
//! Records are sealed exactly as in SQLite ([`StoredRecord::compute_mac`] over the same
//! fields), except that a node's first record links not to the all-zero genesis but to
//! `HMAC(audit key, "wardhook-audit-node-v1\0" || node_id)`: a chain cannot be relabelled as
//! another node's, nor records moved between chains, without breaking a MAC or a link.
//! [`verify_audit`] walks every node's chain with the same checker as `audit verify` for
//! SQLite and names the node and first bad sequence number.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_postgres::Row;

use super::PgStore;
use crate::audit::{AuditError, AuditRecord, StoredRecord, VerifyReport};
use crate::crypto::Keyring;
use crate::store::StoreError;

/// Domain separation of node genesis MACs from record MACs.
const NODE_GENESIS_DOMAIN: &[u8] = b"wardhook-audit-node-v1\0";

/// Records read per round trip while verifying.
const VERIFY_PAGE: i64 = 5000;

/// The `prev_mac` of `node_id`'s first record.
pub(super) fn node_genesis(keyring: &Keyring, node_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keyring.audit_mac_key())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(NODE_GENESIS_DOMAIN);
    mac.update(node_id.as_bytes());
    crate::crypto::hex_lower(&mac.finalize().into_bytes())
}

/// Create this node's head row (sequence 0, the genesis) if it has none, so every append can
/// lock an existing row.
pub(super) async fn ensure_head(
    client: &deadpool_postgres::Client,
    node_id: &str,
    genesis: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO audit_heads (node_id, seq, mac, ts) VALUES ($1, 0, $2, '')
             ON CONFLICT (node_id) DO NOTHING",
            &[&node_id, &genesis],
        )
        .await?;
    Ok(())
}

/// Seal `record` onto this node's chain inside `tx`. Call it last before the commit: the head
/// row stays locked until then.
pub(super) async fn append(
    store: &PgStore,
    tx: &deadpool_postgres::Transaction<'_>,
    record: &AuditRecord,
) -> Result<StoredRecord, StoreError> {
    let node_id = store.node_id();
    let head = tx
        .prepare_cached("SELECT seq, mac, ts FROM audit_heads WHERE node_id = $1 FOR UPDATE")
        .await?;
    let head = tx
        .query_opt(&head, &[&node_id])
        .await?
        .ok_or(StoreError::Corrupt("this node's audit head row is missing"))?;
    let (prev_seq, prev_mac, prev_ts): (i64, String, String) =
        (head.get(0), head.get(1), head.get(2));
    let seq =
        u64::try_from(prev_seq + 1).map_err(|_| StoreError::Corrupt("audit head sequence"))?;
    let now = crate::audit::format_ts(chrono::Utc::now());
    // Clamp to the predecessor's time if the clock stepped back: time order = seq order.
    let ts = if prev_ts > now { prev_ts } else { now };
    let stored = StoredRecord::seal(store.keyring(), record, seq, ts, prev_mac);
    let seq_i = prev_seq + 1;
    // One statement (one round trip) for the record and the new head.
    let insert = tx
        .prepare_cached(
            "WITH appended AS (
                 INSERT INTO audit_log (node_id, seq, ts, actor, action, outcome, delivery_id,
                                        source, call_ref, remote_addr, detail, prev_mac, mac)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             )
             UPDATE audit_heads SET seq = $2, mac = $13, ts = $3 WHERE node_id = $1",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &node_id,
            &seq_i,
            &stored.ts,
            &stored.actor,
            &stored.action,
            &stored.outcome,
            &stored.delivery_id,
            &stored.source,
            &stored.call_ref,
            &stored.remote_addr,
            &stored.detail,
            &stored.prev_mac,
            &stored.mac,
        ],
    )
    .await?;
    Ok(stored)
}

/// A standalone record (rejection, start/stop, reload) in its own transaction.
pub(super) async fn record_standalone(
    store: &PgStore,
    record: &AuditRecord,
) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    append(store, &tx, record).await?;
    tx.commit().await?;
    Ok(())
}

/// What [`verify_audit`] found for one node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChainReport {
    /// The node.
    pub node_id: String,
    /// The walk's report (records, first/last seq, head MAC).
    pub report: VerifyReport,
}

pub(super) fn stored_from_row(row: &Row) -> StoredRecord {
    let seq: i64 = row.get(0);
    StoredRecord {
        seq: u64::try_from(seq).unwrap_or(0),
        ts: row.get(1),
        actor: row.get(2),
        action: row.get(3),
        outcome: row.get(4),
        delivery_id: row.get(5),
        source: row.get(6),
        call_ref: row.get(7),
        remote_addr: row.get(8),
        detail: row.get(9),
        prev_mac: row.get(10),
        mac: row.get(11),
    }
}

/// Verify every node's chain: MACs, links, gap-free sequence from the node's genesis, and that
/// the chain ends at the node's recorded head. Fails with [`AuditError::VerifyFailed`] naming
/// `node <id>` and the first bad sequence number. Reads in pages inside one repeatable-read
/// snapshot, so appends running meanwhile cannot make a good log look broken.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub async fn verify_audit(store: &PgStore) -> Result<Vec<NodeChainReport>, StoreError> {
    let mut client = store.client().await?;
    let tx = PgStore::snapshot(&mut client).await?;
    let nodes: Vec<(String, i64, String)> = tx
        .query(
            "SELECT node_id, seq, mac FROM audit_heads
             UNION SELECT DISTINCT node_id, -1, '' FROM audit_log
                   WHERE node_id NOT IN (SELECT node_id FROM audit_heads)
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut reports = Vec::with_capacity(nodes.len());
    for (node_id, head_seq, head_mac) in nodes {
        let location = format!("node {node_id}");
        // The walk runs on a blocking thread and pulls records from a bounded channel that
        // this task fills page by page: constant memory however long the chain.
        let (records, mut incoming) = tokio::sync::mpsc::channel(VERIFY_PAGE as usize);
        let keyring = Arc::clone(&store.inner.keyring);
        let genesis = node_genesis(&keyring, &node_id);
        let walk_location = location.clone();
        let walk = tokio::task::spawn_blocking(move || {
            crate::audit::verify_chain(
                &keyring,
                std::iter::from_fn(|| incoming.blocking_recv()),
                &genesis,
                &walk_location,
            )
        });
        let mut after = 0i64;
        'pages: loop {
            let page = tx
                .query(
                    "SELECT seq, ts, actor, action, outcome, delivery_id, source, call_ref,
                            remote_addr, detail, prev_mac, mac
                     FROM audit_log WHERE node_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&node_id, &after, &VERIFY_PAGE],
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = last.get(0);
            for row in &page {
                // A closed channel means the walk already found the first bad record.
                if records
                    .send(Ok::<_, AuditError>(stored_from_row(row)))
                    .await
                    .is_err()
                {
                    break 'pages;
                }
            }
        }
        drop(records);
        let report = walk
            .await
            .map_err(|_| StoreError::Audit("the verification task failed".into()))?
            .map_err(|e| StoreError::Audit(e.to_string()))?;
        check_head(&report, head_seq, &head_mac, &location)?;
        reports.push(NodeChainReport { node_id, report });
    }
    tx.commit().await?;
    Ok(reports)
}

/// The chain must end where the node's head row says: records cut off the end (which leaves a
/// valid shorter chain) show up here, unless the head row was rewritten too.
fn check_head(
    report: &VerifyReport,
    head_seq: i64,
    head_mac: &str,
    location: &str,
) -> Result<(), StoreError> {
    let last = report
        .last_seq
        .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
    let mac_matches = report.head_mac.as_deref().is_none_or(|m| m == head_mac);
    if head_seq >= 0 && (last != head_seq || (last > 0 && !mac_matches)) {
        return Err(StoreError::Audit(format!(
            "audit log verification failed ({location}) at sequence {}: the chain ends at \
             sequence {last} but the node's head is at {head_seq}",
            last.min(head_seq) + 1
        )));
    }
    Ok(())
}
