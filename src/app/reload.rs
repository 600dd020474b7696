//! Reload without downtime: `SIGHUP` (or `wardhook reload`) re-reads the config, certificates,
//! secrets and routes, and swaps them in atomically.
//!
//! A request in flight keeps the sources it started with; the next one sees the new set. A new
//! config that fails any check is refused whole and the old one stays in force. Settings that
//! cannot change under a running listener (the bound address, the transport, the client CA, the
//! database, the master key) are reported and need a restart; a different master key refuses the
//! reload, because payloads written under one key must not silently meet another.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::config::{Config, ConfigError, Transport};
use crate::listener::AppState;
use crate::tls::{self, CertSlot};

/// Why a reload was refused. The old configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config has problems (all of them listed).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The new config names a different master key.
    #[error("keys.master_key_file now holds a different master key; restart (after `keys rotate` planning) to change keys")]
    MasterKeyChanged,
    /// The new certificate could not be loaded.
    #[error("server.tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// What a successful reload changed, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// SHA-256 of the config file now in force.
    pub config_sha256: String,
    /// Number of sources now served.
    pub sources: usize,
    /// Number of routes now in force.
    pub routes: usize,
    /// Whether a certificate was reloaded.
    pub certificate_reloaded: bool,
    /// Settings that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Applies new configs to a running listener. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(super) state: actix_web::web::Data<AppState>,
    pub(super) cert_slot: Option<Arc<CertSlot>>,
    /// The admin listener's certificate, renewed together with the senders'.
    pub(super) admin_cert_slot: Option<Arc<CertSlot>>,
    /// What the console shows of the config (sources, handlers, summary).
    pub(super) console_view: Option<crate::admin::SharedView>,
    pub(super) base: PathBuf,
    pub(super) running: Arc<RwLock<RunningShape>>,
}

/// The settings fixed at start-up, for comparison with a reloaded config.
#[derive(Debug, Clone)]
pub(super) struct RunningShape {
    pub listen: std::net::SocketAddr,
    pub client_ca: Option<PathBuf>,
    /// The admin listener's address, whether it runs, and its client CA: bound once.
    pub admin_listen: std::net::SocketAddr,
    pub admin_enabled: bool,
    pub admin_client_ca: Option<PathBuf>,
    /// A fingerprint of `[admin.oidc]` (secret included): the console's sign-in is set up once.
    pub admin_oidc: Option<[u8; 32]>,
    /// The budget of refused requests per client address, set up once.
    pub rejected_rate_limit: crate::config::RateLimit,
    /// Console sessions' idle timeout and lifetime: the session table is made once.
    pub admin_sessions: (std::time::Duration, std::time::Duration),
    /// How callers' national numbers are indexed: the keyring is made once.
    pub phone_country: Option<crate::config::PhoneCountry>,
    pub storage_path: PathBuf,
    /// `sqlite` or `postgres`: the backend is opened once, at start-up.
    pub storage_backend: &'static str,
    pub master_key: [u8; 32],
}

/// SHA-256 over every `[admin.oidc]` setting, so a changed one (the secret too) is reported.
fn oidc_fingerprint(o: &crate::config::oidc::OidcSettings) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in [
        o.issuer.as_bytes(),
        o.client_id.as_bytes(),
        o.client_secret.expose(),
        o.redirect_url.as_bytes(),
        o.groups_claim.as_bytes(),
        o.label.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    for s in &o.scopes {
        h.update(b"s");
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    for (g, r) in &o.roles {
        h.update(b"r");
        h.update((g.len() as u64).to_be_bytes());
        h.update(g.as_bytes());
        h.update(r.as_bytes());
    }
    if let Some(ca) = &o.ca_file {
        h.update(ca.as_os_str().as_encoded_bytes());
    }
    h.finalize().into()
}

impl Drop for RunningShape {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.master_key);
    }
}

impl RunningShape {
    pub(super) fn of(config: &Config) -> Self {
        let client_ca = match &config.server.transport {
            Transport::Tls(t) => t.client_ca.clone(),
            Transport::PlainLoopback => None,
        };
        Self {
            listen: config.server.listen,
            client_ca,
            admin_listen: config.admin_listen,
            admin_enabled: config.admin.enabled,
            admin_client_ca: config.admin.client_ca.clone(),
            admin_oidc: config.admin.oidc.as_ref().map(oidc_fingerprint),
            rejected_rate_limit: config.server.rejected_rate_limit,
            admin_sessions: (config.admin.idle_timeout, config.admin.session_lifetime),
            phone_country: config.phone_country.clone(),
            storage_path: config.storage_path.clone(),
            storage_backend: config.storage_backend.name(),
            master_key: *config.master_key.expose(),
        }
    }
}

