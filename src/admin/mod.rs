//! The operator console: the admin listener's JSON API, Prometheus `/metrics`, and a
//! server-rendered dashboard.
//!
//! Place in the delivery path: beside it, on its own listener (loopback by default, TLS with the
//! senders' certificate). Clinic IT sees whether leads are flowing, retries what failed and
//! replays deliveries; auditors search, verify and export the audit log — without shell access
//! to the database. It holds no SQL: it reads and writes through the store traits
//! ([`crate::store::Storage`] for deliveries, dead letters and replays, and
//! [`crate::store::Console`] for tokens, health and audit reads), so it works the same on SQLite
//! and on PostgreSQL — where it shows the whole cluster — and the same audit rules hold as at
//! the CLI: every decrypted read is a `payload_read` record, every retry and replay is recorded,
//! every refusal is an `access_denied` record.
//!
//! - [`tokens`]: admin tokens (hash only, roles, expiry, revocation); [`cli`]: `wardhook tokens`.
//! - `auth`: bearer tokens, dashboard sessions with idle logoff, an absolute lifetime and CSRF,
//!   failed sign-in limits.
//! - `api`: the JSON API (`/api/...`, described by `/api/openapi.json`) and `/metrics`.
//! - `pages`: the dashboard, one file per page (no CDN, no scripts); `layout`: the frame and
//!   helpers they share (escaping, badges, error pages, the embedded CSS); `charts`: inline SVG.
//! - `artifacts`: captured recordings and transcripts: listed by metadata, played and
//!   downloaded decrypted (each read a `payload_read` record under the token).
//! - `health`: per-source and per-handler success rates and latency over the last 24 h.
//! - `calls`: "find a call" and the call timeline; `bulk`: retry or replay by filter, counted
//!   first, recorded once, run in batches; `activity` and `timecharts`: the per-source and
//!   per-handler pages' numbers (24 h and 7 days, from stored data) and their SVG charts.
//! - [`oidc`]: console sign-in through the clinic's OpenID provider (authorization code with
//!   PKCE); the pages are `pages/sign_in.rs`, the session that follows is `auth`'s.
//! - `alerts_api`: `/api/alerts` (list, acknowledge); the page is `pages/alerts.rs` and the
//!   banner every page shows is drawn by `layout`.

mod activity;
mod alerts_api;
mod api;
mod artifacts;
pub mod auth;
mod bulk;
mod calls;
mod charts;
pub mod cli;
mod export;
mod health;
mod layout;
pub mod oidc;
mod pages;
mod timecharts;
pub mod tokens;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use serde_json::json;

