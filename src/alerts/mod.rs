//! Console alerts: built-in rules that tell a small clinic — one without Prometheus — that
//! something needs a person, on every console page and through its notifiers.
//!
//! Place in the delivery path: beside it. Every `[alerts] interval` the evaluator gathers facts
//! (stored attempts, dead letters and traffic through [`crate::store::alerts::AlertStore`];
//! this node's certificate and data volume; what the relay puller last recorded; now and then
//! an audit verification), runs the rules in [`rules`], and turns the difference between what
//! holds and what is open into transitions: a condition that holds and has no unresolved alert
//! opens one; an unresolved alert whose condition no longer holds resolves itself. Operators
//! acknowledge from the console or the API. Each transition is an audit record written with
//! the state change, and is sent by [`notify`] to the configured notifiers.
//!
//! Which node evaluates: on PostgreSQL the rules about the shared database (handlers, dead
//! letters, sources, the audit log) run on the one node holding the evaluation lease; the
//! rules about a node's own certificate, volume and relay run on every node, each about
//! itself (the alert's subject is the node id). Opening and resolving are conditional writes,
//! so even two evaluators cannot open, resolve or notify the same alert twice.
//!
//! - [`rules`]: the rules, pure functions of facts and thresholds (unit-tested per rule);
//! - [`notify`]: the notification event and the per-notifier hourly budget.

pub mod notify;
pub mod rules;

#[cfg(test)]
mod prometheus_tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;

use crate::config::alerts::AlertsSettings;
use crate::config::{Config, Transport};
use crate::dispatch::worker::SharedPlan;
use crate::store::alerts::{alert_key, Alert, AlertState};
use crate::store::console::AuditCheck;
use crate::store::types::Requester;
use crate::store::{Storage, StoreError};
use notify::{Notifier, Sent, Transition};
use rules::Finding;

/// The newest attempts the failing-handler rule looks at.
const ATTEMPTS_CONSIDERED: u32 = 5000;

/// Why an evaluation round or an acknowledgement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    /// The store could not read or write the alerts.
    #[error("alerts: {0}")]
    Store(#[from] StoreError),
}

/// What one round changed, for logs and tests.
#[derive(Debug, Default)]
pub struct Round {
    /// Whether this node held the evaluation lease.
    pub led: bool,
    /// Alerts this node opened.
    pub opened: Vec<Alert>,
    /// Alerts this node resolved.
    pub resolved: Vec<Alert>,
    /// The notifications sent.
    pub sent: Vec<Sent>,
}

/// What the evaluator reads besides the store: names and paths from the config.
#[derive(Debug, Clone)]
struct Inputs {
    handlers: Vec<String>,
    sources: Vec<String>,
    time_zone: chrono_tz::Tz,
    certificate: Option<PathBuf>,
    data_dir: PathBuf,
    audit_dir: PathBuf,
    relay: bool,
}

/// The evaluator and the notifier of one node.
#[derive(Debug)]
pub struct Alerts {
    settings: AlertsSettings,
    inputs: Inputs,
    store: Arc<dyn Storage>,
    notifier: Arc<Notifier>,
    last_audit_check: Mutex<Option<Instant>>,
}

impl Alerts {
    /// The evaluator for `config`, reading `store` and notifying through `plan`'s handlers.
    pub fn new(config: &Config, store: Arc<dyn Storage>, plan: SharedPlan) -> Self {
        let settings = config.alerts.clone();
        let notifier = Notifier::new(
            settings.notify.clone(),
            plan,
            settings.notify_per_hour,
            config.dispatch.handler_timeout,
        );
        Self {
            inputs: Inputs {
                handlers: config.handlers.iter().map(|h| h.name.clone()).collect(),
                sources: config
                    .sources
                    .iter()
                    .map(|s| s.name.as_str().to_owned())
                    .collect(),
                time_zone: config.dispatch.time_zone,
                certificate: match &config.server.transport {
                    Transport::Tls(t) => Some(t.cert.clone()),
                    Transport::PlainLoopback => None,
                },
                data_dir: config
                    .storage_path
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                audit_dir: config.audit.dir.clone(),
                relay: config.relay.is_some(),
            },
            settings,
            store,
            notifier: Arc::new(notifier),
            last_audit_check: Mutex::new(None),
        }
    }

