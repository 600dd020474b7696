//! "Find a call" on SQLite: the shared query of [`crate::store::console_calls`], run on the
//! blocking pool.

use rusqlite::params_from_iter;

use crate::store::console::DeliveryMeta;
use crate::store::console_calls::{CallQuery, CallSearch, FoundDelivery};
use crate::store::{Store, StoreError};

/// One page of deliveries matching `q`, newest first.
pub(super) fn find_calls(store: &Store, q: &CallQuery) -> Result<CallSearch, StoreError> {
    let (call_ref, caller_ref) = q.blind_refs(store.keyring());
    let conn = store.connection()?;
    let sql = q.to_sql(
        call_ref.as_deref(),
        caller_ref.as_deref(),
        &|n| format!("?{n}"),
        &|p| p,
        &|p| super::levels::call_ref_condition(&conn, &p, call_ref.as_deref().unwrap_or_default()),
    );
    let mut stmt = conn.prepare(&sql.sql)?;
    let rows = stmt.query_map(params_from_iter(sql.params), |r| {
        Ok(FoundDelivery {
            meta: DeliveryMeta {
                id: r.get(0)?,
                source: r.get(1)?,
                event_type: r.get(2)?,
                received_at: r.get(3)?,
                status: r.get(4)?,
            },
            jobs: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
            dead: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        })
    })?;
    let deliveries = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(CallSearch {
        call_ref,
        deliveries,
    })
}
