//! The console's paged audit read on PostgreSQL: every node's records in `(time, node,
//! sequence)` order, each page continuing after the last row of the one before (a keyset, so a
//! page costs the same however deep into the log it is), each row tagged with its node.

use super::{audit, PgStore};
use crate::audit::commands::SearchArgs;
use crate::store::console::{audit_filter, AuditCursor, AuditPageRow};
use crate::store::StoreError;

/// Up to `limit` records matching `args` after `after`, every node's.
pub(super) async fn audit_page(
    store: &PgStore,
    args: &SearchArgs,
    after: Option<&AuditCursor>,
    limit: usize,
) -> Result<Vec<AuditPageRow>, StoreError> {
    let filter = audit_filter(args, store.keyring())?;
    let (mut clause, mut params) = super::audit_chain::where_clause(&filter);
    if let Some(c) = after {
        let n = params.len();
        let keyset = format!("(ts, node_id, seq) > (${}, ${}, ${})", n + 1, n + 2, n + 3);
        clause = if clause.is_empty() {
            format!(" WHERE {keyset}")
        } else {
            format!("{clause} AND {keyset}")
        };
        params.push(Box::new(c.ts.clone()));
        params.push(Box::new(c.node.clone().unwrap_or_default()));
        params.push(Box::new(i64::try_from(c.seq).unwrap_or(i64::MAX)));
    }
    let refs = super::audit_chain::param_refs(&params);
    let client = store.client().await?;
    let sql = format!(
        "SELECT {}, node_id FROM audit_log{clause} ORDER BY ts, node_id, seq LIMIT {limit}",
        super::health::AUDIT_COLUMNS
    );
    Ok(client
        .query(&sql, &refs)
        .await?
        .iter()
        .map(|row| AuditPageRow {
            node: Some(row.get(12)),
            record: audit::stored_from_row(row),
        })
        .collect())
}
