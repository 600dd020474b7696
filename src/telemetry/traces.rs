//! OpenTelemetry traces of deliveries, exported over OTLP/HTTP (protobuf) when `[traces]` is
//! configured; off by default, and then nothing here runs on the request path but one `None`
//! check per stage.
//!
//! One trace per delivery, whose trace id *is* the delivery id (a UUID is 16 bytes, like a
//! trace id): the listener and the dispatch workers need not share any state, nothing new is
//! stored, and an operator who has a delivery id from the console, the audit log or an access
//! line has its trace id too. The spans:
//!
//! ```text
//! receipt                      (server span: POST /hooks/{source}, status, outcome)
//! ├── read body · verify · normalize · route
//! ├── commit                   (the durable intake: dedup, encrypt, store, audit, fsync)
//! │   └── handler attempt      (one per attempt, exported when it ends — seconds or hours later)
//! └── real-time reply          (real-time routes only)
//! ```
//!
//! The receipt and commit spans of an accepted delivery have span ids derived from the
//! delivery id, which is how a dispatch worker names the commit span as its attempt's parent.
//! A duplicate delivery adds a second receipt (fresh span ids) to the first delivery's trace.
//! Requests that store nothing (rejected, quarantined, unknown source) have no trace: what an
//! unauthenticated flood can cost stays where it was.
//!
//! Span names and attributes carry ids, source and handler names, statuses, counts and timings
//! only — never a payload value, a header, an event type or a failure reason (reasons can name
//! hosts; they stay in the audited attempt record). `tests/api/otlp.rs` exports to a real OTLP
//! receiver and scans every span for the canary values it sent.
//!
//! Timings are taken with [`Instant`] at stage boundaries and turned into spans once the
//! outcome is known, so a request never holds a span object and the exporter (batches on its
//! own thread, bounded queue: when the collector is down, spans are dropped, never requests
//! slowed) sees only finished spans.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use sha2::{Digest, Sha256};

use crate::config::TracesSettings;

/// Why the trace exporter could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The `[traces] ca` file could not be used.
    #[error("traces.ca: {0}")]
    Ca(String),
    /// The HTTP client or the OTLP exporter could not be built.
    #[error("cannot start the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// Delivery traces: on (an exporter) or off. Cheap to clone.
#[derive(Clone, Default)]
pub struct Traces(Option<Arc<Exporter>>);

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Traces(on)"
        } else {
            "Traces(off)"
        })
    }
}

struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A delivery that was stored, as its receipt span describes it.
#[derive(Debug)]
pub struct Stored<'a> {
    /// The configured source name.
    pub source: &'a str,
    /// The delivery id (the first delivery's, for a duplicate).
    pub delivery_id: &'a str,
    /// `accepted` or `duplicate`.
    pub outcome: &'static str,
    /// Jobs the route plan enqueued.
    pub jobs: usize,
    /// The HTTP status answered.
    pub status: u16,
}

/// One finished handler attempt.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// The delivery the job belongs to.
    pub delivery_id: &'a str,
    /// Its source.
    pub source: &'a str,
    /// The handler's configured name.
    pub handler: &'a str,
    /// The job's row id.
    pub job_id: i64,
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the attempt started.
    pub started: SystemTime,
    /// How long it took.
    pub latency: Duration,
    /// `ok`, `retryable` or `permanent`.
    pub result: &'static str,
    /// The destination's HTTP status, when there was one.
    pub http_status: Option<u16>,
}

/// The stage timings of one request, kept only while traces are on.
#[derive(Debug)]
pub struct Receipt(Option<Clock>);

#[derive(Debug)]
struct Clock {
    wall: SystemTime,
    start: Instant,
    last: Instant,
    stages: Vec<(&'static str, Instant, Instant)>,
}

impl Receipt {
    /// The stage called `name` ended now (it began where the previous one ended).
    pub fn stage(&mut self, name: &'static str) {
        if let Some(c) = &mut self.0 {
            let now = Instant::now();
            c.stages.push((name, c.last, now));
            c.last = now;
        }
    }

