//! Intake, quarantine and the readiness probe on PostgreSQL.
//!
//! An intake is prepared here, on the request's task, and stored by the store's committer
//! together with whatever other intakes are queued ([`super::committer`]): the encrypted row
//! inserted with `ON CONFLICT (source, dedup_index) DO NOTHING`, then either the jobs and the
//! `delivery_accepted` record, or — when the insert did nothing — the first delivery's id and a
//! `delivery_duplicate` record. Under READ COMMITTED a racing insert of the same key waits for
//! the other transaction: if that one commits, ours does nothing and the follow-up `SELECT` (a
//! new snapshot) sees its row; if it rolls back, ours inserts. So two nodes receiving the same
//! retry at once answer one `accepted` and one `duplicate` with the same id, and only one set of
//! jobs exists.
//!
//! Quarantine is rare and stays one transaction per entry; like the committer it appends to
//! this node's audit chain under the head row lock, so the two serialize correctly.
//!
//! Blind indexes, payload format, AAD and audit facts come from `store::prepare`, which
//! the SQLite store calls too, so a delivery reads the same whichever backend wrote it.

use super::committer::PreparedIntake;
use super::{audit, keys, PgStore};
use crate::normalize::{IntakeInput, NormalizeError, Normalized};
use crate::store::audit_hook::to_record;
use crate::store::prepare::{
    period_of, quarantine_body_index, quarantined_event, seal_quarantine, PreparedDelivery,
};
use crate::store::{IntakeOutcome, JobSpec, QuarantineId, StoreError};

/// Prepare the delivery on the caller's task — id, blind indexes, serialization, sealing under
/// the period's data key — then hand it to the store's committer and wait for the commit of
/// its batch (see the module docs).
#[tracing::instrument(level = "debug", skip_all, fields(node = %store.node_id()))]
pub(super) async fn intake(
    store: &PgStore,
    input: IntakeInput,
    n: &mut Normalized,
    jobs: Vec<JobSpec>,
) -> Result<IntakeOutcome, StoreError> {
    let handlers: Vec<String> = jobs.into_iter().map(|j| j.handler).collect();
    // A delivery sealed under a generation that a rotation has just replaced comes back once
    // to be sealed under the new one; twice in a row means rotations faster than commits.
    for _ in 0..3 {
        let prepared = prepare(store, &input, n, handlers.clone()).await?;
        if let Some(outcome) = store.inner.committer.submit(prepared).await? {
            n.set_delivery_id(outcome.delivery_id());
            return Ok(outcome);
        }
    }
    Err(StoreError::Unavailable("data key generation changing"))
}

/// Everything of an intake but the SQL that stores it. The data key comes from the cache at
/// the generation last read (checked again by the committer), or is looked up — and created,
/// committed in its own transaction, on the first delivery of a period.
pub(super) async fn prepare(
    store: &PgStore,
    input: &IntakeInput,
    n: &mut Normalized,
    handlers: Vec<String>,
) -> Result<PreparedIntake, StoreError> {
    let source = input.source.as_str();
    let delivery = PreparedDelivery::new(store.keyring(), input, n)?;
    let (generation, key_id, key) = match keys::cached_for_write(store, &delivery.period) {
        Some(cached) => cached,
        None => {
            // Returned to the pool before queueing: the committer needs a connection too.
            let mut client = store.client().await?;
            keys::generation_and_key_for_write(store, &mut client, &delivery.period).await?
        }
    };
    let sealed = delivery.seal(&key, key_id, source)?;
    let PreparedDelivery {
        id,
        dedup,
        call_ref,
        caller_ref,
        event_type,
        dedup_kind,
        received_at,
        ..
    } = delivery;
    Ok(PreparedIntake {
        source: source.to_owned(),
        event_type,
        dedup_kind,
        dedup,
        call_ref,
        caller_ref,
        received_at,
        key_id,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        generation,
        handlers,
        remote_addr: input.client_ip,
        id,
    })
}

/// Keep an authentic but unparseable delivery, encrypted. A retry of the same body (same
/// blind index) gets the existing entry, also when two nodes receive it at once: the partial
/// unique index on live entries makes the second insert do nothing.
#[tracing::instrument(level = "debug", skip_all, fields(node = %store.node_id()))]
pub(super) async fn quarantine(
    store: &PgStore,
    input: IntakeInput,
    reason: &NormalizeError,
) -> Result<QuarantineId, StoreError> {
    let keyring = store.keyring();
    let source = input.source.as_str();
    let body_index = quarantine_body_index(keyring, &input.body);
    let existing = "SELECT id FROM quarantine
                    WHERE source = $1 AND body_index = $2 AND status = 'quarantined'";
    let mut client = store.client().await?;
    if let Some(row) = client.query_opt(existing, &[&source, &body_index]).await? {
        return Ok(QuarantineId(row.get(0)));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let received_at = chrono::Utc::now();
    let (key_id, key) = keys::key_for_write(store, &mut client, &period_of(received_at)).await?;
    let sealed = seal_quarantine(&key, key_id, &id, &input)?;
    let reason_text = reason.to_string();
    let tx = client.transaction().await?;
    let inserted = tx
        .query_opt(
            "INSERT INTO quarantine (id, source, reason, received_at, status, key_id, nonce,
                                     ciphertext, body_index)
             VALUES ($1, $2, $3, $4, 'quarantined', $5, $6, $7, $8)
             ON CONFLICT (source, body_index) WHERE status = 'quarantined' DO NOTHING
             RETURNING id",
            &[
                &id,
                &source,
                &reason_text,
                &received_at,
                &key_id,
                &sealed.nonce,
                &sealed.ciphertext,
                &body_index,
            ],
        )
        .await?;
    if inserted.is_none() {
        let row = tx.query_one(existing, &[&source, &body_index]).await?;
        tx.commit().await?;
        return Ok(QuarantineId(row.get(0)));
    }
    let ev = quarantined_event(&input, &id, reason.code(), key_id);
    audit::append(store, &tx, &to_record(&ev)).await?;
    tx.commit().await?;
    Ok(QuarantineId(id))
}

/// Readiness: a small write transaction must commit (a read-only standby, a full disk or a
/// lost connection fail it).
#[tracing::instrument(level = "debug", skip_all, fields(node = %store.node_id()))]
pub(super) async fn probe(store: &PgStore) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO health_probe (filler) VALUES (decode(repeat('00', 8192), 'hex'))
             RETURNING id",
            &[],
        )
        .await?;
    let id: i64 = row.get(0);
    tx.execute("DELETE FROM health_probe WHERE id = $1", &[&id])
        .await?;
    tx.commit().await?;
    Ok(())
}
