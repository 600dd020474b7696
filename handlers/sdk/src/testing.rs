//! Test helpers for handler authors (feature `testing`): an [`Event`] from a JSON fixture in one
//! call, a handler built from a TOML snippet, a run with a fresh [`Context`], and outcome
//! asserts. These panic with a clear message instead of returning errors: they are for tests.
//!
//! ```ignore
//! let handler = testing::build::<MyCrmFactory>("crm", r#"url = "http://127.0.0.1:9/leads""#);
//! let event = testing::event_from_json(r#"{"event_type": "call.ended", "caller": {"phone": "+15551234567"}}"#);
//! let outcome = testing::run(&*handler, &event).await.expect("delivered");
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::artifacts::{ArtifactRef, ArtifactSource, ArtifactStream};
use crate::phi::{take_phi_settings, MinimumNecessary};
use crate::{
    BuildContext, ConfigProblem, Context, Event, Handler, HandlerError, HandlerFactory, Outcome,
};

/// The fixed "now" of test contexts: 2026-11-22T15:00:00Z (a Sunday).
pub fn test_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_359_600, 0).unwrap_or_default()
}

/// An event from a JSON fixture. Only what the test cares about needs to be there: missing
/// `delivery_id`, `source`, `event_type`, `received_at`, `caller` and `data` get defaults
/// (`dlv_test`, `test`, `call.ended`, [`test_now`], nobody, `{}`).
pub fn event_from_json(json: &str) -> Event {
    let mut value: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => panic!("fixture is not JSON: {e}"),
    };
    let Some(obj) = value.as_object_mut() else {
        panic!("fixture must be a JSON object");
    };
    let defaults = [
        ("delivery_id", serde_json::json!("dlv_test")),
        ("source", serde_json::json!("test")),
        ("event_type", serde_json::json!("call.ended")),
        ("received_at", serde_json::json!(test_now())),
        ("caller", serde_json::json!({})),
        ("data", serde_json::json!({})),
    ];
    for (k, v) in defaults {
        obj.entry(k).or_insert(v);
    }
    match serde_json::from_value(value) {
        Ok(e) => e,
        Err(e) => panic!("fixture is not an Event: {e}"),
    }
}

/// An event from a JSON fixture file (see [`event_from_json`]).
pub fn event_from_file(path: impl AsRef<Path>) -> Event {
    let path = path.as_ref();
    match std::fs::read_to_string(path) {
        Ok(json) => event_from_json(&json),
        Err(e) => panic!("cannot read fixture {}: {e}", path.display()),
    }
}

/// Build a handler as wardhook would from the `[[handlers]]` table `toml` (without `name` and
/// `kind`), including the `phi`/`baa` rule and the minimum-necessary guard. Relative paths are
/// taken from the current directory.
pub fn build<F: HandlerFactory>(name: &str, toml: &str) -> Arc<dyn Handler> {
    match try_build::<F>(name, toml) {
        Ok(h) => h,
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("handler {name:?} did not build:\n  {}", list.join("\n  "))
        }
    }
}

/// Like [`build`], returning the problems instead of panicking (to test config checks).
pub fn try_build<F: HandlerFactory>(
    name: &str,
    toml: &str,
) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
    let mut table: toml::Table =
        toml::from_str(toml).map_err(|e| vec![ConfigProblem::new("", format!("not TOML: {e}"))])?;
    let phi = take_phi_settings(&mut table)?;
    let ctx = BuildContext::new(name, phi, ".");
    let handler = crate::build_handler::<F>(table, &ctx)?;
    Ok(MinimumNecessary::guard(handler, phi))
}

/// A fresh context for the first attempt of `handler` on `event`, at [`test_now`] in UTC.
pub fn context(event: &Event, handler: &dyn Handler) -> Context {
    Context::new(&event.delivery_id, handler.name(), 1)
        .with_time(test_now(), crate::template::Tz::UTC)
}

/// Run `handler` once on `event` with a fresh [`context`].
pub async fn run(handler: &dyn Handler, event: &Event) -> Result<Outcome, HandlerError> {
    run_attempt(handler, event, 1).await
}

/// Run attempt number `attempt` (1 on the first) of `handler` on `event`: what a retry after a
/// failed or lost answer sees, with the same idempotency key as every other attempt.
pub async fn run_attempt(
    handler: &dyn Handler,
    event: &Event,
    attempt: u32,
) -> Result<Outcome, HandlerError> {
    let mut ctx = Context::new(&event.delivery_id, handler.name(), attempt)
        .with_time(test_now(), crate::template::Tz::UTC);
    handler.handle(event, &mut ctx).await
}

