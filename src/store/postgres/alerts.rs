//! Console alerts on PostgreSQL: the same `alerts` table as on SQLite (created by its own
//! idempotent migration under an advisory lock), shared by every node, and the one-row lease
//! that decides which node evaluates the cluster-wide rules. See [`crate::store::alerts`].
//!
//! Two guards keep an alert from opening or being notified twice across nodes: only the lease
//! holder evaluates the cluster-wide rules, and even if two nodes did (a lease that lapsed
//! mid-evaluation), opening is an insert guarded by the partial unique index and resolving a
//! conditional update, so only one of them gets the row back — and only that one notifies.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{audit, PgStore};
use crate::audit::Action;
use crate::store::alerts::{
    new_id, transition_record, Alert, AlertFacts, AlertState, AlertStore, AttemptFact, NewAlert,
    SourceFact,
};
use crate::store::types::Requester;
use crate::store::{StoreError, StoreFuture};

/// Serialises the table's creation across nodes ("wardalrt" in ASCII).
const ALERTS_LOCK: i64 = 0x7761_7264_616c_7274;

/// Create the tables if missing.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ALERTS_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS alerts (
             id              TEXT PRIMARY KEY,
             key             TEXT NOT NULL,
             rule            TEXT NOT NULL,
             subject         TEXT NOT NULL,
             summary         TEXT NOT NULL,
             state           TEXT NOT NULL,
             opened_at       TIMESTAMPTZ NOT NULL,
             acknowledged_at TIMESTAMPTZ,
             acknowledged_by TEXT,
             resolved_at     TIMESTAMPTZ
         );
         CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved ON alerts (key)
             WHERE state <> 'resolved';
         CREATE INDEX IF NOT EXISTS alerts_opened ON alerts (opened_at);
         CREATE TABLE IF NOT EXISTS alert_lease (
             id         INTEGER PRIMARY KEY CHECK (id = 1),
             node_id    TEXT NOT NULL,
             held_until TIMESTAMPTZ NOT NULL
         );",
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

const SELECT: &str = "SELECT id, rule, subject, summary, state, opened_at, acknowledged_at,
                             acknowledged_by, resolved_at FROM alerts";

fn alert(r: &Row) -> Alert {
    Alert {
        id: r.get(0),
        rule: r.get(1),
        subject: r.get(2),
        summary: r.get(3),
        state: AlertState::parse(r.get::<_, &str>(4)),
        opened_at: r.get(5),
        acknowledged_at: r.get(6),
        acknowledged_by: r.get(7),
        resolved_at: r.get(8),
    }
}

async fn by_id(client: &impl GenericClient, id: &str) -> Result<Option<Alert>, StoreError> {
    Ok(client
        .query_opt(&format!("{SELECT} WHERE id = $1"), &[&id])
        .await?
        .as_ref()
        .map(alert))
}

