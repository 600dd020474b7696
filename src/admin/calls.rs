//! "Find a call" and the call timeline, for the API and the dashboard alike.
//!
//! An operator asks "what happened to this call?": the search finds deliveries by call id or
//! caller phone (the store compares only their blind indexes), source, event type, status,
//! handler and time, a page at a time; the timeline puts one call's events, job attempts and
//! audit records in time order — or, for a phone number, those of every delivery whose event
//! named that caller. Nothing is decrypted, so every role sees the same metadata it sees
//! elsewhere; audit records appear only for roles that may read the audit log. Each search and
//! each timeline is one `calls_searched` audit record carrying the call's blind index, never
//! the id; a search by phone is recorded as such (`object_kind` `search_by_phone` or
//! `timeline_by_phone`) with neither the number nor its index.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::{self, AuditQuery};
use super::auth::{Permission, Principal};
use super::{ApiError, Console};
use crate::audit::commands::parse_time;
use crate::audit::{Action, AuditRecord, CallRef, Code, DetailKey, Outcome};
use crate::store::console_calls::{CallQuery, CallSearch, FoundDelivery, MAX_CALL_PAGE};

/// Results per page when the caller does not say.
const DEFAULT_PER_PAGE: usize = 50;
/// The most audit records a timeline shows.
const TIMELINE_AUDIT_RECORDS: usize = 1000;
/// The longest call id accepted (sender ids are far shorter).
const MAX_CALL_ID: usize = 256;
/// The longest caller phone accepted (the normalizer refuses longer spellings anyway).
const MAX_CALLER_PHONE: usize = 64;

/// A search as the API and the dashboard form send it. Empty strings mean "any".
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(super) struct CallSearchForm {
    pub call_id: Option<String>,
    /// The caller's phone number, spelled any way the operator has it.
    #[serde(default)]
    pub caller_phone: Option<String>,
    pub source: Option<String>,
    pub event_type: Option<String>,
    pub status: Option<String>,
    pub handler: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// 1-based.
    pub page: Option<usize>,
    pub per_page: Option<usize>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl CallSearchForm {
    /// The store query: times parsed, page size and depth clamped.
    pub(super) fn query(&self) -> Result<CallQuery, ApiError> {
        let time = |t: &Option<String>| {
            given(t)
                .map(|t| parse_time(&t))
                .transpose()
                .map_err(|_| ApiError::BadRequest("since/until: RFC 3339 or YYYY-MM-DD"))
        };
        let call_id = given(&self.call_id);
        if call_id.as_ref().is_some_and(|c| c.len() > MAX_CALL_ID) {
            return Err(ApiError::BadRequest("call_id is too long"));
        }
        let caller_phone = given(&self.caller_phone);
        if caller_phone
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CALLER_PHONE)
        {
            return Err(ApiError::BadRequest("caller_phone is too long"));
        }
        let per_page = self
            .per_page
            .unwrap_or(DEFAULT_PER_PAGE)
            .clamp(1, MAX_CALL_PAGE);
        let page = self.page.unwrap_or(1).clamp(1, 10_000);
        Ok(CallQuery {
            call_id,
            caller_phone,
            source: given(&self.source),
            event_type: given(&self.event_type),
            status: given(&self.status),
            handler: given(&self.handler),
            since: time(&self.since)?,
            until: time(&self.until)?,
            limit: per_page,
            offset: (page - 1).saturating_mul(per_page),
        })
    }

    pub(super) fn page(&self) -> usize {
        self.page.unwrap_or(1).clamp(1, 10_000)
    }
}

