//! Bulk actions: a filter form, the count and a sample of what it matches, a confirmation, and
//! the run's progress. The preview changes nothing; only the confirmation acts, and it is one
//! audit record (see [`crate::admin::bulk`]).

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{form_guard, page_guard};
use crate::admin::auth::{Permission, Session};
use crate::admin::bulk::{self, BulkForm, Progress};
use crate::admin::layout::{api_error_page, badge, esc, html, page, redirect};
use crate::admin::Console;
use crate::store::console_bulk::{BulkMatch, ERROR_CLASSES};

/// The posted form: every field text, as browsers send it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct BulkPageForm {
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    handler: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    error_class: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

impl BulkPageForm {
    fn bulk(&self) -> BulkForm {
        let s = |v: &String| Some(v.clone());
        BulkForm {
            kind: s(&self.kind),
            handler: s(&self.handler),
            source: s(&self.source),
            error_class: s(&self.error_class),
            since: s(&self.since),
            until: s(&self.until),
        }
    }

    fn fields(&self) -> [(&'static str, &String); 6] {
        [
            ("kind", &self.kind),
            ("handler", &self.handler),
            ("source", &self.source),
            ("error_class", &self.error_class),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }
}

fn select(name: &str, label: &str, options: &[(String, String)], chosen: &str) -> String {
    let mut opts = String::new();
    for (value, text) in options {
        let sel = if value == chosen { " selected" } else { "" };
        let _ = write!(
            opts,
            "<option value=\"{}\"{sel}>{}</option>",
            esc(value),
            esc(text)
        );
    }
    format!(
        "<label for=\"b-{name}\">{label}<select id=\"b-{name}\" name=\"{name}\">{opts}</select></label>"
    )
}

fn any_of(names: &[String]) -> Vec<(String, String)> {
    std::iter::once((String::new(), "any".to_owned()))
        .chain(names.iter().map(|n| (n.clone(), n.clone())))
        .collect()
}

fn filter_form(console: &Console, s: &Session, f: &BulkPageForm) -> String {
    let view = console.setup.view();
    let kinds = vec![
        ("retry".to_owned(), "retry dead letters".to_owned()),
        ("replay".to_owned(), "replay finished jobs".to_owned()),
    ];
    let classes: Vec<String> = ERROR_CLASSES.iter().map(|c| (*c).to_owned()).collect();
    let text = |name: &str, label: &str, value: &str, hint: &str| {
        format!(
            "<label for=\"b-{name}\">{label}<input id=\"b-{name}\" name=\"{name}\" value=\"{}\" \
             placeholder=\"{hint}\" autocomplete=\"off\"></label>",
            esc(value)
        )
    };
    format!(
        "<form class=\"filters\" method=\"post\" action=\"/bulk/preview\" aria-label=\"Bulk filter\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}{}{}{}{}{}\
         <button type=\"submit\" id=\"bulk-preview\">Show what matches</button></form>",
        esc(&s.csrf),
        select("kind", "action", &kinds, &f.kind),
        select("handler", "handler", &any_of(&view.handlers), &f.handler),
        select("source", "source", &any_of(&view.sources), &f.source),
        select("error_class", "error class", &any_of(&classes), &f.error_class),
        text("since", "failed since", &f.since, "2026-11-22T09:00:00Z"),
        text("until", "failed before", &f.until, "2026-11-22T10:00:00Z"),
    )
}

const EXPLAIN: &str = "<p class=\"muted\">Pick a handler, source, error class and the time the \
    jobs failed (or finished, for a replay). Nothing changes until you confirm; the count is taken \
    again then, the action is one audit record naming the filter and the count, and the jobs go \
    back in the queue in batches.</p>";

pub(super) async fn bulk_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let s = or_return!(page_guard(&console, &req, Permission::Requeue, ("job", None)).await);
    let body = format!(
        "{}{EXPLAIN}",
        filter_form(&console, &s, &BulkPageForm::default())
    );
    html(
        StatusCode::OK,
        page("Bulk actions", Some(&s), "/bulk", &body),
    )
}

fn sample_table(m: &BulkMatch) -> String {
    let mut b = String::from(
        "<div class=\"table-wrap\"><table id=\"bulk-sample\"><caption class=\"muted\">The first \
         matching jobs</caption><thead><tr><th scope=\"col\">job</th><th scope=\"col\">delivery</th>\
         <th scope=\"col\">source</th><th scope=\"col\">handler</th><th scope=\"col\">last error</th>\
         <th scope=\"col\">since</th></tr></thead><tbody>",
    );
    for d in &m.sample {
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td><a class=\"mono\" href=\"/deliveries/{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            d.job_id,
            esc(&d.delivery_id),
            esc(d.delivery_id.get(..13).unwrap_or(&d.delivery_id)),
            esc(&d.source),
            esc(&d.handler),
            esc(d.last_error.as_deref().unwrap_or("")),
            esc(d.updated_at.as_deref().unwrap_or("")),
        );
    }
    if m.sample.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"muted\">Nothing matches.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    b
}