/// Run `handler` once on `event` as if the route's `capture` step had stored `artifacts`
/// (`(id, content type, content)`) for the delivery: the context carries their references and
/// an opener serving the content from memory (in a server the content is decrypted from disk
/// and each read audited). A `phi = "none"` handler gets neither, as in a server.
pub async fn run_with_artifacts(
    handler: &dyn Handler,
    event: &Event,
    artifacts: &[(&str, &str, &[u8])],
) -> Result<Outcome, HandlerError> {
    run_with_artifacts_and_reads(handler, event, artifacts)
        .await
        .0
}

/// Like [`run_with_artifacts`], also returning the ids of the artifacts the handler opened, in
/// order: the reads a server would have audited. A handler that fails before it may send
/// should have opened none.
pub async fn run_with_artifacts_and_reads(
    handler: &dyn Handler,
    event: &Event,
    artifacts: &[(&str, &str, &[u8])],
) -> (Result<Outcome, HandlerError>, Vec<String>) {
    let refs: Vec<ArtifactRef> = artifacts
        .iter()
        .map(|(id, content_type, content)| ArtifactRef {
            id: (*id).to_owned(),
            content_type: (*content_type).to_owned(),
            size: content.len() as u64,
            sha256: String::new(),
            field: "RecordingUrl".to_owned(),
        })
        .collect();
    let mut app_data = crate::AppData::new();
    app_data.insert(
        crate::artifacts::CAPTURE_STEP.to_owned(),
        serde_json::json!({"data": {"artifacts": refs}}),
    );
    let source = Arc::new(MemoryArtifacts {
        delivery_id: event.delivery_id.clone(),
        content: artifacts
            .iter()
            .map(|(id, _, c)| ((*id).to_owned(), c.to_vec()))
            .collect(),
        opened: Mutex::new(Vec::new()),
    });
    let mut ctx = context(event, handler)
        .with_app_data(app_data)
        .with_artifact_source(source.clone());
    let result = handler.handle(event, &mut ctx).await;
    let opened = source
        .opened
        .lock()
        .map(|ids| ids.clone())
        .unwrap_or_default();
    (result, opened)
}

/// Stand-in recording content for [`run_with_artifacts`]: a `RIFF…WAVE` header and `len`
/// deterministic bytes that are not all alike, so a truncation or a mix-up changes the hash.
pub fn recording(len: usize) -> Vec<u8> {
    b"RIFF\0\0\0\0WAVE"
        .iter()
        .copied()
        .chain((0..len).map(|i| (i % 251) as u8))
        .collect()
}

/// Artifact content held in memory for [`run_with_artifacts`].
#[derive(Debug)]
struct MemoryArtifacts {
    delivery_id: String,
    content: Vec<(String, Vec<u8>)>,
    /// Every id asked for, in order.
    opened: Mutex<Vec<String>>,
}

struct MemoryStream(Option<Vec<u8>>);

#[async_trait::async_trait]
impl ArtifactStream for MemoryStream {
    async fn next_chunk(&mut self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, HandlerError> {
        Ok(self.0.take().map(zeroize::Zeroizing::new))
    }
}

#[async_trait::async_trait]
impl ArtifactSource for MemoryArtifacts {
    async fn open(
        &self,
        delivery_id: &str,
        _handler: &str,
        artifact_id: &str,
    ) -> Result<Box<dyn ArtifactStream>, HandlerError> {
        if let Ok(mut opened) = self.opened.lock() {
            opened.push(artifact_id.to_owned());
        }
        self.content
            .iter()
            .find(|(id, _)| id == artifact_id && delivery_id == self.delivery_id)
            .map(|(_, c)| Box::new(MemoryStream(Some(c.clone()))) as Box<dyn ArtifactStream>)
            .ok_or_else(|| HandlerError::permanent("no such artifact for this delivery"))
    }
}

/// Asserts on a handler's result.
pub trait ResultExt {
    /// The outcome; panics on an error.
    fn expect_ok(self) -> Outcome;
    /// The requested delay of a retryable error; panics otherwise.
    fn expect_retryable(self) -> Option<Duration>;
    /// The reason of a permanent error; panics otherwise.
    fn expect_permanent(self) -> String;
}

impl ResultExt for Result<Outcome, HandlerError> {
    fn expect_ok(self) -> Outcome {
        match self {
            Ok(o) => o,
            Err(e) => panic!("expected success, got {e}"),
        }
    }

    fn expect_retryable(self) -> Option<Duration> {
        match self {
            Err(HandlerError::Retryable { retry_after, .. }) => retry_after,
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }

    fn expect_permanent(self) -> String {
        match self {
            Err(HandlerError::Permanent { reason }) => reason,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }
}
