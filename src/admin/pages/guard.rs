//! Who may see a page: the session cookie (HttpOnly, Secure, SameSite=Strict), idle logoff,
//! the session's lifetime, revoked tokens ending their sessions, the role check, and the CSRF
//! token every state-changing form carries. Refusals are audited like the API's.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::admin::api;
use crate::admin::auth::{csrf_matches, Permission, Session, SessionState};
use crate::admin::layout::{api_error_page, error_page, redirect};
use crate::admin::{tokens, ApiError, Console, Denial};

pub(super) const COOKIE: &str = "wardhook_session";

/// The session cookie's value from the `Cookie` header. Hand-parsed: one cookie, no need for
/// actix's cookie jar feature.
pub(super) fn session_cookie(req: &HttpRequest) -> Option<String> {
    cookie_value(req, COOKIE)
}

/// The value of the cookie `name` from the `Cookie` header.
pub(super) fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `Set-Cookie` for a session: HttpOnly (no script reads it), Secure, SameSite=Strict (no
/// cross-site request carries it). `None` clears it.
pub(super) fn set_cookie(value: Option<&str>) -> (header::HeaderName, String) {
    let attrs = "Path=/; HttpOnly; Secure; SameSite=Strict";
    let v = match value {
        Some(v) => format!("{COOKIE}={v}; {attrs}"),
        None => format!("{COOKIE}=; {attrs}; Max-Age=0"),
    };
    (header::SET_COOKIE, v)
}

/// The signed-in session, or a redirect to the sign-in page. Revoked or expired tokens end
/// their sessions here.
pub(super) async fn session(
    console: &web::Data<Console>,
    req: &HttpRequest,
) -> Result<Session, HttpResponse> {
    let Some(cookie) = session_cookie(req) else {
        return Err(redirect("/login"));
    };
    let s = match console.sessions.touch(&cookie) {
        Ok(s) => s,
        Err(SessionState::Expired) => return Err(redirect("/login?expired=1")),
        Err(SessionState::LifetimeOver) => return Err(redirect("/login?expired=lifetime")),
        Err(SessionState::None) => return Err(redirect("/login")),
    };
    // A token session ends with its token; a provider session ends at idle logoff, at the end of
    // its lifetime or at sign-out.
    let valid = match s.principal.token_id() {
        Some(id) => tokens::still_valid(console.store.console(), id)
            .await
            .map_err(ApiError::from),
        None => Ok(true),
    };
    match valid {
        Ok(true) => {
            let mut s = s;
            // The banner is a courtesy: a failed read shows no banner rather than no page.
            match crate::alerts::open_alerts(&*console.store).await {
                Ok(open) => s.alerts = open,
                Err(e) => tracing::warn!(error = %e, "cannot read the open alerts for the banner"),
            }
            Ok(s)
        }
        Ok(false) => {
            console.sessions.remove(&cookie);
            Err(redirect("/login"))
        }
        Err(e) => Err(api_error_page(&e, None)),
    }
}

/// Session + role check for a page; a refusal is audited like the API's.
pub(in crate::admin) async fn page_guard(
    console: &web::Data<Console>,
    req: &HttpRequest,
    perm: Permission,
    object: (&'static str, Option<String>),
) -> Result<Session, HttpResponse> {
    let s = session(console, req).await?;
    authorize(console, req, s, perm, object).await
}

/// The role check of a signed-in page or form, audited like the API's.
async fn authorize(
    console: &web::Data<Console>,
    req: &HttpRequest,
    s: Session,
    perm: Permission,
    object: (&'static str, Option<String>),
) -> Result<Session, HttpResponse> {
    let remote = api::client_ip(req);
    match api::authorize(console, &s.principal, perm, remote, object, "dashboard").await {
        Ok(()) => Ok(s),
        Err(e) => Err(api_error_page(&e, Some(&s))),
    }
}

/// A state-changing form: session, CSRF token, then role.
pub(super) async fn form_guard(
    console: &web::Data<Console>,
    req: &HttpRequest,
    csrf: &str,
    perm: Permission,
    object: (&'static str, Option<String>),
) -> Result<Session, HttpResponse> {
    let s = session(console, req).await?;
    if !csrf_matches(&s, csrf) {
        let denial = Denial {
            actor: Some(s.principal.actor()),
            remote: api::client_ip(req),
            reason: "csrf_mismatch",
            status: 403,
            object_kind: Some(object.0),
            delivery_id: object.1.clone(),
            via: "dashboard",
        };
        console.record_denial(&denial).await;
        return Err(error_page(
            StatusCode::FORBIDDEN,
            Some(&s),
            "This form has expired. Reload the page and try again.",
        ));
    }
    authorize(console, req, s, perm, object).await
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    pub(super) csrf: String,
    pub(super) handler: Option<String>,
    pub(super) source: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Flash {
    pub(super) done: Option<u64>,
}
