//! What the console's alerts need from the database, whichever database that is: the alert
//! rows (open, acknowledged, resolved), the facts the built-in rules look at, and — on several
//! PostgreSQL nodes — which node evaluates the cluster-wide rules.
//!
//! One alert is one row. Its `key` (`rule:subject`, e.g. `handler_failing:crm`) is unique
//! among the rows not yet resolved, so opening is an insert that does nothing when the alert is
//! already open: whichever node inserts first opens it and is the one that notifies; another
//! node racing on the same condition gets "already open" back and sends nothing. Acknowledging
//! and resolving are conditional updates with the same property. Every transition writes its
//! audit record (`alert_opened`, `alert_acknowledged`, `alert_resolved`) in the same
//! transaction.
//!
//! Alert text is built by the rules from configured names and numbers only (see
//! [`crate::alerts`]), never from delivery content, so it is stored in plain text.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::types::Requester;
use super::StoreFuture;
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, ObjectId, Outcome};

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds and nobody has acknowledged it yet.
    Open,
    /// Someone is on it; it still resolves itself when the condition clears.
    Acknowledged,
    /// The condition cleared.
    Resolved,
}

impl AlertState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    /// The stored word back; anything unknown reads as open (shown, never hidden).
    pub fn parse(s: &str) -> Self {
        match s {
            "acknowledged" => Self::Acknowledged,
            "resolved" => Self::Resolved,
            _ => Self::Open,
        }
    }
}

/// An alert to open: what a rule found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// The rule's name (`handler_failing`, `dead_letters`, …).
    pub rule: String,
    /// What it is about: a handler or source name, a node, `audit`.
    pub subject: String,
    /// One line for people, from configured names and numbers only.
    pub summary: String,
}

impl NewAlert {
    /// `rule:subject`, unique among unresolved alerts.
    pub fn key(&self) -> String {
        alert_key(&self.rule, &self.subject)
    }
}

/// `rule:subject`.
pub fn alert_key(rule: &str, subject: &str) -> String {
    format!("{rule}:{subject}")
}

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `alr_…`
    pub id: String,
    /// The rule's name.
    pub rule: String,
    /// What it is about.
    pub subject: String,
    /// The line shown and sent (the summary when it opened).
    pub summary: String,
    /// Open, acknowledged or resolved.
    pub state: AlertState,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When it was acknowledged, if it was.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// The admin token id (or CLI user) that acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When it resolved, if it did.
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// `rule:subject`.
    pub fn key(&self) -> String {
        alert_key(&self.rule, &self.subject)
    }
}

/// One handler attempt, for the failing-handler rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFact {
    /// The handler.
    pub handler: String,
    /// `result = 'ok'`.
    pub ok: bool,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A source's recent traffic, for the silent-source rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFact {
    /// The source.
    pub source: String,
    /// Deliveries received since the window start.
    pub received: u64,
    /// The newest delivery's time.
    pub last_received: Option<DateTime<Utc>>,
}

/// The stored facts the rules look at (cluster-wide on PostgreSQL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFacts {
    /// The newest attempts (at most the number asked for), oldest first.
    pub attempts: Vec<AttemptFact>,
    /// Dead letters waiting, per handler (handlers with none are absent).
    pub dead_letters: Vec<(String, u64)>,
    /// Per source that received anything since the window start.
    pub sources: Vec<SourceFact>,
}

/// The alert table, on either backend. Boxed futures keep the trait object-safe.
pub trait AlertStore: Send + Sync {
    /// Open `alert` unless an unresolved alert with its key exists, with its `alert_opened`
    /// record, in one transaction. `Some` only for the caller that opened it.
    fn open_alert(&self, alert: NewAlert) -> StoreFuture<'_, Option<Alert>>;

    /// Resolve the unresolved alert with `key`, with its `alert_resolved` record. `Some` only
    /// for the caller that resolved it.
    fn resolve_alert(&self, key: String) -> StoreFuture<'_, Option<Alert>>;

    /// Acknowledge open alert `id` for `who`, with its `alert_acknowledged` record. `Some` only
    /// when it was open (not yet acknowledged, not resolved); `NotFound` for an unknown id.
    fn acknowledge_alert(&self, id: String, who: Requester) -> StoreFuture<'_, Option<Alert>>;

    /// Every unresolved alert and the newest `resolved` resolved ones, newest first.
    fn list_alerts(&self, resolved: usize) -> StoreFuture<'_, Vec<Alert>>;

    /// The facts for the rules: the newest `attempts` attempts, dead letters per handler, and
    /// per-source traffic since `since`.
    fn alert_facts(&self, attempts: u32, since: DateTime<Utc>) -> StoreFuture<'_, AlertFacts>;

    /// Whether this node evaluates the cluster-wide rules for the next `ttl`: true on SQLite
    /// (one server); on PostgreSQL a lease held by one node at a time, renewed by its holder,
    /// taken over by another node once it lapses.
    fn lead_alerts(&self, ttl: std::time::Duration) -> StoreFuture<'_, bool>;

    /// This node's name for node-local alerts (disk, certificate): the PostgreSQL node id, or
    /// `local` on SQLite.
    fn alert_node(&self) -> String;
}

/// A fresh alert id.
pub(crate) fn new_id() -> String {
    format!("alr_{}", uuid::Uuid::now_v7().simple())
}

/// The audit record of a transition of `alert`.
pub(crate) fn transition_record(
    action: Action,
    alert: &Alert,
    who: Option<&Requester>,
) -> AuditRecord {
    let actor = match who {
        Some(w) => w.audit_actor(),
        None => Actor::System,
    };
    let mut record = AuditRecord::new(actor, action, Outcome::Success);
    if let Ok(kind) = Code::parse("alert") {
        record.detail.insert(DetailKey::ObjectKind, kind);
    }
    if let Ok(id) = ObjectId::parse(&alert.id) {
        record.detail.insert(DetailKey::ObjectId, id);
    }
    if let Ok(rule) = Code::parse(&alert.rule) {
        record.detail.insert(DetailKey::Reason, rule);
    }
    match alert.rule.as_str() {
        "handler_failing" | "dead_letters" => {
            if let Ok(h) = Code::parse(&alert.subject) {
                record.detail.insert(DetailKey::Handler, h);
            }
        }
        "source_silent" => record.source = Code::parse(&alert.subject).ok(),
        _ => {}
    }
    if let Some(w) = who {
        if let Ok(via) = Code::parse(w.via) {
            record.detail.insert(DetailKey::Via, via);
        }
    }
    record
}
