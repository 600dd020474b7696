//! `deliveries index-phones` on SQLite: give every delivery stored before the caller index
//! existed the index intake would have given it. The statements, the derivation and the audit
//! records are shared with PostgreSQL ([`crate::store::phone_backfill`]).
//!
//! It runs as its own process beside a serving one (WAL): each batch is read and decrypted
//! without a write lock, its indexes are written in one short `IMMEDIATE` transaction, and a
//! short random pause follows so the intake writer gets the lock between batches.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::audit::mirror;
use super::keys;
use super::Store;
use crate::store::phone_backfill::{
    clamp_batch, completed, count_waiting, select_batch, set_caller_ref, started, PhoneIndexReport,
    Waiting, LAST_ID,
};
use crate::store::rotation::Dialect;
use crate::store::types::Requester;
use crate::store::StoreError;

/// See the module docs; `progress(done, total)` after each batch.
#[tracing::instrument(skip(store, who, progress))]
pub fn index_caller_phones(
    store: &Store,
    batch: usize,
    who: &Requester,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PhoneIndexReport, StoreError> {
    let keyring = store.keyring();
    let mut conn = store.connection()?;
    let limit = clamp_batch(batch);

    // The highest id now stored bounds the run; the start record names how many it will read.
    // Both are read without the write lock (the count scans the table); only the record takes it.
    let last: Option<String> = conn
        .query_row(LAST_ID, [], |r| r.get(0))
        .optional()?
        .flatten();
    let last = last.unwrap_or_default();
    let total: i64 =
        conn.query_row(&count_waiting(Dialect::Sqlite), params![last], |r| r.get(0))?;
    let total = u64::try_from(total).unwrap_or(0);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    crate::audit::append(&tx, keyring, &started(who, total))?;
    tx.commit()?;
    mirror(store, &conn);
    progress(0, total);

    let mut report = PhoneIndexReport::default();
    let mut cursor = String::new();
    loop {
        let rows = waiting_batch(&conn, &cursor, &last, limit)?;
        let Some(tail) = rows.last() else { break };
        cursor = tail.id.clone();
        let mut found = Vec::new();
        for row in &rows {
            let key = keys::key_for_read(&conn, keyring, row.key_id)?;
            if let Some(caller_ref) = row.caller_ref(&key, keyring)? {
                found.push((row.id.as_str(), caller_ref));
            }
        }
        // A batch naming no number writes nothing: it need not take the intake writer's lock.
        if !found.is_empty() {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (id, caller_ref) in &found {
                report.indexed +=
                    tx.execute(&set_caller_ref(Dialect::Sqlite), params![id, caller_ref])? as u64;
            }
            tx.commit()?;
        }
        report.read += rows.len() as u64;
        progress(report.read, total.max(report.read));
        super::purge::pause_for_writer();
    }

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    crate::audit::append(&tx, keyring, &completed(who, &report))?;
    tx.commit()?;
    mirror(store, &conn);
    Ok(report)
}

/// The next `limit` waiting deliveries after `cursor`, up to `last`.
fn waiting_batch(
    conn: &Connection,
    cursor: &str,
    last: &str,
    limit: i64,
) -> Result<Vec<Waiting>, StoreError> {
    let mut stmt = conn.prepare_cached(&select_batch(Dialect::Sqlite))?;
    let rows = stmt.query_map(params![cursor, last, limit], |r| {
        Ok(Waiting {
            id: r.get(0)?,
            source: r.get(1)?,
            key_id: r.get(2)?,
            nonce: r.get(3)?,
            ciphertext: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
