//! The audit log: chain verification status, search, and the audited JSONL/CSV export.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{form_guard, page_guard};
use crate::admin::api::{self, AuditQuery};
use crate::admin::auth::{Permission, Principal};
use crate::admin::layout::{api_error_page, badge, esc, html, page};
use crate::admin::Console;

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

pub(super) async fn audit(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AuditQuery>,
) -> HttpResponse {
    let s = or_return!(page_guard(&console, &req, Permission::ReadAudit, ("audit", None)).await);
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
        "<h2 id=\"h-records\">Records (newest last)</h2><div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-labelledby=\"h-records\"><table><thead><tr><th>seq</th><th>time</th>\
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
pub(super) struct ExportForm {
    csrf: String,
    format: Option<String>,
    since: Option<String>,
    until: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    delivery_id: Option<String>,
    source: Option<String>,
}

pub(super) async fn audit_export(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<ExportForm>,
) -> HttpResponse {
    let f = form.into_inner();
    let s = or_return!(
        form_guard(
            &console,
            &req,
            &f.csrf,
            Permission::ReadAudit,
            ("audit", None),
        )
        .await
    );
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
    match crate::admin::export::export_response(console.clone(), &p, &q).await {
        Ok(response) => response,
        Err(e) => api_error_page(&e, Some(&s)),
    }
}
