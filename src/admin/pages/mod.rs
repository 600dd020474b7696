//! The dashboard's pages: server-rendered HTML over the same functions as the API, one file
//! per page, each named after what it shows. The frame around them is [`super::layout`].
//!
//! Sign-in exchanges a token for a session cookie; every state-changing form carries the
//! session's CSRF token ([`guard`]).

/// The session a guard let through, or return the guard's answer (a redirect to sign-in or
/// an error page) from the page handler.
macro_rules! or_return {
    ($guard:expr) => {
        match $guard {
            Ok(session) => session,
            Err(response) => return response,
        }
    };
}

mod activity;
mod alerts;
mod audit;
mod bulk;
mod calls;
mod dead_letters;
mod deliveries;
mod delivery;
mod guard;
pub(super) use guard::page_guard;
mod overview;
mod quarantine;
mod sign_in;

use actix_web::web;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/style.css", web::get().to(super::layout::style))
        .route("/login", web::get().to(sign_in::login_page))
        .route("/login", web::post().to(sign_in::login))
        .route("/logout", web::post().to(sign_in::logout))
        .route("/login/oidc", web::get().to(sign_in::oidc_start))
        .route(
            "/login/oidc/callback",
            web::get().to(sign_in::oidc_callback),
        )
        .route(
            "/login/oidc/complete",
            web::get().to(sign_in::oidc_complete),
        )
        .route("/", web::get().to(overview::overview))
        .route("/calls", web::get().to(calls::calls_page))
        .route("/calls", web::post().to(calls::calls_search))
        .route("/bulk", web::get().to(bulk::bulk_page))
        .route("/bulk/preview", web::post().to(bulk::bulk_preview))
        .route("/bulk/run", web::post().to(bulk::bulk_run))
        .route("/bulk/runs/{id}", web::get().to(bulk::bulk_progress))
        .route("/activity", web::get().to(activity::index))
        .route("/sources/{name}", web::get().to(activity::source))
        .route("/handlers/{name}", web::get().to(activity::handler))
        .route("/deliveries", web::get().to(deliveries::deliveries))
        .route("/deliveries/{id}", web::get().to(delivery::delivery))
        .route("/deliveries/{id}/reveal", web::post().to(delivery::reveal))
        .route("/deliveries/{id}/replay", web::post().to(delivery::replay))
        .route("/dead-letters", web::get().to(dead_letters::dead_letters))
        .route(
            "/dead-letters/retry",
            web::post().to(dead_letters::retry_all),
        )
        .route(
            "/dead-letters/{job}/retry",
            web::post().to(dead_letters::retry_one),
        )
        .route("/quarantine", web::get().to(quarantine::quarantine))
        .route("/alerts", web::get().to(alerts::alerts))
        .route(
            "/alerts/{id}/acknowledge",
            web::post().to(alerts::acknowledge),
        )
        .route("/audit", web::get().to(audit::audit))
        .route("/audit/export", web::post().to(audit::audit_export));
}