use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, ObjectId, Outcome};
use crate::config::{Config, Transport};
use crate::dispatch::worker::Dispatcher;
pub use crate::store::console::Role;
use crate::store::Storage;

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} (admin): {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The TLS material failed to load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin tables could not be created.
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `[admin.oidc]` could not be set up (its CA file).
    #[error("admin.oidc: {0}")]
    Oidc(#[from] oidc::OidcError),
    /// actix refused the listener.
    #[error("cannot start the admin HTTP server: {0}")]
    Server(std::io::Error),
    /// Plain HTTP was asked for on an address that is not loopback (config validation refuses
    /// this already; the listener does not rely on it).
    #[error("admin.listen: refusing to serve the admin console as plain HTTP on {addr}: plain HTTP is only allowed on a loopback address")]
    PlainOffLoopback {
        /// The configured address.
        addr: SocketAddr,
    },
    /// `admin.client_ca` is set but the listener would be plain HTTP, where no client
    /// certificate can be asked for: refused rather than served without it.
    #[error("admin.client_ca: client certificates need TLS, but the admin listener would serve plain HTTP")]
    ClientCaWithoutTls,
}

/// The parts of the config the console shows and uses, taken before the config is consumed.
#[derive(Debug, Clone)]
pub struct ConsoleSetup {
    listen: SocketAddr,
    enabled: bool,
    idle_timeout: std::time::Duration,
    session_lifetime: std::time::Duration,
    transport: Transport,
    /// `admin.client_ca` as configured, kept apart from `transport` so that a transport without
    /// TLS cannot lose it unnoticed.
    client_ca: Option<PathBuf>,
    audit_dir: PathBuf,
    /// `[artifacts] dir`, when capture is configured: the console plays and downloads from it.
    artifacts_dir: Option<PathBuf>,
    view: SharedView,
    /// The alerts' evaluator, for acknowledgements (their notifications); `None` in setups
    /// built without one.
    alerts: Option<Arc<crate::alerts::Alerts>>,
    /// `[admin.oidc]`: the one secret the console keeps (the client secret, zeroized on drop),
    /// because signing in through the provider needs it.
    oidc: Option<crate::config::oidc::OidcSettings>,
}

/// What of the config the console shows, swapped whole by `wardhook reload`.
#[derive(Debug)]
pub struct ConsoleView {
    /// Source names.
    pub sources: Vec<String>,
    /// Handler names.
    pub handlers: Vec<String>,
    /// The config summary served at `/api/config` (no secrets).
    pub summary: serde_json::Value,
}

/// The console's view, shared with the reloader.
pub type SharedView = Arc<std::sync::RwLock<Arc<ConsoleView>>>;

impl ConsoleSetup {
    /// The view in force.
    pub fn view(&self) -> Arc<ConsoleView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The handle `reload` uses to replace the view.
    pub fn view_handle(&self) -> SharedView {
        self.view.clone()
    }

    /// Take what the console needs from `config`: names, paths and settings, never secrets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            listen: config.admin_listen,
            enabled: config.admin.enabled,
            idle_timeout: config.admin.idle_timeout,
            session_lifetime: config.admin.session_lifetime,
            // The admin listener presents the server's certificate; whether operators must
            // present one is its own setting, not the senders'.
            transport: match &config.server.transport {
                Transport::Tls(t) => Transport::Tls(crate::config::TlsSettings {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    client_ca: config.admin.client_ca.clone(),
                }),
                Transport::PlainLoopback => Transport::PlainLoopback,
            },
            client_ca: config.admin.client_ca.clone(),
            audit_dir: config.audit.dir.clone(),
            artifacts_dir: config.artifacts.as_ref().map(|a| a.dir.clone()),
            view: Arc::new(std::sync::RwLock::new(Arc::new(ConsoleView::from_config(
                config,
            )))),
            alerts: None,
            oidc: config.admin.oidc.clone(),
        }
    }

    /// The same setup, acknowledging alerts through `alerts` (which notifies).
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerts>) -> Self {
        self.alerts = Some(alerts);
        self
    }
}

impl ConsoleView {
    /// The names and summary of `config`.
    pub fn from_config(config: &Config) -> Self {
        let sources: Vec<String> = config
            .sources
            .iter()
            .map(|s| s.name.as_str().to_owned())
            .collect();
        let handlers: Vec<String> = config.handlers.iter().map(|h| h.name.clone()).collect();
        let summary = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config_sha256": config.sha256,
            "server": {
                "listen": config.server.listen.to_string(),
                "tls": matches!(config.server.transport, Transport::Tls(_)),
                "mtls": matches!(&config.server.transport, Transport::Tls(t) if t.client_ca.is_some()),
                "admin_mtls": config.admin.client_ca.is_some(),
            },
            "admin": {
                "listen": config.admin_listen.to_string(),
                "idle_timeout_secs": config.admin.idle_timeout.as_secs(),
                "session_lifetime_secs": config.admin.session_lifetime.as_secs(),
                "oidc_issuer": config.admin.oidc.as_ref().map(|o| o.issuer.clone()),
            },
            "storage": { "path": config.storage_path.display().to_string() },
            "audit": {
                "dir": config.audit.dir.display().to_string(),
                "retention_days": config.audit.retention_days,
            },
            "dispatch": {
                "workers": config.dispatch.workers,
                "handler_timeout_secs": config.dispatch.handler_timeout.as_secs(),
                "retry_schedule_secs": config.dispatch.retry_schedule.iter().map(|d| d.as_secs()).collect::<Vec<_>>(),
            },
            "sources": config.sources.iter().map(|s| json!({
                "name": s.name.as_str(),
                "preset": s.preset,
                "max_body_bytes": s.max_body_bytes,
                "rate_limited": s.rate_limit.is_some(),
            })).collect::<Vec<_>>(),
            "handlers": handlers,
            "routes": config.routes.iter().map(|r| json!({
                "source": r.source,
                "handlers": r.handlers,
            })).collect::<Vec<_>>(),
        });
        Self {
            sources,
            handlers,
            summary,
        }
    }
}

