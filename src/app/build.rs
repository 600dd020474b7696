//! Settings → each stage's runtime. Every stage builds its own part from its settings; this
//! file only calls them in order and gathers their problems, so `serve`, `reload` and
//! `check-config` report the same problems for the same file.

use std::path::Path;
use std::sync::{Arc, RwLock};

use actix_web::web;

use super::reload::{Reloader, RunningShape};
use super::{AppError, Application};
use crate::config::{Config, ConfigError, Problem, Transport};
use crate::dispatch::worker::{Dispatcher, Plan, SharedPlan};
use crate::listener::{AppState, Socket};
use crate::store::open::StoreSettings;
use crate::tls::{self, CertSlot};
use crate::verify::Verifiers;

/// What the stages built from one config, before anything is bound or opened.
#[derive(Debug)]
pub struct Stages {
    /// Every source's verifier and the OAuth2 token issuer.
    pub verifiers: Verifiers,
    /// The handlers and compiled routes.
    pub plan: Plan,
    /// The senders' TLS server configuration and its certificate slot (`None` for plain HTTP on
    /// loopback).
    pub tls: Option<(rustls::ServerConfig, Arc<CertSlot>)>,
}

/// Build every stage's runtime from `config`: verifiers, the dispatch plan (handlers and
/// routes) and the TLS server configuration. Every problem of every stage is reported at once,
/// with its key path.
pub fn build_stages(config: &Config) -> Result<Stages, ConfigError> {
    let mut problems = Vec::new();
    let verifiers = crate::verify::build_verifiers(&config.sources)
        .map_err(|list| problems.extend(list))
        .ok();
    let plan = crate::dispatch::plan::build_plan(config)
        .map_err(|list| problems.extend(list))
        .ok();
    let tls = match &config.server.transport {
        Transport::PlainLoopback => Some(None),
        Transport::Tls(settings) => match tls::server_config(settings) {
            Ok(built) => Some(Some(built)),
            Err(e) => {
                problems.push(Problem {
                    path: format!("server.tls.{}", e.key()),
                    message: e.to_string(),
                });
                None
            }
        },
    };
    if let Some(forward) = &config.audit_forward {
        if let Err(e) = crate::audit::forward::check_settings(forward) {
            problems.push(match e {
                crate::audit::forward::ForwardError::Setup { key, reason } => Problem {
                    path: format!("audit_forward.{key}"),
                    message: reason,
                },
                other => Problem {
                    path: "audit_forward".into(),
                    message: other.to_string(),
                },
            });
        }
    }
    // The storage settings as far as they can be proved without the database (the same
    // connection set-up the store opens with).
    if let Err((path, message)) = crate::store::open::check(&StoreSettings::of(config)) {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        });
    }
    match (verifiers, plan, tls) {
        (Some(verifiers), Some(plan), Some(tls)) if problems.is_empty() => Ok(Stages {
            verifiers,
            plan,
            tls,
        }),
        _ => Err(ConfigError {
            file: config.path.clone(),
            problems,
        }),
    }
}

/// Load the config at `path` and build every stage from it once, as `serve` would, for the
/// commands that use a full config without serving (`sign`, `send-test`, `deliveries
/// reverify`): a file they accept is one `serve` and `check-config` accept.
pub fn load_checked(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    build_stages(&config)?;
    Ok(config)
}

/// What `check-config` prints after a clean build: the handlers' start-up warnings, in config
/// order, as (handler, warning).
pub fn startup_warnings(config: &Config, plan: &Plan) -> Vec<(String, String)> {
    config
        .handlers
        .iter()
        .filter_map(|section| plan.handler(&section.name))
        .flat_map(|h| {
            let name = h.name().to_owned();
            h.startup_warnings()
                .into_iter()
                .map(move |w| (name.clone(), w))
        })
        .collect()
}

