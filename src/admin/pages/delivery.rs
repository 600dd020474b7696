//! One delivery: its metadata, jobs and attempts, and the audited reveal and replay actions.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::guard::{form_guard, page_guard, CsrfForm, Flash};
use crate::admin::api;
use crate::admin::auth::{Permission, Session};
use crate::admin::layout::{api_error_page, badge, esc, html, page, post_button, qv, redirect};
use crate::admin::{ApiError, Console};

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
    b.push_str(&crate::admin::artifacts::section(artifacts, s));
    b.push_str("<h2>Actions</h2>");
    let id = esc(id);
    b.push_str(&post_button(
        &format!("/deliveries/{id}/reveal"),
        &s.csrf,
        " id=\"reveal\"",
        "Reveal payload",
    ));
    b.push(' ');
    if s.principal.role.allows(Permission::Requeue) {
        b.push_str(&post_button(
            &format!("/deliveries/{id}/replay"),
            &s.csrf,
            " class=\"secondary\" id=\"replay\"",
            "Replay to all handlers",
        ));
    }
    b.push_str(
        "<p class=\"muted\">Revealing decrypts the payload for operators and admins only; \
         every reveal is recorded in the audit log under your token.</p>",
    );
    b
}

pub(super) async fn delivery(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Flash>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = or_return!(
        page_guard(
            &console,
            &req,
            Permission::ReadMetadata,
            ("delivery", Some(id.clone())),
        )
        .await
    );
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

pub(super) async fn reveal(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let s =
        or_return!(delivery_form(&console, &req, &form.csrf, Permission::RevealPayload, &id).await);
    let event = match api::reveal_for(&console, &s.principal, id.clone()).await {
        Ok(e) => e,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let pretty = serde_json::to_string_pretty(&event).unwrap_or_default();
    let b = format!(
        "<div class=\"notice warn\" role=\"status\">Decrypted payload of delivery <code>{}</code>. \
         This reveal was recorded in the audit log. Do not copy patient data elsewhere.</div>\
         <pre class=\"payload\" id=\"payload\" tabindex=\"0\" aria-label=\"Decrypted payload\">{}</pre><p><a href=\"/deliveries/{}\">Back to the delivery</a></p>",
        esc(&id),
        esc(&pretty),
        esc(&id)
    );
    html(StatusCode::OK, page("Payload", Some(&s), "/deliveries", &b))
}

pub(super) async fn replay(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = or_return!(delivery_form(&console, &req, &form.csrf, Permission::Requeue, &id).await);
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

/// The guard of a form on one delivery: session, CSRF token, then `perm`.
async fn delivery_form(
    console: &web::Data<Console>,
    req: &HttpRequest,
    csrf: &str,
    perm: Permission,
    id: &str,
) -> Result<Session, HttpResponse> {
    form_guard(console, req, csrf, perm, ("delivery", Some(id.to_owned()))).await
}
