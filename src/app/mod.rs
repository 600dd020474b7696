//! The application's wiring: settings → each stage's runtime, then run, reload and stop. The
//! one place that knows every stage; `cli serve` and the tests call it.
//!
//! - [`build`]: every stage builds its own runtime from its settings (`verify` the verifiers,
//!   `dispatch` the plan and handlers, `tls` the server configuration, `store` the backend, in
//!   [`crate::store::open`]); `check-config` calls the same builders as `serve`. Then the dispatcher, the
//!   admin console and the senders' listener are put together into an [`Application`].
//! - [`run`]: serve until the shutdown signal, with the dispatch workers, the admin listener,
//!   the audit lifecycle records and checkpoints, and the periodic tallies.
//! - [`reload`]: `SIGHUP` / `wardhook reload` rebuilds the stages from a new file and swaps
//!   them in.
//! - [`shutdown`]: SIGTERM or Ctrl-C.

pub mod build;
mod relay;
pub mod reload;
pub mod run;
pub mod shutdown;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::dev::ServerHandle;

use crate::dispatch::worker::Dispatcher;
use crate::listener::{clock::SkewTracker, Listener};

pub use build::{build_stages, load_checked, startup_warnings, Stages};
pub use reload::{ReloadError, ReloadReport, Reloader};
pub use shutdown::shutdown_signal;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A stage could not be built from the settings (every problem, with its key path).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The senders' listener could not be bound or started.
    #[error(transparent)]
    Listener(#[from] crate::listener::ListenerError),
    /// The database could not be opened.
    #[error("cannot open storage: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The audit mirror folder could not be prepared.
    #[error("cannot open the audit mirror: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The admin listener (console, API, metrics) could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// The DMZ relay's parts or the inside node's puller could not be built.
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    /// The OTLP trace exporter (`[traces]`) could not start.
    #[error(transparent)]
    Traces(#[from] crate::telemetry::traces::TracesError),
    /// The artifact capture step could not be set up (`[artifacts]`).
    #[error("cannot set up artifact capture: {0}")]
    Artifacts(String),
}

/// A built, bound application, not yet running.
pub struct Application {
    listener: Listener,
    reloader: Reloader,
    dispatcher: Arc<Dispatcher>,
    dispatch_workers: usize,
    /// `[audit_forward]`: the syslog forwarder started beside the workers, if configured.
    audit_forward: Option<crate::config::audit_forward::AuditForwardSettings>,
    /// The opened backend and its background work (closed last at shutdown).
    storage: crate::store::open::OpenedStorage,
    config_sha256: String,
    /// The operators' listener, started and stopped with the senders'.
    admin: Option<crate::admin::AdminServer>,
    clock: Arc<SkewTracker>,
    data_dir: PathBuf,
    /// On a DMZ relay: the inside node's pull listener.
    relay_pull: Option<crate::relay::pull_api::PullServer>,
    /// On an inside node with `[relay]`: the loop pulling sealed deliveries.
    relay_puller: Option<crate::relay::puller::Puller>,
    /// Delivery traces; flushed when the application stops.
    traces: crate::telemetry::traces::Traces,
    /// The console alerts' evaluator, run beside the workers.
    alerts: Arc<crate::alerts::Alerts>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.listener.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// The dispatcher (tests drive `try_execute_task` on it directly).
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// The console alerts' evaluator (tests run a round with `evaluate_once`).
    pub fn alerts(&self) -> Arc<crate::alerts::Alerts> {
        self.alerts.clone()
    }

    /// A handle that applies a new config to this running server.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The admin listener's bound port, if it runs (useful when configured with port 0).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(crate::admin::AdminServer::port)
    }

    /// The senders' listener's bound port (useful when configured with port 0).
    pub fn port(&self) -> u16 {
        self.listener.port
    }

    /// On a DMZ relay, the pull listener's bound port.
    pub fn relay_pull_port(&self) -> Option<u16> {
        self.relay_pull.as_ref().map(|p| p.port)
    }

    /// Whether the senders' listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.listener.tls
    }

    /// A handle that can stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.listener.server.handle()
    }
}
