//! The console's page shell and the helpers every page shares: the HTML frame with its
//! navigation and sign-out form, escaping, status badges, error pages and the embedded
//! stylesheet. Pages (in [`super::pages`]) render only their own `<main>` content.
//!
//! No scripts and no external assets (the CSS is embedded with `include_str!`), so the console
//! works offline behind a firewall and a strict Content-Security-Policy holds. Status is always
//! written as a word beside its colour, so it reads without colour.

use std::fmt::Write as _;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

use super::auth::{Permission, Session};
use super::ApiError;

const STYLE: &str = include_str!("assets/style.css");

/// HTML-escape text (names, ids, reasons, and revealed payloads).
pub(super) fn esc(s: &str) -> String {
    wardhook_sdk::template::html_escape(s)
}

/// Percent-encode a query value.
pub(super) fn qv(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A one-button POST form carrying the session's CSRF token. `action` and `button` (the
/// button's attributes after `type="submit"`, e.g. ` id="replay"`) are written as given, so
/// the caller escapes what it puts in them; `label` is the button's text.
pub(super) fn post_button(action: &str, csrf: &str, button: &str, label: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\"{button}>{label}</button></form>",
        esc(csrf)
    )
}

pub(super) fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

pub(super) fn redirect(to: &str) -> HttpResponse {
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
            ("/calls", "Find a call"),
            ("/deliveries", "Deliveries"),
            ("/dead-letters", "Dead letters"),
            ("/quarantine", "Quarantine"),
            ("/activity", "Sources and handlers"),
            ("/alerts", "Alerts"),
        ];
        if s.principal.role.allows(Permission::Requeue) {
            links.push(("/bulk", "Bulk actions"));
        }
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
            "<div class=\"who\"><span>Signed in as <strong>{}</strong> ({})</span>{}</div>",
            esc(&s.principal.name),
            s.principal.role.as_str(),
            post_button("/logout", &s.csrf, "", "Sign out")
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · wardhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         </head><body><a class=\"skip\" href=\"#main\">Skip to the content</a>\
         <header><span class=\"brand\">wardhook</span>{nav}{who}</header>\
         {banner}<main id=\"main\" tabindex=\"-1\"><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        banner = alerts_banner(session),
    )
}

/// The unresolved alerts above every signed-in page: how many, each one's line and state, and
/// the way to the alerts page. Nothing when there is none.
fn alerts_banner(session: Option<&Session>) -> String {
    let Some(alerts) = session.map(|s| &s.alerts).filter(|a| !a.is_empty()) else {
        return String::new();
    };
    let unacknowledged = alerts
        .iter()
        .filter(|a| a.state == crate::store::alerts::AlertState::Open)
        .count();
    let class = if unacknowledged > 0 { " bad" } else { "" };
    let n = alerts.len();
    let mut out = format!(
        "<section class=\"alerts-banner{class}\" aria-label=\"Open alerts\">\
         <strong>{n} open alert{}</strong> ({unacknowledged} not acknowledged)<ul>",
        if n == 1 { "" } else { "s" }
    );
    for a in alerts.iter().take(5) {
        let _ = write!(
            out,
            "<li>{} {}</li>",
            badge(a.state.as_str()),
            esc(&a.summary)
        );
    }
    if n > 5 {
        let _ = write!(out, "<li>and {} more</li>", n - 5);
    }
    out.push_str("</ul><a href=\"/alerts\">Review and acknowledge alerts</a></section>");
    out
}

pub(super) fn badge(status: &str) -> String {
    let (class, mark) = match status {
        "done" | "accepted" | "ok" | "closed" | "success" | "resolved" => ("ok", "✓"),
        "pending" | "waiting" | "running" | "retryable" | "half_open" | "duplicate"
        | "acknowledged" => ("warn", "…"),
        "dead" | "permanent" | "open" | "failure" | "denied" | "quarantined" => ("bad", "✗"),
        _ => ("muted", "·"),
    };
    format!(
        "<span class=\"badge {class}\">{mark} {}</span>",
        esc(&status.replace('_', " "))
    )
}

pub(super) fn rate_text(r: Option<f64>) -> String {
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

/// The embedded stylesheet.
pub(super) async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
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
}
