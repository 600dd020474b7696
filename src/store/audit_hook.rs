//! The one place where the store writes audit records.
//!
//! Every state change the store commits (accepted, duplicate, quarantined, key rotation, purge,
//! backup, decrypted read) appends the record built here inside the same transaction as the change, so
//! there is no change without its record. Store code builds an [`AuditEvent`] from plain ids
//! and counts; this module turns it into the audit module's restricted types.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::types::{PurgeReport, Requester};
use crate::audit::{
    Action, Actor, AuditRecord, CallRef, Code, DetailKey, Digest, ObjectId, Outcome,
};

/// Who caused a stored change.
#[derive(Debug, Clone)]
pub(crate) enum AuditActor {
    /// The sender of a delivery, named by its source.
    Sender(String),
    /// A person at the CLI, by OS user name.
    CliUser(String),
    /// An admin API caller, by admin token id.
    AdminToken(String),
    /// A console user signed in through OpenID Connect, by provider user name.
    Oidc(String),
}

/// What happened, in audit-module terms (the action names are the audit module's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuditAction {
    DeliveryAccepted,
    DeliveryDuplicate,
    DeliveryQuarantined,
    PayloadRead,
    KeyRotated,
    Purged,
    BackupTaken,
}

/// One audit fact set. Only identifiers, counts and blind indexes: never payload content.
#[derive(Debug, Clone)]
pub(crate) struct AuditEvent<'a> {
    pub actor: AuditActor,
    pub action: AuditAction,
    pub success: bool,
    pub delivery_id: Option<&'a str>,
    pub source: Option<&'a str>,
    pub call_ref: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub object_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub key_id: Option<i64>,
    pub count: Option<i64>,
    pub object_kind: Option<&'static str>,
    pub via: Option<&'static str>,
    pub digest: Option<&'a str>,
    pub remote_addr: Option<IpAddr>,
}

impl<'a> AuditEvent<'a> {
    pub(crate) fn new(actor: AuditActor, action: AuditAction) -> Self {
        Self {
            actor,
            action,
            success: true,
            delivery_id: None,
            source: None,
            call_ref: None,
            event_type: None,
            object_id: None,
            reason: None,
            key_id: None,
            count: None,
            object_kind: None,
            via: None,
            digest: None,
            remote_addr: None,
        }
    }
}

/// The audit record for `event` (every backend appends the same record for the same change).
pub(crate) fn to_record(event: &AuditEvent<'_>) -> AuditRecord {
    let actor = match &event.actor {
        AuditActor::Sender(source) => Actor::sender(source).unwrap_or(Actor::System),
        AuditActor::CliUser(user) => Actor::cli_user(user).unwrap_or(Actor::System),
        AuditActor::AdminToken(id) => Actor::admin_token(id).unwrap_or(Actor::System),
        AuditActor::Oidc(user) => Actor::oidc(user).unwrap_or(Actor::System),
    };
    let action = match event.action {
        AuditAction::DeliveryAccepted => Action::DeliveryAccepted,
        AuditAction::DeliveryDuplicate => Action::DeliveryDuplicate,
        AuditAction::DeliveryQuarantined => Action::DeliveryQuarantined,
        AuditAction::PayloadRead => Action::PayloadRead,
        AuditAction::KeyRotated => Action::KeyRotated,
        AuditAction::Purged => Action::Purged,
        AuditAction::BackupTaken => Action::BackupTaken,
    };
    let outcome = if event.success {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut record = AuditRecord::new(actor, action, outcome);
    record.delivery_id = event.delivery_id.and_then(|d| ObjectId::parse(d).ok());
    record.source = event.source.and_then(|s| Code::parse(s).ok());
    record.call_ref = event.call_ref.and_then(|c| CallRef::parse(c).ok());
    record.remote_addr = event.remote_addr;
    if let Some(t) = event.event_type.and_then(|t| Code::parse(t).ok()) {
        record.detail.insert(DetailKey::EventType, t);
    }
    if let Some(o) = event.object_id.and_then(|o| ObjectId::parse(o).ok()) {
        record.detail.insert(DetailKey::ObjectId, o);
    }
    if let Some(r) = event.reason.and_then(|r| Code::parse(r).ok()) {
        record.detail.insert(DetailKey::Reason, r);
    }
    if let Some(k) = event.key_id {
        record.detail.insert(DetailKey::KeyId, k);
    }
    if let Some(c) = event.count {
        record.detail.insert(DetailKey::Count, c);
    }
    if let Some(kind) = event.object_kind {
        if let Ok(kind) = Code::parse(kind) {
            record.detail.insert(DetailKey::ObjectKind, kind);
        }
    }
    if let Some(via) = event.via {
        if let Ok(via) = Code::parse(via) {
            record.detail.insert(DetailKey::Via, via);
        }
    }
    if let Some(d) = event.digest.and_then(|d| Digest::parse(d).ok()) {
        record.detail.insert(DetailKey::Sha256, d);
    }
    record
}

impl Requester {
    /// Who asked, as the audit actor: `admin_token:<id>`, `oidc:<user>` or the CLI user.
    pub(crate) fn actor(&self) -> AuditActor {
        match self.via {
            "admin_api" => AuditActor::AdminToken(self.user.clone()),
            "oidc" => AuditActor::Oidc(self.user.clone()),
            _ => AuditActor::CliUser(self.user.clone()),
        }
    }

    /// The same, as the audit record's actor (`system` if the name is not an identifier).
    pub(crate) fn audit_actor(&self) -> Actor {
        let actor = match self.via {
            "admin_api" => Actor::admin_token(&self.user),
            "oidc" => Actor::oidc(&self.user),
            _ => Actor::cli_user(&self.user),
        };
        actor.unwrap_or(Actor::System)
    }
}

impl PurgeReport {
    /// One `purged` record per kind of object, with its count, the cutoff and who asked.
    pub(crate) fn audit_records(
        &self,
        who: &Requester,
        cutoff: DateTime<Utc>,
    ) -> Vec<crate::audit::AuditRecord> {
        let mut records = self.row_records(who, cutoff);
        records.push(self.key_record(who, cutoff));
        records
    }

    /// The `purged` records of deleted rows: delivery payloads, quarantined bodies, jobs.
    pub(crate) fn row_records(
        &self,
        who: &Requester,
        cutoff: DateTime<Utc>,
    ) -> Vec<crate::audit::AuditRecord> {
        [
            ("delivery", self.deliveries),
            ("quarantine", self.quarantined),
            ("job", self.jobs),
        ]
        .into_iter()
        .map(|(kind, count)| purged_record(who, cutoff, kind, count))
        .collect()
    }

    /// The `purged` record of destroyed period keys.
    pub(crate) fn key_record(
        &self,
        who: &Requester,
        cutoff: DateTime<Utc>,
    ) -> crate::audit::AuditRecord {
        purged_record(who, cutoff, "data_key", self.keys_destroyed)
    }
}

fn purged_record(
    who: &Requester,
    cutoff: DateTime<Utc>,
    kind: &'static str,
    count: u64,
) -> crate::audit::AuditRecord {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::Purged);
    ev.object_kind = Some(kind);
    ev.count = Some(i64::try_from(count).unwrap_or(i64::MAX));
    ev.via = Some(who.via);
    let mut record = to_record(&ev);
    record
        .detail
        .insert(crate::audit::DetailKey::CutoffUnix, cutoff.timestamp());
    record
}
