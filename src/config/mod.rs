//! Configuration: read once at start-up, checked completely, then handed to every stage as typed
//! settings.
//!
//! [`Config::load`] parses the TOML ([`file`]), resolves `env:`/`file:` secret references, loads
//! the master key, checks that the TLS material loads, cross-references names (routes to sources
//! and handlers), compiles filters and reply templates for errors, and checks cross-field rules.
//! It reports every problem at once, each with its key path (`sources[2].secrets[0]: env var
//! NEXTPHONE_SECRET is not set`), so a clinic's IT person fixes the file in one pass.
//!
//! The result is plain settings: config builds nothing that runs and imports no stage. Each
//! stage builds its own runtime from its part (`verify` the verifiers, `dispatch` the route plan
//! and handlers, `tls` the server configuration, `store` the backend), through `app::build`,
//! which `serve` and `check-config` both call.

pub mod alerts;
pub mod artifacts;
pub mod audit_forward;
pub mod file;
pub mod oidc;
pub mod relay;
mod source;
mod storage;
mod telemetry;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::secret::MasterKey;

pub use file::HandlerSection;
pub use source::{OAuthClient, Preset, SchemeOptions, VerifierSpec};
pub use storage::{is_node_id, BadPhoneCountry, PgSettings, PgTls, PhoneCountry, StorageBackend};
pub use telemetry::{TracesSection, TracesSettings};

/// The default config location, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/wardhook.toml";

/// One thing wrong with the config, located by key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `sources[0].secrets[1]`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, without secret values.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be used: every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was checked.
    pub file: PathBuf,
    /// All problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has {} problem{}",
            self.file.display(),
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// A checked, resolved configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex; recorded in the audit log when the config is loaded.
    pub sha256: String,
    /// The senders' listener.
    pub server: ServerSettings,
    /// The SQLite database file.
    pub storage_path: PathBuf,
    /// Size cap of the database in MiB, if any.
    pub storage_max_size_mb: Option<u64>,
    /// `[storage] phone_country`: the calling code of callers' national numbers.
    pub phone_country: Option<PhoneCountry>,
    /// `[storage] backend`: SQLite (the file above) or PostgreSQL with its settings.
    pub storage_backend: StorageBackend,
    /// The master key file's path.
    pub master_key_file: PathBuf,
    /// The loaded master key.
    pub master_key: MasterKey,
    /// Audit settings.
    pub audit: AuditSettings,
    /// The admin listener's address.
    pub admin_listen: SocketAddr,
    /// The rest of `[admin]`, checked.
    pub admin: AdminSettings,
    /// Operational logging.
    pub log: LogSettings,
    /// Sources, in file order.
    pub sources: Vec<Source>,
    /// Handler settings, names checked, in file order; `dispatch` builds the handlers.
    pub handlers: Vec<HandlerSection>,
    /// The folder relative paths were taken from (handlers resolve their files against it).
    pub base: PathBuf,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Dispatch settings.
    pub dispatch: DispatchSettings,
    /// `[audit_forward]`, when present and enabled.
    pub audit_forward: Option<audit_forward::AuditForwardSettings>,
    /// `[relay]`: pull sealed deliveries from a DMZ relay (inside node).
    pub relay: Option<relay::RelaySettings>,
    /// `[relay_server]`: this process is a DMZ relay (`wardhook relay`).
    pub relay_server: Option<relay::RelayServerSettings>,
    /// OpenTelemetry traces of deliveries; `None` = off (the default).
    pub traces: Option<TracesSettings>,
    /// `[artifacts]`: recording and transcript capture, when configured.
    pub artifacts: Option<artifacts::ArtifactsSettings>,
    /// `[alerts]`: the console's built-in alert rules (defaults when absent).
    pub alerts: alerts::AlertsSettings,
}

/// `[admin]`, checked (the address is [`Config::admin_listen`]).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Whether the admin listener runs.
    pub enabled: bool,
    /// Dashboard sessions end after this long without a request.
    pub idle_timeout: Duration,
    /// Dashboard sessions end this long after they began, however busy.
    pub session_lifetime: Duration,
    /// CA for operators' client certificates (mutual TLS on the admin listener), if required.
    pub client_ca: Option<PathBuf>,
    /// Console sign-in through the clinic's OpenID provider, when configured.
    pub oidc: Option<oidc::OidcSettings>,
}

/// `[dispatch]`, checked.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Concurrent invocations in total.
    pub workers: usize,
    /// Time zone for filters.
    pub time_zone: chrono_tz::Tz,
    /// Default delays before each attempt.
    pub retry_schedule: Vec<Duration>,
    /// Per-invocation time limit.
    pub handler_timeout: Duration,
    /// Per-handler concurrency.
    pub max_concurrency_per_handler: usize,
    /// Failures that open a circuit.
    pub circuit_failures: u32,
    /// Open-circuit wait before a probe.
    pub circuit_open: Duration,
}

/// The longest duration any setting or command-line flag accepts: 100 years. Durations are
/// added to and subtracted from the clock (`purge --older-than`, `tokens create --expires`,
/// retry schedules), and chrono panics past its range, so every duration from outside is
/// bounded here, once, before any arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Parse `90d`, `2w`, `2h`, `30m`, `10s`, `250ms` (one number and one unit), at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h, d or w"))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a number followed by a unit"))?;
    let duration = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        "w" => n.checked_mul(7 * 86_400).map(Duration::from_secs),
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h, d or w")),
    };
    duration
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("{text:?} is too long (at most 36500d)"))
}

