//! `[storage]`: which backend, and for PostgreSQL the checked connection settings.
//!
//! Strict by default: TLS to the database is required and verified against a CA file; plain
//! TCP is accepted only when every host in the URL is loopback or a Unix socket, where there is
//! no network to listen on. The URL itself is a secret reference because it usually carries
//! the password, and no message here echoes it.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use super::file::{PostgresSection, StorageSection};
use crate::secret::{Secret, SecretRef};
use std::path::PathBuf;

/// How the connection to the database is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// TLS required and the server certificate verified: it must chain to a CA in `ca_file`
    /// (PEM) and name the host connected to. There is no "encrypt but don't verify" mode: an
    /// unverified connection to the database that holds every payload is a man-in-the-middle
    /// waiting to happen.
    Require {
        /// PEM CA certificates that issued the server's certificate.
        ca_file: PathBuf,
    },
    /// Plain TCP. The config check allows it only for a loopback host or a Unix socket.
    Disable,
}

/// What [`PgStore::open`] needs. Built from `[storage.postgres]` by the config check.
pub struct PgSettings {
    /// The connection URL or `key=value` string, resolved from its secret reference (it usually
    /// carries the password).
    pub url: Zeroizing<String>,
    /// TLS to the database.
    pub tls: PgTls,
    /// Connections this node keeps open.
    pub pool_size: usize,
    /// This node's name in the audit chain and in job leases. Unique per node.
    pub node_id: String,
    /// How long a request waits for a free connection (or to open one) before the store
    /// answers `Unavailable`.
    pub wait_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &"<redacted>")
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Connections per node unless `pool_size` says otherwise.
const DEFAULT_POOL_SIZE: usize = 16;
/// Wait for a connection unless `wait_timeout` says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Where deliveries, jobs and the audit log live.
#[derive(Debug)]
pub enum StorageBackend {
    /// The SQLite file at `[storage] path` (the default).
    Sqlite,
    /// A PostgreSQL database shared by several nodes.
    Postgres(PgSettings),
}

impl StorageBackend {
    /// `sqlite` or `postgres`, as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// Check `[storage] backend` and `[storage.postgres]`, pushing every problem with its key path.
pub(super) fn check_backend(
    section: &StorageSection,
    base: &Path,
    problems: &mut impl FnMut(&str, String),
) -> Option<StorageBackend> {
    match section.backend.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            if section.postgres.is_some() {
                problems(
                    "storage.postgres",
                    "is set but storage.backend is \"sqlite\"; set backend = \"postgres\" or remove the section".into(),
                );
                return None;
            }
            Some(StorageBackend::Sqlite)
        }
        "postgres" => {
            let Some(pg) = &section.postgres else {
                problems(
                    "storage.postgres",
                    "is required when storage.backend = \"postgres\" (at least url)".into(),
                );
                return None;
            };
            check_postgres(pg, base, problems).map(StorageBackend::Postgres)
        }
        _ => {
            problems(
                "storage.backend",
                "must be \"sqlite\" or \"postgres\"".into(),
            );
            None
        }
    }
}

fn check_postgres(
    pg: &PostgresSection,
    base: &Path,
    problems: &mut impl FnMut(&str, String),
) -> Option<PgSettings> {
    // Any problem means no settings, even where each field alone parsed.
    let mut found = 0usize;
    let mut problems = |path: &str, message: String| {
        found += 1;
        problems(path, message);
    };
    let url = match SecretRef::parse(&pg.url.0).and_then(|r| Secret::resolve(&r, base)) {
        Ok(secret) => match secret.expose_str() {
            Some(text) => Some(Zeroizing::new(text.to_owned())),
            None => {
                problems(
                    "storage.postgres.url",
                    "the referenced value is not text".into(),
                );
                None
            }
        },
        Err(e) => {
            problems("storage.postgres.url", e.to_string());
            None
        }
    };
    let parsed = url.as_ref().and_then(|u| match u.parse::<tokio_postgres::Config>() {
        Ok(c) => Some(c),
        Err(_) => {
            problems(
                "storage.postgres.url",
                "the referenced value is not a PostgreSQL connection URL (postgres://user@host/db)".into(),
            );
            None
        }
    });
    let tls = match pg.tls.as_deref().unwrap_or("require") {
        "require" => match &pg.ca_file {
            Some(ca) => {
                let ca = if ca.is_relative() {
                    base.join(ca)
                } else {
                    ca.clone()
                };
                if let Err(e) = std::fs::read(&ca) {
                    problems(
                        "storage.postgres.ca_file",
                        format!("cannot read {}: {e}", ca.display()),
                    );
                }
                Some(PgTls::Require { ca_file: ca })
            }
            None => {
                problems(
                    "storage.postgres.ca_file",
                    "is required with tls = \"require\" (the database server's certificate is verified against it); \
                     tls = \"disable\" is allowed for a loopback or Unix-socket database only"
                        .into(),
                );
                None
            }
        },
        "disable" => {
            if let Some(c) = &parsed {
                if let Some(host) = c.get_hosts().iter().find(|h| !is_local(h)) {
                    let shown = match host {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    };
                    problems(
                        "storage.postgres.tls",
                        format!(
                            "\"disable\" sends payloads and the password in the clear: allowed only for a \
                             loopback host or a Unix socket, and the URL names {shown}"
                        ),
                    );
                }
            }
            Some(PgTls::Disable)
        }
        _ => {
            problems(
                "storage.postgres.tls",
                "must be \"require\" or \"disable\"".into(),
            );
            None
        }
    };
    let pool_size = pg.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    if !(1..=1000).contains(&pool_size) {
        problems(
            "storage.postgres.pool_size",
            "must be between 1 and 1000".into(),
        );
    }
    let node_id = match pg.node_id.clone().or_else(host_name) {
        Some(id) if is_node_id(&id) => Some(id),
        Some(_) => {
            problems(
                "storage.postgres.node_id",
                "must start with a letter and use only A-Z a-z 0-9 _ . : - (at most 64); \
                 the host name does not qualify, so set node_id"
                    .into(),
            );
            None
        }
        None => {
            problems(
                "storage.postgres.node_id",
                "the host name cannot be read; set node_id".into(),
            );
            None
        }
    };
    let wait_timeout = match pg.wait_timeout.as_deref().map(super::parse_duration) {
        None => Some(DEFAULT_WAIT),
        Some(Ok(d)) if d >= Duration::from_millis(100) => Some(d),
        Some(Ok(_)) => {
            problems(
                "storage.postgres.wait_timeout",
                "must be at least 100ms".into(),
            );
            None
        }
        Some(Err(e)) => {
            problems("storage.postgres.wait_timeout", e);
            None
        }
    };
    let settings = PgSettings {
        url: url?,
        tls: tls?,
        pool_size,
        node_id: node_id?,
        wait_timeout: wait_timeout?,
    };
    (found == 0).then_some(settings)
}

