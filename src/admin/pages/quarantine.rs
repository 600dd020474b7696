//! Quarantine: authentic deliveries that could not be parsed (bodies stay encrypted).

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::deliveries::filters_form;
use super::guard::page_guard;
use crate::admin::api::ListQuery;
use crate::admin::auth::Permission;
use crate::admin::layout::{api_error_page, badge, esc, html, page};
use crate::admin::{ApiError, Console};

pub(super) async fn quarantine(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    let s = or_return!(
        page_guard(
            &console,
            &req,
            Permission::ReadMetadata,
            ("quarantine", None),
        )
        .await
    );
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