impl ConsoleSetup {
    /// Whether the admin listener should run.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

/// What the admin request handlers share.
#[derive(Debug)]
pub(crate) struct Console {
    pub store: Arc<dyn Storage>,
    pub dispatcher: Arc<Dispatcher>,
    pub setup: ConsoleSetup,
    pub sessions: auth::Sessions,
    pub limiter: auth::LoginLimiter,
    /// Sign-in through the clinic's OpenID provider, when configured.
    pub oidc: Option<oidc::Oidc>,
}

/// A bound admin server, not yet running.
pub struct AdminServer {
    port: u16,
    server: Server,
    cert_slot: Option<Arc<crate::tls::CertSlot>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("port", &self.port)
            .finish()
    }
}

impl AdminServer {
    /// Create the admin tables, bind the admin address and build the server.
    pub async fn build(
        setup: ConsoleSetup,
        store: Arc<dyn Storage>,
        dispatcher: Arc<Dispatcher>,
    ) -> Result<Self, AdminError> {
        refuse_unprotected(&setup)?;
        store.console().prepare_console().await?;
        let listener = TcpListener::bind(setup.listen).map_err(|source| AdminError::Bind {
            addr: setup.listen,
            source,
        })?;
        let port = listener.local_addr().map_err(AdminError::Server)?.port();
        let transport = setup.transport.clone();
        let oidc = setup.oidc.clone().map(oidc::Oidc::new).transpose()?;
        let console = web::Data::new(Console {
            oidc,
            store,
            dispatcher,
            sessions: auth::Sessions::new(setup.idle_timeout, setup.session_lifetime),
            limiter: auth::LoginLimiter::default(),
            setup,
        });
        let http = HttpServer::new(move || {
            App::new()
                .app_data(console.clone())
                .app_data(web::FormConfig::default().limit(16 * 1024))
                .app_data(web::JsonConfig::default().limit(16 * 1024))
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add((header::CACHE_CONTROL, "no-store"))
                        .add((header::X_FRAME_OPTIONS, "DENY"))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .add((header::REFERRER_POLICY, "no-referrer"))
                        .add((
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                             media-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                             base-uri 'none'",
                        )),
                )
                .configure(api::routes)
                .configure(calls::routes)
                .configure(bulk::routes)
                .configure(activity::routes)
                .configure(alerts_api::routes)
                .configure(artifacts::routes)
                .configure(pages::routes)
        })
        .disable_signals()
        .workers(2)
        .shutdown_timeout(5);
        let mut cert_slot = None;
        let http = match &transport {
            Transport::Tls(settings) => {
                let (tls_config, slot) = crate::tls::server_config(settings)?;
                cert_slot = Some(slot);
                http.listen_rustls_0_23(listener, tls_config)
                    .map_err(AdminError::Server)?
            }
            Transport::PlainLoopback => http.listen(listener).map_err(AdminError::Server)?,
        };
        Ok(Self {
            port,
            server: http.run(),
            cert_slot,
        })
    }

    /// The slot that swaps this listener's certificate on reload.
    pub fn cert_slot(&self) -> Option<Arc<crate::tls::CertSlot>> {
        self.cert_slot.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server future and its stop handle.
    pub fn into_server(self) -> Server {
        self.server
    }
}

