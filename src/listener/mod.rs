//! Stage 1 of the delivery path: the senders' HTTPS listener. It only listens: `app` builds the
//! stages and hands them over in an [`AppState`], and binds and starts the listener with
//! [`Socket`].
//!
//! Terminates TLS (the server configuration comes from `tls`), enforces per-source body caps
//! while streaming and per-source rate limits, and hands the raw body to the verify stage. Nothing here ever logs a body or an
//! authentication header; a request's one access line ([`access`]) has its id, path (the source),
//! status and latency, and a stored delivery's id and outcome.
//!
//! What an unauthenticated request can cost is bounded: metric series are labelled only with
//! configured source names, rejected requests spend a per-client budget (never a source's), and
//! their audit records are tallied per interval ([`rejections`]).

mod access;
pub mod body;
pub mod clock;
pub mod handoff;
mod hook_error;
mod hooks;
mod oauth;
pub mod rate_limit;
pub mod rejections;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::dev::{Server, Service};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use crate::config::{ServerSettings, Source, Transport};
use crate::dispatch::worker::{Plan, SharedPlan};
use crate::store::Storage;
use crate::verify::Verifiers;
use rate_limit::{ClientBuckets, TokenBucket};
use rejections::RejectionLog;

pub use hooks::ingest_relayed;

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
    /// actix refused the listener.
    #[error("cannot start HTTP server: {0}")]
    Server(std::io::Error),
    /// Plain HTTP was asked for on an address that is not loopback. Config validation refuses
    /// this already; the listener refuses it again rather than trust every way a `Config` can
    /// be put together.
    #[error("server.listen: refusing to serve plain HTTP on {addr}: plain HTTP is only allowed on a loopback address")]
    PlainOffLoopback {
        /// The configured address.
        addr: std::net::SocketAddr,
    },
}

/// A source with its runtime state.
#[derive(Debug)]
struct SourceRuntime {
    name: String,
    max_body_bytes: usize,
    verifier: crate::verify::SourceVerifier,
    bucket: Option<TokenBucket>,
}

/// The parts of the config that `reload` replaces atomically: a request sees either the old
/// set or the new one, never a mix.
#[derive(Debug)]
pub(crate) struct Live {
    sources: HashMap<String, SourceRuntime>,
    oauth: Option<Arc<crate::verify::oauth::TokenIssuer>>,
}

