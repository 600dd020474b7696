//! The handler trait, what one invocation is told ([`Context`]) and what it returns
//! ([`Outcome`] or [`HandlerError`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::template::Tz;
use crate::Event;

/// Outputs of earlier handlers of the same route, by handler name:
/// `{"crm": {"data": {…}, "status": 201}}`, read in templates as `app_data.crm.data.id`.
pub type AppData = serde_json::Map<String, serde_json::Value>;

/// What wardhook tells a handler about this invocation besides the event itself.
#[derive(Debug, Clone)]
pub struct Context {
    delivery_id: String,
    handler_name: String,
    idempotency_key: String,
    attempt: u32,
    deadline: Option<Instant>,
    app_data: AppData,
    now: DateTime<Utc>,
    time_zone: Tz,
    /// Opens captured artifacts; absent for handlers that may not see PHI.
    artifact_source: Option<std::sync::Arc<dyn crate::artifacts::ArtifactSource>>,
}

impl Context {
    /// The context of attempt `attempt` (1 on the first) of `handler_name` for the delivery
    /// `delivery_id`. The time is taken now, in UTC; no deadline, no app data.
    pub fn new(delivery_id: &str, handler_name: &str, attempt: u32) -> Self {
        Self {
            delivery_id: delivery_id.to_owned(),
            handler_name: handler_name.to_owned(),
            idempotency_key: idempotency_key(delivery_id, handler_name),
            attempt,
            deadline: None,
            app_data: AppData::new(),
            now: Utc::now(),
            time_zone: Tz::UTC,
            artifact_source: None,
        }
    }

    /// Let this invocation open the delivery's captured artifacts through `source`.
    pub fn with_artifact_source(
        mut self,
        source: std::sync::Arc<dyn crate::artifacts::ArtifactSource>,
    ) -> Self {
        self.artifact_source = Some(source);
        self
    }

    /// Take the artifact opener away (and give it back with [`Context::with_artifact_source`]):
    /// a `phi = "none"` handler must not read recordings.
    pub fn take_artifact_source(
        &mut self,
    ) -> Option<std::sync::Arc<dyn crate::artifacts::ArtifactSource>> {
        self.artifact_source.take()
    }

    /// The artifacts the route's `capture` step stored for this delivery, by reference.
    pub fn artifacts(&self) -> Vec<crate::artifacts::ArtifactRef> {
        crate::artifacts::from_app_data(&self.app_data)
    }

    /// A decrypted stream of artifact `id` of this delivery (the read is audited). Permanent
    /// failure when this handler may not see PHI or the artifact is not this delivery's.
    pub async fn open_artifact(
        &self,
        id: &str,
    ) -> Result<Box<dyn crate::artifacts::ArtifactStream>, HandlerError> {
        let Some(source) = &self.artifact_source else {
            return Err(HandlerError::permanent(format!(
                "handler {} may not open artifacts (phi = \"none\", or no capture configured)",
                self.handler_name
            )));
        };
        source.open(&self.delivery_id, &self.handler_name, id).await
    }

    /// Give up on the invocation at `deadline` (handlers shorten their own timeouts to it).
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The outputs of the route's earlier handlers.
    pub fn with_app_data(mut self, app_data: AppData) -> Self {
        self.app_data = app_data;
        self
    }

    /// The time templates see as `now`, shown in `time_zone`.
    pub fn with_time(mut self, now: DateTime<Utc>, time_zone: Tz) -> Self {
        self.now = now;
        self.time_zone = time_zone;
        self
    }

    /// `delivery_id` + handler name: the same on every attempt of this handler for this
    /// delivery, so the destination can discard repeats (sent as `Idempotency-Key` by `http`).
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// 1 on the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the dispatcher stops waiting for this invocation, if it set a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left before the deadline, capped at `limit` (a handler's own timeout).
    pub fn time_left(&self, limit: Duration) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(limit),
            None => limit,
        }
    }

    /// Outputs of earlier handlers of the same route.
    pub fn app_data(&self) -> &AppData {
        &self.app_data
    }

    /// Forget the outputs of earlier handlers (a `phi = "none"` handler must not see them).
    pub fn clear_app_data(&mut self) {
        self.app_data.clear();
    }

    /// Record `handler_name`'s outcome so later handlers of the route can read it. The
    /// dispatcher calls this between handlers.
    pub fn record_output(&mut self, handler_name: &str, outcome: &Outcome) {
        self.app_data
            .insert(handler_name.to_owned(), outcome.app_data_entry());
    }

    /// The time templates see as `now`.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The zone `now` is shown in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// Template variables for `event` in this context.
    pub fn template_vars(&self, event: &Event) -> crate::template::Vars {
        crate::template::Vars::new(event, &self.app_data, self.now, self.time_zone)
    }
}

/// The idempotency key of a handler for a delivery: `<delivery_id>:<handler>`.
pub fn idempotency_key(delivery_id: &str, handler_name: &str) -> String {
    format!("{delivery_id}:{handler_name}")
}

