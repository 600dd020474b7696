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
}

/// Run a token command on `conn`, printing to `out`.
pub fn run(
    conn: &Connection,
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
            let t = tokens::create(conn, &name, role, expires)?;
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
            tokens::revoke(conn, &name)?;
            writeln!(out, "revoked {name}")?;
        }
    }
    Ok(())
}
