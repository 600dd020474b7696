//! The admin JSON API (`/api/...`) and `/metrics`, both behind `Authorization: Bearer`.
//!
//! Every handler first authenticates and checks the role ([`guard`]); a refusal is a 401 or 403
//! with a fixed body and an `access_denied` audit record, and nothing is read before the check
//! passes, so a refused call cannot leak data through its body or its timing of a decryption.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Permission, Principal};
use super::{health, tokens, ApiError, Console, Denial};
use crate::audit::commands::{parse_time, SearchArgs};
use crate::store::console::{AuditCheck, BAD_AUDIT_FILTER};
use crate::store::types::DeadFilter;
use crate::store::types::ListFilter;
use crate::store::StoreError;

/// The OpenAPI 3 description of this API, hand-written and embedded.
const OPENAPI: &str = include_str!("openapi.json");

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/api/openapi.json", web::get().to(openapi))
        .route("/api/whoami", web::get().to(whoami))
        .route("/api/deliveries", web::get().to(list_deliveries))
        .route("/api/deliveries/{id}", web::get().to(show_delivery))
        .route("/api/deliveries/{id}/reveal", web::post().to(reveal))
        .route("/api/deliveries/{id}/replay", web::post().to(replay))
        .route("/api/dead-letters", web::get().to(list_dead))
        .route("/api/dead-letters/retry", web::post().to(retry_matching))
        .route("/api/dead-letters/{job}/retry", web::post().to(retry_one))
        .route("/api/quarantine", web::get().to(list_quarantine))
        .route("/api/audit", web::get().to(audit_search))
        .route("/api/audit/verify", web::get().to(audit_verify))
        .route("/api/audit/export", web::get().to(audit_export))
        .route("/api/health", web::get().to(health))
        .route("/api/config", web::get().to(config));
}

pub(super) fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// Check a presented token (bearer or sign-in form). Failures are counted per client address,
/// refused for a while past the limit, and audited.
pub(super) async fn authenticate_token(
    console: &web::Data<Console>,
    token: String,
    remote: Option<IpAddr>,
    via: &'static str,
) -> Result<Principal, ApiError> {
    if let Some(secs) = remote.and_then(|ip| console.limiter.blocked(ip)) {
        return Err(ApiError::RateLimited(secs));
    }
    let id = tokens::id_of(&token).map(str::to_owned);
    let result = tokens::authenticate(console.store.console(), &token).await?;
    match result {
        Ok(info) => {
            if let Some(ip) = remote {
                console.limiter.succeed(ip);
            }
            Ok(Principal {
                identity: crate::admin::auth::Identity::Token(info.id),
                name: info.name,
                role: info.role,
            })
        }
        Err(refusal) => {
            crate::metrics::admin_login_failure();
            if let Some(ip) = remote {
                console.limiter.fail(ip);
            }
            // Name the token only when it is real (revoked or expired): an unknown id is
            // whatever the caller typed.
            let actor = match refusal {
                tokens::Refusal::BadToken => None,
                _ => id.and_then(|i| crate::audit::Actor::admin_token(&i).ok()),
            };
            let denial = Denial {
                actor,
                remote,
                reason: refusal.code(),
                status: 401,
                object_kind: None,
                delivery_id: None,
                via,
            };
            console.record_denial(&denial).await;
            Err(ApiError::Unauthorized)
        }
    }
}

