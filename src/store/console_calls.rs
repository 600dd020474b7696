//! "Find a call": the console's search over deliveries by call id, caller phone, source, event
//! type, status, handler and time, in one backend-neutral query both backends run.
//!
//! The call id is never stored: the search compares its blind index (the keyring's HMAC of the
//! id, [`crate::crypto::Keyring::call_ref`]) with the one the audit log keeps on each
//! `delivery_accepted` record, whose `call_ref` index serves the lookup. The caller's phone
//! number is never stored either: intake keeps the blind index of its one spelling
//! ([`crate::crypto::Keyring::caller_ref`]) on the delivery, and the search compares the typed
//! number's. Every value reaches the database as a parameter; page size and depth are clamped
//! here, whatever the caller asks.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::console::DeliveryMeta;

/// The most results one page returns.
pub const MAX_CALL_PAGE: usize = 200;
/// The deepest offset a search may page to.
pub const MAX_CALL_OFFSET: usize = 100_000;

/// What to look for; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct CallQuery {
    /// The sender's call id, as the operator typed it (compared only through its blind index).
    pub call_id: Option<String>,
    /// The caller's phone number, spelled any way (compared only through its blind index; a
    /// value that is no phone number matches nothing).
    pub caller_phone: Option<String>,
    /// The source.
    pub source: Option<String>,
    /// The event type.
    pub event_type: Option<String>,
    /// A delivery status (`accepted`, `purged`) or a job status (`pending`, `done`, `dead`, …):
    /// with `handler`, that handler's job must have it.
    pub status: Option<String>,
    /// Deliveries with a job for this handler.
    pub handler: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Results per page (clamped to 1..=[`MAX_CALL_PAGE`]).
    pub limit: usize,
    /// Results to skip (clamped to [`MAX_CALL_OFFSET`]).
    pub offset: usize,
}

/// One delivery found, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundDelivery {
    /// Its metadata (nothing decrypted).
    #[serde(flatten)]
    pub meta: DeliveryMeta,
    /// Its jobs.
    pub jobs: u64,
    /// Of which dead letters.
    pub dead: u64,
}

/// A search's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSearch {
    /// The blind index the call id was compared through (for the search's audit record).
    pub call_ref: Option<String>,
    /// The page of results.
    pub deliveries: Vec<FoundDelivery>,
}

/// What a caller-phone filter compares with when the typed value is no phone number: no blind
/// index (64 hex digits) equals it, so the search finds nothing rather than ignoring the filter.
pub(crate) const NO_CALLER: &str = "not a phone number";

/// A search as SQL: the statement and its text parameters, in order.
pub(crate) struct CallSql {
    pub sql: String,
    pub params: Vec<String>,
}

impl CallQuery {
    /// The blind indexes the search compares: the call id's and the caller phone's (see
    /// [`NO_CALLER`]).
    pub(crate) fn blind_refs(
        &self,
        keyring: &crate::crypto::Keyring,
    ) -> (Option<String>, Option<String>) {
        let call_ref = self.call_id.as_deref().map(|c| keyring.call_ref(c));
        let caller_ref = self.caller_phone.as_deref().map(|p| {
            keyring
                .caller_ref(p)
                .unwrap_or_else(|| NO_CALLER.to_owned())
        });
        (call_ref, caller_ref)
    }

    /// The statement selecting `id, source, event_type, received_at, status, jobs, dead`.
    /// `placeholder(n)` writes the n-th parameter (`?n` or `$n`); `time(p)` compares a
    /// parameter with a stored time (PostgreSQL casts it); `call_ref_rows(p)` selects the audit
    /// records whose call ref is parameter `p` (SQLite goes through its index levels).
    pub(crate) fn to_sql(
        &self,
        call_ref: Option<&str>,
        caller_ref: Option<&str>,
        placeholder: &dyn Fn(usize) -> String,
        time: &dyn Fn(String) -> String,
        call_ref_rows: &dyn Fn(String) -> String,
    ) -> CallSql {
        let mut conds: Vec<String> = Vec::new();
        let mut params: Vec<String> = Vec::new();
        let mut param = |v: String| {
            params.push(v);
            placeholder(params.len())
        };
        if let Some(r) = call_ref {
            let rows = call_ref_rows(param(r.to_owned()));
            conds.push(format!(
                "d.id IN (SELECT delivery_id FROM audit_log WHERE {rows} \
                 AND delivery_id IS NOT NULL)"
            ));
        }
        if let Some(r) = caller_ref {
            conds.push(format!("d.caller_ref = {}", param(r.to_owned())));
        }
        if let Some(s) = &self.source {
            conds.push(format!("d.source = {}", param(s.clone())));
        }
        if let Some(e) = &self.event_type {
            conds.push(format!("d.event_type = {}", param(e.clone())));
        }
        if let Some(t) = self.since {
            conds.push(format!(
                "d.received_at >= {}",
                time(param(super::payload::db_time(t)))
            ));
        }
        if let Some(t) = self.until {
            conds.push(format!(
                "d.received_at < {}",
                time(param(super::payload::db_time(t)))
            ));
        }
        match (&self.handler, &self.status) {
            (Some(h), Some(s)) => {
                let (h, s) = (param(h.clone()), param(s.clone()));
                conds.push(format!(
                    "EXISTS (SELECT 1 FROM jobs j WHERE j.delivery_id = d.id \
                     AND j.handler = {h} AND j.status = {s})"
                ));
            }
            (Some(h), None) => {
                let h = param(h.clone());
                conds.push(format!(
                    "EXISTS (SELECT 1 FROM jobs j WHERE j.delivery_id = d.id AND j.handler = {h})"
                ));
            }
            (None, Some(s)) => {
                let (a, b) = (param(s.clone()), param(s.clone()));
                conds.push(format!(
                    "(d.status = {a} OR EXISTS (SELECT 1 FROM jobs j \
                     WHERE j.delivery_id = d.id AND j.status = {b}))"
                ));
            }
            (None, None) => {}
        }
        let clause = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let limit = self.limit.clamp(1, MAX_CALL_PAGE);
        let offset = self.offset.min(MAX_CALL_OFFSET);
        CallSql {
            sql: format!(
                "SELECT d.id, d.source, d.event_type, d.received_at, d.status,
                        (SELECT count(*) FROM jobs j WHERE j.delivery_id = d.id),
                        (SELECT count(*) FROM jobs j WHERE j.delivery_id = d.id
                           AND j.status = 'dead')
                 FROM deliveries d{clause}
                 ORDER BY d.received_at DESC, d.id DESC LIMIT {limit} OFFSET {offset}"
            ),
            params,
        }
    }
}