    /// Whether timings are being kept (traces are on).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }
}

impl Traces {
    /// No traces: every method is a no-op.
    pub fn off() -> Self {
        Self(None)
    }

    /// Start the exporter for `settings`. The HTTP client is built on a thread of its own (a
    /// blocking client may not be built inside the async runtime); exports run on the batch
    /// processor's thread.
    pub fn start(settings: &TracesSettings) -> Result<Self, TracesError> {
        let settings = settings.clone();
        let built = std::thread::Builder::new()
            .name("wardhook-otlp-setup".into())
            .spawn(move || build_exporter(&settings))
            .map_err(|e| TracesError::Exporter(e.to_string()))?
            .join()
            .map_err(|_| TracesError::Exporter("setup thread panicked".into()))??;
        Ok(Self(Some(Arc::new(built))))
    }

    /// Whether traces are exported.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Start timing a request (nothing is kept while traces are off).
    pub fn receipt(&self) -> Receipt {
        Receipt(self.0.as_ref().map(|_| {
            let now = Instant::now();
            Clock {
                wall: SystemTime::now(),
                start: now,
                last: now,
                stages: Vec::with_capacity(8),
            }
        }))
    }

    /// The trace id of `delivery_id`'s trace, as 32 hex digits, for log lines; `None` while
    /// traces are off.
    pub fn trace_id(&self, delivery_id: &str) -> Option<String> {
        self.0.as_ref()?;
        trace_id_of(delivery_id).map(|t| t.to_string())
    }

