//! Stage 6 of the delivery path: hand stored events to handlers.
//!
//! This module holds everything a dispatch worker calls, minus the queue itself (claiming jobs
//! with a lease and recording attempts live with the store):
//! - [`registry`] builds the configured handlers (`[[handlers]]`) once at start-up;
//! - [`plan`] compiles the routes and answers, per event, which jobs it makes and which
//!   real-time route (if any) answers the sender;
//! - [`filter`] compiles route `when` expressions and matches event-type globs;
//! - [`phi`] enforces minimum necessary: `phi = "none"` handlers never see PHI;
//! - [`invoke`] runs one handler for one job under a deadline and returns the SDK's
//!   `Result<Outcome, HandlerError>`, already classified as retryable or permanent.
//!
//! A worker, per claimed job (delivery × route × handler):
//! 1. decrypt the event; load the outputs of the route's earlier handlers as [`AppData`];
//! 2. `invoke(&*handler, &event, attempt, app_data, deadline)` (a panic in the handler is caught
//!    there and becomes a retryable failure);
//! 3. `Ok(outcome)` → done; store `outcome.app_data_entry()` (encrypted) for later handlers;
//!    `Err(Retryable { retry_after, .. })` → next attempt at `max(schedule, retry_after)`;
//!    `Err(Permanent { .. })` or attempts exhausted → dead letter. Error reasons name hosts
//!    and variables, never payload values, so they may be logged and audited.

/// The route filter language lives beside config (which compiles it for errors); dispatch runs it.
pub(crate) use crate::filter;
pub mod phi;
pub mod plan;
pub mod realtime;
pub mod registry;
pub mod worker;
#[cfg(test)]
mod worker_tests;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use wardhook_sdk::template::Tz;
use wardhook_sdk::{AppData, Context, Event, Handler, HandlerError, Outcome};

pub use filter::{event_type_matches, Filter, FilterError};
pub use registry::build_handlers;

/// Run `handler` once for `event`: attempt `attempt` (1 on the first), with the outputs of the
/// route's earlier handlers, stopped at `deadline` even if the handler ignores it (then
/// retryable). A panic inside the handler is caught and becomes a retryable error with the
/// fixed reason `handler <name> panicked` (counted in `wardhook_handler_panics_total`).
/// Templates see `now` in UTC; use [`invoke_at`] for a clinic time zone.
pub async fn invoke(
    handler: &dyn Handler,
    event: &Event,
    attempt: u32,
    app_data: AppData,
    deadline: Instant,
) -> Result<Outcome, HandlerError> {
    invoke_at(
        handler,
        event,
        attempt,
        app_data,
        deadline,
        Utc::now(),
        Tz::UTC,
    )
    .await
}

/// [`invoke`] with an explicit time and time zone for `now` in templates.
pub async fn invoke_at(
    handler: &dyn Handler,
    event: &Event,
    attempt: u32,
    app_data: AppData,
    deadline: Instant,
    now: DateTime<Utc>,
    time_zone: Tz,
) -> Result<Outcome, HandlerError> {
    let ctx = Context::new(&event.delivery_id, handler.name(), attempt)
        .with_deadline(deadline)
        .with_app_data(app_data)
        .with_time(now, time_zone);
    invoke_in_context(handler, event, ctx, deadline).await
}

/// [`invoke_at`] with a context the caller built (the worker adds the artifact opener).
pub(crate) async fn invoke_in_context(
    handler: &dyn Handler,
    event: &Event,
    mut ctx: Context,
    deadline: Instant,
) -> Result<Outcome, HandlerError> {
    let budget = deadline.saturating_duration_since(Instant::now());
    // A little grace so a handler that honours the deadline reports its own timeout reason.
    let hard_stop = budget.saturating_add(Duration::from_millis(500));
    // A panicking handler must cost one attempt, not the worker (or the real-time request)
    // that called it. Nothing the handler touched outlives the call except `ctx`, which is
    // dropped with it, so observing its state after an unwind is not possible.
    let call = AssertUnwindSafe(handler.handle(event, &mut ctx)).catch_unwind();
    match tokio::time::timeout(hard_stop, call).await {
        Ok(Ok(result)) => result,
        Ok(Err(_panic)) => Err(handler_panicked(handler.name())),
        Err(_) => Err(HandlerError::retryable(format!(
            "handler {} did not finish within {} s",
            handler.name(),
            budget.as_secs()
        ))),
    }
}

/// The failure recorded for a handler invocation that panicked: a fixed reason naming the
/// configured handler only. The panic's own message is dropped unread — it may quote payload
/// text. Retryable, so the job goes on along its schedule (a handler that always panics ends
/// in the dead letters like any other persistent failure).
fn handler_panicked(handler: &str) -> HandlerError {
    crate::metrics::handler_panic(handler);
    tracing::error!(
        handler,
        "handler panicked; the attempt is recorded as failed"
    );
    HandlerError::retryable(format!("handler {handler} panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sleepy;

    #[wardhook_sdk::async_trait]
    impl Handler for Sleepy {
        fn name(&self) -> &str {
            "sleepy"
        }
        async fn handle(&self, _: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
            if ctx.app_data().contains_key("crm") {
                return Ok(
                    Outcome::done().with_data(serde_json::json!({"key": ctx.idempotency_key()}))
                );
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Outcome::done())
        }
    }

    fn event() -> Event {
        Event {
            delivery_id: "dlv_5".into(),
            source: "s".into(),
            event_type: "call.ended".into(),
            call_id: None,
            occurred_at: None,
            received_at: Utc::now(),
            caller: wardhook_sdk::Caller::default(),
            data: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn invoke_passes_app_data_and_the_idempotency_key() {
        let mut app = AppData::new();
        app.insert("crm".into(), serde_json::json!({"data": {"id": 1}}));
        let out = invoke(
            &Sleepy,
            &event(),
            2,
            app,
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("ok");
        assert_eq!(out.data, Some(serde_json::json!({"key": "dlv_5:sleepy"})));
    }

    #[tokio::test]
    async fn invoke_stops_a_handler_that_ignores_its_deadline() {
        let err = invoke(
            &Sleepy,
            &event(),
            1,
            AppData::new(),
            Instant::now() + Duration::from_millis(100),
        )
        .await
        .expect_err("stopped");
        assert!(err.is_retryable());
    }
}
