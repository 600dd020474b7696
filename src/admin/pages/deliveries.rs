//! The deliveries list, filtered by source, status and time.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::guard::page_guard;
use crate::admin::api::ListQuery;
use crate::admin::auth::Permission;
use crate::admin::layout::{api_error_page, badge, esc, html, page};
use crate::admin::{ApiError, Console};

pub(super) fn filters_form(
    action: &str,
    q: &ListQuery,
    sources: &[String],
    with_status: bool,
) -> String {
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

pub(super) async fn deliveries(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    let s =
        or_return!(page_guard(&console, &req, Permission::ReadMetadata, ("delivery", None)).await);
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
