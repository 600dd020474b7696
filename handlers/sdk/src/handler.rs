//! The handler trait and what a handler invocation returns.

use std::time::Duration;

use crate::Event;

/// What wardhook tells a handler about this invocation besides the event itself.
#[derive(Debug, Clone)]
pub struct Context {
    /// `delivery_id` + handler name: the same on every attempt of this handler for this
    /// delivery, so the destination can discard repeats (sent as `Idempotency-Key` by `http`).
    pub idempotency_key: String,
    /// 1 on the first attempt.
    pub attempt: u32,
}

/// A handler's success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Data later handlers of the same route can read as `app_data.<handler>.data`.
    pub data: Option<serde_json::Value>,
}

/// Why a handler invocation failed, decided once at the handler boundary: the dispatcher only
/// needs to know whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure (network error, timeout, 408, 429, 5xx): try again later.
    #[error("retryable: {reason}")]
    Retryable {
        /// What went wrong, without payload data.
        reason: String,
        /// The destination's requested delay (`Retry-After`), if it gave one.
        retry_after: Option<Duration>,
    },
    /// A failure that will not go away by retrying (other 4xx, bad configuration).
    #[error("permanent: {reason}")]
    Permanent {
        /// What went wrong, without payload data.
        reason: String,
    },
}

/// A destination for events: a CRM, a chat channel, a program.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// The configured name of this handler instance.
    fn name(&self) -> &str;

    /// Deliver one event. Called at least once per matching route; use
    /// [`Context::idempotency_key`] to make repeats harmless.
    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError>;
}
