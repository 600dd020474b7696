//! The admin JSON API (`/api/...`) and `/metrics`, both behind `Authorization: Bearer`.
//!
//! Every handler first authenticates and checks the role ([`guard`]); a refusal is a 401 or 403
//! with a fixed body and an `access_denied` audit record, and nothing is read before the check
//! passes, so a refused call cannot leak data through its body or its timing of a decryption.

use std::collections::VecDeque;
use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Permission, Principal};
use super::{blocking, health, tokens, ApiError, Console, Denial};
use crate::audit::commands::{parse_time, SearchArgs};
use crate::audit::{Action, Actor, AuditRecord, DetailKey, ExportFormat, Outcome};
use crate::store::admin::{ListFilter, Requester};
use crate::store::jobs::DeadFilter;

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
    let c = console.clone();
    let result = blocking(move || {
        let conn = c.store.connection()?;
        Ok(tokens::authenticate(&conn, &token)?)
    })
    .await?;
    match result {
        Ok(info) => {
            if let Some(ip) = remote {
                console.limiter.succeed(ip);
            }
            Ok(Principal {
                token_id: info.id,
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
            let token_id = match refusal {
                tokens::Refusal::BadToken => None,
                _ => id,
            };
            let denial = Denial {
                token_id,
                remote,
                reason: refusal.code(),
                status: 401,
                object_kind: None,
                delivery_id: None,
                via,
            };
            let c = console.clone();
            let _ = blocking(move || {
                c.record_denial(&denial);
                Ok(())
            })
            .await;
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
        token_id: Some(p.token_id.clone()),
        remote,
        reason: "insufficient_role",
        status: 403,
        object_kind: Some(object.0),
        delivery_id: object.1,
        via,
    };
    let c = console.clone();
    let _ = blocking(move || {
        c.record_denial(&denial);
        Ok(())
    })
    .await;
    Err(ApiError::Forbidden)
}

/// Authenticate the bearer token and check `perm`.
async fn guard(
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
        .json(json!({ "token_id": p.token_id, "name": p.name, "role": p.role.as_str() })))
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
    let c = console.clone();
    let rows =
        blocking(move || Ok(crate::store::admin::list_deliveries(&c.store, &filter)?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "deliveries": rows })))
}

