//! Admin tokens: who may use the admin API and dashboard, and with which role.
//!
//! A token is shown once, at `wardhook tokens create`, and only its SHA-256 is stored. Its text
//! is `wardhook_<id>_<secret>`: the id (`tk` + 10 hex digits) finds the row without scanning
//! and is what the audit log names (`admin_token:<id>`); the secret is 32 random bytes. The
//! stored hash is compared in constant time, and a lookup of an unknown id still compares
//! against a dummy hash so timing does not reveal which ids exist.
//!
//! The rows live in whichever database the store uses, reached through
//! [`crate::store::Console`]: on PostgreSQL every node of a cluster sees the same tokens, so a
//! token created on one node works on all of them and revoking it ends it everywhere.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;
use crate::audit::{Action, AuditRecord, Code, DetailKey, ObjectId, Outcome};
use crate::store::console::{Console, StoredToken, TokenInsert};
use crate::store::types::Requester;
use crate::store::StoreError;

pub use crate::store::console::TokenInfo;

/// Why a token operation failed. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The store failed.
    #[error("token storage error: {0}")]
    Store(#[from] StoreError),
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

/// A freshly created token: `secret` is the full token text, shown once.
#[derive(Debug)]
pub struct NewToken {
    /// Its metadata.
    pub info: TokenInfo,
    /// `wardhook_<id>_<secret>` — print it once; it is not stored.
    pub token: String,
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

/// The audit record of a token's creation or revocation, by `who`.
fn token_record(
    action: Action,
    token_id: &str,
    role: Option<&str>,
    who: &Requester,
) -> AuditRecord {
    let mut record = AuditRecord::new(who.audit_actor(), action, Outcome::Success);
    if let Ok(kind) = Code::parse("admin_token") {
        record.detail.insert(DetailKey::ObjectKind, kind);
    }
    if let Ok(id) = ObjectId::parse(token_id) {
        record.detail.insert(DetailKey::ObjectId, id);
    }
    if let Some(r) = role.and_then(|r| Code::parse(r).ok()) {
        record.detail.insert(DetailKey::Result, r);
    }
    record
}

/// Create a token named `name` with `role`, valid until `expires` if given, with its
/// `token_created` audit record by `who` in the same transaction. The returned token text is
/// the only copy.
pub async fn create(
    console: &dyn Console,
    name: &str,
    role: Role,
    expires: Option<DateTime<Utc>>,
    who: &Requester,
) -> Result<NewToken, TokenError> {
    if !valid_name(name) {
        return Err(TokenError::BadName);
    }
    let (id, token) = {
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
        (id, token)
    };
    let info = TokenInfo {
        id,
        name: name.to_owned(),
        role,
        created_at: now_text(),
        expires_at: expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        revoked_at: None,
    };
    let record = token_record(Action::TokenCreated, &info.id, Some(role.as_str()), who);
    let stored = StoredToken {
        info: info.clone(),
        hash: hash(&token).to_vec(),
    };
    match console.create_token(stored, record).await? {
        TokenInsert::Created => Ok(NewToken { info, token }),
        TokenInsert::NameTaken => Err(TokenError::NameTaken(name.to_owned())),
    }
}

/// Every token, newest first (revoked ones included, for the record).
pub async fn list(console: &dyn Console) -> Result<Vec<TokenInfo>, TokenError> {
    Ok(console.list_tokens().await?)
}

/// Revoke the active token named `name`, audited as by `who`; sessions signed in with it end
/// at their next request. Returns its id.
pub async fn revoke(
    console: &dyn Console,
    name: &str,
    who: &Requester,
) -> Result<String, TokenError> {
    let who = who.clone();
    let record = Box::new(move |id: &str| token_record(Action::TokenRevoked, id, None, &who));
    console
        .revoke_token(name.to_owned(), record)
        .await?
        .ok_or_else(|| TokenError::NotFound(name.to_owned()))
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
pub async fn authenticate(
    console: &dyn Console,
    token: &str,
) -> Result<Result<TokenInfo, Refusal>, TokenError> {
    let presented = hash(token);
    let Some(id) = id_of(token) else {
        // Same work as a real comparison, so malformed and unknown tokens look alike.
        let _ = presented.ct_eq(&[0u8; 32]);
        return Ok(Err(Refusal::BadToken));
    };
    let Some(stored) = console.token_by_id(id.to_owned()).await? else {
        let _ = presented.ct_eq(&[0u8; 32]);
        return Ok(Err(Refusal::BadToken));
    };
    if !bool::from(presented.as_slice().ct_eq(stored.hash.as_slice())) {
        return Ok(Err(Refusal::BadToken));
    }
    let info = stored.info;
    if info.revoked_at.is_some() {
        return Ok(Err(Refusal::Revoked));
    }
    if let Some(exp) = &info.expires_at {
        let expired = DateTime::parse_from_rfc3339(exp)
            .map(|t| t.with_timezone(&Utc) <= Utc::now())
            .unwrap_or(true);
        if expired {
            return Ok(Err(Refusal::Expired));
        }
    }
    Ok(Ok(info))
}

/// Whether token `id` is still usable (not revoked, not expired): checked on every dashboard
/// request so revoking a token ends its sessions.
pub async fn still_valid(console: &dyn Console, id: &str) -> Result<bool, TokenError> {
    let Some(stored) = console.token_by_id(id.to_owned()).await? else {
        return Ok(false);
    };
    Ok(match (&stored.info.expires_at, &stored.info.revoked_at) {
        (_, Some(_)) => false,
        (Some(exp), None) => DateTime::parse_from_rfc3339(exp)
            .map(|t| t.with_timezone(&Utc) > Utc::now())
            .unwrap_or(false),
        (None, None) => true,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::{Keyring, MasterKey};
    use crate::store::{Storage, Store, StoreOptions};

    fn db() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::from_master(&MasterKey::from_bytes([5; 32]));
        let store = Store::open(&dir.path().join("t.db"), ring, StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn who() -> Requester {
        Requester {
            user: "tester".into(),
            via: "cli",
        }
    }

    #[tokio::test]
    async fn a_created_token_authenticates_and_only_its_hash_is_stored() {
        let (_dir, store) = db();
        let c = store.console();
        c.prepare_console().await.unwrap();
        c.prepare_console().await.unwrap();
        let t = create(c, "ops-1", Role::Operator, None, &who())
            .await
            .unwrap();
        let info = authenticate(c, &t.token).await.unwrap().unwrap();
        assert_eq!(info.role, Role::Operator);
        assert_eq!(info.name, "ops-1");
        let stored = c.token_by_id(t.info.id.clone()).await.unwrap().unwrap();
        assert_ne!(stored.hash, t.token.as_bytes());
        assert_eq!(stored.hash, hash(&t.token).to_vec());
        assert!(!format!("{:?}", list(c).await.unwrap()).contains(&t.token));
    }

    #[tokio::test]
    async fn wrong_secret_revoked_and_expired_tokens_are_refused() {
        let (_dir, store) = db();
        let c = store.console();
        c.prepare_console().await.unwrap();
        let t = create(c, "a", Role::Admin, None, &who()).await.unwrap();
        let forged = format!("{}x", t.token);
        assert_eq!(
            authenticate(c, &forged).await.unwrap(),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            authenticate(c, "garbage").await.unwrap(),
            Err(Refusal::BadToken)
        );
        revoke(c, "a", &who()).await.unwrap();
        assert_eq!(
            authenticate(c, &t.token).await.unwrap(),
            Err(Refusal::Revoked)
        );
        let old = create(
            c,
            "b",
            Role::Auditor,
            Some(Utc::now() - chrono::Duration::days(1)),
            &who(),
        )
        .await
        .unwrap();
        assert_eq!(
            authenticate(c, &old.token).await.unwrap(),
            Err(Refusal::Expired)
        );
        assert!(!still_valid(c, &old.info.id).await.unwrap());
    }

    #[tokio::test]
    async fn names_must_be_identifiers_and_unique_among_active_tokens() {
        let (_dir, store) = db();
        let c = store.console();
        c.prepare_console().await.unwrap();
        assert!(matches!(
            create(c, "Dr Smith", Role::Admin, None, &who()).await,
            Err(TokenError::BadName)
        ));
        create(c, "x", Role::Admin, None, &who()).await.unwrap();
        assert!(matches!(
            create(c, "x", Role::Admin, None, &who()).await,
            Err(TokenError::NameTaken(_))
        ));
        revoke(c, "x", &who()).await.unwrap();
        create(c, "x", Role::Admin, None, &who()).await.unwrap();
    }
}
