//! Stage 1 of the delivery path: the senders' HTTPS listener.
//!
//! Terminates TLS (see [`tls`]), enforces per-source body caps while streaming and per-source
//! rate limits, and hands the raw body to the verify stage. Nothing here ever logs a body or an
//! authentication header; a request's log line has its id, source, status and latency only.
//!
//! What an unauthenticated request can cost is bounded: metric series are labelled only with
//! configured source names, rejected requests spend a per-client budget (never a source's), and
//! their audit records are tallied per interval ([`rejections`]).

pub mod body;
pub mod clock;
mod hooks;
pub mod rate_limit;
pub mod rejections;
mod reload;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::audit::Mirror;
use crate::config::StorageBackend;
use crate::config::{Config, Route, Source, Transport};
use crate::crypto::Keyring;
use crate::dispatch::worker::{Dispatcher, Plan, SharedPlan};
use crate::store::postgres::PgStore;
use crate::store::{Storage, Store, StoreError, StoreOptions};
use rate_limit::{ClientBuckets, TokenBucket};
use rejections::RejectionLog;
pub use reload::{ReloadError, ReloadReport, Reloader};

/// Records between signed audit checkpoints: truncating the log's tail is detectable up to the
/// last checkpoint, so they are frequent.
const AUDIT_CHECKPOINT_EVERY: u64 = 100;

/// Client addresses whose rejection budget is tracked; the least recently seen is forgotten
/// beyond this, so a flood from many addresses costs fixed memory.
pub const REJECTED_CLIENTS_TRACKED: usize = 4096;

/// How often the tallied rejections are written as aggregate audit records.
pub const REJECTION_AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// (source, reason, client address) keys tallied per interval; rejections of further keys are
/// counted into one `other` aggregate.
pub const REJECTION_AUDIT_KEYS: usize = 4096;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address could not be bound (in use, no permission for a low port, …).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The TLS material failed to load (it loaded during config checking, so it changed since).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// actix refused the listener.
    #[error("cannot start HTTP server: {0}")]
    Server(std::io::Error),
    /// The database could not be opened.
    #[error("cannot open storage: {0}")]
    Store(#[from] StoreError),
    /// The audit mirror folder could not be prepared.
    #[error("cannot open the audit mirror: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The admin listener (console, API, metrics) could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// Plain HTTP was asked for on an address that is not loopback. Config validation refuses
    /// this already; the listener refuses it again rather than trust every way a `Config` can
    /// be put together.
    #[error("server.listen: refusing to serve plain HTTP on {addr}: plain HTTP is only allowed on a loopback address")]
    PlainOffLoopback {
        /// The configured address.
        addr: std::net::SocketAddr,
    },
    /// The config asks for a feature the configured storage backend does not offer yet.
    #[error("{feature} needs the SQLite backend for now; with [storage] backend = \"postgres\" {remedy}")]
    NeedsSqlite {
        /// The feature.
        feature: &'static str,
        /// What to change.
        remedy: &'static str,
    },
}

/// A source with its runtime state.
#[derive(Debug)]
struct SourceRuntime {
    source: Source,
    bucket: Option<TokenBucket>,
}

/// The parts of the config that `reload` replaces atomically: a request sees either the old
/// set or the new one, never a mix.
#[derive(Debug)]
pub(crate) struct Live {
    sources: HashMap<String, SourceRuntime>,
    routes: Vec<Route>,
    oauth: Option<Arc<crate::verify::oauth::TokenIssuer>>,
}

impl Live {
    fn from_config(
        sources: Vec<Source>,
        routes: Vec<Route>,
        oauth: Option<Arc<crate::verify::oauth::TokenIssuer>>,
    ) -> Self {
        let sources = sources
            .into_iter()
            .map(|source| {
                let bucket = source.rate_limit.map(TokenBucket::new);
                (
                    source.name.as_str().to_owned(),
                    SourceRuntime { source, bucket },
                )
            })
            .collect();
        Self {
            sources,
            routes,
            oauth,
        }
    }
}