impl Config {
    /// Read and check the config file at `path`. Relative paths in it (certificates, keys,
    /// database, `file:` secrets) are relative to the working directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        validate::load(path, Path::new("."))
    }

    /// Like [`Config::load`], with relative paths taken from `base` instead.
    pub fn load_with_base(path: &Path, base: &Path) -> Result<Self, ConfigError> {
        validate::load(path, base)
    }

    /// Only what offline commands need (paths and the master key); see [`OfflineConfig`].
    pub fn load_offline(path: &Path) -> Result<OfflineConfig, ConfigError> {
        validate::load_offline(path, Path::new("."))
    }

    /// The source called `name`.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name.as_str() == name)
    }
}

/// What the offline commands (`audit`, `deliveries`, `keys`, `purge`, `backup`) need: they work
/// on the database and must not require the sender secrets or TLS files of the running server.
#[derive(Debug)]
pub struct OfflineConfig {
    /// `[storage] backend`: offline commands other than `audit verify` need SQLite.
    pub storage_backend: StorageBackend,
    /// The SQLite database file.
    pub storage_path: PathBuf,
    /// The master key file's path.
    pub master_key_file: PathBuf,
    /// The loaded master key.
    pub master_key: MasterKey,
    /// Audit settings.
    pub audit: AuditSettings,
}

/// How the senders' listener accepts connections.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS terminated by wardhook.
    Tls(TlsSettings),
    /// Plain HTTP on loopback, behind a local TLS-terminating proxy.
    PlainLoopback,
}

/// TLS material locations (already checked to load and match).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// CA bundle for client certificates (mTLS), if required.
    pub client_ca: Option<PathBuf>,
}

/// `[server]`, checked.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Bind address.
    pub listen: SocketAddr,
    /// TLS or plain loopback.
    pub transport: Transport,
    /// Time to send the request head.
    pub client_timeout: Duration,
    /// Idle keep-alive time.
    pub keep_alive: Duration,
    /// TLS handshake time limit.
    pub tls_handshake_timeout: Duration,
    /// Concurrent connections per worker.
    pub max_connections: usize,
    /// Drain time on shutdown.
    pub shutdown_timeout: Duration,
    /// HTTP worker threads.
    pub workers: Option<usize>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The budget of refused requests per client address (never a source's budget).
    pub rejected_rate_limit: RateLimit,
}

/// The default `server.rejected_rate_limit`: a burst of 20 refused requests per client
/// address, then one a second.
pub const DEFAULT_REJECTED_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 1.0,
    burst: 20,
};

/// `[audit]`, checked.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// JSONL mirror and checkpoint folder.
    pub dir: PathBuf,
    /// Retention in days.
    pub retention_days: u32,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[log]`, checked.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive.
    pub level: String,
    /// Folder for daily-rotated files.
    pub dir: Option<PathBuf>,
}

/// A source name: the URL-safe path segment of `/hooks/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceName(String);

impl SourceName {
    /// Lowercase ASCII letters, digits, `-` and `_`, starting with a letter or digit, at most 64.
    pub fn parse(name: &str) -> Result<Self, &'static str> {
        let ok_start = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if name.is_empty() || name.len() > 64 || !ok_start || !ok_rest {
            Err("must be 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit")
        } else {
            Ok(Self(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token-bucket limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Refill rate.
    pub per_second: f64,
    /// Capacity.
    pub burst: u32,
}

/// A configured sender endpoint.
#[derive(Debug)]
pub struct Source {
    /// `/hooks/{name}`.
    pub name: SourceName,
    /// The preset's name, for logs and the audit trail.
    pub preset: String,
    /// How deliveries for this source are checked; `verify` builds the verifier from it.
    pub spec: VerifierSpec,
    /// Body cap.
    pub max_body_bytes: usize,
    /// Rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

/// A route, checked against the known sources and handlers.
#[derive(Debug, Clone)]
pub struct Route {
    /// Source name.
    pub source: String,
    /// Event type globs; empty matches all.
    pub events: Vec<String>,
    /// The `when` filter's text (it compiles; `dispatch` compiles it for its plan).
    pub when: Option<String>,
    /// Handler names in order.
    pub handlers: Vec<String>,
    /// This route's retry schedule, if it overrides the default.
    pub retry_schedule: Option<Vec<Duration>>,
    /// Set for `mode = "realtime"`: the handlers run inline and the sender gets a reply.
    pub realtime: Option<RealtimeSettings>,
}

/// A real-time route's reply settings, checked (the templates compile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeSettings {
    /// The reply body template (values JSON-escaped).
    pub respond: String,
    /// Status of a computed reply.
    pub status: u16,
    /// Content type of both replies.
    pub content_type: String,
    /// Budget from request to reply.
    pub deadline: Duration,
    /// Body of the fallback reply.
    pub fallback: String,
    /// Status of the fallback reply.
    pub fallback_status: u16,
    /// The lookup cache, if configured.
    pub cache: Option<CacheSettings>,
}

/// A real-time route's lookup cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The cache key template.
    pub key: String,
    /// How long an entry is used.
    pub ttl: Duration,
    /// Entries kept at most.
    pub max_entries: usize,
}

/// A real-time route's default deadline from request to reply.
pub const DEFAULT_REALTIME_DEADLINE: Duration = Duration::from_millis(2000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_must_be_url_safe() {
        assert!(SourceName::parse("nextphone-main_2").is_ok());
        for bad in ["", "Next", "a/b", "-x", "a b", "ä", &"x".repeat(65)] {
            assert!(SourceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
