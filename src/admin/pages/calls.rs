//! "Find a call": the search form, one page of matching deliveries, and — when a call id or a
//! caller phone was given — that call's timeline. The form posts (with the session's CSRF
//! token), so a call id or phone number never lands in a URL, the browser history or a proxy
//! log.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{form_guard, page_guard};
use crate::admin::auth::{Permission, Session};
use crate::admin::calls::{search_for, timeline_for, CallKey, CallSearchForm, TimelineEntry};
use crate::admin::layout::{api_error_page, badge, esc, html, page};
use crate::admin::Console;
use crate::store::console_calls::FoundDelivery;

/// Statuses offered in the form: a delivery's or a job's.
const STATUSES: [&str; 7] = [
    "accepted", "purged", "pending", "waiting", "running", "done", "dead",
];

/// The posted form: every field text, as browsers send it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CallsForm {
    csrf: String,
    #[serde(default)]
    call_id: String,
    #[serde(default)]
    caller_phone: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    handler: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    page: String,
}

impl CallsForm {
    fn search(&self) -> CallSearchForm {
        let s = |v: &String| Some(v.clone());
        CallSearchForm {
            call_id: s(&self.call_id),
            caller_phone: s(&self.caller_phone),
            source: s(&self.source),
            event_type: s(&self.event_type),
            status: s(&self.status),
            handler: s(&self.handler),
            since: s(&self.since),
            until: s(&self.until),
            page: self.page.trim().parse().ok(),
            per_page: None,
        }
    }
}

fn select(name: &str, label: &str, options: &[String], chosen: &str) -> String {
    let mut opts = String::from("<option value=\"\">any</option>");
    for o in options {
        let sel = if o == chosen { " selected" } else { "" };
        let _ = write!(opts, "<option value=\"{o}\"{sel}>{o}</option>", o = esc(o));
    }
    format!("<label for=\"f-{name}\">{label}<select id=\"f-{name}\" name=\"{name}\">{opts}</select></label>")
}

fn text_input(name: &str, label: &str, value: &str, placeholder: &str) -> String {
    format!(
        "<label for=\"f-{name}\">{label}<input id=\"f-{name}\" name=\"{name}\" value=\"{}\" \
         placeholder=\"{placeholder}\" autocomplete=\"off\"></label>",
        esc(value)
    )
}

fn search_form(console: &Console, s: &Session, f: &CallsForm) -> String {
    let view = console.setup.view();
    let statuses: Vec<String> = STATUSES.iter().map(|x| (*x).to_owned()).collect();
    format!(
        "<form class=\"filters\" method=\"post\" action=\"/calls\" role=\"search\" \
         aria-label=\"Find a call\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{}{}{}{}{}{}{}{}\
         <button type=\"submit\" id=\"find\">Find</button></form>",
        text_input("call_id", "call id", &f.call_id, "the sender's call id"),
        text_input("caller_phone", "caller phone", &f.caller_phone, "(555) 010-1234"),
        select("source", "source", &view.sources, &f.source),
        text_input("event_type", "event", &f.event_type, "call.ended"),
        select("status", "status", &statuses, &f.status),
        select("handler", "handler", &view.handlers, &f.handler),
        text_input("since", "since", &f.since, "2026-11-22"),
        text_input("until", "until", &f.until, "2026-11-23"),
        csrf = esc(&s.csrf),
    )
}

