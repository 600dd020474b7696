//! The sign-in page (an admin token exchanged for a session cookie) and sign-out.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::guard::{session_cookie, set_cookie, CsrfForm};
use crate::admin::api;
use crate::admin::auth::csrf_matches;
use crate::admin::layout::{api_error_page, esc, html};
use crate::admin::{ApiError, Console};

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
    let idle = console.sessions.idle().as_secs();
    let idle_text = if idle >= 60 && idle % 60 == 0 {
        format!("{} minutes", idle / 60)
    } else {
        format!("{idle} seconds")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in · wardhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         </head><body><header><span class=\"brand\">wardhook</span></header><main>\
         <form class=\"login\" method=\"post\" action=\"/login\"><h1>Operator console</h1>{note}\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required \
          placeholder=\"wardhook_tk…\">\
         <button type=\"submit\" id=\"sign-in\">Sign in</button>\
         <p class=\"muted\">Create a token on the host with <code>wardhook tokens create</code>. \
         Sessions end after {idle_text} without activity.</p></form></main></body></html>"
    )
}

pub(super) async fn login_page(
    console: web::Data<Console>,
    q: web::Query<LoginQuery>,
) -> HttpResponse {
    let note = q
        .expired
        .as_ref()
        .map(|_| ("warn", "You were signed out after a period of inactivity."));
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
        Err(ApiError::RateLimited(secs)) => html(
            StatusCode::TOO_MANY_REQUESTS,
            login_html(
                &console,
                Some((
                    "bad",
                    &format!("Too many failed sign-ins. Try again in {secs} s."),
                )),
            ),
        ),
        Err(ApiError::Unauthorized) => html(
            StatusCode::UNAUTHORIZED,
            login_html(&console, Some(("bad", "That token is not valid."))),
        ),
        Err(e) => api_error_page(&e, None),
    }
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
            }
        }
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header(set_cookie(None))
        .finish()
}
