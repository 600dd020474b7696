//! The console's admin tokens on PostgreSQL: one table for the whole cluster, so a token
//! created on any node works on every node and revoking it ends it everywhere.

use tokio_postgres::Row;

use super::{audit, PgStore};
use crate::audit::AuditRecord;
use crate::store::console::{RevokeRecord, Role, StoredToken, TokenInfo, TokenInsert};
use crate::store::StoreError;

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Insert `token` and append `record` on this node's chain, in one transaction. The unique
/// index on active names decides a race between two nodes creating the same name.
pub(super) async fn create(
    store: &PgStore,
    token: &StoredToken,
    record: &AuditRecord,
) -> Result<TokenInsert, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let t = &token.info;
    let inserted = tx
        .execute(
            "INSERT INTO admin_tokens (id, name, role, hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &t.id,
                &t.name,
                &t.role.as_str(),
                &token.hash,
                &t.created_at,
                &t.expires_at,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(TokenInsert::NameTaken);
    }
    audit::append(store, &tx, record).await?;
    tx.commit().await?;
    Ok(TokenInsert::Created)
}

fn info_from_row(row: &Row) -> Option<TokenInfo> {
    Some(TokenInfo {
        id: row.get(0),
        name: row.get(1),
        role: Role::parse(row.get::<_, &str>(2))?,
        created_at: row.get(3),
        expires_at: row.get(4),
        revoked_at: row.get(5),
    })
}

/// Every token, newest first.
pub(super) async fn list(store: &PgStore) -> Result<Vec<TokenInfo>, StoreError> {
    let client = store.client().await?;
    Ok(client
        .query(
            "SELECT id, name, role, created_at, expires_at, revoked_at FROM admin_tokens
             ORDER BY created_at DESC",
            &[],
        )
        .await?
        .iter()
        .filter_map(info_from_row)
        .collect())
}

/// Revoke the active token named `name`, with its audit record, in one transaction.
pub(super) async fn revoke(
    store: &PgStore,
    name: &str,
    record: RevokeRecord,
) -> Result<Option<String>, StoreError> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let revoked = tx
        .query_opt(
            "UPDATE admin_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL
             RETURNING id",
            &[&name, &now_text()],
        )
        .await?;
    let Some(row) = revoked else {
        return Ok(None);
    };
    let id: String = row.get(0);
    audit::append(store, &tx, &record(&id)).await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// The token with id `id`.
pub(super) async fn by_id(store: &PgStore, id: &str) -> Result<Option<StoredToken>, StoreError> {
    let client = store.client().await?;
    let row = client
        .query_opt(
            "SELECT id, name, role, created_at, expires_at, revoked_at, hash
             FROM admin_tokens WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.and_then(|r| {
        Some(StoredToken {
            info: info_from_row(&r)?,
            hash: r.get(6),
        })
    }))
}

/// Nothing to create: the schema migration made the table. Checks the database answers.
pub(super) async fn prepare(store: &PgStore) -> Result<(), StoreError> {
    let client = store.client().await?;
    client.query_one("SELECT 1", &[]).await?;
    Ok(())
}