fn results(rows: &[FoundDelivery]) -> String {
    let mut b = String::from(
        "<h2>Deliveries</h2><div class=\"table-wrap\"><table id=\"calls\"><thead><tr>\
         <th scope=\"col\">received</th><th scope=\"col\">delivery</th><th scope=\"col\">source</th>\
         <th scope=\"col\">event</th><th scope=\"col\">status</th><th scope=\"col\">jobs</th>\
         <th scope=\"col\">dead</th></tr></thead><tbody>",
    );
    for d in rows {
        let _ = write!(
            b,
            "<tr><td class=\"mono\">{}</td><td><a class=\"mono\" href=\"/deliveries/{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&d.meta.received_at),
            esc(&d.meta.id),
            esc(&d.meta.id),
            esc(&d.meta.source),
            esc(&d.meta.event_type),
            badge(&d.meta.status),
            d.jobs,
            d.dead
        );
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"7\" class=\"muted\">No delivery matches.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    b
}

fn timeline(entries: &[TimelineEntry], sees_audit: bool) -> String {
    let mut b = String::from("<h2>Call timeline</h2>");
    if !sees_audit {
        b.push_str("<p class=\"muted\">Audit records are shown to auditors and admins only.</p>");
    }
    b.push_str("<ol class=\"timeline\" id=\"call-timeline\">");
    for e in entries {
        let _ = write!(
            b,
            "<li class=\"kind-{kind}\"><span class=\"mono\">{}</span> <strong>{kind}</strong> {} {} \
             <span class=\"muted\">{}{}</span></li>",
            esc(&e.at),
            esc(&e.what),
            badge(&e.status),
            esc(&e.note),
            e.delivery_id
                .as_deref()
                .map_or_else(String::new, |d| format!(" · delivery {}", esc(d))),
            kind = e.kind,
        );
    }
    if entries.is_empty() {
        b.push_str("<li class=\"muted\">Nothing recorded for this call.</li>");
    }
    b.push_str("</ol>");
    b
}

/// The page `n` button: the same search, another page.
fn page_button(s: &Session, f: &CallsForm, n: usize, label: &str) -> String {
    let mut hidden = String::new();
    for (k, v) in [
        ("call_id", &f.call_id),
        ("caller_phone", &f.caller_phone),
        ("source", &f.source),
        ("event_type", &f.event_type),
        ("status", &f.status),
        ("handler", &f.handler),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            esc(v)
        );
    }
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/calls\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{hidden}\
         <input type=\"hidden\" name=\"page\" value=\"{n}\">\
         <button type=\"submit\" class=\"secondary\">{label}</button></form> ",
        esc(&s.csrf)
    )
}

pub(super) async fn calls_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let s =
        or_return!(page_guard(&console, &req, Permission::ReadMetadata, ("delivery", None)).await);
    let body = format!(
        "{}<p class=\"muted\">Search by the sender's call id or the caller's phone number \
         (each compared only through its blind index; neither is ever stored; a number is found \
         however it is spelled), or by source, event, status, handler and time. Every search is \
         recorded in the audit log, a phone search without the number.</p>",
        search_form(&console, &s, &CallsForm::default())
    );
    html(
        StatusCode::OK,
        page("Find a call", Some(&s), "/calls", &body),
    )
}

pub(super) async fn calls_search(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CallsForm>,
) -> HttpResponse {
    let f = form.into_inner();
    let object = ("delivery", None);
    let s = or_return!(form_guard(&console, &req, &f.csrf, Permission::ReadMetadata, object).await);
    let search = f.search();
    let rows = match search_for(&console, &s.principal, &search).await {
        Ok(r) => r,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let mut b = search_form(&console, &s, &f);
    b.push_str(&results(&rows));
    let pg = search.page();
    if pg > 1 {
        b.push_str(&page_button(&s, &f, pg - 1, "Previous page"));
    }
    if search
        .query()
        .map(|q| rows.len() == q.limit)
        .unwrap_or(false)
    {
        b.push_str(&page_button(&s, &f, pg + 1, "Next page"));
    }
    let key = if !f.call_id.trim().is_empty() {
        Some(CallKey::Id(&f.call_id))
    } else if !f.caller_phone.trim().is_empty() {
        Some(CallKey::Phone(&f.caller_phone))
    } else {
        None
    };
    if let Some(key) = key {
        match timeline_for(&console, &s.principal, key).await {
            Ok(entries) => b.push_str(&timeline(
                &entries,
                s.principal.role.allows(Permission::ReadAudit),
            )),
            Err(e) => return api_error_page(&e, Some(&s)),
        }
    }
    html(StatusCode::OK, page("Find a call", Some(&s), "/calls", &b))
}
