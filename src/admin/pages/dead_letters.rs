//! Dead letters: the list by handler and source, and retrying one or all shown.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{form_guard, page_guard, CsrfForm};
use crate::admin::api;
use crate::admin::auth::Permission;
use crate::admin::layout::{api_error_page, badge, esc, html, page, post_button, redirect};
use crate::admin::{ApiError, Console};
use crate::store::types::DeadFilter;

#[derive(Debug, Deserialize)]
pub(super) struct DeadQuery {
    source: Option<String>,
    handler: Option<String>,
    done: Option<u64>,
}

pub(super) async fn dead_letters(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<DeadQuery>,
) -> HttpResponse {
    let s = or_return!(page_guard(&console, &req, Permission::ReadMetadata, ("job", None)).await);
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
            post_button(
                &format!("/dead-letters/{}/retry", d.job_id),
                &s.csrf,
                &format!(" class=\"retry\" data-job=\"{}\"", d.job_id),
                "Retry",
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

pub(super) async fn retry_one(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let filter = DeadFilter {
        job_id: Some(path.into_inner()),
        ..DeadFilter::default()
    };
    retry(&console, &req, &form.csrf, filter).await
}

pub(super) async fn retry_all(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let filter = DeadFilter {
        handler: form.handler.clone().filter(|x| !x.is_empty()),
        source: form.source.clone().filter(|x| !x.is_empty()),
        job_id: None,
        limit: 0,
    };
    retry(&console, &req, &form.csrf, filter).await
}

/// Retry the dead letters `filter` selects (audited by the store) and go back to the list.
async fn retry(
    console: &web::Data<Console>,
    req: &HttpRequest,
    csrf: &str,
    filter: DeadFilter,
) -> HttpResponse {
    let object = ("job", None);
    let s = or_return!(form_guard(console, req, csrf, Permission::Requeue, object).await);
    match api::retry_for(console, &s.principal, filter).await {
        Ok(n) => redirect(&format!("/dead-letters?done={n}")),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}
