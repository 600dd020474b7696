//! `/api/alerts`: the console alerts for automation — list them, acknowledge one. The same
//! acknowledgement the alerts page uses ([`acknowledge_for`]): audited by the store in the
//! transaction that changes the state, then sent to the notifiers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::api::guard;
use super::auth::{Permission, Principal};
use super::{ApiError, Console};
use crate::store::alerts::Alert;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/alerts", web::get().to(list))
        .route("/api/alerts/{id}/acknowledge", web::post().to(acknowledge));
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// How many resolved alerts to include besides the unresolved ones (default 50).
    resolved: Option<usize>,
}

/// Every unresolved alert and the newest resolved ones (at most 1000).
async fn list(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    guard(&console, &req, Permission::ReadMetadata, ("alert", None)).await?;
    let alerts = console
        .store
        .alerts()
        .list_alerts(q.resolved.unwrap_or(50).min(1000))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "alerts": alerts })))
}

async fn acknowledge(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = guard(&console, &req, Permission::Requeue, ("alert", None)).await?;
    match acknowledge_for(&console, &p, path.into_inner()).await? {
        Some(alert) => Ok(HttpResponse::Ok().json(json!({ "alert": alert }))),
        // Known but not open: already acknowledged or resolved.
        None => Ok(HttpResponse::Conflict().json(json!({ "error": "not open" }))),
    }
}

/// Acknowledge alert `id` for `p`: `None` when it is not open any more, `NotFound` for an
/// unknown id. An id that is not an alert id is not found (it is never echoed).
pub(super) async fn acknowledge_for(
    console: &Console,
    p: &Principal,
    id: String,
) -> Result<Option<Alert>, ApiError> {
    let well_formed = id.strip_prefix("alr_").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !well_formed {
        return Err(ApiError::NotFound);
    }
    let who = p.requester();
    match &console.setup.alerts {
        Some(alerts) => alerts.acknowledge(id, who).await.map_err(|e| match e {
            crate::alerts::AlertsError::Store(s) => ApiError::from(s),
        }),
        None => Ok(console.store.alerts().acknowledge_alert(id, who).await?),
    }
}
