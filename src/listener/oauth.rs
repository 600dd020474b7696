//! `POST /oauth/token`: the OAuth2 client-credentials grant for senders that can only fetch
//! bearer tokens (the issuer is built by `verify` with the sources' verifiers).

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::body::{read_capped, BodyError};
use super::{error_response, AppState};

/// Cap on an OAuth2 token request body: a few form fields.
const MAX_TOKEN_REQUEST: usize = 4096;

/// `POST /oauth/token`: the client-credentials grant for senders that can only fetch bearer
/// tokens. 404 unless some source has `scheme.oauth_clients`.
pub(super) async fn oauth_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let live = state.live();
    let Some(issuer) = live.oauth.as_ref() else {
        return error_response(StatusCode::NOT_FOUND, "not found");
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_capped(payload, declared, MAX_TOKEN_REQUEST).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { .. }) => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload too large")
        }
        Err(BodyError::Broken) => return error_response(StatusCode::BAD_REQUEST, "bad request"),
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let answer = issuer.token_endpoint(&body, authorization, Utc::now());
    tracing::info!(status = answer.status, "oauth token request");
    let mut res =
        HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST));
    for (name, value) in &answer.headers {
        res.insert_header((name.as_str(), value.as_str()));
    }
    res.content_type("application/json").body(answer.body)
}