    /// Whether the rules run (`[alerts] enabled`).
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Evaluate every `[alerts] interval` until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.settings.enabled {
            return;
        }
        // The first round comes one interval after the start: a node that just started has not
        // seen a delivery or an attempt yet.
        let first = tokio::time::Instant::now() + self.settings.interval;
        let mut tick = tokio::time::interval_at(first, self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.evaluate_once().await {
                        tracing::warn!(error = %e, "alert evaluation failed");
                    }
                }
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
    }

    /// One round: gather facts, run the rules, open and resolve, notify.
    pub async fn evaluate_once(&self) -> Result<Round, AlertsError> {
        let alerts = self.store.alerts();
        let node = alerts.alert_node();
        let now = Utc::now();
        let s = &self.settings;
        let mut round = Round {
            led: alerts.lead_alerts(s.interval.saturating_mul(3)).await?,
            ..Round::default()
        };
        let mut findings: Vec<Finding> = Vec::new();
        findings.extend(rules::certificate_expiry(&node, self.certificate_days(), s));
        let volume = self.volume_used_percent();
        findings.extend(rules::disk_space(&node, volume, s));
        findings.extend(rules::relay_backlog(&node, self.relay_fact(), s));
        // Which (rule, subject) pairs this round speaks for: only those may be resolved.
        let mut node_rules: Vec<&str> = rules::NODE_RULES.to_vec();
        let mut cluster_rules: Vec<&str> = Vec::new();
        let mut in_a_row = Vec::new();
        let mut audit_verified = None;
        if round.led {
            let since = now
                - chrono::Duration::from_std(rules::SILENCE_HISTORY)
                    .unwrap_or(chrono::Duration::zero());
            let mut facts = alerts.alert_facts(ATTEMPTS_CONSIDERED, since).await?;
            let known = |name: &String| self.inputs.handlers.contains(name);
            facts.attempts.retain(|a| known(&a.handler));
            facts.dead_letters.retain(|(h, _)| known(h));
            for h in &self.inputs.handlers {
                let n = facts
                    .attempts
                    .iter()
                    .filter(|a| &a.handler == h)
                    .rev()
                    .take_while(|a| !a.ok)
                    .count();
                in_a_row.push((h.clone(), n as u64));
            }
            findings.extend(rules::handler_failing(&facts.attempts, s, now));
            findings.extend(rules::dead_letters(&facts.dead_letters, s));
            findings.extend(rules::source_silent(
                &self.inputs.sources,
                &facts.sources,
                s,
                self.inputs.time_zone,
                now,
            ));
            cluster_rules.extend([
                rules::HANDLER_FAILING,
                rules::DEAD_LETTERS,
                rules::SOURCE_SILENT,
            ]);
            if self.audit_check_due() {
                let verified = self.verify_audit().await?;
                findings.extend(rules::audit_verification(Some(verified)));
                cluster_rules.push(rules::AUDIT_VERIFICATION);
                audit_verified = Some(verified);
            }
        }
        if !self.inputs.relay {
            node_rules.retain(|r| *r != rules::RELAY_BACKLOG);
        }
        let current = alerts.list_alerts(0).await?;
        for f in &findings {
            let key = alert_key(f.rule, &f.subject);
            if current.iter().any(|a| a.key() == key) {
                continue;
            }
            let new = crate::store::alerts::NewAlert {
                rule: f.rule.to_owned(),
                subject: f.subject.clone(),
                summary: f.summary.clone(),
            };
            if let Some(opened) = alerts.open_alert(new).await? {
                tracing::warn!(alert = %opened.id, rule = %opened.rule, "alert opened");
                round
                    .sent
                    .extend(self.notifier.send(&opened, Transition::Opened).await);
                round.opened.push(opened);
            }
        }
        for a in &current {
            let speaks = cluster_rules.contains(&a.rule.as_str())
                || (node_rules.contains(&a.rule.as_str()) && a.subject == node);
            let holds = findings
                .iter()
                .any(|f| f.rule == a.rule && f.subject == a.subject);
            if !speaks || holds {
                continue;
            }
            if let Some(resolved) = alerts.resolve_alert(a.key()).await? {
                tracing::info!(alert = %resolved.id, rule = %resolved.rule, "alert resolved");
                round
                    .sent
                    .extend(self.notifier.send(&resolved, Transition::Resolved).await);
                round.resolved.push(resolved);
            }
        }
        let open_now = alerts.list_alerts(0).await?;
        let by_rule: Vec<(&'static str, u64)> = rules::CLUSTER_RULES
            .iter()
            .chain(rules::NODE_RULES)
            .map(|r| (*r, open_now.iter().filter(|a| a.rule == *r).count() as u64))
            .collect();
        crate::metrics::alert_facts(&in_a_row, volume, audit_verified, &by_rule);
        Ok(round)
    }

    /// Acknowledge open alert `id` for `who` and tell the notifiers (in the background, so the
    /// operator's request does not wait for an SMTP server). `None` when it was not open.
    pub async fn acknowledge(
        &self,
        id: String,
        who: Requester,
    ) -> Result<Option<Alert>, AlertsError> {
        let acked = self.store.alerts().acknowledge_alert(id, who).await?;
        if let Some(a) = &acked {
            let (notifier, a) = (self.notifier.clone(), a.clone());
            tokio::spawn(async move {
                notifier.send(&a, Transition::Acknowledged).await;
            });
        }
        Ok(acked)
    }

    fn audit_check_due(&self) -> bool {
        let mut last = self
            .last_audit_check
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.settings.audit_verify_every);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    async fn verify_audit(&self) -> Result<bool, AlertsError> {
        let check = self
            .store
            .console()
            .audit_check(self.inputs.audit_dir.clone())
            .await?;
        Ok(!matches!(check, AuditCheck::Failed { .. }))
    }

    /// Days until the listener's certificate expires; `None` on plain HTTP or unreadable.
    fn certificate_days(&self) -> Option<f64> {
        let pem = std::fs::read(self.inputs.certificate.as_ref()?).ok()?;
        let block = x509_parser::pem::Pem::iter_from_buffer(&pem).next()?.ok()?;
        let cert = block.parse_x509().ok()?;
        let not_after = cert.validity().not_after.timestamp();
        Some((not_after - Utc::now().timestamp()) as f64 / 86_400.0)
    }

    /// Percent used of the volume holding the data folder (the nearest existing ancestor).
    // `fsblkcnt_t` and `c_ulong` are u64 here but u32 on 32-bit targets: keep the conversions.
    #[allow(clippy::useless_conversion)]
    fn volume_used_percent(&self) -> Option<f64> {
        let dir = self
            .inputs
            .data_dir
            .ancestors()
            .find(|d| d.as_os_str().is_empty() || d.is_dir())?;
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let stat = nix::sys::statvfs::statvfs(dir).ok()?;
        // As `df` counts: used over what users can have (blocks reserved for root excluded).
        let unit = u64::from(stat.fragment_size());
        let used = u64::from(stat.blocks())
            .saturating_sub(u64::from(stat.blocks_free()))
            .saturating_mul(unit);
        let available = u64::from(stat.blocks_available()).saturating_mul(unit);
        let usable = used.saturating_add(available);
        if usable == 0 {
            return None;
        }
        Some(used as f64 * 100.0 / usable as f64)
    }

    /// What the relay puller last recorded, on a node with `[relay]`.
    fn relay_fact(&self) -> Option<rules::RelayFact> {
        if !self.inputs.relay {
            return None;
        }
        let (oldest, last_pull) = crate::metrics::relay_state();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let secs = |v: f64| Duration::from_secs_f64(v.clamp(0.0, 1e9));
        Some(rules::RelayFact {
            oldest_age: oldest.map(secs).unwrap_or_default(),
            since_pull: last_pull.map(|t| secs(now - t)),
        })
    }
}

/// The unresolved alerts, for the banner every console page shows.
pub async fn open_alerts(store: &dyn Storage) -> Result<Vec<Alert>, StoreError> {
    let mut all = store.alerts().list_alerts(0).await?;
    all.retain(|a| a.state != AlertState::Resolved);
    Ok(all)
}