/// Refuse (403, audited) unless `p` has `perm`.
pub(super) async fn authorize(
    console: &web::Data<Console>,
    p: &Principal,
    perm: Permission,
    remote: Option<IpAddr>,
    object: (&'static str, Option<String>),
    via: &'static str,
) -> Result<(), ApiError> {
    if p.role.allows(perm) {
        return Ok(());
    }
    let denial = Denial {
        actor: Some(p.actor()),
        remote,
        reason: "insufficient_role",
        status: 403,
        object_kind: Some(object.0),
        delivery_id: object.1,
        via,
    };
    console.record_denial(&denial).await;
    Err(ApiError::Forbidden)
}

/// Authenticate the bearer token and check `perm`.
pub(super) async fn guard(
    console: &web::Data<Console>,
    req: &HttpRequest,
    perm: Permission,
    object: (&'static str, Option<String>),
) -> Result<Principal, ApiError> {
    let remote = client_ip(req);
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let Some(token) = token else {
        if let Some(secs) = remote.and_then(|ip| console.limiter.blocked(ip)) {
            return Err(ApiError::RateLimited(secs));
        }
        return Err(ApiError::Unauthorized);
    };
    let p = authenticate_token(console, token, remote, "admin_api").await?;
    authorize(console, &p, perm, remote, object, "admin_api").await?;
    Ok(p)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn whoami(console: web::Data<Console>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = guard(&console, &req, Permission::ReadMetadata, ("session", None)).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "token_id": p.token_id(), "name": p.name, "role": p.role.as_str() })))
}

/// Query of the list endpoints.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    pub source: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub handler: Option<String>,
    pub limit: Option<usize>,
}

impl ListQuery {
    pub(super) fn filter(&self) -> Result<ListFilter, ApiError> {
        let time = |t: &Option<String>| {
            t.as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()
                .map_err(|_| ApiError::BadRequest("since/until: RFC 3339 or YYYY-MM-DD"))
        };
        Ok(ListFilter {
            source: self.source.clone().filter(|s| !s.is_empty()),
            status: self.status.clone().filter(|s| !s.is_empty()),
            since: time(&self.since)?,
            until: time(&self.until)?,
            limit: self.limit.unwrap_or(100).min(1000),
        })
    }

    pub(super) fn dead_filter(&self) -> DeadFilter {
        DeadFilter {
            handler: self.handler.clone().filter(|s| !s.is_empty()),
            source: self.source.clone().filter(|s| !s.is_empty()),
            job_id: None,
            limit: self.limit.unwrap_or(100).min(1000),
        }
    }
}

async fn list_deliveries(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadMetadata, ("delivery", None)).await?;
    let filter = q.filter()?;
    let rows = console.store.list_deliveries(filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "deliveries": rows })))
}

/// A delivery's metadata, its jobs and each job's attempts: nothing decrypted.
pub(super) async fn delivery_detail(
    console: &Console,
    id: &str,
) -> Result<serde_json::Value, ApiError> {
    let store = console.store.console();
    let meta = store
        .delivery_meta(id.to_owned())
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut jobs = Vec::new();
    for job in store.delivery_jobs(id.to_owned()).await? {
        let timeline = console.store.job_attempts(job.job_id).await?;
        jobs.push(json!({
            "job_id": job.job_id,
            "handler": job.handler,
            "status": job.status,
            "attempts": job.attempts,
            "timeline": timeline,
        }));
    }
    Ok(json!({ "delivery": meta, "jobs": jobs }))
}

async fn show_delivery(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    guard(
        &console,
        &req,
        Permission::ReadMetadata,
        ("delivery", Some(id.clone())),
    )
    .await?;
    let v = delivery_detail(&console, &id).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Decrypt a delivery for `p`; audited as `payload_read` by the store in the same transaction.
pub(super) async fn reveal_for(
    console: &web::Data<Console>,
    p: &Principal,
    id: String,
) -> Result<wardhook_sdk::Event, ApiError> {
    let who = p.requester();
    Ok(console.store.show_delivery(id, who).await?)
}

async fn reveal(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let p = guard(
        &console,
        &req,
        Permission::RevealPayload,
        ("delivery", Some(id.clone())),
    )
    .await?;
    let event = reveal_for(&console, &p, id.clone()).await?;
    Ok(HttpResponse::Ok().json(json!({ "delivery_id": id, "event": event })))
}

#[derive(Debug, Default, Deserialize)]
struct ReplayQuery {
    handler: Option<String>,
}

async fn replay(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<ReplayQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let p = guard(
        &console,
        &req,
        Permission::Requeue,
        ("delivery", Some(id.clone())),
    )
    .await?;
    let n = replay_for(&console, &p, id, q.into_inner().handler).await?;
    Ok(HttpResponse::Ok().json(json!({ "jobs": n })))
}

pub(super) async fn replay_for(
    console: &web::Data<Console>,
    p: &Principal,
    id: String,
    handler: Option<String>,
) -> Result<u64, ApiError> {
    let who = p.requester();
    let n = console.store.replay(id, handler, who).await?;
    console.dispatcher.waker().notify_waiters();
    Ok(n)
}

async fn list_dead(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadMetadata, ("job", None)).await?;
    let rows = console.store.list_dead(q.dead_filter()).await?;
    Ok(HttpResponse::Ok().json(json!({ "dead_letters": rows })))
}

