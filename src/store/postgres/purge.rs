//! `purge --older-than` on PostgreSQL: the SQLite store's rules in one transaction.
//!
//! Payloads received before the cutoff are deleted (metadata rows kept for the audit trail),
//! their jobs and attempts removed, and the data key of every period that ended at or before
//! the cutoff destroyed once nothing readable uses it (crypto-shredding: copies the `UPDATE`
//! cannot reach in this database — dead tuples before VACUUM — become unreadable; WAL archives
//! and base backups taken before the purge hold their own copy of the wrapped key and stay
//! readable with the master key until they are deleted).

use chrono::{DateTime, Utc};

use super::{audit, keys, PgStore};
use crate::store::types::{PurgeReport, Requester};
use crate::store::StoreError;

/// See the module docs.
#[tracing::instrument(skip_all, fields(node = %store.node_id()))]
pub(super) async fn purge_older_than(
    store: &PgStore,
    cutoff: DateTime<Utc>,
    who: &Requester,
) -> Result<PurgeReport, StoreError> {
    if cutoff > Utc::now() {
        return Err(StoreError::InvalidArgument(
            "purge cutoff is in the future".into(),
        ));
    }
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "DELETE FROM attempts WHERE job_id IN
           (SELECT j.id FROM jobs j JOIN deliveries d ON j.delivery_id = d.id
            WHERE d.received_at < $1)",
        &[&cutoff],
    )
    .await?;
    let jobs = tx
        .execute(
            "DELETE FROM jobs WHERE delivery_id IN
               (SELECT id FROM deliveries WHERE received_at < $1)",
            &[&cutoff],
        )
        .await?;
    let deliveries = tx
        .execute(
            "UPDATE deliveries SET nonce = NULL, ciphertext = NULL, caller_ref = NULL,
                                   status = 'purged',
                                   purged_at = now()
             WHERE received_at < $1 AND status <> 'purged'",
            &[&cutoff],
        )
        .await?;
    let quarantined = tx
        .execute(
            "UPDATE quarantine SET nonce = NULL, ciphertext = NULL, status = 'purged',
                                   purged_at = now()
             WHERE received_at < $1 AND status <> 'purged'",
            &[&cutoff],
        )
        .await?;
    // A period (UTC day) ends at the next midnight UTC.
    let keys_destroyed = tx
        .execute(
            "UPDATE data_keys k SET wrapped = NULL, destroyed_at = now()
             WHERE k.wrapped IS NOT NULL
               AND ((k.period::date + 1)::timestamp AT TIME ZONE 'UTC') <= $1
               AND NOT EXISTS (SELECT 1 FROM deliveries
                               WHERE key_id = k.key_id AND ciphertext IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM quarantine
                               WHERE key_id = k.key_id AND ciphertext IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM jobs
                               WHERE out_key_id = k.key_id AND out_ciphertext IS NOT NULL)",
            &[&cutoff],
        )
        .await?;
    let report = PurgeReport {
        deliveries,
        quarantined,
        jobs,
        keys_destroyed,
    };
    for record in report.audit_records(who, cutoff) {
        audit::append(store, &tx, &record).await?;
    }
    tx.commit().await?;
    keys::forget(store);
    Ok(report)
}
