//! The dashboard: server-rendered HTML over the same functions as the API.
//!
//! No scripts and no external assets (the CSS is embedded with `include_str!`), so it works
//! offline behind a firewall and a strict Content-Security-Policy holds. Sign-in exchanges a
//! token for a session cookie; every state-changing form carries the session's CSRF token.
//! Status is always written as a word beside its colour, so it reads without colour.

use std::fmt::Write as _;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::api::{self, AuditQuery, ListQuery};
use super::auth::{csrf_matches, Permission, Principal, Session, SessionState};
use super::health::HourBucket;
use super::{tokens, ApiError, Console, Denial};
use crate::store::types::DeadFilter;

const STYLE: &str = include_str!("assets/style.css");
const COOKIE: &str = "wardhook_session";

/// The session cookie's value from the `Cookie` header. Hand-parsed: one cookie, no need for
/// actix's cookie jar feature.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `Set-Cookie` for a session: HttpOnly (no script reads it), Secure, SameSite=Strict (no
/// cross-site request carries it). `None` clears it.
fn set_cookie(value: Option<&str>) -> (header::HeaderName, String) {
    let attrs = "Path=/; HttpOnly; Secure; SameSite=Strict";
    let v = match value {
        Some(v) => format!("{COOKIE}={v}; {attrs}"),
        None => format!("{COOKIE}=; {attrs}; Max-Age=0"),
    };
    (header::SET_COOKIE, v)
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/style.css", web::get().to(style))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/", web::get().to(overview))
        .route("/deliveries", web::get().to(deliveries))
        .route("/deliveries/{id}", web::get().to(delivery))
        .route("/deliveries/{id}/reveal", web::post().to(reveal))
        .route("/deliveries/{id}/replay", web::post().to(replay))
        .route("/dead-letters", web::get().to(dead_letters))
        .route("/dead-letters/retry", web::post().to(retry_all))
        .route("/dead-letters/{job}/retry", web::post().to(retry_one))
        .route("/quarantine", web::get().to(quarantine))
        .route("/audit", web::get().to(audit))
        .route("/audit/export", web::post().to(audit_export));
}

/// HTML-escape text (names, ids, reasons, and revealed payloads).
pub(super) fn esc(s: &str) -> String {
    wardhook_sdk::template::html_escape(s)
}

/// Percent-encode a query value.
fn qv(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}

pub(super) fn page(title: &str, session: Option<&Session>, active: &str, body: &str) -> String {
    let mut nav = String::new();
    let mut who = String::new();
    if let Some(s) = session {
        let mut links = vec![
            ("/", "Overview"),
            ("/deliveries", "Deliveries"),
            ("/dead-letters", "Dead letters"),
            ("/quarantine", "Quarantine"),
        ];
        if s.principal.role.allows(Permission::ReadAudit) {
            links.push(("/audit", "Audit"));
        }
        nav.push_str("<nav aria-label=\"Main\">");
        for (href, label) in links {
            let class = if href == active {
                " class=\"active\" aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{href}\"{class}>{label}</a>");
        }
        nav.push_str("</nav>");
        let _ = write!(
            who,
            "<div class=\"who\"><span>Signed in as <strong>{}</strong> ({})</span>\
             <form class=\"inline\" method=\"post\" action=\"/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form></div>",
            esc(&s.principal.name),
            s.principal.role.as_str(),
            esc(&s.csrf)
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · wardhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         </head><body><header><span class=\"brand\">wardhook</span>{nav}{who}</header>\
         <main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

fn badge(status: &str) -> String {
    let (class, mark) = match status {
        "done" | "accepted" | "ok" | "closed" | "success" => ("ok", "✓"),
        "pending" | "waiting" | "running" | "retryable" | "half_open" | "duplicate" => {
            ("warn", "…")
        }
        "dead" | "permanent" | "open" | "failure" | "denied" | "quarantined" => ("bad", "✗"),
        _ => ("muted", "·"),
    };
    format!(
        "<span class=\"badge {class}\">{mark} {}</span>",
        esc(&status.replace('_', " "))
    )
}

fn rate_text(r: Option<f64>) -> String {
    match r {
        None => "<span class=\"muted\">no traffic</span>".to_owned(),
        Some(r) => {
            let status = if r >= 0.95 {
                "ok"
            } else if r >= 0.8 {
                "warn"
            } else {
                "bad"
            };
            let word = match status {
                "ok" => "healthy",
                "warn" => "degraded",
                _ => "failing",
            };
            format!(
                "{:.1} % <span class=\"badge {status}\">{word}</span>",
                r * 100.0
            )
        }
    }
}

/// A small inline SVG line chart of hourly values (gaps where an hour had no data).
fn sparkline(values: &[Option<f64>], max: f64, label: &str) -> String {
    let (w, h) = (144.0_f64, 30.0_f64);
    let n = values.len().max(2) as f64;
    let max = if max > 0.0 { max } else { 1.0 };
    let mut paths = String::new();
    let mut dots = String::new();
    let mut current = String::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let x = i as f64 * (w - 4.0) / (n - 1.0) + 2.0;
                let y = h - 2.0 - (v / max).clamp(0.0, 1.0) * (h - 4.0);
                let _ = write!(current, "{x:.1},{y:.1} ");
                // A dot per hour with data, so a single busy hour is still visible.
                let _ = write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"#0b5cad\"/>"
                );
            }
            None => {
                if !current.is_empty() {
                    let _ = write!(
                        paths,
                        "<polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"1.6\" points=\"{}\"/>",
                        current.trim_end()
                    );
                    current.clear();
                }
            }
        }
    }
    if !current.is_empty() {
        let _ = write!(
            paths,
            "<polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"1.6\" points=\"{}\"/>",
            current.trim_end()
        );
    }
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"{l}\"><title>{l}</title><rect x=\"0.5\" y=\"0.5\" width=\"{w1}\" height=\"{h1}\" \
         fill=\"#fff\" stroke=\"#d0d7de\"/>{paths}{dots}</svg>",
        l = esc(label),
        w1 = w - 1.0,
        h1 = h - 1.0
    )
}

