//! `deliveries index-phones` on PostgreSQL: the SQLite run's rules, statements, derivation and
//! audit records ([`crate::store::phone_backfill`]), over every node's deliveries at once. Each
//! batch is read and decrypted first, then its indexes are written in one short transaction;
//! serving nodes keep committing meanwhile (a row they index or purge first is left alone).

use super::{audit, keys, PgStore};
use crate::store::phone_backfill::{
    clamp_batch, completed, count_waiting, select_batch, set_caller_ref, started, PhoneIndexReport,
    Waiting, LAST_ID,
};
use crate::store::rotation::Dialect;
use crate::store::types::Requester;
use crate::store::StoreError;

/// See the module docs; `progress(done, total)` after each batch.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn index_caller_phones(
    store: &PgStore,
    batch: usize,
    who: &Requester,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PhoneIndexReport, StoreError> {
    let keyring = store.keyring();
    let mut client = store.client().await?;
    let limit = clamp_batch(batch);

    let tx = client.transaction().await?;
    let last: Option<String> = tx.query_one(LAST_ID, &[]).await?.get(0);
    let last = last.unwrap_or_default();
    let total: i64 = tx
        .query_one(&*count_waiting(Dialect::Postgres), &[&last])
        .await?
        .get(0);
    let total = u64::try_from(total).unwrap_or(0);
    audit::append(store, &tx, &started(who, total)).await?;
    tx.commit().await?;
    progress(0, total);

    let select = select_batch(Dialect::Postgres);
    let update = set_caller_ref(Dialect::Postgres);
    let mut report = PhoneIndexReport::default();
    let mut cursor = String::new();
    loop {
        let rows: Vec<Waiting> = client
            .query(&*select, &[&cursor, &last, &limit])
            .await?
            .into_iter()
            .map(|r| Waiting {
                id: r.get(0),
                source: r.get(1),
                key_id: r.get(2),
                nonce: r.get(3),
                ciphertext: r.get(4),
            })
            .collect();
        let Some(tail) = rows.last() else { break };
        cursor = tail.id.clone();
        let mut found = Vec::new();
        for row in &rows {
            let key = keys::key_for_read(store, &client, row.key_id).await?;
            if let Some(caller_ref) = row.caller_ref(&key, keyring)? {
                found.push((row.id.as_str(), caller_ref));
            }
        }
        let tx = client.transaction().await?;
        for (id, caller_ref) in &found {
            report.indexed += tx.execute(&*update, &[id, caller_ref]).await?;
        }
        tx.commit().await?;
        report.read += rows.len() as u64;
        progress(report.read, total.max(report.read));
    }

    let tx = client.transaction().await?;
    audit::append(store, &tx, &completed(who, &report)).await?;
    tx.commit().await?;
    Ok(report)
}