/// A handler's success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Data later handlers of the same route can read as `app_data.<handler>.data`; stored
    /// encrypted with the attempt.
    pub data: Option<serde_json::Value>,
    /// The destination's HTTP status, for the attempt record.
    pub status: Option<u16>,
    /// The destination host (or program name) for the audit record; never a URL with query.
    pub destination: Option<String>,
}

impl Outcome {
    /// A success with nothing to report.
    pub fn done() -> Self {
        Self::default()
    }

    /// Attach data for later handlers.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Attach the destination's HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Attach the destination host.
    pub fn with_destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into());
        self
    }

    /// The value stored under `app_data.<handler>`: `{"data": …, "status": …}`.
    pub fn app_data_entry(&self) -> serde_json::Value {
        let mut entry = serde_json::Map::new();
        entry.insert(
            "data".into(),
            self.data.clone().unwrap_or(serde_json::Value::Null),
        );
        if let Some(s) = self.status {
            entry.insert("status".into(), s.into());
        }
        serde_json::Value::Object(entry)
    }
}

/// Why a handler invocation failed, decided once at the handler boundary: the dispatcher only
/// needs to know whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure (network error, timeout, 408, 429, 5xx): try again later.
    #[error("retryable: {reason}")]
    Retryable {
        /// What went wrong, without payload data ("HTTP 503 from crm.internal").
        reason: String,
        /// The destination's requested delay (`Retry-After`), if it gave one. The dispatcher
        /// never waits longer than [`crate::limits::MAX_RETRY_AFTER`] on its account.
        retry_after: Option<Duration>,
    },
    /// A failure that will not go away by retrying (other 4xx, bad configuration, a template
    /// variable the event does not have).
    #[error("permanent: {reason}")]
    Permanent {
        /// What went wrong, without payload data.
        reason: String,
    },
}

impl HandlerError {
    /// A retryable error without a requested delay.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }

    /// Whether the dispatcher should schedule another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// The reason, without the class.
    pub fn reason(&self) -> &str {
        match self {
            Self::Retryable { reason, .. } | Self::Permanent { reason } => reason,
        }
    }

    /// Classify a non-success HTTP status from `destination` (a host name): 408, 429 and 5xx
    /// are retryable (honouring `Retry-After`, in seconds or as an HTTP date, clamped by
    /// [`crate::limits::parse_retry_after`]), every other
    /// status is permanent. Returns `None` for 1xx–3xx, which are not failures.
    pub fn from_http_status(
        status: u16,
        retry_after: Option<&str>,
        destination: &str,
    ) -> Option<Self> {
        if status < 400 {
            return None;
        }
        let reason = format!("HTTP {status} from {destination}");
        Some(if status == 408 || status == 429 || status >= 500 {
            Self::Retryable {
                reason,
                retry_after: retry_after
                    .and_then(|v| crate::limits::parse_retry_after(v, Utc::now())),
            }
        } else {
            Self::Permanent { reason }
        })
    }

    /// A network failure talking to `destination`: always retryable.
    pub fn network(destination: &str, timed_out: bool) -> Self {
        let what = if timed_out {
            "timeout"
        } else {
            "network error"
        };
        Self::retryable(format!("{what} talking to {destination}"))
    }
}

/// A destination for events: a CRM, a chat channel, a program.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + std::fmt::Debug {
    /// The configured name of this handler instance.
    fn name(&self) -> &str;

    /// Deliver one event. Called at least once per matching route; use
    /// [`Context::idempotency_key`] to make repeats harmless. Decide retryable vs permanent
    /// here, once: the dispatcher does not look inside errors.
    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError>;

    /// What the operator should be told when the server starts with this handler, e.g. that
    /// the config lets it send without TLS. Handlers are built while the config is read, before
    /// logging is set up, so a warning logged at build time would be lost: `serve` logs these
    /// once logging runs, and `check-config` prints them. None by default.
    fn startup_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified_once() {
        let cases: &[(u16, Option<bool>)] = &[
            (200, None),
            (204, None),
            (302, None),
            (400, Some(false)),
            (401, Some(false)),
            (404, Some(false)),
            (408, Some(true)),
            (409, Some(false)),
            (422, Some(false)),
            (429, Some(true)),
            (500, Some(true)),
            (503, Some(true)),
        ];
        for (status, retry) in cases {
            let got = HandlerError::from_http_status(*status, None, "crm.internal");
            assert_eq!(
                got.as_ref().map(HandlerError::is_retryable),
                *retry,
                "{status}"
            );
        }
        let e = HandlerError::from_http_status(503, Some("7"), "crm.internal").expect("err");
        assert_eq!(
            e,
            HandlerError::Retryable {
                reason: "HTTP 503 from crm.internal".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
    }

    #[test]
    fn idempotency_key_is_delivery_and_handler() {
        let ctx = Context::new("dlv_1", "crm", 3);
        assert_eq!(ctx.idempotency_key(), "dlv_1:crm");
        assert_eq!(ctx.attempt(), 3);
    }
}
