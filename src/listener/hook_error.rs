//! Every answer of `POST /hooks/{source}` other than a success, as one error type: the hook
//! handler returns `Result<HttpResponse, HookError>` and actix renders the error through
//! [`ResponseError`]. Statuses and bodies are the sender's contract (DESIGN "Contracts"); no
//! body here ever echoes payload content.

use std::time::Duration;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Seconds a sender is asked to wait before retrying after a storage failure.
const STORAGE_RETRY_AFTER: &str = "30";

/// Why a hook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No source of that name is configured: 404.
    #[error("unknown source")]
    UnknownSource,
    /// The body is over the source's cap: 413.
    #[error("payload too large")]
    TooLarge,
    /// The body could not be read: 400.
    #[error("bad request")]
    BadRequest,
    /// Missing or invalid signature or token, stale timestamp: 401 without detail (the detail
    /// is in the audit log).
    #[error("unauthorized")]
    Unauthorized,
    /// The client address is not allowed for the source: 403.
    #[error("forbidden")]
    Forbidden,
    /// The source's rate limit, or the client's budget of refused requests, is spent: 429
    /// with `Retry-After`.
    #[error("rate limited")]
    RateLimited(Duration),
    /// Authentic but not normalizable: stored in quarantine, 400 with the reason (envelope paths
    /// only) and the quarantine id.
    #[error("{reason}")]
    Quarantined {
        /// Why, naming envelope paths only.
        reason: String,
        /// The quarantined delivery's id.
        quarantine_id: String,
    },
    /// Storage cannot commit: 503 with `Retry-After`, so the sender retries.
    #[error("storage unavailable")]
    StorageUnavailable,
}

impl HookError {
    /// Storage could not commit: logged here (the reason names no payload content), answered
    /// 503.
    pub(super) fn storage(e: &crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "storage cannot commit; asking the sender to retry");
        Self::StorageUnavailable
    }
}

impl ResponseError for HookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnknownSource => StatusCode::NOT_FOUND,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest | Self::Quarantined { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::Quarantined {
                reason,
                quarantine_id,
            } => res.json(json!({ "error": reason, "quarantine_id": quarantine_id })),
            Self::RateLimited(wait) => {
                // Whole seconds, rounded up, at least 1.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                res.insert_header((header::RETRY_AFTER, secs.max(1).to_string()))
                    .json(json!({ "error": "rate limited" }))
            }
            Self::StorageUnavailable => res
                .insert_header((header::RETRY_AFTER, STORAGE_RETRY_AFTER))
                .json(json!({ "error": "storage unavailable" })),
            other => res.json(json!({ "error": other.to_string() })),
        }
    }
}