/// A Unix socket, `localhost`, or a loopback address.
/// A node id is written into audit records as a code: a letter, then letters, digits and
/// `_ . : -`, at most 64 bytes (the rule of `audit::Code`, which the audit tests hold to).
pub fn is_node_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        && id.len() <= 64
}

fn is_local(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The kernel's host name, the default node id.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `[storage] phone_country`, checked. How caller numbers are spelled is
/// `crate::crypto::phone`'s rule.
/// A country calling code: 1 to 3 digits, not beginning with 0 (`1`, `44`, `353`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneCountry(String);

/// Why a configured country calling code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a country calling code is 1 to 3 digits not beginning with 0 (1, 44, 353)")]
pub struct BadPhoneCountry;

impl PhoneCountry {
    /// Accept `1`, `+1`, `44`, `+353`.
    pub fn parse(text: &str) -> Result<Self, BadPhoneCountry> {
        let digits = text.trim().trim_start_matches('+');
        let ok = (1..=3).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(digits.to_owned()))
        } else {
            Err(BadPhoneCountry)
        }
    }

    /// The code's digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PhoneCountry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> StorageSection {
        toml::from_str(toml_text).expect("parses")
    }

    /// Check `toml_text` with `file:remote.url` and `file:local.url` holding a remote and a
    /// loopback URL.
    fn check(toml_text: &str) -> (Option<StorageBackend>, Vec<(String, String)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("remote.url"), "postgres://u:p@db.example/w").expect("w");
        std::fs::write(
            dir.path().join("local.url"),
            "postgres://u:p@127.0.0.1:5432/w",
        )
        .expect("w");
        let mut found = Vec::new();
        let backend = check_backend(&section(toml_text), dir.path(), &mut |p, m| {
            found.push((p.to_owned(), m))
        });
        (backend, found)
    }

    #[test]
    fn sqlite_is_the_default() {
        let (backend, problems) = check("");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(matches!(backend, Some(StorageBackend::Sqlite)));
    }

    #[test]
    fn bad_postgres_settings_are_each_reported_with_their_key_path() {
        let cases = [
            (
                "backend = \"mysql\"",
                "storage.backend",
                "an unknown backend",
            ),
            ("backend = \"postgres\"", "storage.postgres", "no section"),
            (
                "backend = \"postgres\"\n[postgres]\nurl = \"postgres://u:p@h/db\"",
                "storage.postgres.url",
                "a literal URL instead of a reference",
            ),
            (
                "backend = \"postgres\"\n[postgres]\nurl = \"file:remote.url\"",
                "storage.postgres.ca_file",
                "TLS required without a CA",
            ),
            (
                "backend = \"postgres\"\n[postgres]\nurl = \"file:remote.url\"\ntls = \"disable\"",
                "storage.postgres.tls",
                "plain TCP to a remote host",
            ),
            (
                "backend = \"postgres\"\n[postgres]\nurl = \"file:remote.url\"\nca_file = \"/etc/hostname\"\nnode_id = \"1 node\"",
                "storage.postgres.node_id",
                "a node id that is not an identifier",
            ),
            (
                "[postgres]\nurl = \"env:X\"",
                "storage.postgres",
                "a postgres section with the sqlite backend",
            ),
        ];
        for (text, path, why) in cases {
            let (backend, problems) = check(text);
            assert!(backend.is_none(), "{why}: accepted");
            assert!(
                problems.iter().any(|(p, _)| p == path),
                "{why}: expected a problem at {path}, got {problems:?}"
            );
            assert!(
                problems.iter().all(|(_, m)| !m.contains("u:p@")),
                "{why}: the URL leaked into a message: {problems:?}"
            );
        }
    }

    #[test]
    fn plain_tcp_to_loopback_is_allowed() {
        let (backend, problems) = check(
            "backend = \"postgres\"\n[postgres]\nurl = \"file:local.url\"\ntls = \"disable\"\nnode_id = \"node-1\"\npool_size = 4",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let Some(StorageBackend::Postgres(pg)) = backend else {
            panic!("postgres expected");
        };
        assert_eq!(pg.node_id, "node-1");
        assert_eq!(pg.pool_size, 4);
        assert_eq!(pg.tls, PgTls::Disable);
    }
}