/// Record a search or a timeline: who, which call (blind index), which filters, how many.
async fn record_search(
    console: &Console,
    p: &Principal,
    query: &CallQuery,
    call_ref: Option<&str>,
    kind: &str,
    count: usize,
) -> Result<(), ApiError> {
    let actor = p.actor();
    let mut r = AuditRecord::new(actor, Action::CallsSearched, Outcome::Success);
    r.call_ref = call_ref.and_then(|c| CallRef::parse(c).ok());
    // Filters are names from config or fixed words; anything else is left out, not recorded.
    r.source = query.source.as_deref().and_then(|s| Code::parse(s).ok());
    for (key, value) in [
        (DetailKey::Handler, &query.handler),
        (DetailKey::EventType, &query.event_type),
        (DetailKey::Status, &query.status),
    ] {
        if let Some(c) = value.as_deref().and_then(|v| Code::parse(v).ok()) {
            r.detail.insert(key, c);
        }
    }
    r.detail
        .insert(DetailKey::Count, i64::try_from(count).unwrap_or(i64::MAX));
    if let Ok(k) = Code::parse(kind) {
        r.detail.insert(DetailKey::ObjectKind, k);
    }
    if let Ok(v) = Code::parse("admin_api") {
        r.detail.insert(DetailKey::Via, v);
    }
    console.append_audit(r).await
}

/// One page of deliveries matching `form`, audited.
pub(super) async fn search_for(
    console: &Console,
    p: &Principal,
    form: &CallSearchForm,
) -> Result<Vec<FoundDelivery>, ApiError> {
    let query = form.query()?;
    let CallSearch {
        call_ref,
        deliveries,
    } = console.store.console().find_calls(query.clone()).await?;
    let kind = if query.caller_phone.is_some() {
        "search_by_phone"
    } else {
        "search"
    };
    record_search(
        console,
        p,
        &query,
        call_ref.as_deref(),
        kind,
        deliveries.len(),
    )
    .await?;
    Ok(deliveries)
}

/// One line of a call's timeline.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TimelineEntry {
    /// When (RFC 3339 UTC).
    pub at: String,
    /// `event`, `attempt` or `audit`.
    pub kind: &'static str,
    /// The delivery it belongs to, if any.
    pub delivery_id: Option<String>,
    /// What happened: the event type, the handler, or the audit action.
    pub what: String,
    /// Its status or result word.
    pub status: String,
    /// Further facts (HTTP status, latency, error class, actor), no payload.
    pub note: String,
}

/// Whose timeline: one call, by the sender's call id, or every call whose events named one
/// caller phone number.
#[derive(Debug, Clone, Copy)]
pub(super) enum CallKey<'a> {
    /// The sender's call id.
    Id(&'a str),
    /// The caller's phone number, spelled any way.
    Phone(&'a str),
}

impl CallKey<'_> {
    /// The store query of every delivery of the call(s).
    fn query(self) -> Result<CallQuery, ApiError> {
        let (value, max, missing) = match self {
            Self::Id(v) => (v.trim(), MAX_CALL_ID, "call_id is required"),
            Self::Phone(v) => (v.trim(), MAX_CALLER_PHONE, "caller_phone is required"),
        };
        if value.is_empty() || value.len() > max {
            return Err(ApiError::BadRequest(missing));
        }
        let mut query = CallQuery {
            limit: MAX_CALL_PAGE,
            ..CallQuery::default()
        };
        match self {
            Self::Id(_) => query.call_id = Some(value.to_owned()),
            Self::Phone(_) => query.caller_phone = Some(value.to_owned()),
        }
        Ok(query)
    }
}