impl Application {
    /// Build every stage from `config`, open storage and bind the listeners. `listen` may use
    /// port 0.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        Self::build_with_base(config, Path::new(".")).await
    }

    /// Like [`Application::build`]; `base` is the folder relative paths of reloaded configs are
    /// taken from (the working directory in production).
    pub async fn build_with_base(config: Config, base: &Path) -> Result<Self, AppError> {
        let socket = Socket::bind(&config.server)?;
        let Stages {
            verifiers,
            plan,
            tls,
        } = build_stages(&config)?;
        for (handler, warning) in startup_warnings(&config, &plan) {
            tracing::warn!(handler = %handler, "{warning}");
        }
        let shape = RunningShape::of(&config);
        let console = crate::admin::ConsoleSetup::from_config(&config);
        let console_view = console.enabled().then(|| console.view_handle());
        let keyring = crate::crypto::Keyring::from_master(&config.master_key)
            .with_phone_country(config.phone_country.clone());
        let opened = crate::store::open::open(&StoreSettings::of(&config), keyring).await?;
        let plan: SharedPlan = Arc::new(RwLock::new(Arc::new(plan)));
        let traces = match &config.traces {
            Some(settings) => crate::telemetry::traces::Traces::start(settings)?,
            None => crate::telemetry::traces::Traces::off(),
        };
        let mut dispatcher =
            Dispatcher::new(opened.store.clone(), plan.clone(), config.dispatch.clone())
                .with_traces(traces.clone());
        if let Some(settings) = &config.artifacts {
            let capture = crate::artifacts::Capture::build(settings, opened.store.clone())
                .map_err(|e| AppError::Artifacts(e.to_string()))?;
            let source = crate::artifacts::StoreArtifactSource::new(
                opened.store.clone(),
                settings.dir.clone(),
            );
            dispatcher = dispatcher.with_artifacts(Arc::new(capture), Arc::new(source));
        }
        let dispatcher = Arc::new(dispatcher);
        let alerts = Arc::new(crate::alerts::Alerts::new(
            &config,
            opened.store.clone(),
            plan.clone(),
        ));
        let console = console.with_alerts(alerts.clone());
        let admin = if console.enabled() {
            Some(
                crate::admin::AdminServer::build(console, opened.store.clone(), dispatcher.clone())
                    .await?,
            )
        } else {
            None
        };
        let state = AppState::new(
            &config.sources,
            verifiers,
            opened.store.clone(),
            plan,
            dispatcher.waker(),
            &config.server,
        )
        .with_traces(traces.clone());
        let relay = super::relay::build_relay_server(&config, &opened)?;
        let (state, relay_pull) = match relay {
            Some(parts) => (state.with_handoff(parts.handoff), Some(parts.pull)),
            None => (state, None),
        };
        let state = web::Data::new(state);
        let relay_puller = super::relay::build_puller(&config, &state)?;
        let (tls_config, cert_slot) = match tls {
            Some((tls_config, slot)) => (Some(tls_config), Some(slot)),
            None => (None, None),
        };
        let listener = socket.serve(&config.server, tls_config, state.clone())?;
        Ok(Self {
            listener,
            // A relay stores nothing it could dispatch: no workers.
            dispatch_workers: if relay_pull.is_some() {
                0
            } else {
                config.dispatch.workers
            },
            relay_pull,
            relay_puller,
            audit_forward: config.audit_forward.clone(),
            dispatcher,
            storage: opened,
            config_sha256: config.sha256.clone(),
            clock: state.clock(),
            data_dir: config
                .storage_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| ".".into(), ToOwned::to_owned),
            traces,
            alerts,
            reloader: Reloader {
                state,
                cert_slot,
                admin_cert_slot: admin
                    .as_ref()
                    .and_then(crate::admin::AdminServer::cert_slot),
                console_view,
                base: base.to_owned(),
                running: Arc::new(RwLock::new(shape)),
            },
            admin,
        })
    }
}

#[cfg(test)]
mod tests {
    /// Config checks `storage.postgres.node_id` without importing audit; the rule must stay the
    /// one audit codes follow, since the id is written into every record of the node.
    #[test]
    fn the_config_node_id_rule_is_the_audit_code_rule() {
        let long = "n".repeat(64);
        let too_long = "n".repeat(65);
        for id in [
            "node-a",
            "a",
            "A1:b.c_d-e",
            "1node",
            "-x",
            "",
            "a b",
            "ä",
            "n/1",
            &long,
            &too_long,
        ] {
            assert_eq!(
                crate::config::is_node_id(id),
                crate::audit::Code::parse(id).is_ok(),
                "{id:?}"
            );
        }
    }
}
