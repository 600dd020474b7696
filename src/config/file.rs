//! The config file as written: plain serde types mirroring the TOML, before any checking.
//!
//! Unknown keys are refused (`deny_unknown_fields`) because a misspelt `alow_ips` silently
//! ignored is an open door. Values that need checking (addresses, secret references, paths)
//! stay strings here; [`super::validate`] turns them into typed settings and reports every
//! problem with its key path.

use std::path::PathBuf;

use serde::Deserialize;

use super::SchemeOptions;
use crate::secret::SecretRefText;

/// Default body cap: 1 MiB, PhoneShield's documented maximum.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[server]`
    pub server: ServerSection,
    /// `[storage]`
    #[serde(default)]
    pub storage: StorageSection,
    /// `[keys]`
    pub keys: KeysSection,
    /// `[audit]`
    #[serde(default)]
    pub audit: AuditSection,
    /// `[admin]`
    #[serde(default)]
    pub admin: AdminSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[dispatch]`
    #[serde(default)]
    pub dispatch: DispatchSection,
    /// `[[sources]]`
    #[serde(default)]
    pub sources: Vec<SourceSection>,
    /// `[[handlers]]`
    #[serde(default)]
    pub handlers: Vec<HandlerSection>,
    /// `[[routes]]`
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// `[audit_forward]`: syslog forwarding of audit records (absent: off).
    pub audit_forward: Option<super::audit_forward::AuditForwardSection>,
    /// `[relay]`: this (inside) node pulls sealed deliveries from a DMZ relay.
    pub relay: Option<super::relay::RelaySection>,
    /// `[relay_server]`: this config is a DMZ relay's (`wardhook relay`).
    pub relay_server: Option<super::relay::RelayServerSection>,
    /// `[traces]`: OpenTelemetry export (off unless present).
    #[serde(default)]
    pub traces: Option<super::TracesSection>,
    /// `[artifacts]`
    pub artifacts: Option<super::artifacts::ArtifactsSection>,
    /// `[alerts]`
    #[serde(default)]
    pub alerts: super::alerts::AlertsSection,
}

/// `[server]`: the senders' listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address and port, e.g. `0.0.0.0:8443`.
    pub listen: String,
    /// TLS material; required unless `plain_http = true`.
    pub tls: Option<TlsSection>,
    /// Serve plain HTTP instead of TLS. Only allowed on a loopback address, for sites whose
    /// reverse proxy terminates TLS on the same host.
    #[serde(default)]
    pub plain_http: bool,
    /// Default body cap per source, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Seconds a client has to send the request head.
    #[serde(default = "default_client_timeout")]
    pub client_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Seconds a TLS handshake may take.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// Maximum concurrent connections per worker thread.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// HTTP worker threads; defaults to the number of CPUs.
    pub workers: Option<usize>,
    /// Reverse proxies (CIDR) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Token bucket of *refused* requests per client address (default 1 a second, burst 20).
    pub rejected_rate_limit: Option<RateLimitSection>,
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_client_timeout() -> u64 {
    5
}
fn default_keep_alive() -> u64 {
    75
}
fn default_handshake_timeout() -> u64 {
    3
}
fn default_max_connections() -> usize {
    4096
}
fn default_shutdown_timeout() -> u64 {
    30
}

/// `[server.tls]` (also written inline as `tls = { cert = …, key = … }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate they issued (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// `[storage]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// The SQLite database file.
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    /// A size cap for the database, in MiB. Reaching it behaves like a full disk (503 with
    /// `Retry-After`, nothing acknowledged is lost) but leaves room on the volume for logs and
    /// the operating system.
    pub max_size_mb: Option<u64>,
    /// The country calling code (`1`, `44`) of callers' national numbers: "(555) 010-1234"
    /// is then indexed as "+15550101234", so a search finds it spelled either way.
    pub phone_country: Option<String>,
    /// `sqlite` (the default: one server, one file) or `postgres` (several nodes on one
    /// PostgreSQL; then `[storage.postgres]` is required).
    pub backend: Option<String>,
    /// `[storage.postgres]`
    pub postgres: Option<PostgresSection>,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            path: default_db_path(),
            max_size_mb: None,
            phone_country: None,
            backend: None,
            postgres: None,
        }
    }
}

