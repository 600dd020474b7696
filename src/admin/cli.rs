//! `wardhook tokens create|list|revoke`: managing admin tokens on the host.
//!
//! The clap types live here, beside the token store, so `src/cli` only wires one subcommand.

use std::io::Write;

use super::{tokens, Role};
use crate::store::types::Requester;
use crate::store::Console;
use chrono::Utc;
use clap::Subcommand;

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

/// Run a token command against `console`, printing to `out`. Creating and revoking a token are
/// audit records, written in the same transaction as the change.
pub async fn run(
    console: &dyn Console,
    command: TokensCommand,
    out: &mut dyn Write,
) -> Result<(), TokensCliError> {
    console
        .prepare_console()
        .await
        .map_err(tokens::TokenError::from)?;
    let who = Requester::cli_user();
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
            let t = tokens::create(console, &name, role, expires, &who)
                .await
                .map_err(audit_failure)?;
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
            for t in tokens::list(console).await? {
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
            tokens::revoke(console, &name, &who)
                .await
                .map_err(audit_failure)?;
            writeln!(out, "revoked {name}")?;
        }
    }
    Ok(())
}

/// A refused audit append rolled the change back: say so as the audit failure it is.
fn audit_failure(e: tokens::TokenError) -> TokensCliError {
    match e {
        tokens::TokenError::Store(crate::store::StoreError::Audit(reason)) => {
            TokensCliError::Audit(reason)
        }
        other => TokensCliError::Token(other),
    }
}
