//! The sign-in page (an admin token exchanged for a session cookie, or a round trip through the
//! clinic's OpenID provider) and sign-out.
//!
//! A provider sign-in ends in the same kind of session as a token's: same cookie, idle logoff,
//! lifetime, CSRF token and role checks; only its identity (`oidc:<user>`) differs. Its success, its
//! refusals and its sign-out are audit records naming the user and role, nothing else of the
//! ID token.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{cookie_value, session_cookie, set_cookie, CsrfForm};
use crate::admin::api;
use crate::admin::auth::{csrf_matches, Identity, Principal};
use crate::admin::layout::{api_error_page, esc, html};
use crate::admin::oidc::OidcError;
use crate::admin::{ApiError, Console, Denial};
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, Outcome};

/// The cookie binding a provider round trip to the browser that started it. SameSite=Lax: the
/// provider's redirect back is a cross-site top-level navigation, which a Strict cookie would
/// not travel with; it is scoped to the sign-in paths and lives only as long as a sign-in may.
const OIDC_COOKIE: &str = "wardhook_oidc";

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    expired: Option<String>,
}

fn login_html(console: &Console, note: Option<(&str, &str)>) -> String {
    let note = note
        .map(|(class, text)| {
            format!(
                "<div class=\"notice {class}\" role=\"status\">{}</div>",
                esc(text)
            )
        })
        .unwrap_or_default();
    let idp = console
        .oidc
        .as_ref()
        .map(|o| {
            format!(
                "<p class=\"idp\"><a class=\"button\" id=\"sign-in-oidc\" href=\"/login/oidc\">\
                 Sign in with {}</a></p><p class=\"or\">or with an admin token</p>",
                esc(o.label())
            )
        })
        .unwrap_or_default();
    let idle_text = spoken(console.sessions.idle());
    let lifetime_text = spoken(console.sessions.lifetime());
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in · wardhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         </head><body><header><span class=\"brand\">wardhook</span></header><main>\
         <form class=\"login\" method=\"post\" action=\"/login\"><h1>Operator console</h1>{note}{idp}\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required \
          placeholder=\"wardhook_tk…\">\
         <button type=\"submit\" id=\"sign-in\">Sign in</button>\
         <p class=\"muted\">Create a token on the host with <code>wardhook tokens create</code>. \
         Sessions end after {idle_text} without activity, and {lifetime_text} after signing in.\
         </p></form></main></body></html>"
    )
}

