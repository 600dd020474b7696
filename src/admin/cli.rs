//! `wardhook tokens create|list|revoke`: managing admin tokens on the host.
//!
//! The clap types live here, beside the token store, so `src/cli` only wires one subcommand.

use std::io::Write;

use chrono::Utc;
use clap::Subcommand;
use rusqlite::Connection;

use super::{tokens, Role};

/// `wardhook tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// A short name for who or what uses it (`ops-alice`, `prometheus`).
        #[arg(long)]
        name: String,
        /// `admin`, `operator` or `auditor`.
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. `90d`; no expiry when omitted.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens (names, roles, dates; never secrets).
    List,
    /// Revoke the active token with this name; its sessions end at their next request.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
pub enum TokensCliError {
    /// The token store refused.
    #[error(transparent)]
    Token(#[from] tokens::TokenError),
    /// `--expires` is not a duration.
    #[error("--expires: {0}")]
    Expires(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The audit record could not be written (nothing was changed).
    #[error("cannot write the audit record: {0}")]
    Audit(String),
}

/// The audit record of a token's creation or revocation, by the CLI user.
fn token_record(
    action: crate::audit::Action,
    token_id: &str,
    role: Option<&str>,
) -> crate::audit::AuditRecord {
    use crate::audit::{Actor, AuditRecord, Code, DetailKey, ObjectId, Outcome};
    let who = crate::store::admin::Requester::cli_user();
    let mut record = AuditRecord::new(
        Actor::cli_user(&who.user).unwrap_or(Actor::System),
        action,
        Outcome::Success,
    );
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

/// Run a token command on `conn`, printing to `out`. Creating and revoking a token are audit
/// records, written in the same transaction as the change.
pub fn run(
    conn: &Connection,
    keyring: &crate::crypto::Keyring,
    command: TokensCommand,
    out: &mut dyn Write,
) -> Result<(), TokensCliError> {
    tokens::migrate(conn)?;
    match command {
        TokensCommand::Create {
            name,
            role,
            expires,
        } => {
            let role = Role::parse(&role).ok_or(tokens::TokenError::BadRole)?;
            let expires = expires
                .map(|e| {
                    crate::config::parse_duration(&e)
                        .map_err(TokensCliError::Expires)
                        .and_then(|d| {
                            chrono::Duration::from_std(d)
                                .map(|d| Utc::now() + d)
                                .map_err(|_| TokensCliError::Expires("too long".into()))
                        })
                })
                .transpose()?;
            let tx = conn
                .unchecked_transaction()
                .map_err(tokens::TokenError::from)?;
            let t = tokens::create(&tx, &name, role, expires)?;
            crate::audit::append(
                &tx,
                keyring,
                &token_record(
                    crate::audit::Action::TokenCreated,
                    &t.info.id,
                    Some(t.info.role.as_str()),
                ),
            )
            .map_err(|e| TokensCliError::Audit(e.to_string()))?;
            tx.commit().map_err(tokens::TokenError::from)?;
            writeln!(out, "{}", t.token)?;
            writeln!(
                out,
                "# token {} ({}, role {}{}) — shown once; store it in a password manager",
                t.info.name,
                t.info.id,
                t.info.role.as_str(),
                t.info
                    .expires_at
                    .as_deref()
                    .map_or_else(String::new, |e| format!(", expires {e}"))
            )?;
        }
        TokensCommand::List => {
            writeln!(out, "name\tid\trole\tcreated\texpires\tstate")?;
            for t in tokens::list(conn)? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{state}",
                    t.name,
                    t.id,
                    t.role.as_str(),
                    t.created_at.get(..19).unwrap_or(&t.created_at),
                    t.expires_at.as_deref().unwrap_or("never")
                )?;
            }
        }
        TokensCommand::Revoke { name } => {
            let tx = conn
                .unchecked_transaction()
                .map_err(tokens::TokenError::from)?;
            let id = tokens::list(&tx)?
                .into_iter()
                .find(|t| t.name == name && t.revoked_at.is_none())
                .map(|t| t.id);
            tokens::revoke(&tx, &name)?;
            if let Some(id) = id {
                crate::audit::append(
                    &tx,
                    keyring,
                    &token_record(crate::audit::Action::TokenRevoked, &id, None),
                )
                .map_err(|e| TokensCliError::Audit(e.to_string()))?;
            }
            tx.commit().map_err(tokens::TokenError::from)?;
            writeln!(out, "revoked {name}")?;
        }
    }
    Ok(())
}
