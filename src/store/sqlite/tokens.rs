//! Admin tokens on SQLite: the `admin_tokens` table, kept in the store's file.
//!
//! The table is created here, idempotently, by [`migrate`] rather than by the store's schema
//! versions: the admin console is an optional layer over the store.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::audit::AuditRecord;
use crate::store::console::{RevokeRecord, Role, StoredToken, TokenInfo, TokenInsert};
use crate::store::{Store, StoreError};

/// Create the admin tables if they do not exist. Safe to call at every start.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS admin_tokens (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            role        TEXT NOT NULL,
            hash        BLOB NOT NULL,          -- SHA-256 of the whole token text
            created_at  TEXT NOT NULL,
            expires_at  TEXT,
            revoked_at  TEXT
        );
        CREATE UNIQUE INDEX IF NOT EXISTS admin_tokens_active_name
            ON admin_tokens (name) WHERE revoked_at IS NULL;",
    )?;
    Ok(())
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Insert `token` and append `record` in one transaction, then mirror the record.
pub(super) fn create(
    store: &Store,
    token: &StoredToken,
    record: &AuditRecord,
) -> Result<TokenInsert, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let t = &token.info;
    let inserted = tx.execute(
        "INSERT INTO admin_tokens (id, name, role, hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            t.id,
            t.name,
            t.role.as_str(),
            token.hash,
            t.created_at,
            t.expires_at
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Ok(TokenInsert::NameTaken);
        }
        Err(e) => return Err(e.into()),
    }
    crate::audit::append(&tx, store.keyring(), record)?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(TokenInsert::Created)
}

/// Every token, newest first.
pub(super) fn list(store: &Store) -> Result<Vec<TokenInfo>, StoreError> {
    let conn = store.connection()?;
    let mut stmt = conn.prepare(
        "SELECT id, name, role, created_at, expires_at, revoked_at FROM admin_tokens
         ORDER BY created_at DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, role, created_at, expires_at, revoked_at) = row?;
        let Some(role) = Role::parse(&role) else {
            continue;
        };
        out.push(TokenInfo {
            id,
            name,
            role,
            created_at,
            expires_at,
            revoked_at,
        });
    }
    Ok(out)
}

/// Revoke the active token named `name` with its audit record, in one transaction.
pub(super) fn revoke(
    store: &Store,
    name: &str,
    record: RevokeRecord,
) -> Result<Option<String>, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<String> = tx
        .query_row(
            "SELECT id FROM admin_tokens WHERE name = ?1 AND revoked_at IS NULL",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1",
        params![id, now_text()],
    )?;
    crate::audit::append(&tx, store.keyring(), &record(&id))?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(Some(id))
}

/// The token with id `id`.
pub(super) fn by_id(store: &Store, id: &str) -> Result<Option<StoredToken>, StoreError> {
    let conn = store.connection()?;
    let row = conn
        .query_row(
            "SELECT name, role, hash, created_at, expires_at, revoked_at
             FROM admin_tokens WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()?;
    Ok(
        row.and_then(|(name, role, hash, created_at, expires_at, revoked_at)| {
            Some(StoredToken {
                info: TokenInfo {
                    id: id.to_owned(),
                    name,
                    role: Role::parse(&role)?,
                    created_at,
                    expires_at,
                    revoked_at,
                },
                hash,
            })
        }),
    )
}

/// Create the table (for [`crate::store::Console::prepare_console`]).
pub(super) fn prepare(store: &Store) -> Result<(), StoreError> {
    migrate(&store.connection()?)
}