/// `[storage.postgres]`: the database shared by every node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// `env:NAME` or `file:PATH` holding the connection URL (it usually carries a password).
    pub url: SecretRefText,
    /// `require` (default: TLS, server certificate verified against `ca_file`) or `disable`
    /// (plain TCP, allowed only to a loopback host or a Unix socket).
    pub tls: Option<String>,
    /// PEM CA certificates that issued the database server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Connections this node keeps open (default 16).
    pub pool_size: Option<usize>,
    /// This node's name in the audit chain and job leases (default: the host name). Must be
    /// unique per node.
    pub node_id: Option<String>,
    /// How long a request waits for a database connection before answering 503 (default 5s).
    pub wait_timeout: Option<String>,
}

fn default_db_path() -> PathBuf {
    PathBuf::from("data/wardhook.db")
}

/// `[keys]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// The master key file written by `wardhook keygen`.
    pub master_key_file: PathBuf,
}

/// `[audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Folder of the daily JSONL mirror and the checkpoint file.
    #[serde(default = "default_audit_dir")]
    pub dir: PathBuf,
    /// Days audit records are kept (HIPAA documentation retention is six years).
    #[serde(default = "default_audit_retention")]
    pub retention_days: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            dir: default_audit_dir(),
            retention_days: default_audit_retention(),
        }
    }
}

fn default_audit_dir() -> PathBuf {
    PathBuf::from("data/audit")
}
fn default_audit_retention() -> u32 {
    6 * 366
}

/// `[admin]`: the operators' listener, separate from the senders'.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address and port; loopback by default.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Whether to start the admin listener at all (API, dashboard, `/metrics`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Dashboard sessions end after this long without a request (`15m`, `30s`).
    #[serde(default = "default_admin_idle_timeout")]
    pub idle_timeout: String,
    /// Dashboard sessions end this long after they began, however busy (`12h`): a session
    /// kept alive by activity must still end, so a stolen or forgotten one does not live on.
    #[serde(default = "default_admin_session_lifetime")]
    pub session_lifetime: String,
    /// PEM CA certificates: when set, operators' browsers and scripts must present a client
    /// certificate issued by it (mutual TLS on the admin listener, independent of the senders').
    pub client_ca: Option<PathBuf>,
    /// `[admin.oidc]`: console sign-in through the clinic's OpenID provider.
    pub oidc: Option<super::oidc::OidcSection>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            enabled: true,
            idle_timeout: default_admin_idle_timeout(),
            session_lifetime: default_admin_session_lifetime(),
            client_ca: None,
            oidc: None,
        }
    }
}

fn default_admin_idle_timeout() -> String {
    "15m".to_owned()
}

fn default_admin_session_lifetime() -> String {
    "12h".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_admin_listen() -> String {
    "127.0.0.1:9443".to_owned()
}

/// `[log]`: operational logs (never payload content).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `pretty` for people, `json` for log shippers.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `wardhook=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// When set, logs are also written to daily-rotated files in this folder.
    pub dir: Option<PathBuf>,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
            dir: None,
        }
    }
}

fn default_log_format() -> String {
    "pretty".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}

/// `[dispatch]`: delivering stored events to handlers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSection {
    /// Concurrent handler invocations in total.
    #[serde(default = "default_dispatch_workers")]
    pub workers: usize,
    /// IANA time zone for time-of-day and weekday filters (`America/New_York`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Delays before attempts 1, 2, …: `"0s"`, `"10s"`, `"1m"`, `"2h"`. Jitter is added.
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule: Vec<String>,
    /// Longest a single handler invocation may take, seconds.
    #[serde(default = "default_handler_timeout")]
    pub handler_timeout_secs: u64,
    /// Concurrent invocations of one handler, so a slow CRM cannot take every worker.
    #[serde(default = "default_per_handler")]
    pub max_concurrency_per_handler: usize,
    /// Consecutive failures that open a handler's circuit.
    #[serde(default = "default_breaker_failures")]
    pub circuit_failures: u32,
    /// Seconds an open circuit waits before a half-open probe.
    #[serde(default = "default_breaker_open")]
    pub circuit_open_secs: u64,
}

impl Default for DispatchSection {
    fn default() -> Self {
        Self {
            workers: default_dispatch_workers(),
            time_zone: default_time_zone(),
            retry_schedule: default_retry_schedule(),
            handler_timeout_secs: default_handler_timeout(),
            max_concurrency_per_handler: default_per_handler(),
            circuit_failures: default_breaker_failures(),
            circuit_open_secs: default_breaker_open(),
        }
    }
}

