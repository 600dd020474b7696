//! The access log: one INFO line per request, written by the listener's middleware after the
//! answer is built — request id, method, path (which names the source only; query strings may
//! carry sender data and are left out), status and latency, plus, for a stored delivery, its id
//! and outcome (and its trace id when traces are on), which the hook handler passes along in
//! the response's extensions. Those fields are why a successful delivery needs no second line
//! (docs/BENCHMARKS.md §9). The line is formatted by `telemetry::access_line`, not by the fmt
//! layer: it costs a fraction of what a `tracing` event with eight fields did (§16).

use std::time::Duration;

use actix_web::HttpResponse;

use crate::telemetry::access_line::AccessLine;

/// What the hook handler tells the access line about a delivery it stored.
#[derive(Debug)]
pub(super) struct AccessNote {
    /// The delivery's id (the first one's, for a duplicate).
    pub delivery_id: String,
    /// `accepted` or `duplicate`.
    pub outcome: &'static str,
    /// The delivery's trace id, when traces are exported.
    pub trace_id: Option<String>,
}

impl AccessNote {
    /// Attach the note to `res` for the access line.
    pub(super) fn attach(self, res: &mut HttpResponse) {
        res.extensions_mut().insert(self);
    }
}

/// The request's one access line, formatted by `telemetry::access_line` (same bytes as the
/// fmt layer's, without its field visitor) under the target
/// [`crate::telemetry::ACCESS_TARGET`], so the `[log]` filter decides about it as before.
pub(super) fn log_request(
    request_id: &str,
    method: &actix_web::http::Method,
    path: &str,
    status: u16,
    latency: Duration,
    note: Option<&AccessNote>,
) {
    AccessLine {
        request_id,
        method: method.as_str(),
        path,
        status,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        delivery_id: note.map(|n| n.delivery_id.as_str()),
        outcome: note.map(|n| n.outcome),
        trace_id: note.and_then(|n| n.trace_id.as_deref()),
    }
    .log();
}