/// Every event of the call `key` names, its jobs' attempts and (for roles that read the audit
/// log) its audit records, oldest first. Audited. A call id finds the audit records through
/// its blind index; a phone number through the deliveries it found.
pub(super) async fn timeline_for(
    console: &Console,
    p: &Principal,
    key: CallKey<'_>,
) -> Result<Vec<TimelineEntry>, ApiError> {
    let query = key.query()?;
    let found = console.store.console().find_calls(query.clone()).await?;
    let mut entries = Vec::new();
    for d in &found.deliveries {
        entries.push(TimelineEntry {
            at: d.meta.received_at.clone(),
            kind: "event",
            delivery_id: Some(d.meta.id.clone()),
            what: d.meta.event_type.clone(),
            status: d.meta.status.clone(),
            note: format!("from {}", d.meta.source),
        });
        for job in console
            .store
            .console()
            .delivery_jobs(d.meta.id.clone())
            .await?
        {
            for a in console.store.job_attempts(job.job_id).await? {
                let mut note = format!("attempt {} · {} ms", a.attempt, a.latency_ms);
                if let Some(s) = a.http_status {
                    note.push_str(&format!(" · HTTP {s}"));
                }
                if let Some(e) = &a.error {
                    note.push_str(&format!(" · {e}"));
                }
                entries.push(TimelineEntry {
                    at: a.started_at.clone(),
                    kind: "attempt",
                    delivery_id: Some(d.meta.id.clone()),
                    what: job.handler.clone(),
                    status: a.result.clone(),
                    note,
                });
            }
        }
    }
    if p.role.allows(Permission::ReadAudit) {
        let audit_queries: Vec<AuditQuery> = match key {
            CallKey::Id(_) => vec![AuditQuery {
                call_id: query.call_id.clone(),
                ..AuditQuery::default()
            }],
            CallKey::Phone(_) => found
                .deliveries
                .iter()
                .map(|d| AuditQuery {
                    delivery_id: Some(d.meta.id.clone()),
                    ..AuditQuery::default()
                })
                .collect(),
        };
        for mut q in audit_queries {
            q.limit = Some(TIMELINE_AUDIT_RECORDS);
            for r in api::search_records(console, &q).await? {
                entries.push(TimelineEntry {
                    at: r.ts.clone(),
                    kind: "audit",
                    delivery_id: r.delivery_id.clone(),
                    what: r.action.clone(),
                    status: r.outcome.clone(),
                    note: r.actor.clone(),
                });
            }
        }
    }
    entries.sort_by(|a, b| a.at.cmp(&b.at));
    let kind = match key {
        CallKey::Id(_) => "timeline",
        CallKey::Phone(_) => "timeline_by_phone",
    };
    record_search(
        console,
        p,
        &query,
        found.call_ref.as_deref(),
        kind,
        entries.len(),
    )
    .await?;
    Ok(entries)
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/calls/search", web::post().to(search))
        .route("/api/calls/timeline", web::post().to(timeline));
}

/// `POST /api/calls/search` (JSON body: the call id stays out of URLs and access logs).
async fn search(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Json<CallSearchForm>,
) -> Result<HttpResponse, ApiError> {
    let p = api::guard(&console, &req, Permission::ReadMetadata, ("delivery", None)).await?;
    let deliveries = search_for(&console, &p, &form).await?;
    Ok(HttpResponse::Ok().json(json!({
        "page": form.page(),
        "per_page": form.query()?.limit,
        "deliveries": deliveries,
    })))
}

#[derive(Debug, Deserialize)]
struct TimelineBody {
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    caller_phone: Option<String>,
}

/// `POST /api/calls/timeline` with `{"call_id": "…"}` or `{"caller_phone": "…"}`.
async fn timeline(
    console: web::Data<Console>,
    req: HttpRequest,
    body: web::Json<TimelineBody>,
) -> Result<HttpResponse, ApiError> {
    let p = api::guard(&console, &req, Permission::ReadMetadata, ("delivery", None)).await?;
    let key = match (given(&body.call_id), given(&body.caller_phone)) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give call_id or caller_phone, not both",
            ))
        }
        (Some(_), None) => CallKey::Id(body.call_id.as_deref().unwrap_or_default()),
        (None, Some(_)) => CallKey::Phone(body.caller_phone.as_deref().unwrap_or_default()),
        (None, None) => return Err(ApiError::BadRequest("call_id is required")),
    };
    let entries = timeline_for(&console, &p, key).await?;
    Ok(HttpResponse::Ok().json(json!({ "entries": entries })))
}
