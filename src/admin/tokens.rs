//! Admin tokens: who may use the admin API and dashboard, and with which role.
//!
//! A token is shown once, at `wardhook tokens create`, and only its SHA-256 is stored. Its text
//! is `wardhook_<id>_<secret>`: the id (`tk` + 10 hex digits) finds the row without scanning
//! and is what the audit log names (`admin_token:<id>`); the secret is 32 random bytes. The
//! stored hash is compared in constant time, and a lookup of an unknown id still compares
//! against a dummy hash so timing does not reveal which ids exist.
//!
//! The table lives in the same SQLite file but is created here, idempotently, by [`migrate`]:
//! the admin console is an optional layer over the store, not part of its schema versions.

use std::path::Path;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;

/// Why a token operation failed. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// SQLite failed.
    #[error("token storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The name is not a short identifier (letters, digits, `_ . -`, starting with a letter).
    #[error("token name must start with a letter and use only A-Z a-z 0-9 _ . - (at most 48)")]
    BadName,
    /// An active token already has this name.
    #[error("an active token named {0} already exists; revoke it first")]
    NameTaken(String),
    /// No active token has this name.
    #[error("no active token named {0}")]
    NotFound(String),
    /// The role is not `admin`, `operator` or `auditor`.
    #[error("role must be admin, operator or auditor")]
    BadRole,
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The id inside the token, used in audit records.
    pub id: String,
    /// The human name given at creation.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Creation time (RFC 3339 UTC).
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// A freshly created token: `secret` is the full token text, shown once.
#[derive(Debug)]
pub struct NewToken {
    /// Its metadata.
    pub info: TokenInfo,
    /// `wardhook_<id>_<secret>` — print it once; it is not stored.
    pub token: String,
}

/// Create the admin tables if they do not exist. Safe to call at every start.
pub fn migrate(conn: &Connection) -> Result<(), TokenError> {
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

/// Open the existing database at `path` for token commands (busy timeout set, tables
/// created). It is never created here: [`crate::store::Store::open`] creates it owner-only.
pub fn open(path: &Path) -> Result<Connection, TokenError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::default() - rusqlite::OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&conn)?;
    Ok(conn)
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn valid_name(name: &str) -> bool {
    name.len() <= 48
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Create a token named `name` with `role`, valid until `expires` if given. The returned
/// token text is the only copy.
pub fn create(
    conn: &Connection,
    name: &str,
    role: Role,
    expires: Option<DateTime<Utc>>,
) -> Result<NewToken, TokenError> {
    if !valid_name(name) {
        return Err(TokenError::BadName);
    }
    let mut rng = rand::thread_rng();
    let mut id_bytes = [0u8; 5];
    rng.fill_bytes(&mut id_bytes);
    let id = format!("tk{}", hex::encode(id_bytes));
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let token = format!(
        "wardhook_{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let created_at = now_text();
    let expires_at = expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let inserted = conn.execute(
        "INSERT INTO admin_tokens (id, name, role, hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            name,
            role.as_str(),
            hash(&token).to_vec(),
            created_at,
            expires_at
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(TokenError::NameTaken(name.to_owned()));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(NewToken {
        info: TokenInfo {
            id,
            name: name.to_owned(),
            role,
            created_at,
            expires_at,
            revoked_at: None,
        },
        token,
    })
}

/// Every token, newest first (revoked ones included, for the record).
pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, TokenError> {
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

/// Revoke the active token named `name`; sessions signed in with it end at their next request.
pub fn revoke(conn: &Connection, name: &str) -> Result<(), TokenError> {
    let n = conn.execute(
        "UPDATE admin_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, now_text()],
    )?;
    if n == 0 {
        return Err(TokenError::NotFound(name.to_owned()));
    }
    Ok(())
}

/// Why a presented token was refused (for the audit record's `reason`; never shown in detail
/// to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not of the `wardhook_<id>_<secret>` shape, or no such id, or the secret is wrong.
    BadToken,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl Refusal {
    /// The audit reason code.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadToken => "bad_token",
            Self::Expired => "token_expired",
            Self::Revoked => "token_revoked",
        }
    }
}

/// The id inside a token text, if it has the right shape. Used to name the actor of a refusal
/// only when the id exists.
pub fn id_of(token: &str) -> Option<&str> {
    let mut parts = token.splitn(3, '_');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("wardhook"), Some(id), Some(secret))
            if id.len() == 12
                && id.starts_with("tk")
                && id[2..].chars().all(|c| c.is_ascii_hexdigit())
                && !secret.is_empty() =>
        {
            Some(id)
        }
        _ => None,
    }
}

