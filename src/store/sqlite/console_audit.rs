//! The console's paged audit read on SQLite: one chain, so a page continues after a sequence
//! number. Each page is one short read; nothing is held between pages.

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;

use super::audit_log::{record_from_row, where_clause, COLUMNS};
use crate::audit::commands::SearchArgs;
use crate::store::console::{audit_filter, AuditCursor, AuditPageRow};
use crate::store::{Store, StoreError};

/// Up to `limit` records matching `args` with a sequence number above `after`'s.
pub(super) fn audit_page(
    store: &Store,
    args: &SearchArgs,
    after: Option<&AuditCursor>,
    limit: usize,
) -> Result<Vec<AuditPageRow>, StoreError> {
    let filter = audit_filter(args, store.keyring())?;
    let conn = store.connection()?;
    let (clause, mut params) = where_clause(&conn, &filter);
    params.push(SqlValue::Integer(
        after.map_or(0, |c| i64::try_from(c.seq).unwrap_or(i64::MAX)),
    ));
    let seq_cond = format!("seq > ?{}", params.len());
    let clause = if clause.is_empty() {
        format!(" WHERE {seq_cond}")
    } else {
        format!("{clause} AND {seq_cond}")
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM audit_log{clause} ORDER BY seq LIMIT {limit}"
    ))?;
    let rows = stmt.query_map(params_from_iter(params), record_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(AuditPageRow {
            node: None,
            record: row?,
        });
    }
    Ok(out)
}
