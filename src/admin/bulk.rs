//! Bulk actions by filter, for the API and the dashboard alike: retry the dead letters, or
//! replay the finished jobs, of a handler, source, error class and time window.
//!
//! An operator first sees how many jobs match and a sample; on confirming, the match is taken
//! again, written as ONE `bulk_requeued` audit record naming the filter and the count, and the
//! jobs are re-queued in bounded batches by a background task (each batch one transaction, the
//! dispatcher woken after each) whose progress the caller can follow. The run stops at the last
//! job counted, so jobs that fail meanwhile are left for the operator to see. Progress lives in
//! memory only: after a restart the audit record and the jobs' states tell what happened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api;
use super::auth::{Permission, Principal};
use super::{ApiError, Console};
use crate::audit::commands::parse_time;
use crate::audit::{Action, AuditRecord, Code, DetailKey, Outcome};
use crate::store::console_bulk::{BulkFilter, BulkKind, BulkMatch, ERROR_CLASSES};

/// Jobs re-queued per batch (one transaction each).
const BATCH: usize = 100;
/// Runs whose progress is kept (the oldest are forgotten first).
const KEPT_RUNS: usize = 64;
/// The longest handler or source name accepted in a filter.
const MAX_NAME: usize = 128;

/// A filter as the API and the dashboard form send it. Empty strings mean "any".
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(super) struct BulkForm {
    /// `retry` (dead letters, the default) or `replay` (finished jobs).
    pub kind: Option<String>,
    pub handler: Option<String>,
    pub source: Option<String>,
    pub error_class: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl BulkForm {
    /// The store filter: kind and class checked against their fixed words, names bounded,
    /// times parsed.
    pub(super) fn filter(&self) -> Result<BulkFilter, ApiError> {
        let kind = match given(&self.kind) {
            None => BulkKind::Retry,
            Some(k) => BulkKind::parse(&k).ok_or(ApiError::BadRequest("kind: retry or replay"))?,
        };
        let error_class = given(&self.error_class);
        if let Some(c) = &error_class {
            if !ERROR_CLASSES.contains(&c.as_str()) {
                return Err(ApiError::BadRequest("error_class: not a known class"));
            }
        }
        let name = |v: &Option<String>| match given(v) {
            Some(n) if n.len() > MAX_NAME => Err(ApiError::BadRequest("name is too long")),
            other => Ok(other),
        };
        let time = |t: &Option<String>| {
            given(t)
                .map(|t| parse_time(&t))
                .transpose()
                .map_err(|_| ApiError::BadRequest("since/until: RFC 3339 or YYYY-MM-DD"))
        };
        Ok(BulkFilter {
            kind,
            handler: name(&self.handler)?,
            source: name(&self.source)?,
            error_class,
            since: time(&self.since)?,
            until: time(&self.until)?,
        })
    }
}

/// A run's progress, updated by its task.
#[derive(Debug)]
pub(super) struct Progress {
    pub id: String,
    pub kind: BulkKind,
    /// Jobs matched when the run started.
    pub count: u64,
    pub requeued: AtomicU64,
    pub batches: AtomicU64,
    pub finished: AtomicBool,
    pub failed: AtomicBool,
}

impl Progress {
    pub(super) fn json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "count": self.count,
            "requeued": self.requeued.load(Ordering::Relaxed),
            "batches": self.batches.load(Ordering::Relaxed),
            "finished": self.finished.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
        })
    }
}

fn runs() -> &'static Mutex<VecDeque<Arc<Progress>>> {
    static RUNS: OnceLock<Mutex<VecDeque<Arc<Progress>>>> = OnceLock::new();
    RUNS.get_or_init(|| Mutex::new(VecDeque::new()))
}

/// The progress of run `id`, if it is still remembered.
pub(super) fn progress(id: &str) -> Option<Arc<Progress>> {
    runs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|r| r.id == id)
        .cloned()
}

/// What `form` matches now (no change, not audited: it is metadata the role may read).
pub(super) async fn preview(console: &Console, form: &BulkForm) -> Result<BulkMatch, ApiError> {
    let filter = form.filter()?;
    Ok(console.store.console().bulk_match(filter).await?)
}