/// Check a presented token. Constant time in the secret; the id only selects the row.
pub fn authenticate(
    conn: &Connection,
    token: &str,
) -> Result<Result<TokenInfo, Refusal>, TokenError> {
    let presented = hash(token);
    let Some(id) = id_of(token) else {
        // Same work as a real comparison, so malformed and unknown tokens look alike.
        let _ = presented.ct_eq(&[0u8; 32]);
        return Ok(Err(Refusal::BadToken));
    };
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
    let Some((name, role, stored, created_at, expires_at, revoked_at)) = row else {
        let _ = presented.ct_eq(&[0u8; 32]);
        return Ok(Err(Refusal::BadToken));
    };
    if !bool::from(presented.as_slice().ct_eq(stored.as_slice())) {
        return Ok(Err(Refusal::BadToken));
    }
    if revoked_at.is_some() {
        return Ok(Err(Refusal::Revoked));
    }
    if let Some(exp) = &expires_at {
        let expired = DateTime::parse_from_rfc3339(exp)
            .map(|t| t.with_timezone(&Utc) <= Utc::now())
            .unwrap_or(true);
        if expired {
            return Ok(Err(Refusal::Expired));
        }
    }
    let Some(role) = Role::parse(&role) else {
        return Ok(Err(Refusal::BadToken));
    };
    Ok(Ok(TokenInfo {
        id: id.to_owned(),
        name,
        role,
        created_at,
        expires_at,
        revoked_at,
    }))
}

/// Whether token `id` is still usable (not revoked, not expired): checked on every dashboard
/// request so revoking a token ends its sessions.
pub fn still_valid(conn: &Connection, id: &str) -> Result<bool, TokenError> {
    let row: Option<(Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT expires_at, revoked_at FROM admin_tokens WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((_, Some(_))) | None => false,
        Some((Some(exp), None)) => DateTime::parse_from_rfc3339(&exp)
            .map(|t| t.with_timezone(&Utc) > Utc::now())
            .unwrap_or(false),
        Some((None, None)) => true,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        conn
    }

    #[test]
    fn a_created_token_authenticates_and_only_its_hash_is_stored() {
        let conn = db();
        let t = create(&conn, "ops-1", Role::Operator, None).unwrap();
        let info = authenticate(&conn, &t.token).unwrap().unwrap();
        assert_eq!(info.role, Role::Operator);
        assert_eq!(info.name, "ops-1");
        let stored: Vec<u8> = conn
            .query_row("SELECT hash FROM admin_tokens", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, t.token.as_bytes());
        assert!(!format!("{:?}", list(&conn).unwrap()).contains(&t.token));
    }

    #[test]
    fn wrong_secret_revoked_and_expired_tokens_are_refused() {
        let conn = db();
        let t = create(&conn, "a", Role::Admin, None).unwrap();
        let forged = format!("{}x", t.token);
        assert_eq!(
            authenticate(&conn, &forged).unwrap(),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            authenticate(&conn, "garbage").unwrap(),
            Err(Refusal::BadToken)
        );
        revoke(&conn, "a").unwrap();
        assert_eq!(
            authenticate(&conn, &t.token).unwrap(),
            Err(Refusal::Revoked)
        );
        let old = create(
            &conn,
            "b",
            Role::Auditor,
            Some(Utc::now() - chrono::Duration::days(1)),
        )
        .unwrap();
        assert_eq!(
            authenticate(&conn, &old.token).unwrap(),
            Err(Refusal::Expired)
        );
        assert!(!still_valid(&conn, &old.info.id).unwrap());
    }

    #[test]
    fn names_must_be_identifiers_and_unique_among_active_tokens() {
        let conn = db();
        assert!(matches!(
            create(&conn, "Dr Smith", Role::Admin, None),
            Err(TokenError::BadName)
        ));
        create(&conn, "x", Role::Admin, None).unwrap();
        assert!(matches!(
            create(&conn, "x", Role::Admin, None),
            Err(TokenError::NameTaken(_))
        ));
        revoke(&conn, "x").unwrap();
        create(&conn, "x", Role::Admin, None).unwrap();
    }
}