/// What request handlers share.
#[derive(Debug)]
pub struct AppState {
    live: RwLock<Arc<Live>>,
    /// Intake, quarantine, real-time replies and audit, on whichever backend is configured.
    store: Arc<dyn Storage>,
    /// The handlers and routes the dispatcher runs; swapped with `live` on reload.
    plan: SharedPlan,
    /// Wakes idle dispatch workers when intake commits new jobs.
    dispatch_wake: Arc<tokio::sync::Notify>,
    /// Senders' clock skew, for `wardhook doctor`.
    clock: Arc<clock::SkewTracker>,
    /// Rejected requests per client address (never a source's budget).
    rejected_budget: ClientBuckets,
    /// The per-interval tally of rejections for the audit log.
    rejections: RejectionLog,
}

impl AppState {
    /// The sources and routes in force now.
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A built, bound server, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    tls: bool,
    reloader: Reloader,
    dispatcher: Arc<Dispatcher>,
    dispatch_workers: usize,
    store: Arc<dyn Storage>,
    config_sha256: String,
    /// The operators' listener, started and stopped with this one.
    admin: Option<crate::admin::AdminServer>,
    state_clock: Arc<clock::SkewTracker>,
    data_dir: std::path::PathBuf,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish()
    }
}

impl Application {
    /// Bind the configured address and build the server. `listen` may use port 0.
    pub async fn build(config: Config) -> Result<Self, ListenerError> {
        Self::build_with_base(config, Path::new(".")).await
    }