/// A delivery's metadata, its jobs and each job's attempts: nothing decrypted.
pub(super) fn delivery_detail(console: &Console, id: &str) -> Result<serde_json::Value, ApiError> {
    let conn = console.store.connection()?;
    let meta = conn
        .query_row(
            "SELECT id, source, event_type, received_at, status FROM deliveries WHERE id = ?1",
            [id],
            |r| {
                Ok(json!({
                    "id": r.get::<_, String>(0)?,
                    "source": r.get::<_, String>(1)?,
                    "event_type": r.get::<_, String>(2)?,
                    "received_at": r.get::<_, String>(3)?,
                    "status": r.get::<_, String>(4)?,
                }))
            },
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => ApiError::NotFound,
            other => ApiError::from(crate::store::StoreError::from(other)),
        })?;
    let mut jobs = Vec::new();
    for (job_id, handler, status, attempts) in
        crate::store::jobs::delivery_jobs(&console.store, id)?
    {
        let timeline = crate::store::jobs::job_attempts(&console.store, job_id)?;
        jobs.push(json!({
            "job_id": job_id,
            "handler": handler,
            "status": status,
            "attempts": attempts,
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
    let c = console.clone();
    let v = blocking(move || delivery_detail(&c, &id)).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Decrypt a delivery for `p`; audited as `payload_read` by the store in the same transaction.
pub(super) async fn reveal_for(
    console: &web::Data<Console>,
    p: &Principal,
    id: String,
) -> Result<wardhook_sdk::Event, ApiError> {
    let c = console.clone();
    let who = Requester::admin_token(&p.token_id);
    blocking(move || Ok(crate::store::admin::show_delivery(&c.store, &id, &who)?)).await
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
    let c = console.clone();
    let who = Requester::admin_token(&p.token_id);
    let n = blocking(move || {
        Ok(crate::store::jobs::replay(
            &c.store,
            &id,
            handler.as_deref(),
            &who,
        )?)
    })
    .await?;
    console.dispatcher.waker().notify_waiters();
    Ok(n)
}

async fn list_dead(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadMetadata, ("job", None)).await?;
    let filter = q.dead_filter();
    let c = console.clone();
    let rows = blocking(move || Ok(crate::store::jobs::list_dead(&c.store, &filter)?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "dead_letters": rows })))
}

pub(super) async fn retry_for(
    console: &web::Data<Console>,
    p: &Principal,
    filter: DeadFilter,
) -> Result<u64, ApiError> {
    let c = console.clone();
    let who = Requester::admin_token(&p.token_id);
    let n = blocking(move || Ok(crate::store::jobs::retry_dead(&c.store, &filter, &who)?)).await?;
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
    let c = console.clone();
    let rows =
        blocking(move || Ok(crate::store::admin::list_quarantine(&c.store, &filter)?)).await?;
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

/// The newest `limit` records matching `q`, oldest first.
pub(super) fn search_records(
    console: &Console,
    q: &AuditQuery,
) -> Result<Vec<crate::audit::StoredRecord>, ApiError> {
    let filter = q
        .args()
        .to_filter(console.store.keyring())
        .map_err(|_| ApiError::BadRequest("invalid audit filter"))?;
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    let conn = console.store.connection()?;
    let mut out = VecDeque::with_capacity(limit);
    crate::audit::for_each_record(&conn, &filter, |r| {
        if out.len() == limit {
            out.pop_front();
        }
        out.push_back(r.clone());
        Ok(())
    })?;
    Ok(out.into())
}

async fn audit_search(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadAudit, ("audit", None)).await?;
    let c = console.clone();
    let q = q.into_inner();
    let records = blocking(move || search_records(&c, &q)).await?;
    Ok(HttpResponse::Ok().json(json!({ "count": records.len(), "records": records })))
}

/// The chain verification result as JSON (`ok`, counts, or the first bad sequence number).
pub(super) fn verify_json(console: &Console) -> Result<serde_json::Value, ApiError> {
    let conn = console.store.connection()?;
    let mut sink = Vec::new();
    match crate::audit::commands::verify(
        &conn,
        console.store.keyring(),
        &console.setup.audit_dir,
        false,
        true,
        &mut sink,
    ) {
        Ok(summary) => Ok(json!({
            "ok": true,
            "records": summary.database.records,
            "first_seq": summary.database.first_seq,
            "last_seq": summary.database.last_seq,
            "checkpoints_matched": summary.database.checkpoints_matched,
            "mirror_records": summary.mirror.as_ref().map(|m| m.records),
            "warnings": summary.database.warnings,
        })),
        Err(crate::audit::AuditError::VerifyFailed {
            seq,
            problem,
            location,
        }) => Ok(json!({
            "ok": false,
            "first_bad_seq": seq,
            "problem": problem.to_string(),
            "location": location,
        })),
        Err(e) => Err(e.into()),
    }
}

async fn audit_verify(
    console: web::Data<Console>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadAudit, ("audit", None)).await?;
    let c = console.clone();
    let v = blocking(move || verify_json(&c)).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Export matching records as JSONL or CSV, and record the export (`audit_exported`).
pub(super) fn export_bytes(
    console: &Console,
    p: &Principal,
    q: &AuditQuery,
) -> Result<(Vec<u8>, &'static str, &'static str), ApiError> {
    let format = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => ExportFormat::Jsonl,
        "csv" => ExportFormat::Csv,
        _ => return Err(ApiError::BadRequest("format must be jsonl or csv")),
    };
    let conn = console.store.connection()?;
    let mut out = Vec::new();
    let mut progress = std::io::sink();
    let n = crate::audit::commands::export(
        &conn,
        console.store.keyring(),
        format,
        &q.args(),
        &mut out,
        &mut progress,
    )
    .map_err(|e| match e {
        crate::audit::AuditError::InvalidField { .. } => {
            ApiError::BadRequest("invalid audit filter")
        }
        other => other.into(),
    })?;
    drop(conn);
    let actor = Actor::admin_token(&p.token_id).unwrap_or(Actor::System);
    let mut r = AuditRecord::new(actor, Action::AuditExported, Outcome::Success);
    r.detail.insert(DetailKey::Count, n as i64);
    if let Ok(v) = crate::audit::Code::parse("admin_api") {
        r.detail.insert(DetailKey::Via, v);
    }
    console.append_audit(&r)?;
    Ok(match format {
        ExportFormat::Csv => (out, "text/csv; charset=utf-8", "wardhook-audit.csv"),
        _ => (out, "application/x-ndjson", "wardhook-audit.jsonl"),
    })
}

pub(super) fn download(bytes: Vec<u8>, content_type: &str, file: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type.to_owned())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .body(bytes)
}

async fn audit_export(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let p = guard(&console, &req, Permission::ReadAudit, ("audit", None)).await?;
    let c = console.clone();
    let q = q.into_inner();
    let (bytes, ct, file) = blocking(move || export_bytes(&c, &p, &q)).await?;
    Ok(download(bytes, ct, file))
}

pub(super) async fn health_of(console: &web::Data<Console>) -> Result<health::Health, ApiError> {
    let c = console.clone();
    blocking(move || {
        let conn = c.store.connection()?;
        let d = c.dispatcher.clone();
        let view = c.setup.view();
        health::compute(
            &conn,
            &view.sources,
            &view.handlers,
            &|h| d.circuit_state(h),
            chrono::Utc::now(),
        )
        .map_err(|e| ApiError::from(crate::store::StoreError::from(e)))
    })
    .await
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