pub(super) async fn bulk_preview(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<BulkPageForm>,
) -> HttpResponse {
    let f = form.into_inner();
    let s =
        or_return!(form_guard(&console, &req, &f.csrf, Permission::Requeue, ("job", None)).await);
    let m = match bulk::preview(&console, &f.bulk()).await {
        Ok(m) => m,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let verb = if f.kind == "replay" {
        "Replay"
    } else {
        "Retry"
    };
    let mut b = filter_form(&console, &s, &f);
    let _ = write!(
        b,
        "<h2>What matches</h2><p id=\"bulk-count\" role=\"status\"><strong>{}</strong> job(s) match.</p>",
        m.count
    );
    b.push_str(&sample_table(&m));
    if m.count > 0 {
        let mut hidden = String::new();
        for (k, v) in f.fields() {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v)
            );
        }
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/bulk/run\" class=\"filters confirm\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">{hidden}\
             <button type=\"submit\" id=\"bulk-confirm\">{verb} these {} job(s)</button></form>",
            esc(&s.csrf),
            m.count
        );
    }
    html(StatusCode::OK, page("Bulk actions", Some(&s), "/bulk", &b))
}

pub(super) async fn bulk_run(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<BulkPageForm>,
) -> HttpResponse {
    let f = form.into_inner();
    let s =
        or_return!(form_guard(&console, &req, &f.csrf, Permission::Requeue, ("job", None)).await);
    match bulk::start(&console, &s.principal, &f.bulk(), "dashboard").await {
        Ok(run) => redirect(&format!("/bulk/runs/{}", run.id)),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}

fn progress_body(run: &Progress) -> String {
    use std::sync::atomic::Ordering;
    let done = run.requeued.load(Ordering::Relaxed);
    let batches = run.batches.load(Ordering::Relaxed);
    let state = if run.failed.load(Ordering::Relaxed) {
        badge("failure")
    } else if run.finished.load(Ordering::Relaxed) {
        badge("done")
    } else {
        badge("running")
    };
    format!(
        "<div class=\"notice\" role=\"status\" id=\"bulk-progress\"><p>{state} Re-queued \
         <strong>{done}</strong> of {count} job(s) in {batches} batch(es) ({kind}).</p>\
         <progress max=\"{max}\" value=\"{done}\" aria-label=\"Re-queued so far\"></progress></div>\
         <p><a href=\"/bulk/runs/{id}\">Refresh</a> · <a href=\"/dead-letters\">Dead letters</a> · \
         <a href=\"/deliveries\">Deliveries</a></p>",
        count = run.count,
        max = run.count.max(1),
        kind = run.kind.as_str(),
        id = esc(&run.id),
    )
}

pub(super) async fn bulk_progress(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let s = or_return!(page_guard(&console, &req, Permission::Requeue, ("job", None)).await);
    let Some(run) = bulk::progress(&path) else {
        return api_error_page(&crate::admin::ApiError::NotFound, Some(&s));
    };
    html(
        StatusCode::OK,
        page("Bulk action", Some(&s), "/bulk", &progress_body(&run)),
    )
}