    /// Like [`Application::build`]; `base` is the folder relative paths of reloaded configs are
    /// taken from (the working directory in production).
    pub async fn build_with_base(config: Config, base: &Path) -> Result<Self, ListenerError> {
        let server_cfg = config.server.clone();
        let shape = reload::RunningShape::of(&config);
        if matches!(server_cfg.transport, Transport::PlainLoopback)
            && !server_cfg.listen.ip().is_loopback()
        {
            return Err(ListenerError::PlainOffLoopback {
                addr: server_cfg.listen,
            });
        }
        let listener =
            TcpListener::bind(server_cfg.listen).map_err(|source| ListenerError::Bind {
                addr: server_cfg.listen.to_string(),
                source,
            })?;
        let port = listener.local_addr().map_err(ListenerError::Server)?.port();
        let keyring = Keyring::from_master(&config.master_key);
        let console = crate::admin::ConsoleSetup::from_config(&config);
        let console_view = console.enabled().then(|| console.view_handle());
        // Each node (the SQLite server, or each PostgreSQL node) mirrors its own chain.
        let mirror = Arc::new(Mirror::new(&config.audit.dir)?.with_checkpoints(
            crate::audit::commands::checkpoint_path(&config.audit.dir),
            AUDIT_CHECKPOINT_EVERY,
            &keyring,
        ));
        let (store, sqlite): (Arc<dyn Storage>, Option<Store>) = match &config.storage_backend {
            StorageBackend::Sqlite => {
                let store = Store::open(
                    &config.storage_path,
                    keyring,
                    StoreOptions {
                        audit_mirror: Some(mirror),
                        // SQLite's default page size is 4 KiB.
                        max_db_pages: config.storage_max_size_mb.map(|mb| mb * 256),
                        ..StoreOptions::default()
                    },
                )?;
                (Arc::new(store.clone()), Some(store))
            }
            StorageBackend::Postgres(settings) => {
                refuse_sqlite_only_console(console.enabled())?;
                (
                    Arc::new(PgStore::open_with_mirror(settings, keyring, Some(mirror)).await?),
                    None,
                )
            }
        };
        let plan: SharedPlan = Arc::new(RwLock::new(Arc::new(
            Plan::new(config.handlers, config.routes.clone())
                .with_time_zone(config.dispatch.time_zone),
        )));
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            plan.clone(),
            config.dispatch.clone(),
        ));
        let admin = match (&sqlite, console.enabled()) {
            (Some(sqlite), true) => Some(crate::admin::AdminServer::build(
                console,
                sqlite.clone(),
                dispatcher.clone(),
            )?),
            _ => None,
        };
        let state = web::Data::new(AppState {
            live: RwLock::new(Arc::new(Live::from_config(
                config.sources,
                config.routes,
                config.oauth,
            ))),
            store,
            plan,
            dispatch_wake: dispatcher.waker(),
            clock: Arc::default(),
            rejected_budget: ClientBuckets::new(
                server_cfg.rejected_rate_limit,
                REJECTED_CLIENTS_TRACKED,
            ),
            rejections: RejectionLog::new(REJECTION_AUDIT_KEYS),
        });
        let app_state = state.clone();

        let mut http = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap_fn(|req, srv| {
                    let started = Instant::now();
                    let request_id = uuid::Uuid::new_v4().simple().to_string();
                    let method = req.method().clone();
                    // The path names the source only; query strings may carry sender data.
                    let path = req.path().to_owned();
                    // A metric label is a configured source name or nothing: the path is the
                    // caller's text, and each distinct label value would be a series forever.
                    let hook = path.strip_prefix("/hooks/").map(|name| {
                        req.app_data::<web::Data<AppState>>().and_then(|s| {
                            s.live().sources.get_key_value(name).map(|(k, _)| k.clone())
                        })
                    });
                    let fut = srv.call(req);
                    async move {
                        let mut res = fut.await?;
                        let status = res.status().as_u16();
                        if let Some(source) = &hook {
                            crate::metrics::hook_response(
                                source.as_deref(),
                                status,
                                started.elapsed(),
                            );
                        }
                        tracing::info!(
                            request_id = %request_id,
                            method = %method,
                            path = %path,
                            status,
                            latency_us = started.elapsed().as_micros() as u64,
                            "request"
                        );
                        if let Ok(v) = HeaderValue::from_str(&request_id) {
                            res.headers_mut()
                                .insert(header::HeaderName::from_static("x-request-id"), v);
                        }
                        Ok(res)
                    }
                })
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/oauth/token", web::post().to(hooks::oauth_token))
                .service(
                    web::resource("/hooks/{source}")
                        .route(web::post().to(hooks::receive_hook))
                        .default_service(web::to(method_not_allowed)),
                )
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .client_request_timeout(server_cfg.client_timeout)
        .keep_alive(server_cfg.keep_alive)
        .tls_handshake_timeout(server_cfg.tls_handshake_timeout)
        .max_connections(server_cfg.max_connections)
        .shutdown_timeout(server_cfg.shutdown_timeout.as_secs());
        if let Some(n) = server_cfg.workers {
            http = http.workers(n);
        }
        let admin_cert_slot = admin
            .as_ref()
            .and_then(crate::admin::AdminServer::cert_slot);
        let mut cert_slot = None;
        let (http, tls) = match &server_cfg.transport {
            Transport::Tls(settings) => {
                let (tls_config, slot) = tls::server_config(settings)?;
                cert_slot = Some(slot);
                (
                    http.listen_rustls_0_23(listener, tls_config)
                        .map_err(ListenerError::Server)?,
                    true,
                )
            }
            Transport::PlainLoopback => {
                tracing::warn!(
                    listen = %server_cfg.listen,
                    "serving plain HTTP on loopback: TLS must be terminated by a local proxy"
                );
                (http.listen(listener).map_err(ListenerError::Server)?, false)
            }
        };
        Ok(Self {
            port,
            server: http.run(),
            tls,
            dispatch_workers: config.dispatch.workers,
            dispatcher,
            store: app_state.store.clone(),
            config_sha256: config.sha256.clone(),
            state_clock: app_state.clock.clone(),
            data_dir: config
                .storage_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| ".".into(), ToOwned::to_owned),
            admin,
            reloader: Reloader {
                state: app_state,
                cert_slot,
                admin_cert_slot,
                console_view,
                base: base.to_owned(),
                running: Arc::new(RwLock::new(shape)),
            },
        })
    }

    /// The dispatcher (tests drive `try_execute_task` on it directly).
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// A handle that applies a new config to this running server.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The admin listener's bound port, if it runs (useful when configured with port 0).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(crate::admin::AdminServer::port)
    }

    /// The bound port (useful when configured with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A handle that can stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until `shutdown` completes, then stop accepting and let in-flight requests finish
    /// within the configured shutdown timeout.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = self.server.handle();
        self.store
            .record_audit(lifecycle_record(
                crate::audit::Action::ConfigLoaded,
                Some(&self.config_sha256),
            ))
            .await
            .map_err(std::io::Error::other)?;
        self.store
            .record_audit(lifecycle_record(crate::audit::Action::ServerStarted, None))
            .await
            .map_err(std::io::Error::other)?;
        if let Err(e) = self.store.checkpoint_audit().await {
            tracing::error!(error = %e, "cannot write the audit checkpoint at start");
        }
        let admin = self.admin.map(|a| {
            let port = a.port();
            let server = a.into_server();
            let handle = server.handle();
            tracing::info!(admin_port = port, "admin console listening");
            (tokio::spawn(server), handle)
        });
        let admin_handle = admin.as_ref().map(|(_, h)| h.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let stop_workers = stop_tx.clone();
        let workers =
            (self.dispatch_workers > 0).then(|| tokio::spawn(self.dispatcher.clone().run(stop_rx)));
        // The server future must keep being polled while it drains, so the stop request runs
        // beside it rather than replacing it.
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested; draining in-flight requests and handler attempts");
            let _ = stop_tx.send(true);
            if let Some(a) = admin_handle {
                a.stop(true).await;
            }
            handle.stop(true).await;
        });
        let state = self.reloader.state.clone();
        let (stop_tally, mut tally_stopped) = tokio::sync::oneshot::channel::<()>();
        let rejections_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REJECTION_AUDIT_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => flush_rejections(&state).await,
                    _ = &mut tally_stopped => break,
                }
            }
            // No request is in flight any more: what was tallied since the last interval is
            // written before the stop record.
            flush_rejections(&state).await;
        });
        let clock = self.state_clock.clone();
        let clock_dir = self.data_dir.clone();
        let clock_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let (c, d) = (clock.clone(), clock_dir.clone());
                let _ = tokio::task::spawn_blocking(move || c.write(&d)).await;
            }
        });
        let served = self.server.await;
        clock_task.abort();
        let _ = stop_tally.send(());
        let _ = rejections_task.await;
        if let Err(e) = self.state_clock.write(&self.data_dir) {
            tracing::warn!(error = %e, "cannot write the sender clock summary");
        }
        if let Some((task, handle)) = admin {
            // The senders' server stopped (signal or handle): the console goes with it.
            handle.stop(true).await;
            let _ = task.await;
        }
        // However the server stopped (signal or handle), the workers stop claiming now.
        let _ = stop_workers.send(true);
        if let Some(w) = workers {
            let _ = w.await;
        }
        if let Err(e) = self
            .store
            .record_audit(lifecycle_record(crate::audit::Action::ServerStopped, None))
            .await
        {
            tracing::error!(error = %e, "cannot audit the server stop");
        }
        if let Err(e) = self.store.checkpoint_audit().await {
            tracing::error!(error = %e, "cannot write the audit checkpoint at stop");
        }
        served
    }
}

