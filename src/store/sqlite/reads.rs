//! Reads on SQLite: `deliveries list|show` and `quarantine list|show`.
//!
//! These are synchronous (they run on their own connection, from the CLI or from
//! `spawn_blocking` in the admin API) and may run in another process while the server is
//! serving: SQLite's locking and the busy timeout serialize them with the writer thread. Every
//! decrypted read writes its audit record in the same transaction.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use wardhook_sdk::Event;

use super::audit::{mirror, record_audit};
use super::keys;
use super::Store;
use crate::store::payload::db_time;
use crate::store::reads::{delivery_read_event, open_quarantine, quarantine_read_event};
use crate::store::types::{
    DeliverySummary, ListFilter, QuarantineEntry, QuarantineSummary, Requester,
};
use crate::store::StoreError;

fn where_clause(filter: &ListFilter) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(s) = &filter.source {
        args.push(s.clone());
        clauses.push(format!("source = ?{}", args.len()));
    }
    if let Some(t) = filter.since {
        args.push(db_time(t));
        clauses.push(format!("received_at >= ?{}", args.len()));
    }
    if let Some(t) = filter.until {
        args.push(db_time(t));
        clauses.push(format!("received_at < ?{}", args.len()));
    }
    if let Some(s) = &filter.status {
        args.push(s.clone());
        clauses.push(format!("status = ?{}", args.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn limit(filter: &ListFilter) -> i64 {
    if filter.limit == 0 {
        100
    } else {
        filter.limit as i64
    }
}

/// `deliveries list`: metadata of stored deliveries, newest first.
#[tracing::instrument(skip(store))]
pub fn list_deliveries(
    store: &Store,
    filter: &ListFilter,
) -> Result<Vec<DeliverySummary>, StoreError> {
    let conn = store.connection()?;
    let (clause, args) = where_clause(filter);
    let sql = format!(
        "SELECT d.id, d.source, d.event_type, d.received_at, d.status,
                (SELECT COUNT(*) FROM jobs j WHERE j.delivery_id = d.id)
         FROM deliveries d {clause} ORDER BY d.received_at DESC, d.id DESC LIMIT {}",
        limit(filter)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        Ok(DeliverySummary {
            id: r.get(0)?,
            source: r.get(1)?,
            event_type: r.get(2)?,
            received_at: r.get(3)?,
            status: r.get(4)?,
            jobs: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `quarantine list`: metadata of quarantined deliveries, newest first.
#[tracing::instrument(skip(store))]
pub fn list_quarantine(
    store: &Store,
    filter: &ListFilter,
) -> Result<Vec<QuarantineSummary>, StoreError> {
    let conn = store.connection()?;
    let (clause, args) = where_clause(filter);
    let sql = format!(
        "SELECT id, source, reason, received_at, status FROM quarantine {clause}
         ORDER BY received_at DESC, id DESC LIMIT {}",
        limit(filter)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), summary_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineSummary> {
    Ok(QuarantineSummary {
        id: r.get(0)?,
        source: r.get(1)?,
        reason: r.get(2)?,
        received_at: r.get(3)?,
        status: r.get(4)?,
    })
}

/// `deliveries show ID`: decrypt one delivery. The read itself is audited (`payload_read`) in
/// the same transaction as the decryption, so there is no read without its record.
#[tracing::instrument(skip(store, who), fields(via = who.via))]
pub fn show_delivery(store: &Store, id: &str, who: &Requester) -> Result<Event, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let opened = super::sealed::open_delivery(&tx, store.keyring(), id)?;
    let ev = delivery_read_event(
        who,
        id,
        &opened.source,
        opened.call_ref.as_deref(),
        opened.key_id,
    );
    record_audit(&tx, store.keyring(), &ev)?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(opened.stored.event)
}

/// `quarantine show ID`: decrypt one quarantined body (audited like [`show_delivery`]).
#[tracing::instrument(skip(store, who), fields(via = who.via))]
pub fn show_quarantine(
    store: &Store,
    id: &str,
    who: &Requester,
) -> Result<QuarantineEntry, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = tx
        .query_row(
            "SELECT id, source, reason, received_at, status, key_id, nonce, ciphertext
             FROM quarantine WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    summary_row(r)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ))
            },
        )
        .optional()?;
    let (summary, key_id, nonce, ciphertext) =
        row.ok_or(StoreError::NotFound("quarantine entry"))?;
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (key_id, nonce, ciphertext) else {
        return Err(StoreError::KeyDestroyed);
    };
    let key = keys::key_for_read(&tx, store.keyring(), key_id)?;
    let entry = open_quarantine(&key, summary, key_id, &nonce, &ciphertext)?;
    let ev = quarantine_read_event(who, &entry.summary.id, &entry.summary.source, key_id);
    record_audit(&tx, store.keyring(), &ev)?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(entry)
}