    /// Export the receipt of a stored delivery: the receipt span and one child per stage.
    pub fn finish(&self, receipt: Receipt, stored: &Stored<'_>) {
        let (Some(exporter), Some(clock)) = (&self.0, receipt.0) else {
            return;
        };
        let end = Instant::now();
        let at = |t: Instant| clock.wall + t.saturating_duration_since(clock.start);
        let trace_id = trace_id_of(stored.delivery_id);
        let first = stored.outcome == "accepted";
        let ids = trace_id.filter(|_| first).map(|t| {
            (
                derived_span_id(t, b"receipt"),
                derived_span_id(t, b"commit"),
            )
        });
        let mut root = SpanBuilder::from_name("receipt")
            .with_kind(SpanKind::Server)
            .with_start_time(clock.wall)
            .with_attributes([
                KeyValue::new("wardhook.source", stored.source.to_owned()),
                KeyValue::new("wardhook.delivery_id", stored.delivery_id.to_owned()),
                KeyValue::new("wardhook.outcome", stored.outcome),
                KeyValue::new(
                    "wardhook.jobs",
                    i64::try_from(stored.jobs).unwrap_or(i64::MAX),
                ),
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/hooks/{source}"),
                KeyValue::new("http.response.status_code", i64::from(stored.status)),
            ]);
        root.trace_id = trace_id;
        root.span_id = ids.map(|(r, _)| r);
        let mut root = exporter.tracer.build_with_context(root, &Context::new());
        let parent = Context::new().with_remote_span_context(root.span_context().clone());
        for (name, from, to) in clock.stages {
            let mut b = SpanBuilder::from_name(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(at(from))
                .with_attributes([KeyValue::new("wardhook.source", stored.source.to_owned())]);
            if name == "commit" {
                b.span_id = ids.map(|(_, c)| c);
                b = b.with_attributes([
                    KeyValue::new("wardhook.source", stored.source.to_owned()),
                    KeyValue::new("wardhook.delivery_id", stored.delivery_id.to_owned()),
                    KeyValue::new("wardhook.outcome", stored.outcome),
                ]);
            }
            let mut span = exporter.tracer.build_with_context(b, &parent);
            span.end_with_timestamp(at(to));
        }
        root.end_with_timestamp(at(end));
    }

    /// Export one handler attempt as a child of its delivery's commit span.
    pub fn attempt(&self, a: &Attempt<'_>) {
        let Some(exporter) = &self.0 else {
            return;
        };
        let Some(trace_id) = trace_id_of(a.delivery_id) else {
            return;
        };
        let parent = Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            derived_span_id(trace_id, b"commit"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let mut attributes = vec![
            KeyValue::new("wardhook.source", a.source.to_owned()),
            KeyValue::new("wardhook.delivery_id", a.delivery_id.to_owned()),
            KeyValue::new("wardhook.handler", a.handler.to_owned()),
            KeyValue::new("wardhook.job_id", a.job_id),
            KeyValue::new("wardhook.attempt", i64::from(a.attempt)),
            KeyValue::new("wardhook.result", a.result),
        ];
        if let Some(status) = a.http_status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        let builder = SpanBuilder::from_name("handler attempt")
            .with_kind(SpanKind::Client)
            .with_start_time(a.started)
            .with_attributes(attributes)
            .with_status(if a.result == "ok" {
                Status::Ok
            } else {
                Status::error(a.result)
            });
        let mut span = exporter.tracer.build_with_context(builder, &parent);
        span.end_with_timestamp(a.started + a.latency);
    }

    /// Export what is queued and stop the exporter (at shutdown). Blocks up to the export
    /// timeout, on a blocking thread.
    pub async fn shutdown(&self) {
        let Some(exporter) = self.0.clone() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            let _ = exporter.provider.force_flush();
            exporter.provider.shutdown()
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "trace exporter did not stop cleanly; queued spans may be lost");
        }
    }
}

/// The trace id of a delivery: its UUID's 16 bytes.
fn trace_id_of(delivery_id: &str) -> Option<TraceId> {
    let id = uuid::Uuid::parse_str(delivery_id).ok()?;
    (!id.is_nil()).then(|| TraceId::from_bytes(*id.as_bytes()))
}

/// A span id fixed by the trace and a label, so a later process can name a span as parent
/// without having stored its id.
fn derived_span_id(trace: TraceId, label: &[u8]) -> SpanId {
    let mut h = Sha256::new();
    h.update(b"wardhook-span-v1\0");
    h.update(label);
    h.update(trace.to_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

fn build_exporter(settings: &TracesSettings) -> Result<Exporter, TracesError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};

    let mut client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout);
    if let Some(ca) = &settings.ca {
        let pem =
            std::fs::read(ca).map_err(|e| TracesError::Ca(format!("{}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TracesError::Ca(format!("{}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(TracesError::Ca(format!(
                "{} holds no certificate",
                ca.display()
            )));
        }
        client = client.tls_built_in_root_certs(false);
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client
        .build()
        .map_err(|e| TracesError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.as_str())
        .with_timeout(settings.timeout)
        .build()
        .map_err(|e| TracesError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("wardhook");
    Ok(Exporter { provider, tracer })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_is_its_trace_id() {
        let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let t = trace_id_of(id).unwrap();
        assert_eq!(t.to_string(), "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b");
        assert!(trace_id_of("not-a-uuid").is_none());
        assert!(trace_id_of("00000000-0000-0000-0000-000000000000").is_none());
    }

    #[test]
    fn derived_span_ids_are_stable_and_differ_by_label() {
        let t = trace_id_of("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
        assert_eq!(derived_span_id(t, b"commit"), derived_span_id(t, b"commit"));
        assert_ne!(
            derived_span_id(t, b"commit"),
            derived_span_id(t, b"receipt")
        );
        assert_ne!(derived_span_id(t, b"commit"), SpanId::INVALID);
    }

    #[test]
    fn traces_off_keep_no_timings_and_name_no_trace() {
        let off = Traces::off();
        let mut r = off.receipt();
        r.stage("verify");
        assert!(!r.is_recording());
        assert_eq!(off.trace_id("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"), None);
    }
}