async fn open(store: &PgStore, new: NewAlert) -> Result<Option<Alert>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let id = new_id();
    let inserted = tx
        .execute(
            "INSERT INTO alerts (id, key, rule, subject, summary, state, opened_at)
             VALUES ($1, $2, $3, $4, $5, 'open', $6)
             ON CONFLICT (key) WHERE state <> 'resolved' DO NOTHING",
            &[
                &id,
                &new.key(),
                &new.rule,
                &new.subject,
                &new.summary,
                &Utc::now(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    let row = by_id(&tx, &id)
        .await?
        .ok_or(StoreError::NotFound("alert"))?;
    audit::append(
        store,
        &tx,
        &transition_record(Action::AlertOpened, &row, None),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

async fn resolve(store: &PgStore, key: &str) -> Result<Option<Alert>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let updated = tx
        .query_opt(
            "UPDATE alerts SET state = 'resolved', resolved_at = $2
             WHERE key = $1 AND state <> 'resolved' RETURNING id",
            &[&key, &Utc::now()],
        )
        .await?;
    let Some(updated) = updated else {
        return Ok(None);
    };
    let id: String = updated.get(0);
    let row = by_id(&tx, &id)
        .await?
        .ok_or(StoreError::NotFound("alert"))?;
    audit::append(
        store,
        &tx,
        &transition_record(Action::AlertResolved, &row, None),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

async fn acknowledge(
    store: &PgStore,
    id: &str,
    who: &Requester,
) -> Result<Option<Alert>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    if by_id(&tx, id).await?.is_none() {
        return Err(StoreError::NotFound("alert"));
    }
    let changed = tx
        .execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = $2, acknowledged_by = $3
             WHERE id = $1 AND state = 'open'",
            &[&id, &Utc::now(), &who.user],
        )
        .await?;
    if changed == 0 {
        return Ok(None);
    }
    let row = by_id(&tx, id).await?.ok_or(StoreError::NotFound("alert"))?;
    audit::append(
        store,
        &tx,
        &transition_record(Action::AlertAcknowledged, &row, Some(who)),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

async fn list(store: &PgStore, resolved: usize) -> Result<Vec<Alert>, StoreError> {
    let client = store.client().await?;
    let mut out: Vec<Alert> = client
        .query(
            &format!("{SELECT} WHERE state <> 'resolved' ORDER BY opened_at DESC, id"),
            &[],
        )
        .await?
        .iter()
        .map(alert)
        .collect();
    let limit = i64::try_from(resolved.min(1000)).unwrap_or(1000);
    let done = client
        .query(
            &format!("{SELECT} WHERE state = 'resolved' ORDER BY resolved_at DESC, id LIMIT $1"),
            &[&limit],
        )
        .await?;
    out.extend(done.iter().map(alert));
    Ok(out)
}

async fn facts(
    store: &PgStore,
    attempts: u32,
    since: DateTime<Utc>,
) -> Result<AlertFacts, StoreError> {
    let client = store.client().await?;
    // The newest attempts by id (the primary key), so the query never scans the whole table.
    let attempts = client
        .query(
            "SELECT j.handler, a.result = 'ok', a.started_at
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE a.id > (SELECT COALESCE(MAX(id), 0) FROM attempts) - $1
             ORDER BY a.id",
            &[&i64::from(attempts)],
        )
        .await?
        .iter()
        .map(|r| AttemptFact {
            handler: r.get(0),
            ok: r.get(1),
            started_at: r.get(2),
        })
        .collect();
    let dead_letters = client
        .query(
            "SELECT handler, COUNT(*) FROM jobs WHERE status = 'dead'
             GROUP BY handler ORDER BY handler",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            )
        })
        .collect();
    let sources = client
        .query(
            "SELECT source, COUNT(*), MAX(received_at) FROM deliveries
             WHERE received_at >= $1 GROUP BY source ORDER BY source",
            &[&since],
        )
        .await?
        .iter()
        .map(|r| SourceFact {
            source: r.get(0),
            received: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            last_received: r.get(2),
        })
        .collect();
    Ok(AlertFacts {
        attempts,
        dead_letters,
        sources,
    })
}

/// Take or renew the lease: the row is this node's afterwards only if it was free, lapsed or
/// already this node's.
async fn lead(store: &PgStore, ttl: std::time::Duration) -> Result<bool, StoreError> {
    let client = store.client().await?;
    let ttl_secs = ttl.as_secs_f64().clamp(1.0, 86_400.0);
    let held = client
        .execute(
            "INSERT INTO alert_lease (id, node_id, held_until)
             VALUES (1, $1, now() + $2::float8 * interval '1 second')
             ON CONFLICT (id) DO UPDATE
                SET node_id = EXCLUDED.node_id, held_until = EXCLUDED.held_until
                WHERE alert_lease.node_id = EXCLUDED.node_id OR alert_lease.held_until < now()",
            &[&store.node_id(), &ttl_secs],
        )
        .await?;
    Ok(held == 1)
}

impl AlertStore for PgStore {
    fn open_alert(&self, alert: NewAlert) -> StoreFuture<'_, Option<Alert>> {
        Box::pin(async move { self.track(open(self, alert).await) })
    }

    fn resolve_alert(&self, key: String) -> StoreFuture<'_, Option<Alert>> {
        Box::pin(async move { self.track(resolve(self, &key).await) })
    }

    fn acknowledge_alert(&self, id: String, who: Requester) -> StoreFuture<'_, Option<Alert>> {
        Box::pin(async move { self.track(acknowledge(self, &id, &who).await) })
    }

    fn list_alerts(&self, resolved: usize) -> StoreFuture<'_, Vec<Alert>> {
        Box::pin(async move { self.track(list(self, resolved).await) })
    }

    fn alert_facts(&self, attempts: u32, since: DateTime<Utc>) -> StoreFuture<'_, AlertFacts> {
        Box::pin(async move { self.track(facts(self, attempts, since).await) })
    }

    fn lead_alerts(&self, ttl: std::time::Duration) -> StoreFuture<'_, bool> {
        Box::pin(async move { self.track(lead(self, ttl).await) })
    }

    fn alert_node(&self) -> String {
        self.node_id().to_owned()
    }
}