impl Live {
    /// The sources' settings with the verifiers built from them (same order).
    pub(crate) fn new(
        sources: &[crate::config::Source],
        verifiers: crate::verify::Verifiers,
    ) -> Self {
        let sources = sources
            .iter()
            .zip(verifiers.sources)
            .map(|(source, verifier)| {
                let name = source.name.as_str().to_owned();
                let runtime = SourceRuntime {
                    name: name.clone(),
                    max_body_bytes: source.max_body_bytes,
                    verifier,
                    bucket: source.rate_limit.map(TokenBucket::new),
                };
                (name, runtime)
            })
            .collect();
        Self {
            sources,
            oauth: verifiers.oauth,
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
    /// On a DMZ relay: where verified deliveries go instead of intake.
    handoff: Option<Arc<dyn handoff::Handoff>>,
    /// Delivery traces (OTLP); off unless `[traces]` is configured.
    traces: crate::telemetry::traces::Traces,
}

impl AppState {
    /// The state of a listener serving `sources` with their `verifiers`, committing to `store`
    /// and routing with `plan`; `dispatch_wake` is notified when intake commits jobs.
    pub fn new(
        sources: &[Source],
        verifiers: Verifiers,
        store: Arc<dyn Storage>,
        plan: SharedPlan,
        dispatch_wake: Arc<tokio::sync::Notify>,
        server: &ServerSettings,
    ) -> Self {
        Self {
            live: RwLock::new(Arc::new(Live::new(sources, verifiers))),
            store,
            plan,
            dispatch_wake,
            clock: Arc::default(),
            rejected_budget: ClientBuckets::new(
                server.rejected_rate_limit,
                REJECTED_CLIENTS_TRACKED,
            ),
            rejections: RejectionLog::new(REJECTION_AUDIT_KEYS),
            handoff: None,
            traces: crate::telemetry::traces::Traces::off(),
        }
    }

    /// The state of a DMZ relay's sender listener: verified deliveries go to `handoff` (sealed
    /// and buffered) instead of intake; everything before that is the same.
    pub fn with_handoff(mut self, handoff: Arc<dyn handoff::Handoff>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Export a trace of each stored delivery through `traces`.
    #[must_use]
    pub fn with_traces(mut self, traces: crate::telemetry::traces::Traces) -> Self {
        self.traces = traces;
        self
    }

    /// The sources in force now.
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put reloaded sources (with their verifiers) and plan in force together.
    pub fn replace(&self, sources: &[Source], verifiers: Verifiers, plan: Plan) {
        let live = Arc::new(Live::new(sources, verifiers));
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
        *self.plan.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(plan);
    }

    /// The storage intake commits to.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// Senders' clock skew, for `wardhook doctor`.
    pub fn clock(&self) -> Arc<clock::SkewTracker> {
        self.clock.clone()
    }

    /// Write the rejections tallied in the interval just ended as aggregate audit records.
    pub async fn flush_rejections(&self) {
        for record in self.rejections.drain() {
            if let Err(e) = self.store.record_audit(record).await {
                tracing::error!(error = %e, "cannot audit a tally of rejected deliveries");
            }
        }
    }
}

/// The senders' address, bound (and refused if plain HTTP is asked for off loopback), not yet
/// serving.
#[derive(Debug)]
pub struct Socket {
    listener: TcpListener,
    port: u16,
}

/// The senders' listener, serving.
pub struct Listener {
    /// The bound port (useful when configured with port 0).
    pub port: u16,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// The actix server; awaiting it runs it.
    pub server: Server,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// Bind `server.listen`. `listen` may use port 0.
    pub fn bind(server: &ServerSettings) -> Result<Self, ListenerError> {
        if matches!(server.transport, Transport::PlainLoopback) && !server.listen.ip().is_loopback()
        {
            return Err(ListenerError::PlainOffLoopback {
                addr: server.listen,
            });
        }
        let listener = TcpListener::bind(server.listen).map_err(|source| ListenerError::Bind {
            addr: server.listen.to_string(),
            source,
        })?;
        let port = listener.local_addr().map_err(ListenerError::Server)?.port();
        Ok(Self { listener, port })
    }

    /// Serve the hook routes with `state`, over TLS with `tls` (the senders' server
    /// configuration, built by `tls`) or plain HTTP on loopback when `None`.
    pub fn serve(
        self,
        server_cfg: &ServerSettings,
        tls: Option<rustls::ServerConfig>,
        state: web::Data<AppState>,
    ) -> Result<Listener, ListenerError> {
        let Self { listener, port } = self;
        let mut http = HttpServer::new(move || {
            // Runs once on each worker thread, inside its runtime.
            crate::store::answers::serve_here();
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
                        let note = res
                            .response_mut()
                            .extensions_mut()
                            .remove::<access::AccessNote>();
                        access::log_request(
                            &request_id,
                            &method,
                            &path,
                            status,
                            started.elapsed(),
                            note.as_ref(),
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
                .route("/oauth/token", web::post().to(oauth::oauth_token))
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
        let (http, tls) = match tls {
            Some(tls_config) => (
                http.listen_rustls_0_23(listener, tls_config)
                    .map_err(ListenerError::Server)?,
                true,
            ),
            None => {
                tracing::warn!(
                    listen = %server_cfg.listen,
                    "serving plain HTTP on loopback: TLS must be terminated by a local proxy"
                );
                (http.listen(listener).map_err(ListenerError::Server)?, false)
            }
        };
        Ok(Listener {
            port,
            tls,
            server: http.run(),
        })
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