fn hourly_rate(b: &[HourBucket]) -> Vec<Option<f64>> {
    b.iter()
        .map(|x| (x.total > 0).then(|| x.ok as f64 / x.total as f64))
        .collect()
}

fn hourly_latency(b: &[HourBucket]) -> Vec<Option<f64>> {
    b.iter()
        .map(|x| (x.total > 0).then(|| x.latency_ms_sum as f64 / x.total as f64))
        .collect()
}

pub(super) fn error_page(
    status: StatusCode,
    session: Option<&Session>,
    message: &str,
) -> HttpResponse {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        _ => "Something went wrong",
    };
    html(
        status,
        page(
            title,
            session,
            "",
            &format!(
                "<div class=\"notice bad\" role=\"alert\">{}</div>",
                esc(message)
            ),
        ),
    )
}

pub(super) fn api_error_page(e: &ApiError, session: Option<&Session>) -> HttpResponse {
    let msg = match e {
        ApiError::NotFound => "Nothing with that id.",
        ApiError::BadRequest(m) => m,
        ApiError::Forbidden => {
            "Your role does not allow this. The attempt was recorded in the audit log."
        }
        ApiError::Unavailable => "Storage is unavailable right now; try again shortly.",
        ApiError::RateLimited(_) => {
            "Too many failed sign-ins from this address; wait a few minutes."
        }
        ApiError::Unauthorized => "Please sign in.",
        ApiError::Gone => "This was purged: its key has been destroyed.",
        ApiError::Unreadable => "The stored file failed its integrity check.",
    };
    let status = actix_web::ResponseError::status_code(e);
    error_page(status, session, msg)
}

/// The signed-in session, or a redirect to the sign-in page. Revoked or expired tokens end
/// their sessions here.
async fn session(console: &web::Data<Console>, req: &HttpRequest) -> Result<Session, HttpResponse> {
    let Some(cookie) = session_cookie(req) else {
        return Err(redirect("/login"));
    };
    let s = match console.sessions.touch(&cookie) {
        Ok(s) => s,
        Err(SessionState::Expired) => return Err(redirect("/login?expired=1")),
        Err(SessionState::None) => return Err(redirect("/login")),
    };
    let valid = tokens::still_valid(console.store.console(), &s.principal.token_id)
        .await
        .map_err(ApiError::from);
    match valid {
        Ok(true) => Ok(s),
        Ok(false) => {
            console.sessions.remove(&cookie);
            Err(redirect("/login"))
        }
        Err(e) => Err(api_error_page(&e, None)),
    }
}