/// A duration as a person says it: "12 hours", "15 minutes", "1 second".
fn spoken(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

pub(super) async fn login_page(
    console: web::Data<Console>,
    q: web::Query<LoginQuery>,
) -> HttpResponse {
    let lifetime_note = format!(
        "Your session reached its limit of {} and ended. Sign in again.",
        spoken(console.sessions.lifetime())
    );
    let note = q.expired.as_deref().map(|why| match why {
        "lifetime" => ("warn", lifetime_note.as_str()),
        _ => ("warn", "You were signed out after a period of inactivity."),
    });
    html(StatusCode::OK, login_html(&console, note))
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let token = form.into_inner().token.trim().to_owned();
    match api::authenticate_token(&console, token, api::client_ip(&req), "dashboard").await {
        Ok(p) => {
            let id = console.sessions.create(p);
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/"))
                .insert_header(set_cookie(Some(&id)))
                .finish()
        }
        Err(ApiError::RateLimited(secs)) => too_many_failures(&console, secs),
        Err(ApiError::Unauthorized) => html(
            StatusCode::UNAUTHORIZED,
            login_html(&console, Some(("bad", "That token is not valid."))),
        ),
        Err(e) => api_error_page(&e, None),
    }
}

/// The sign-in page of an address refused for now after too many failed sign-ins, by token
/// or through the provider alike.
fn too_many_failures(console: &Console, secs: u64) -> HttpResponse {
    let mut res = html(
        StatusCode::TOO_MANY_REQUESTS,
        login_html(
            console,
            Some((
                "bad",
                &format!("Too many failed sign-ins. Try again in {secs} s."),
            )),
        ),
    );
    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// Seconds an address refused for now after too many failed sign-ins must wait.
fn refused_for(console: &Console, req: &HttpRequest) -> Option<u64> {
    api::client_ip(req).and_then(|ip| console.limiter.blocked(ip))
}

pub(super) async fn logout(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    if let Some(c) = session_cookie(&req) {
        if let Ok(s) = console.sessions.touch(&c) {
            if csrf_matches(&s, &form.csrf) {
                console.sessions.remove(&c);
                if matches!(s.principal.identity, Identity::Oidc(_)) {
                    let mut r = AuditRecord::new(
                        s.principal.actor(),
                        Action::ConsoleSignedOut,
                        Outcome::Success,
                    );
                    r.remote_addr = api::client_ip(&req);
                    via_dashboard(&mut r);
                    if let Err(e) = console.append_audit(r).await {
                        tracing::error!(error = %e, "cannot record a console sign-out");
                    }
                }
            }
        }
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header(set_cookie(None))
        .finish()
}

fn via_dashboard(r: &mut AuditRecord) {
    if let Ok(v) = Code::parse("dashboard") {
        r.detail.insert(DetailKey::Via, v);
    }
}

/// `Set-Cookie` of the provider round trip's binding; `None` clears it.
fn oidc_cookie(value: Option<&str>) -> (header::HeaderName, String) {
    let attrs = "Path=/login/oidc; HttpOnly; Secure; SameSite=Lax";
    let v = match value {
        Some(v) => format!(
            "{OIDC_COOKIE}={v}; {attrs}; Max-Age={}",
            crate::admin::oidc::PENDING_TTL.as_secs()
        ),
        None => format!("{OIDC_COOKIE}=; {attrs}; Max-Age=0"),
    };
    (header::SET_COOKIE, v)
}

fn oidc_binding(req: &HttpRequest) -> Option<String> {
    cookie_value(req, OIDC_COOKIE)
}

/// `GET /login/oidc`: send the browser to the provider with a fresh `state`, `nonce` and PKCE
/// challenge. An address refused for too many failed sign-ins is answered at once, without a
/// word to the provider.
pub(super) async fn oidc_start(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let Some(oidc) = console.oidc.as_ref() else {
        return html(
            StatusCode::NOT_FOUND,
            login_html(
                &console,
                Some((
                    "bad",
                    "Sign-in with an identity provider is not configured.",
                )),
            ),
        );
    };
    if let Some(secs) = refused_for(&console, &req) {
        return too_many_failures(&console, secs);
    }
    match oidc.start().await {
        Ok((binding, url)) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url.to_string()))
            .insert_header(oidc_cookie(Some(&binding)))
            .finish(),
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in: the identity provider is unavailable");
            html(
                StatusCode::BAD_GATEWAY,
                login_html(
                    &console,
                    Some(("bad", "The identity provider cannot be reached. Try again, or sign in with a token.")),
                ),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    #[serde(default)]
    state: String,
    error: Option<String>,
}

/// `GET /login/oidc/complete`: the same browser, now on a same-site navigation, picks up the
/// session its verified callback started.
pub(super) async fn oidc_complete(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let id = console
        .oidc
        .as_ref()
        .zip(oidc_binding(&req))
        .and_then(|(o, b)| o.take_handover(&b));
    match id {
        Some(id) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            // Two cookies: appended, since inserting would replace the first.
            .append_header(set_cookie(Some(&id)))
            .append_header(oidc_cookie(None))
            .finish(),
        None => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login"))
            .finish(),
    }
}

/// `GET /login/oidc/callback`: the provider's answer. A verified user whose groups map to a
/// role gets a console session; anything else is refused with a page and an audit record, and
/// counts as a failed sign-in of the client's address (see
/// [`OidcError::counts_as_failed_sign_in`]). An address refused for now is answered without a
/// request to the provider; its pending sign-in is dropped.
pub(super) async fn oidc_callback(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<CallbackQuery>,
) -> HttpResponse {
    let Some(oidc) = console.oidc.as_ref() else {
        return html(StatusCode::NOT_FOUND, login_html(&console, None));
    };
    let q = q.into_inner();
    let binding = oidc_binding(&req);
    if let Some(secs) = refused_for(&console, &req) {
        oidc.abandon(binding.as_deref());
        return too_many_failures(&console, secs);
    }
    let result = if q.error.is_some() {
        oidc.abandon(binding.as_deref());
        Err(OidcError::ProviderRefused)
    } else {
        oidc.finish(binding.as_deref(), &q.state, q.code.as_deref())
            .await
    };
    let remote = api::client_ip(&req);
    match result {
        Ok(signed_in) => {
            if let Some(ip) = remote {
                console.limiter.succeed(ip);
            }
            let principal = Principal {
                identity: Identity::Oidc(signed_in.user.clone()),
                name: signed_in.user,
                role: signed_in.role,
            };
            let mut r =
                AuditRecord::new(principal.actor(), Action::ConsoleSignedIn, Outcome::Success);
            r.remote_addr = remote;
            if let Ok(role) = Code::parse(principal.role.as_str()) {
                r.detail.insert(DetailKey::Result, role);
            }
            via_dashboard(&mut r);
            // No session without its record: a sign-in the trail cannot name does not happen.
            if let Err(e) = console.append_audit(r).await {
                return api_error_page(&e, None);
            }
            let id = console.sessions.create(principal);
            // The session cookie is SameSite=Strict, and this response ends a redirect chain
            // that passed through the provider: a browser may refuse to set (or later send) a
            // Strict cookie from it. So the session waits here for this browser's next request,
            // a same-site navigation the user starts from the page below, which sets the cookie.
            if let Some(b) = binding.as_deref() {
                oidc.hand_over(b, id);
            }
            html(StatusCode::OK, signed_in_html())
        }
        Err(e) => {
            crate::metrics::admin_login_failure();
            if let Some(ip) = remote.filter(|_| e.counts_as_failed_sign_in()) {
                console.limiter.fail(ip);
            }
            tracing::warn!(reason = e.code(), error = %e, "console sign-in through the identity provider refused");
            let actor = match &e {
                OidcError::NoRole { user } => Actor::oidc(user).ok(),
                _ => None,
            };
            let status = match e {
                OidcError::Unavailable(_) | OidcError::Setup(_) => 502,
                OidcError::NoRole { .. } => 403,
                _ => 401,
            };
            let denial = Denial {
                actor,
                remote,
                reason: e.code(),
                status,
                object_kind: None,
                delivery_id: None,
                via: "dashboard",
            };
            console.record_denial(&denial).await;
            let text = match e {
                OidcError::NoRole { .. } => "Your account is not allowed to use this console: none of your groups is given a console role. Ask your IT administrator.",
                OidcError::Expired => "The identity provider's answer had already expired (check the clocks of this server and the provider). Try again.",
                OidcError::NotPending | OidcError::StateMismatch => "This sign-in could not be matched to one started in this browser, or it took too long. Start again.",
                OidcError::ProviderRefused => "The identity provider did not sign you in.",
                OidcError::Unavailable(_) | OidcError::Setup(_) => "The identity provider cannot be reached. Try again, or sign in with a token.",
                _ => "The identity provider's answer could not be verified. Try again.",
            };
            html(
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
                login_html(&console, Some(("bad", text))),
            )
            .map_into_boxed_body()
        }
    }
}

fn signed_in_html() -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
     <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
     <title>Signed in · wardhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
     </head><body><header><span class=\"brand\">wardhook</span></header><main>\
     <p role=\"status\">Signed in. <a id=\"continue\" href=\"/login/oidc/complete\">Continue to the console</a>.</p>\
     </main></body></html>"
        .to_owned()
}
