//! "Find a call" on PostgreSQL: the shared query of [`crate::store::console_calls`] over every
//! node's deliveries.

use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::store::console::DeliveryMeta;
use crate::store::console_calls::{CallQuery, CallSearch, FoundDelivery};
use crate::store::payload::db_time;
use crate::store::StoreError;

/// One page of deliveries matching `q`, newest first, whichever node took them.
pub(super) async fn find_calls(store: &PgStore, q: &CallQuery) -> Result<CallSearch, StoreError> {
    let (call_ref, caller_ref) = q.blind_refs(store.keyring());
    let sql = q.to_sql(
        call_ref.as_deref(),
        caller_ref.as_deref(),
        &|n| format!("${n}"),
        &|p| format!("{p}::text::timestamptz"),
        &|p| format!("call_ref = {p}"),
    );
    let refs: Vec<&(dyn ToSql + Sync)> = sql
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect();
    let client = store.client().await?;
    let deliveries = client
        .query(&sql.sql, &refs)
        .await?
        .iter()
        .map(|r| FoundDelivery {
            meta: DeliveryMeta {
                id: r.get(0),
                source: r.get(1),
                event_type: r.get(2),
                received_at: db_time(r.get(3)),
                status: r.get(4),
            },
            jobs: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            dead: u64::try_from(r.get::<_, i64>(6)).unwrap_or(0),
        })
        .collect();
    Ok(CallSearch {
        call_ref,
        deliveries,
    })
}
