//! Pages per source and per handler: an index of both, and for each one its volume, failures
//! and latency over the last 24 hours and 7 days as SVG charts (see
//! [`crate::admin::timecharts`]), the same numbers in a table, and its recent errors by class.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::guard::page_guard;
use crate::admin::activity::{self, Activity, Subject, Window};
use crate::admin::auth::Permission;
use crate::admin::layout::{api_error_page, esc, html, page, qv};
use crate::admin::timecharts;
use crate::admin::Console;

pub(super) async fn index(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let s =
        or_return!(page_guard(&console, &req, Permission::ReadMetadata, ("source", None)).await);
    let view = console.setup.view();
    let mut b = String::from(
        "<p class=\"muted\">Volume, failures and latency of each source and handler over the \
         last 24 hours and 7 days, from stored data.</p><div class=\"cols\"><section \
         aria-labelledby=\"h-sources\"><h2 id=\"h-sources\">Sources</h2><ul class=\"links\">",
    );
    for n in &view.sources {
        let _ = write!(b, "<li><a href=\"/sources/{}\">{}</a></li>", qv(n), esc(n));
    }
    b.push_str(
        "</ul></section><section aria-labelledby=\"h-handlers\"><h2 id=\"h-handlers\">Handlers</h2>\
         <ul class=\"links\">",
    );
    for n in &view.handlers {
        let _ = write!(b, "<li><a href=\"/handlers/{}\">{}</a></li>", qv(n), esc(n));
    }
    b.push_str("</ul></section></div>");
    html(
        StatusCode::OK,
        page("Sources and handlers", Some(&s), "/activity", &b),
    )
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v} ms"))
}

fn summary(a: &Activity, what: &str) -> String {
    let mut b = format!(
        "<div class=\"table-wrap\"><table id=\"activity-summary\"><caption class=\"muted\">\
         Totals per window</caption><thead><tr><th scope=\"col\">window</th>\
         <th scope=\"col\">{what}</th><th scope=\"col\">failed</th><th scope=\"col\">latency p50</th>\
         <th scope=\"col\">latency p95</th></tr></thead><tbody>"
    );
    for (label, w) in [("last 24 hours", &a.day), ("last 7 days", &a.week)] {
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{label}</th><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            w.total,
            w.failed,
            ms(w.p50_ms),
            ms(w.p95_ms)
        );
    }
    b.push_str("</tbody></table></div>");
    b
}

fn charts(w: &Window, what: &str, words: &str) -> String {
    let n = w.name;
    format!(
        "<section aria-labelledby=\"h-{n}\"><h2 id=\"h-{n}\">{words}</h2><div class=\"charts\">\
         <figure>{}</figure><figure>{}</figure></div></section>",
        timecharts::volume(&format!("vol-{n}"), what, w),
        timecharts::latency(&format!("lat-{n}"), w),
    )
}

fn errors(a: &Activity) -> String {
    let mut b = String::from(
        "<section aria-labelledby=\"h-errors\"><h2 id=\"h-errors\">Errors by class, last 7 days</h2>\
         <div class=\"table-wrap\"><table id=\"errors\"><thead><tr><th scope=\"col\">class</th>\
         <th scope=\"col\">count</th><th scope=\"col\">latest</th><th scope=\"col\">latest reason</th>\
         </tr></thead><tbody>",
    );
    for e in &a.errors {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            esc(e.class),
            e.count,
            esc(&e.last_at),
            esc(&e.last_reason)
        );
    }
    if a.errors.is_empty() {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">No errors in the last 7 days.</td></tr>");
    }
    b.push_str("</tbody></table></div></section>");
    b
}

async fn subject_page(
    console: web::Data<Console>,
    req: HttpRequest,
    subject: Subject,
    name: String,
) -> HttpResponse {
    let object = match subject {
        Subject::Source => "source",
        Subject::Handler => "handler",
    };
    let s = or_return!(page_guard(&console, &req, Permission::ReadMetadata, (object, None)).await);
    let a = match activity::load(&console, subject, &name).await {
        Ok(a) => a,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let (title, what, note) = match subject {
        Subject::Source => (
            format!("Source {name}"),
            "deliveries",
            "Volume is what the source sent; failed is what was quarantined or rejected; \
             latency is that of the handler attempts its deliveries caused.",
        ),
        Subject::Handler => (
            format!("Handler {name}"),
            "attempts",
            "Volume is the handler's attempts; failed is the attempts that failed; latency is \
             each attempt's duration.",
        ),
    };
    let mut b = format!("<p class=\"muted\">{note} Times are UTC.</p>");
    b.push_str(&summary(&a, what));
    b.push_str(&charts(&a.day, what, "Last 24 hours"));
    b.push_str(&charts(&a.week, what, "Last 7 days"));
    b.push_str(&errors(&a));
    if subject == Subject::Handler {
        let _ = write!(
            b,
            "<p><a href=\"/dead-letters?handler={}\">This handler's dead letters</a> · \
             <a href=\"/bulk\">Bulk actions</a></p>",
            qv(&name)
        );
    }
    html(StatusCode::OK, page(&title, Some(&s), "/activity", &b))
}

pub(super) async fn source(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    subject_page(console, req, Subject::Source, path.into_inner()).await
}

pub(super) async fn handler(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    subject_page(console, req, Subject::Handler, path.into_inner()).await
}