/// The one audit record of a bulk action: who, which filter, how many.
fn bulk_record(p: &Principal, filter: &BulkFilter, count: u64, via: &str) -> AuditRecord {
    let actor = p.actor();
    let mut r = AuditRecord::new(actor, Action::BulkRequeued, Outcome::Success);
    r.source = filter.source.as_deref().and_then(|s| Code::parse(s).ok());
    if let Some(h) = filter.handler.as_deref().and_then(|h| Code::parse(h).ok()) {
        r.detail.insert(DetailKey::Handler, h);
    }
    if let Some(c) = filter
        .error_class
        .as_deref()
        .and_then(|c| Code::parse(c).ok())
    {
        r.detail.insert(DetailKey::Reason, c);
    }
    if let Some(t) = filter.since {
        r.detail.insert(DetailKey::SinceUnix, t.timestamp());
    }
    if let Some(t) = filter.until {
        r.detail.insert(DetailKey::CutoffUnix, t.timestamp());
    }
    if let Ok(k) = Code::parse(filter.kind.as_str()) {
        r.detail.insert(DetailKey::ObjectKind, k);
    }
    r.detail
        .insert(DetailKey::Count, i64::try_from(count).unwrap_or(i64::MAX));
    if let Ok(v) = Code::parse(via) {
        r.detail.insert(DetailKey::Via, v);
    }
    r
}

/// Count what `form` matches, record the action once, and start re-queueing in batches.
pub(super) async fn start(
    console: &Console,
    p: &Principal,
    form: &BulkForm,
    via: &str,
) -> Result<Arc<Progress>, ApiError> {
    let filter = form.filter()?;
    let matched = console.store.console().bulk_match(filter.clone()).await?;
    console
        .append_audit(bulk_record(p, &filter, matched.count, via))
        .await?;
    let run = Arc::new(Progress {
        id: uuid::Uuid::new_v4().simple().to_string(),
        kind: filter.kind,
        count: matched.count,
        requeued: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        finished: AtomicBool::new(matched.through_job.is_none()),
        failed: AtomicBool::new(false),
    });
    {
        let mut kept = runs().lock().unwrap_or_else(|pm| pm.into_inner());
        if kept.len() >= KEPT_RUNS {
            kept.pop_front();
        }
        kept.push_back(run.clone());
    }
    if let Some(through) = matched.through_job {
        let (store, dispatcher, task) = (
            console.store.clone(),
            console.dispatcher.clone(),
            run.clone(),
        );
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                match store
                    .console()
                    .bulk_requeue(filter.clone(), after, through, BATCH)
                    .await
                {
                    Ok(step) => {
                        task.requeued.fetch_add(step.requeued, Ordering::Relaxed);
                        task.batches.fetch_add(1, Ordering::Relaxed);
                        dispatcher.waker().notify_waiters();
                        match step.next_after {
                            Some(next) => after = next,
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "bulk action stopped: storage error");
                        task.failed.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            task.finished.store(true, Ordering::Relaxed);
        });
    }
    Ok(run)
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/bulk/preview", web::post().to(preview_api))
        .route("/api/bulk/run", web::post().to(run_api))
        .route("/api/bulk/runs/{id}", web::get().to(progress_api));
}

/// `POST /api/bulk/preview`: the count, a sample and the last job id, changing nothing.
async fn preview_api(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Json<BulkForm>,
) -> Result<HttpResponse, ApiError> {
    api::guard(&console, &req, Permission::Requeue, ("job", None)).await?;
    let m = preview(&console, &form).await?;
    Ok(HttpResponse::Ok().json(m))
}

/// `POST /api/bulk/run`: recorded once, then run in batches; `202` with the run to follow.
async fn run_api(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Json<BulkForm>,
) -> Result<HttpResponse, ApiError> {
    let p = api::guard(&console, &req, Permission::Requeue, ("job", None)).await?;
    let run = start(&console, &p, &form, "admin_api").await?;
    Ok(HttpResponse::Accepted().json(run.json()))
}

/// `GET /api/bulk/runs/{id}`: how far a run got.
async fn progress_api(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    api::guard(&console, &req, Permission::Requeue, ("job", None)).await?;
    let run = progress(&path).ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(run.json()))
}