/// Write the rejections tallied in the interval just ended as aggregate audit records.
async fn flush_rejections(state: &AppState) {
    for record in state.rejections.drain() {
        if let Err(e) = state.store.record_audit(record).await {
            tracing::error!(error = %e, "cannot audit a tally of rejected deliveries");
        }
    }
}

/// With PostgreSQL, refuse at start-up what still reads the SQLite store directly (the admin
/// console), rather than serving with it half-working.
fn refuse_sqlite_only_console(console: bool) -> Result<(), ListenerError> {
    if console {
        return Err(ListenerError::NeedsSqlite {
            feature: "the admin console (its queries read the SQLite store)",
            remedy: "set [admin] enabled = false",
        });
    }
    Ok(())
}

/// Moved to the audit module (storage appends these too); re-exported for the listener's uses.
pub(crate) use crate::audit::lifecycle_record;

/// Resolves on SIGTERM or Ctrl-C: the one shutdown signal for listener and workers.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub(crate) fn error_response(status: StatusCode, error: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": error }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.check_ready().await {
        Ok(()) => {
            HttpResponse::Ok().json(json!({ "status": "ready", "storage": "ok", "keys": "ok" }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "5"))
                .json(json!({ "status": "not ready", "storage": "unavailable", "keys": "ok" }))
        }
    }
}

async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "POST"))
        .json(json!({ "error": "method not allowed" }))
}