impl Reloader {
    /// [`Reloader::reload`] off the async executor, with its outcome in the audit log
    /// (`config_loaded`, success with the new file's SHA-256, or failure).
    pub async fn reload_audited(&self, path: &Path) -> Result<ReloadReport, ReloadError> {
        let me = self.clone();
        let p = path.to_owned();
        let result = tokio::task::spawn_blocking(move || me.reload(&p))
            .await
            .unwrap_or_else(|e| {
                Err(ReloadError::Invalid(ConfigError {
                    file: path.to_owned(),
                    problems: vec![crate::config::Problem {
                        path: String::new(),
                        message: format!("reload task failed: {e}"),
                    }],
                }))
            });
        let mut record = crate::audit::lifecycle_record(
            crate::audit::Action::ConfigLoaded,
            result.as_ref().ok().map(|r| r.config_sha256.as_str()),
        );
        if result.is_err() {
            record.outcome = crate::audit::Outcome::Failure;
        }
        if let Ok(via) = crate::audit::Code::parse("reload") {
            record.detail.insert(crate::audit::DetailKey::Via, via);
        }
        if let Err(e) = self.state.store().record_audit(record).await {
            tracing::error!(error = %e, "cannot audit the reload");
        }
        result
    }

    /// Load `path` and, if it is valid, put it in force. Blocking (file reads); call from a
    /// blocking-friendly context.
    pub fn reload(&self, path: &Path) -> Result<ReloadReport, ReloadError> {
        let config = Config::load_with_base(path, &self.base)?;
        let verifiers =
            crate::verify::build_verifiers(&config.sources).map_err(|problems| ConfigError {
                file: config.path.clone(),
                problems,
            })?;
        let plan = crate::dispatch::plan::build_plan(&config).map_err(|problems| ConfigError {
            file: config.path.clone(),
            problems,
        })?;
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &running.master_key[..],
            &config.master_key.expose()[..],
        )) {
            return Err(ReloadError::MasterKeyChanged);
        }
        let mut report = ReloadReport {
            config_sha256: config.sha256.clone(),
            sources: config.sources.len(),
            routes: config.routes.len(),
            ..ReloadReport::default()
        };
        if config.server.listen != running.listen {
            report.needs_restart.push("server.listen");
        }
        // The admin listener is bound with its client CA at start: a changed CA is reported,
        // never silently left unapplied.
        if config.admin_listen != running.admin_listen {
            report.needs_restart.push("admin.listen");
        }
        if config.admin.enabled != running.admin_enabled {
            report.needs_restart.push("admin.enabled");
        }
        if config.admin.client_ca != running.admin_client_ca {
            report.needs_restart.push("admin.client_ca");
        }
        if config.admin.oidc.as_ref().map(oidc_fingerprint) != running.admin_oidc {
            report.needs_restart.push("admin.oidc");
        }
        if config.server.rejected_rate_limit != running.rejected_rate_limit {
            report.needs_restart.push("server.rejected_rate_limit");
        }
        let (idle, lifetime) = running.admin_sessions;
        if config.admin.idle_timeout != idle {
            report.needs_restart.push("admin.idle_timeout");
        }
        if config.admin.session_lifetime != lifetime {
            report.needs_restart.push("admin.session_lifetime");
        }
        if config.phone_country != running.phone_country {
            report.needs_restart.push("storage.phone_country");
        }
        if config.storage_path != running.storage_path {
            report.needs_restart.push("storage.path");
        }
        if config.storage_backend.name() != running.storage_backend {
            report.needs_restart.push("storage.backend");
        }
        let new_cert = match (&config.server.transport, &self.cert_slot) {
            (Transport::Tls(settings), Some(_)) => {
                if settings.client_ca != running.client_ca {
                    report.needs_restart.push("server.tls.client_ca");
                }
                Some(tls::load_certified_key(settings)?)
            }
            (Transport::Tls(_), None) | (Transport::PlainLoopback, Some(_)) => {
                report.needs_restart.push("server.tls / server.plain_http");
                None
            }
            (Transport::PlainLoopback, None) => None,
        };
        drop(running);
        // Everything is loaded and checked; from here on nothing can fail.
        if let (Some(slot), Some(cert)) = (&self.cert_slot, new_cert) {
            if let Some(admin) = &self.admin_cert_slot {
                admin.replace(cert.clone());
            }
            slot.replace(cert);
            report.certificate_reloaded = true;
        }
        if let Some(view) = &self.console_view {
            let fresh = Arc::new(crate::admin::ConsoleView::from_config(&config));
            *view.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        }
        self.state.replace(&config.sources, verifiers, plan);
        Ok(report)
    }
}