/// Before binding: plain HTTP only on loopback and never with a client CA, whatever the
/// `Config` this setup came from.
fn refuse_unprotected(setup: &ConsoleSetup) -> Result<(), AdminError> {
    match &setup.transport {
        // `ConsoleSetup::from_config` gives the TLS settings the admin client CA.
        Transport::Tls(_) => Ok(()),
        Transport::PlainLoopback if setup.client_ca.is_some() => {
            Err(AdminError::ClientCaWithoutTls)
        }
        Transport::PlainLoopback if !setup.listen.ip().is_loopback() => {
            Err(AdminError::PlainOffLoopback { addr: setup.listen })
        }
        Transport::PlainLoopback => Ok(()),
    }
}

/// Errors at the admin HTTP edge. Bodies are fixed words: no ids, no payload, no reasons that
/// would help guess tokens.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("too many failed sign-ins")]
    RateLimited(u64),
    #[error("storage unavailable")]
    Unavailable,
    /// The object existed but its key was destroyed by `purge`.
    #[error("purged")]
    Gone,
    /// A stored file failed its integrity check or could not be read.
    #[error("unreadable")]
    Unreadable,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Gone => StatusCode::GONE,
            Self::Unreadable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status_code());
        match self {
            Self::RateLimited(secs) => {
                b.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            Self::Unauthorized => {
                b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Unavailable => {
                b.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {}
        }
        b.json(json!({ "error": self.to_string() }))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound(_) => Self::NotFound,
            other => {
                tracing::error!(error = %other, "admin: storage error");
                crate::metrics::storage_error();
                Self::Unavailable
            }
        }
    }
}

impl From<tokens::TokenError> for ApiError {
    fn from(e: tokens::TokenError) -> Self {
        tracing::error!(error = %e, "admin: token storage error");
        Self::Unavailable
    }
}

/// A refusal for the audit trail: who (if known), from where, why, with which status.
#[derive(Debug, Clone)]
pub(crate) struct Denial {
    /// Who, when known (a real token, a signed-in user); `system` otherwise.
    pub actor: Option<Actor>,
    pub remote: Option<IpAddr>,
    pub reason: &'static str,
    pub status: u16,
    pub object_kind: Option<&'static str>,
    pub delivery_id: Option<String>,
    pub via: &'static str,
}

impl Console {
    /// Append one admin audit record, committed (and mirrored where the backend mirrors)
    /// before this returns.
    pub(crate) async fn append_audit(&self, record: AuditRecord) -> Result<(), ApiError> {
        Ok(self.store.record_audit(record).await?)
    }

    /// Record an `access_denied`. A failure to record is logged, never shown to the caller.
    pub(crate) async fn record_denial(&self, d: &Denial) {
        let actor = d.actor.clone().unwrap_or(Actor::System);
        let mut r = AuditRecord::new(actor, Action::AccessDenied, Outcome::Denied);
        r.remote_addr = d.remote;
        r.delivery_id = d
            .delivery_id
            .as_deref()
            .and_then(|i| ObjectId::parse(i).ok());
        if let Ok(c) = Code::parse(d.reason) {
            r.detail.insert(DetailKey::Reason, c);
        }
        r.detail.insert(DetailKey::Status, i64::from(d.status));
        if let Some(k) = d.object_kind.and_then(|k| Code::parse(k).ok()) {
            r.detail.insert(DetailKey::ObjectKind, k);
        }
        if let Ok(v) = Code::parse(d.via) {
            r.detail.insert(DetailKey::Via, v);
        }
        if let Err(e) = self.append_audit(r).await {
            tracing::error!(error = %e, "cannot record an admin access denial");
        }
    }
}