/// Session + role check for a page; a refusal is audited like the API's.
pub(super) async fn page_guard(
    console: &web::Data<Console>,
    req: &HttpRequest,
    perm: Permission,
    object: (&'static str, Option<String>),
) -> Result<Session, HttpResponse> {
    let s = session(console, req).await?;
    api::authorize(
        console,
        &s.principal,
        perm,
        api::client_ip(req),
        object,
        "dashboard",
    )
    .await
    .map_err(|e| api_error_page(&e, Some(&s)))?;
    Ok(s)
}

/// A state-changing form: session, CSRF token, then role.
async fn form_guard(
    console: &web::Data<Console>,
    req: &HttpRequest,
    csrf: &str,
    perm: Permission,
    object: (&'static str, Option<String>),
) -> Result<Session, HttpResponse> {
    let s = session(console, req).await?;
    if !csrf_matches(&s, csrf) {
        let denial = Denial {
            token_id: Some(s.principal.token_id.clone()),
            remote: api::client_ip(req),
            reason: "csrf_mismatch",
            status: 403,
            object_kind: Some(object.0),
            delivery_id: object.1.clone(),
            via: "dashboard",
        };
        console.record_denial(&denial).await;
        return Err(error_page(
            StatusCode::FORBIDDEN,
            Some(&s),
            "This form has expired. Reload the page and try again.",
        ));
    }
    api::authorize(
        console,
        &s.principal,
        perm,
        api::client_ip(req),
        object,
        "dashboard",
    )
    .await
    .map_err(|e| api_error_page(&e, Some(&s)))?;
    Ok(s)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

fn login_html(console: &Console, note: Option<(&str, &str)>) -> String {
    let note = note
        .map(|(class, text)| {
            format!(
                "<div class=\"notice {class}\" role=\"status\">{}</div>",
                esc(text)
            )
        })
        .unwrap_or_default();
    let idle = console.sessions.idle().as_secs();
    let idle_text = if idle >= 60 && idle % 60 == 0 {
        format!("{} minutes", idle / 60)
    } else {
        format!("{idle} seconds")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in · wardhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         </head><body><header><span class=\"brand\">wardhook</span></header><main>\
         <form class=\"login\" method=\"post\" action=\"/login\"><h1>Operator console</h1>{note}\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required \
          placeholder=\"wardhook_tk…\">\
         <button type=\"submit\" id=\"sign-in\">Sign in</button>\
         <p class=\"muted\">Create a token on the host with <code>wardhook tokens create</code>. \
         Sessions end after {idle_text} without activity.</p></form></main></body></html>"
    )
}

async fn login_page(console: web::Data<Console>, q: web::Query<LoginQuery>) -> HttpResponse {
    let note = q
        .expired
        .as_ref()
        .map(|_| ("warn", "You were signed out after a period of inactivity."));
    html(StatusCode::OK, login_html(&console, note))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let token = form.into_inner().token.trim().to_owned();
    match api::authenticate_token(&console, token, api::client_ip(&req), "dashboard").await {
        Ok(p) => {
            let id = console.sessions.create(p);
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/"))
                .insert_header(set_cookie(Some(&id)))
                .finish()
        }
        Err(ApiError::RateLimited(secs)) => html(
            StatusCode::TOO_MANY_REQUESTS,
            login_html(
                &console,
                Some((
                    "bad",
                    &format!("Too many failed sign-ins. Try again in {secs} s."),
                )),
            ),
        ),
        Err(ApiError::Unauthorized) => html(
            StatusCode::UNAUTHORIZED,
            login_html(&console, Some(("bad", "That token is not valid."))),
        ),
        Err(e) => api_error_page(&e, None),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: String,
    handler: Option<String>,
    source: Option<String>,
}

async fn logout(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    if let Some(c) = session_cookie(&req) {
        if let Ok(s) = console.sessions.touch(&c) {
            if csrf_matches(&s, &form.csrf) {
                console.sessions.remove(&c);
            }
        }
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header(set_cookie(None))
        .finish()
}

async fn overview(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let s = match page_guard(&console, &req, Permission::ReadMetadata, ("health", None)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let h = match api::health_of(&console).await {
        Ok(h) => h,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=\"cards\">\
         <div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">jobs queued</div></div>\
         <div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">oldest due job (s)</div></div>\
         <div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">dead letters {}</div></div>\
         <div class=\"card\"><div class=\"n\">{} / {}</div><div class=\"l\">sources / handlers</div></div>\
         </div>",
        h.queue_depth,
        h.oldest_due_age_secs.unwrap_or(0),
        h.dead_letters,
        if h.dead_letters > 0 { badge("dead") } else { badge("ok") },
        h.sources.len(),
        h.handlers.len()
    );
    b.push_str(
        "<h2>Sources — last 24 h</h2><div class=\"table-wrap\"><table><thead><tr>\
        <th>source</th><th>accepted</th><th class=\"hide-narrow\">duplicate</th>\
        <th>quarantined</th><th>rejected</th><th>success rate</th><th>per hour</th>\
        <th class=\"hide-narrow\">mean ack</th></tr></thead><tbody>",
    );
    for src in &h.sources {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num hide-narrow\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"num hide-narrow\">{}</td></tr>",
            esc(&src.name),
            src.accepted,
            src.duplicate,
            src.quarantined,
            src.rejected,
            rate_text(src.success_rate),
            sparkline(
                &hourly_rate(&src.hourly),
                1.0,
                &format!("{}: success rate per hour, last 24 h", src.name)
            ),
            {
                let max = src
                    .ack_latency_ms_hourly
                    .iter()
                    .flatten()
                    .fold(0.0_f64, |a, b| a.max(*b));
                format!(
                    "{} {}",
                    src.ack_latency_ms_mean
                        .map_or_else(|| "—".to_owned(), |m| format!("{m:.1} ms")),
                    sparkline(
                        &src.ack_latency_ms_hourly,
                        max.max(1.0),
                        &format!("{}: mean answer latency per hour, last 24 h", src.name)
                    )
                )
            }
        );
    }
    b.push_str("</tbody></table></div>");
    b.push_str(
        "<h2>Handlers — last 24 h</h2><div class=\"table-wrap\"><table><thead><tr>\
        <th>handler</th><th>attempts</th><th>success rate</th><th>per hour</th>\
        <th>latency p50 / p95</th><th class=\"hide-narrow\">latency per hour</th><th>circuit</th><th class=\"hide-narrow\">queued</th>\
        <th>dead</th></tr></thead><tbody>",
    );
    for hd in &h.handlers {
        let lat = hourly_latency(&hd.hourly);
        let max = lat.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"hide-narrow\">{}</td><td>{}</td><td class=\"num hide-narrow\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&hd.name),
            hd.attempts,
            rate_text(hd.success_rate),
            sparkline(
                &hourly_rate(&hd.hourly),
                1.0,
                &format!("{}: success rate per hour, last 24 h", hd.name)
            ),
            match (hd.latency_ms_p50, hd.latency_ms_p95) {
                (Some(a), Some(b)) => format!("{a} / {b} ms"),
                _ => "—".to_owned(),
            },
            sparkline(
                &lat,
                max,
                &format!("{}: mean latency per hour, last 24 h (max {max:.0} ms)", hd.name)
            ),
            badge(hd.circuit),
            hd.queue_depth,
            hd.dead_letters
        );
    }
    b.push_str("</tbody></table></div>");
    html(StatusCode::OK, page("Overview", Some(&s), "/", &b))
}

fn filters_form(action: &str, q: &ListQuery, sources: &[String], with_status: bool) -> String {
    let mut opts = String::from("<option value=\"\">all</option>");
    for s in sources {
        let sel = if q.source.as_deref() == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(opts, "<option{sel}>{}</option>", esc(s));
    }
    let status = if with_status {
        format!(
            "<label>status<input name=\"status\" value=\"{}\" placeholder=\"accepted\"></label>",
            esc(q.status.as_deref().unwrap_or(""))
        )
    } else {
        String::new()
    };
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{action}\">\
         <label>source<select name=\"source\">{opts}</select></label>{status}\
         <label>since<input name=\"since\" value=\"{}\" placeholder=\"2026-11-22\"></label>\
         <label>until<input name=\"until\" value=\"{}\" placeholder=\"2026-11-23\"></label>\
         <button type=\"submit\" class=\"secondary\">Filter</button></form>",
        esc(q.since.as_deref().unwrap_or("")),
        esc(q.until.as_deref().unwrap_or(""))
    )
}

async fn deliveries(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    let s = match page_guard(&console, &req, Permission::ReadMetadata, ("delivery", None)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let rows = match console
        .store
        .list_deliveries(filter)
        .await
        .map_err(ApiError::from)
    {
        Ok(r) => r,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let view = console.setup.view();
    let mut b = filters_form("/deliveries", &q, &view.sources, true);
    b.push_str(
        "<div class=\"table-wrap\"><table><thead><tr><th>received</th><th>delivery</th>\
        <th>source</th><th>event</th><th>status</th><th>jobs</th></tr></thead><tbody>",
    );
    for d in &rows {
        let _ = write!(
            b,
            "<tr><td class=\"mono\">{}</td><td><a class=\"mono\" href=\"/deliveries/{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&d.received_at),
            esc(&d.id),
            esc(&d.id),
            esc(&d.source),
            esc(&d.event_type),
            badge(&d.status),
            d.jobs
        );
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"muted\">No deliveries match.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    html(
        StatusCode::OK,
        page("Deliveries", Some(&s), "/deliveries", &b),
    )
}

fn delivery_body(
    detail: &serde_json::Value,
    s: &Session,
    notice: &str,
    artifacts: &[crate::store::artifacts::ArtifactSummary],
) -> String {
    let d = &detail["delivery"];
    let id = d["id"].as_str().unwrap_or_default();
    let text = |v: &serde_json::Value| esc(v.as_str().unwrap_or_default());
    let mut b = String::from(notice);
    let _ = write!(
        b,
        "<dl class=\"meta\"><dt>delivery</dt><dd class=\"mono\">{}</dd><dt>source</dt><dd>{}</dd>\
         <dt>event</dt><dd>{}</dd><dt>received</dt><dd class=\"mono\">{}</dd>\
         <dt>status</dt><dd>{}</dd></dl>",
        esc(id),
        text(&d["source"]),
        text(&d["event_type"]),
        text(&d["received_at"]),
        badge(d["status"].as_str().unwrap_or_default())
    );
    b.push_str("<h2>Jobs and attempts</h2>");
    let jobs = detail["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        b.push_str("<p class=\"muted\">No route matched this delivery; no jobs.</p>");
    }
    for j in &jobs {
        let _ = write!(
            b,
            "<h3>{} <span class=\"job-status\">{}</span> <span class=\"muted\">job {} · {} attempt(s)</span></h3>\
             <ol class=\"timeline\">",
            text(&j["handler"]),
            badge(j["status"].as_str().unwrap_or_default()),
            j["job_id"],
            j["timeline"].as_array().map_or(0, Vec::len)
        );
        for a in j["timeline"].as_array().cloned().unwrap_or_default() {
            let status = a["http_status"]
                .as_i64()
                .map_or_else(String::new, |s| format!(" HTTP {s}"));
            let _ = write!(
                b,
                "<li><span class=\"mono\">{}</span> {}{} · {} ms{}{}</li>",
                text(&a["started_at"]),
                badge(a["result"].as_str().unwrap_or_default()),
                status,
                a["latency_ms"],
                a["destination"]
                    .as_str()
                    .map_or_else(String::new, |d| format!(" · {}", esc(d))),
                a["error"].as_str().map_or_else(String::new, |e| format!(
                    " — <span class=\"muted\">{}</span>",
                    esc(e)
                ))
            );
        }
        b.push_str("</ol>");
    }
    b.push_str(&super::artifacts::section(artifacts, s));
    b.push_str("<h2>Actions</h2>");
    let _ = write!(
        b,
        "<form class=\"inline\" method=\"post\" action=\"/deliveries/{id}/reveal\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"reveal\">Reveal payload</button></form> ",
        id = esc(id),
        csrf = esc(&s.csrf)
    );
    if s.principal.role.allows(Permission::Requeue) {
        let _ = write!(
            b,
            "<form class=\"inline\" method=\"post\" action=\"/deliveries/{id}/replay\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" class=\"secondary\" id=\"replay\">Replay to all handlers</button></form>",
            id = esc(id),
            csrf = esc(&s.csrf)
        );
    }
    b.push_str(
        "<p class=\"muted\">Revealing decrypts the payload for operators and admins only; \
         every reveal is recorded in the audit log under your token.</p>",
    );
    b
}

async fn delivery(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Flash>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = match page_guard(
        &console,
        &req,
        Permission::ReadMetadata,
        ("delivery", Some(id.clone())),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let detail = match api::delivery_detail(&console, &id).await {
        Ok(d) => d,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let artifacts = match console
        .store
        .artifacts()
        .delivery_artifacts(id.clone())
        .await
    {
        Ok(a) => a,
        Err(e) => return api_error_page(&ApiError::from(e), Some(&s)),
    };
    let notice = q
        .done
        .map(|n| {
            format!("<div class=\"notice ok\" role=\"status\">Replay queued: {n} job(s).</div>")
        })
        .unwrap_or_default();
    html(
        StatusCode::OK,
        page(
            "Delivery",
            Some(&s),
            "/deliveries",
            &delivery_body(&detail, &s, &notice, &artifacts),
        ),
    )
}

async fn reveal(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = match form_guard(
        &console,
        &req,
        &form.csrf,
        Permission::RevealPayload,
        ("delivery", Some(id.clone())),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let event = match api::reveal_for(&console, &s.principal, id.clone()).await {
        Ok(e) => e,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let pretty = serde_json::to_string_pretty(&event).unwrap_or_default();
    let b = format!(
        "<div class=\"notice warn\" role=\"status\">Decrypted payload of delivery <code>{}</code>. \
         This reveal was recorded in the audit log. Do not copy patient data elsewhere.</div>\
         <pre class=\"payload\" id=\"payload\">{}</pre><p><a href=\"/deliveries/{}\">Back to the delivery</a></p>",
        esc(&id),
        esc(&pretty),
        esc(&id)
    );
    html(StatusCode::OK, page("Payload", Some(&s), "/deliveries", &b))
}

async fn replay(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = match form_guard(
        &console,
        &req,
        &form.csrf,
        Permission::Requeue,
        ("delivery", Some(id.clone())),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    match api::replay_for(
        &console,
        &s.principal,
        id.clone(),
        form.handler.clone().filter(|h| !h.is_empty()),
    )
    .await
    {
        Ok(n) => redirect(&format!("/deliveries/{}?done={n}", qv(&id))),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}

#[derive(Debug, Deserialize)]
struct Flash {
    done: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct DeadQuery {
    source: Option<String>,
    handler: Option<String>,
    done: Option<u64>,
}

async fn dead_letters(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<DeadQuery>,
) -> HttpResponse {
    let s = match page_guard(&console, &req, Permission::ReadMetadata, ("job", None)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = DeadFilter {
        handler: q.handler.clone().filter(|x| !x.is_empty()),
        source: q.source.clone().filter(|x| !x.is_empty()),
        job_id: None,
        limit: 500,
    };
    let rows = match console
        .store
        .list_dead(filter.clone())
        .await
        .map_err(ApiError::from)
    {
        Ok(r) => r,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let can_retry = s.principal.role.allows(Permission::Requeue);
    let mut b = String::new();
    if let Some(n) = q.done {
        let _ = write!(
            b,
            "<div class=\"notice ok\" role=\"status\">Retried {n} dead letter(s); they are back in the queue.</div>"
        );
    }
    let mut hopts = String::from("<option value=\"\">all</option>");
    let view = console.setup.view();
    for h in &view.handlers {
        let sel = if filter.handler.as_deref() == Some(h) {
            " selected"
        } else {
            ""
        };
        let _ = write!(hopts, "<option{sel}>{}</option>", esc(h));
    }
    let mut sopts = String::from("<option value=\"\">all</option>");
    for x in &view.sources {
        let sel = if filter.source.as_deref() == Some(x) {
            " selected"
        } else {
            ""
        };
        let _ = write!(sopts, "<option{sel}>{}</option>", esc(x));
    }
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/dead-letters\">\
         <label>handler<select name=\"handler\">{hopts}</select></label>\
         <label>source<select name=\"source\">{sopts}</select></label>\
         <button type=\"submit\" class=\"secondary\">Filter</button></form>"
    );
    if can_retry && !rows.is_empty() {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/dead-letters/retry\" class=\"filters\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"handler\" value=\"{}\">\
             <input type=\"hidden\" name=\"source\" value=\"{}\">\
             <button type=\"submit\" id=\"retry-all\">Retry all {} shown</button></form>",
            esc(&s.csrf),
            esc(filter.handler.as_deref().unwrap_or("")),
            esc(filter.source.as_deref().unwrap_or("")),
            rows.len()
        );
    }
    b.push_str(
        "<div class=\"table-wrap\"><table><thead><tr><th>job</th><th>delivery</th>\
        <th>source</th><th>handler</th><th>attempts</th><th>last error</th>\
        <th class=\"hide-narrow\">since</th><th>status</th><th></th></tr></thead><tbody>",
    );
    for d in &rows {
        let action = if can_retry {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/dead-letters/{}/retry\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" class=\"retry\" data-job=\"{}\">Retry</button></form>",
                d.job_id,
                esc(&s.csrf),
                d.job_id
            )
        } else {
            "<span class=\"muted\">operators only</span>".to_owned()
        };
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td><a class=\"mono\" href=\"/deliveries/{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"mono hide-narrow\">{}</td><td>{}</td><td>{}</td></tr>",
            d.job_id,
            esc(&d.delivery_id),
            esc(d.delivery_id.get(..13).unwrap_or(&d.delivery_id)),
            esc(&d.source),
            esc(&d.handler),
            d.attempts,
            esc(d.last_error.as_deref().unwrap_or("")),
            esc(d.updated_at.as_deref().unwrap_or("")),
            badge("dead"),
            action
        );
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"9\" class=\"muted\">No dead letters. Everything was delivered or is still being retried.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    html(
        StatusCode::OK,
        page("Dead letters", Some(&s), "/dead-letters", &b),
    )
}

async fn retry_one(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let job = path.into_inner();
    let s = match form_guard(
        &console,
        &req,
        &form.csrf,
        Permission::Requeue,
        ("job", None),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = DeadFilter {
        job_id: Some(job),
        ..DeadFilter::default()
    };
    match api::retry_for(&console, &s.principal, filter).await {
        Ok(n) => redirect(&format!("/dead-letters?done={n}")),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}

async fn retry_all(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let s = match form_guard(
        &console,
        &req,
        &form.csrf,
        Permission::Requeue,
        ("job", None),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = DeadFilter {
        handler: form.handler.clone().filter(|x| !x.is_empty()),
        source: form.source.clone().filter(|x| !x.is_empty()),
        job_id: None,
        limit: 0,
    };
    match api::retry_for(&console, &s.principal, filter).await {
        Ok(n) => redirect(&format!("/dead-letters?done={n}")),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}

async fn quarantine(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    let s = match page_guard(
        &console,
        &req,
        Permission::ReadMetadata,
        ("quarantine", None),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let rows = match console
        .store
        .list_quarantine(filter)
        .await
        .map_err(ApiError::from)
    {
        Ok(r) => r,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let view = console.setup.view();
    let mut b = filters_form("/quarantine", &q, &view.sources, false);
    b.push_str(
        "<p class=\"muted\">Authentic deliveries that could not be parsed. Bodies stay encrypted; \
         inspect one on the host with <code>wardhook quarantine show ID</code> (audited).</p>\
         <div class=\"table-wrap\"><table><thead><tr><th>received</th><th>id</th><th>source</th>\
         <th>reason</th><th>status</th></tr></thead><tbody>",
    );
    for r in &rows {
        let _ = write!(
            b,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.received_at),
            esc(&r.id),
            esc(&r.source),
            esc(&r.reason),
            badge(&r.status)
        );
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">Nothing in quarantine.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    html(
        StatusCode::OK,
        page("Quarantine", Some(&s), "/quarantine", &b),
    )
}

fn audit_hidden(q: &AuditQuery) -> String {
    let mut out = String::new();
    for (k, v) in [
        ("since", &q.since),
        ("until", &q.until),
        ("action", &q.action),
        ("actor", &q.actor),
        ("delivery_id", &q.delivery_id),
        ("source", &q.source),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v)
            );
        }
    }
    out
}

async fn audit(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> HttpResponse {
    let s = match page_guard(&console, &req, Permission::ReadAudit, ("audit", None)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut q = q.into_inner();
    q.limit = Some(q.limit.unwrap_or(100).min(1000));
    let result = match api::verify_json(&console).await {
        Ok(v) => Ok((v, api::search_records(&console, &q).await)),
        Err(e) => Err(e),
    };
    let (verify, records) = match result {
        Ok(v) => v,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let mut b = String::new();
    if verify["ok"].as_bool() == Some(true) {
        let _ = write!(
            b,
            "<div class=\"notice ok\" role=\"status\" id=\"chain-status\">{} Chain verified: {} records \
             (sequence {}–{}), {} signed checkpoint(s) matched, mirror agrees.</div>",
            badge("ok"),
            verify["records"],
            verify["first_seq"],
            verify["last_seq"],
            verify["checkpoints_matched"]
        );
    } else {
        let _ = write!(
            b,
            "<div class=\"notice bad\" role=\"alert\" id=\"chain-status\">{} Chain verification FAILED at \
             sequence {}: {} ({}).</div>",
            badge("failure"),
            verify["first_bad_seq"],
            esc(verify["problem"].as_str().unwrap_or_default()),
            esc(verify["location"].as_str().unwrap_or_default())
        );
    }
    let v = |x: &Option<String>| esc(x.as_deref().unwrap_or(""));
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/audit\">\
         <label>since<input name=\"since\" value=\"{}\" placeholder=\"2026-11-01\"></label>\
         <label>until<input name=\"until\" value=\"{}\"></label>\
         <label>action<input name=\"action\" value=\"{}\" placeholder=\"payload_read\"></label>\
         <label>actor<input name=\"actor\" value=\"{}\" placeholder=\"admin_token:tk…\"></label>\
         <label>delivery<input name=\"delivery_id\" value=\"{}\"></label>\
         <button type=\"submit\" class=\"secondary\">Search</button></form>",
        v(&q.since),
        v(&q.until),
        v(&q.action),
        v(&q.actor),
        v(&q.delivery_id)
    );
    match &records {
        Ok(_) => {}
        Err(e) => {
            let _ = write!(b, "<div class=\"notice bad\">{}</div>", esc(&e.to_string()));
        }
    }
    let records = records.unwrap_or_default();
    for fmt in ["jsonl", "csv"] {
        let _ = write!(
            b,
            "<form class=\"inline\" method=\"post\" action=\"/audit/export\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"format\" value=\"{fmt}\">{}\
             <button type=\"submit\" class=\"secondary\">Export {} (matching records)</button></form> ",
            esc(&s.csrf),
            audit_hidden(&q),
            fmt.to_uppercase()
        );
    }
    b.push_str(
        "<h2>Records (newest last)</h2><div class=\"table-wrap\"><table><thead><tr><th>seq</th><th>time</th>\
         <th>actor</th><th>action</th><th>outcome</th><th class=\"hide-narrow\">delivery</th>\
         <th>source</th><th class=\"hide-narrow\">detail</th></tr></thead><tbody>",
    );
    for r in &records {
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td>\
             <td>{}</td><td class=\"mono hide-narrow\">{}</td><td>{}</td><td class=\"mono hide-narrow\">{}</td></tr>",
            r.seq,
            esc(r.ts.get(..19).unwrap_or(&r.ts)),
            esc(&r.actor),
            esc(&r.action),
            badge(&r.outcome),
            esc(r.delivery_id.as_deref().map_or("", |d| d.get(..13).unwrap_or(d))),
            esc(r.source.as_deref().unwrap_or("")),
            esc(&r.detail)
        );
    }
    b.push_str("</tbody></table></div>");
    html(StatusCode::OK, page("Audit log", Some(&s), "/audit", &b))
}

#[derive(Debug, Deserialize)]
struct ExportForm {
    csrf: String,
    format: Option<String>,
    since: Option<String>,
    until: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    delivery_id: Option<String>,
    source: Option<String>,
}

async fn audit_export(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<ExportForm>,
) -> HttpResponse {
    let f = form.into_inner();
    let s = match form_guard(
        &console,
        &req,
        &f.csrf,
        Permission::ReadAudit,
        ("audit", None),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = AuditQuery {
        since: f.since,
        until: f.until,
        action: f.action,
        actor: f.actor,
        delivery_id: f.delivery_id,
        source: f.source,
        format: f.format,
        ..AuditQuery::default()
    };
    let p: Principal = s.principal.clone();
    match api::export_bytes(&console, &p, &q).await {
        Ok((bytes, ct, file)) => api::download(bytes, ct, file),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markup() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn status_badges_carry_words_not_only_colour() {
        assert!(badge("dead").contains("dead"));
        assert!(badge("half_open").contains("half open"));
        assert!(rate_text(Some(0.5)).contains("failing"));
    }

    #[test]
    fn sparkline_leaves_gaps_for_hours_without_data() {
        let svg = sparkline(&[Some(1.0), None, Some(0.5), Some(0.0)], 1.0, "x");
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
