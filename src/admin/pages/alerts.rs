//! Alerts: every unresolved alert with its state and an Acknowledge button, and the recently
//! resolved ones. The banner on every page links here.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{form_guard, page_guard};
use crate::admin::alerts_api::acknowledge_for;
use crate::admin::auth::Permission;
use crate::admin::layout::{api_error_page, badge, esc, html, page, redirect};
use crate::admin::{ApiError, Console};
use crate::store::alerts::{Alert, AlertState};

#[derive(Debug, Deserialize)]
pub(super) struct AlertsFlash {
    acknowledged: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AckForm {
    csrf: String,
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub(super) async fn alerts(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<AlertsFlash>,
) -> HttpResponse {
    let s = or_return!(page_guard(&console, &req, Permission::ReadMetadata, ("alert", None)).await);
    let rows = match console
        .store
        .alerts()
        .list_alerts(50)
        .await
        .map_err(ApiError::from)
    {
        Ok(r) => r,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let can_ack = s.principal.role.allows(Permission::Requeue);
    let mut b = String::new();
    match q.acknowledged.as_deref() {
        Some("1") => b.push_str(
            "<div class=\"notice ok\" role=\"status\">Alert acknowledged. It resolves itself when \
             its condition clears.</div>",
        ),
        Some(_) => b.push_str(
            "<div class=\"notice warn\" role=\"status\">That alert was already acknowledged or \
             resolved.</div>",
        ),
        None => {}
    }
    b.push_str(
        "<p class=\"muted\">Built-in rules, evaluated every few seconds; thresholds are in the \
         config's <code>[alerts]</code> section. Each opening, acknowledgement and resolution \
         is in the audit log and sent to the configured notifiers.</p>",
    );
    let (open, resolved): (Vec<&Alert>, Vec<&Alert>) =
        rows.iter().partition(|a| a.state != AlertState::Resolved);
    b.push_str(
        "<h2>Open</h2><div class=\"table-wrap\"><table><thead><tr><th>State</th><th>Alert</th>\
         <th>Rule</th><th>Opened</th><th>Acknowledged</th><th>Action</th></tr></thead><tbody>",
    );
    for a in &open {
        let action = if a.state != AlertState::Open {
            String::new()
        } else if can_ack {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/alerts/{id}/acknowledge\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" class=\"acknowledge\" data-alert=\"{id}\">Acknowledge</button></form>",
                esc(&s.csrf),
                id = esc(&a.id),
            )
        } else {
            "<span class=\"muted\">operators only</span>".to_owned()
        };
        let _ = write!(
            b,
            "<tr id=\"{}\"><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.id),
            badge(a.state.as_str()),
            esc(&a.summary),
            esc(&a.rule),
            when(Some(a.opened_at)),
            when(a.acknowledged_at),
            action
        );
    }
    if open.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"muted\">No open alerts.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    b.push_str(
        "<h2>Recently resolved</h2><div class=\"table-wrap\"><table><thead><tr><th>State</th>\
         <th>Alert</th><th>Rule</th><th>Opened</th><th>Resolved</th></tr></thead><tbody>",
    );
    for a in &resolved {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            badge(a.state.as_str()),
            esc(&a.summary),
            esc(&a.rule),
            when(Some(a.opened_at)),
            when(a.resolved_at),
        );
    }
    if resolved.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">None yet.</td></tr>");
    }
    b.push_str("</tbody></table></div>");
    html(StatusCode::OK, page("Alerts", Some(&s), "/alerts", &b))
}

pub(super) async fn acknowledge(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<AckForm>,
) -> HttpResponse {
    let s = or_return!(
        form_guard(
            &console,
            &req,
            &form.csrf,
            Permission::Requeue,
            ("alert", None)
        )
        .await
    );
    match acknowledge_for(&console, &s.principal, path.into_inner()).await {
        Ok(Some(_)) => redirect("/alerts?acknowledged=1"),
        Ok(None) => redirect("/alerts?acknowledged=0"),
        Err(e) => api_error_page(&e, Some(&s)),
    }
}