pub(super) async fn retry_for(
    console: &web::Data<Console>,
    p: &Principal,
    filter: DeadFilter,
) -> Result<u64, ApiError> {
    let who = p.requester();
    let n = console.store.retry_dead(filter, who).await?;
    console.dispatcher.waker().notify_waiters();
    Ok(n)
}

async fn retry_one(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let job = path.into_inner();
    let p = guard(&console, &req, Permission::Requeue, ("job", None)).await?;
    let n = retry_for(
        &console,
        &p,
        DeadFilter {
            job_id: Some(job),
            ..DeadFilter::default()
        },
    )
    .await?;
    if n == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::Ok().json(json!({ "retried": n })))
}

async fn retry_matching(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let p = guard(&console, &req, Permission::Requeue, ("job", None)).await?;
    let n = retry_for(&console, &p, q.dead_filter()).await?;
    Ok(HttpResponse::Ok().json(json!({ "retried": n })))
}

async fn list_quarantine(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(
        &console,
        &req,
        Permission::ReadMetadata,
        ("quarantine", None),
    )
    .await?;
    let filter = q.filter()?;
    let rows = console.store.list_quarantine(filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "quarantine": rows })))
}

/// Query of the audit endpoints.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct AuditQuery {
    pub since: Option<String>,
    pub until: Option<String>,
    pub call_id: Option<String>,
    pub delivery_id: Option<String>,
    pub source: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub limit: Option<usize>,
    pub format: Option<String>,
}

impl AuditQuery {
    pub(super) fn args(&self) -> SearchArgs {
        let s = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        SearchArgs {
            since: s(&self.since),
            until: s(&self.until),
            call_id: s(&self.call_id),
            delivery_id: s(&self.delivery_id),
            source: s(&self.source),
            action: s(&self.action),
            actor: s(&self.actor),
        }
    }
}

/// An unusable audit filter is the caller's mistake (400); anything else is the store's.
pub(super) fn audit_error(e: StoreError) -> ApiError {
    match e {
        StoreError::InvalidArgument(m) if m == BAD_AUDIT_FILTER => {
            ApiError::BadRequest("invalid audit filter")
        }
        other => other.into(),
    }
}

/// The newest `limit` records matching `q`, oldest first (every node's on PostgreSQL).
pub(super) async fn search_records(
    console: &Console,
    q: &AuditQuery,
) -> Result<Vec<crate::audit::StoredRecord>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    console
        .store
        .console()
        .audit_records(q.args(), limit)
        .await
        .map_err(audit_error)
}

async fn audit_search(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadAudit, ("audit", None)).await?;
    let records = search_records(&console, &q).await?;
    Ok(HttpResponse::Ok().json(json!({ "count": records.len(), "records": records })))
}