fn default_dispatch_workers() -> usize {
    8
}
fn default_time_zone() -> String {
    "UTC".to_owned()
}
/// The reference senders' habit: immediate, 10 s, 30 s, 1 min, 5 min, then longer.
pub fn default_retry_schedule() -> Vec<String> {
    ["0s", "10s", "30s", "1m", "5m", "30m", "2h", "6h"]
        .map(str::to_owned)
        .to_vec()
}
fn default_handler_timeout() -> u64 {
    30
}
fn default_per_handler() -> usize {
    4
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> u64 {
    60
}

/// `[[sources]]`: one sender endpoint, `POST /hooks/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// URL path segment; lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Sender preset (verification scheme + envelope mapping).
    pub preset: String,
    /// Signing secrets or public keys by reference; several for rotation.
    #[serde(default)]
    pub secrets: Vec<SecretRefText>,
    /// An extra bearer/verification token by reference, for presets that check one.
    pub token: Option<SecretRefText>,
    /// Client networks allowed to deliver (CIDR or single addresses); empty allows all.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Body cap for this source; defaults to `server.max_body_bytes`.
    pub max_body_bytes: Option<usize>,
    /// Replay window for signed timestamps, seconds (default 300).
    pub tolerance_secs: Option<u64>,
    /// The public URL the sender signs (Twilio, Plivo) when it differs from what we see.
    pub public_url: Option<String>,
    /// Token-bucket rate limit.
    pub rate_limit: Option<RateLimitSection>,
    /// Scheme-specific settings.
    pub scheme: Option<SchemeOptions>,
}

/// `[sources.rate_limit]`, `server.rejected_rate_limit`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Burst size (bucket capacity).
    pub burst: u32,
}

/// `[[handlers]]`: a destination. The keys besides `name` and `kind` belong to the handler kind
/// and are checked by it.
#[derive(Debug, Clone, Deserialize)]
pub struct HandlerSection {
    /// Referenced by routes.
    pub name: String,
    /// The handler kind (`http`, `exec`, `slack`, …).
    pub kind: String,
    /// Kind-specific settings.
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `[[routes]]`: which events of a source go to which handlers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The source name.
    pub source: String,
    /// Event types, `*` globs allowed; empty matches all.
    #[serde(default)]
    pub events: Vec<String>,
    /// A filter expression over the event.
    pub when: Option<String>,
    /// Handler names, run in order.
    pub handlers: Vec<String>,
    /// Overrides `dispatch.retry_schedule` for this route's jobs.
    pub retry_schedule: Option<Vec<String>>,
    /// `async` (default: acknowledge, then dispatch) or `realtime` (run the handlers inline and
    /// answer the sender with `respond`, or `fallback` on any failure or timeout).
    pub mode: Option<String>,
    /// Real-time: the reply body template (JSON-escaped values).
    pub respond: Option<String>,
    /// Real-time: the reply status (default 200).
    pub respond_status: Option<u16>,
    /// Real-time: the reply content type (default `application/json`).
    pub content_type: Option<String>,
    /// Real-time: the time budget from request to reply, milliseconds (default 2000).
    pub deadline_ms: Option<u64>,
    /// Real-time: the reply when anything fails or the deadline passes (literal body).
    pub fallback: Option<String>,
    /// Real-time: the fallback's status (default 200).
    pub fallback_status: Option<u16>,
    /// Real-time: the sender is covered by a business associate agreement, so the reply may
    /// carry PHI. Without it, `respond` may use only non-PHI fields.
    #[serde(default)]
    pub baa: bool,
    /// Real-time: cache the handlers' outputs per lookup key.
    pub cache: Option<CacheSection>,
}

/// `[routes.cache]`: a lookup cache for real-time routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Template naming what the lookup depends on, e.g. `"{{ caller.phone }}"`.
    pub key: String,
    /// Seconds an entry is served.
    #[serde(default = "default_cache_ttl")]
    pub ttl_secs: u64,
    /// Most entries kept; the oldest is dropped first.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

fn default_cache_ttl() -> u64 {
    300
}
fn default_cache_entries() -> usize {
    10_000
}