/// The chain verification result as JSON (`ok`, counts, or the first bad sequence number).
pub(super) async fn verify_json(console: &Console) -> Result<serde_json::Value, ApiError> {
    let check = console
        .store
        .console()
        .audit_check(console.setup.audit_dir.clone())
        .await?;
    Ok(match check {
        AuditCheck::Ok {
            records,
            first_seq,
            last_seq,
            checkpoints_matched,
            mirror_records,
            warnings,
        } => json!({
            "ok": true,
            "records": records,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "checkpoints_matched": checkpoints_matched,
            "mirror_records": mirror_records,
            "warnings": warnings,
        }),
        AuditCheck::Failed {
            seq,
            problem,
            location,
        } => json!({
            "ok": false,
            "first_bad_seq": seq,
            "problem": problem,
            "location": location,
        }),
    })
}

async fn audit_verify(
    console: web::Data<Console>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadAudit, ("audit", None)).await?;
    Ok(HttpResponse::Ok().json(verify_json(&console).await?))
}

async fn audit_export(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let p = guard(&console, &req, Permission::ReadAudit, ("audit", None)).await?;
    super::export::export_response(console, &p, &q).await
}

pub(super) async fn health_of(console: &web::Data<Console>) -> Result<health::Health, ApiError> {
    let now = chrono::Utc::now();
    let data = console
        .store
        .console()
        .health_data(health::window_start(now))
        .await?;
    let view = console.setup.view();
    let d = &console.dispatcher;
    Ok(health::compute(
        &data,
        &view.sources,
        &view.handlers,
        &|h| d.circuit_state(h),
        now,
    ))
}

async fn health(console: web::Data<Console>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadMetadata, ("health", None)).await?;
    Ok(HttpResponse::Ok().json(health_of(&console).await?))
}

async fn config(console: web::Data<Console>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadMetadata, ("config", None)).await?;
    Ok(HttpResponse::Ok().json(&console.setup.view().summary))
}

/// Days until the senders' certificate expires (negative once expired).
fn cert_days_left(console: &Console) -> Option<f64> {
    let crate::config::Transport::Tls(settings) = &console.setup.transport else {
        return None;
    };
    let pem = std::fs::read(&settings.cert).ok()?;
    let block = x509_parser::pem::Pem::iter_from_buffer(&pem).next()?.ok()?;
    let cert = block.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    Some((not_after - chrono::Utc::now().timestamp()) as f64 / 86_400.0)
}

async fn metrics(console: web::Data<Console>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    use crate::metrics::Gauge;
    guard(&console, &req, Permission::ReadMetadata, ("metrics", None)).await?;
    let h = health_of(&console).await?;
    let mut gauges = vec![
        Gauge {
            name: "wardhook_queue_depth",
            help: "Jobs pending, waiting or running.",
            series: vec![(vec![], h.queue_depth as f64)],
        },
        Gauge {
            name: "wardhook_queue_oldest_due_age_seconds",
            help: "Age of the oldest due job (0 when none is due).",
            series: vec![(vec![], h.oldest_due_age_secs.unwrap_or(0) as f64)],
        },
        Gauge {
            name: "wardhook_dead_letters",
            help: "Dead letters waiting for an operator, by handler.",
            series: h
                .handlers
                .iter()
                .map(|x| (vec![("handler", x.name.clone())], x.dead_letters as f64))
                .collect(),
        },
        Gauge {
            name: "wardhook_circuit_state",
            help: "Circuit breaker per handler: 0 closed, 1 half-open, 2 open.",
            series: h
                .handlers
                .iter()
                .map(|x| {
                    let v = match x.circuit {
                        "open" => 2.0,
                        "half_open" => 1.0,
                        _ => 0.0,
                    };
                    (vec![("handler", x.name.clone())], v)
                })
                .collect(),
        },
    ];
    if let Some(days) = cert_days_left(&console) {
        gauges.push(Gauge {
            name: "wardhook_tls_certificate_expiry_days",
            help: "Days until the listener's TLS certificate expires.",
            series: vec![(vec![("listener", "hooks".to_owned())], days)],
        });
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(&gauges)))
}
