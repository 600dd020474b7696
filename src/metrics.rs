//! Process metrics for the admin listener's `/metrics` (Prometheus text format 0.0.4).
//!
//! Place in the delivery path: beside it. The listener counts deliveries by outcome and times
//! each ack, the dispatch workers count handler attempts and time them; the admin listener
//! renders everything here plus gauges it reads at scrape time (queue depth, circuit states,
//! certificate expiry).
//!
//! A small hand-written registry rather than the `metrics` crate family: we need a dozen series,
//! counters and fixed-bucket histograms only, and no new dependency tree in a binary whose
//! supply chain clinics audit. Labels are only configured names (sources, handlers) and fixed
//! outcome words, never request data (path, method, headers), so cardinality is bounded by the
//! config — a request to `/hooks/<name>` for a name that is no configured source, whatever its
//! method or status, is counted under the single label value `_unknown`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Label pairs of one series, in a fixed order.
type Labels = Vec<(&'static str, String)>;

/// Buckets (seconds) of the ack latency histogram: senders allow 5–10 s, we aim for ms.
const ACK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) of the handler latency histogram: CRMs are slow; alerts fire over 5 s.
const HANDLER_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Series names and their help text, in render order.
const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    (
        "wardhook_deliveries_total",
        "counter",
        "Deliveries received, by source and outcome (accepted, duplicate, quarantined, rejected, unavailable).",
    ),
    (
        "wardhook_ack_latency_seconds",
        "histogram",
        "Time from request start to the answer to the sender, by source.",
    ),
    (
        "wardhook_handler_attempts_total",
        "counter",
        "Handler attempts, by handler and result (ok, retryable, permanent).",
    ),
    (
        "wardhook_handler_latency_seconds",
        "histogram",
        "Duration of one handler attempt, by handler.",
    ),
    (
        "wardhook_handler_panics_total",
        "counter",
        "Handler invocations that panicked (each recorded as a failed attempt), by handler.",
    ),
    (
        "wardhook_dead_letters_total",
        "counter",
        "Jobs dead-lettered since start, by handler.",
    ),
    (
        "wardhook_storage_errors_total",
        "counter",
        "Requests answered 503 because storage could not commit.",
    ),
    (
        "wardhook_admin_login_failures_total",
        "counter",
        "Admin sign-ins and API calls refused for a missing, unknown, expired or revoked token.",
    ),
    (
        "wardhook_realtime_replies_total",
        "counter",
        "Replies of real-time routes, by source and reply (computed, fallback).",
    ),
    (
        "wardhook_realtime_reply_latency_seconds",
        "histogram",
        "Time from request start to a real-time route's reply, by source.",
    ),
    (
        "wardhook_realtime_cache_total",
        "counter",
        "Real-time lookup cache consultations, by result (hit, miss).",
    ),
    (
        "wardhook_audit_forward_records_total",
        "counter",
        "Audit records the syslog collector confirmed, by forwarding target.",
    ),
    (
        "wardhook_audit_forward_errors_total",
        "counter",
        "Failed audit forwarding steps, by target and reason (connect, tls, send, timeout, store, setup, panic).",
    ),
    (
        "wardhook_audit_forward_backlog",
        "gauge",
        "Audit records written but not yet confirmed by the syslog collector, by target.",
    ),
    (
        "wardhook_audit_forward_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last batch the syslog collector confirmed, by target.",
    ),
    (
        "wardhook_relay_records_total",
        "counter",
        "Sealed records pulled from the DMZ relay, by result (accepted, duplicate, quarantined, unopenable).",
    ),
    (
        "wardhook_relay_backlog_records",
        "gauge",
        "Sealed records waiting at the DMZ relay, as of the last pull (inside node).",
    ),
    (
        "wardhook_relay_oldest_age_seconds",
        "gauge",
        "Age of the oldest unacknowledged record at the DMZ relay, as of the last pull (0 when none).",
    ),
    (
        "wardhook_relay_last_pull_timestamp_seconds",
        "gauge",
        "Unix time of the last successful pull from the DMZ relay.",
    ),
    (
        "wardhook_handler_failures_in_a_row",
        "gauge",
        "Failed attempts since the last success, by handler (as of the last alert evaluation).",
    ),
    (
        "wardhook_storage_volume_used_percent",
        "gauge",
        "Percent used of the volume holding the data folder (as of the last alert evaluation).",
    ),
    (
        "wardhook_audit_verified",
        "gauge",
        "1 when the audit log's last verification passed, 0 when it failed.",
    ),
    (
        "wardhook_alerts_open",
        "gauge",
        "Console alerts not yet resolved, by rule.",
    ),
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// The process-wide registry.
#[derive(Debug, Default)]
struct Registry {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
    /// Values set by the component that knows them (e.g. the audit forwarding backlog).
    gauges: Mutex<BTreeMap<(&'static str, Labels), f64>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn inc(name: &'static str, labels: Labels, by: u64) {
    let mut c = registry()
        .counters
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    *c.entry((name, labels)).or_default() += by;
}

fn observe(name: &'static str, labels: Labels, bounds: &'static [f64], v: Duration) {
    let mut h = registry()
        .histograms
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    h.entry((name, labels))
        .or_insert_with(|| Histogram::new(bounds))
        .observe(v.as_secs_f64());
}

fn set_gauge(name: &'static str, labels: Labels, v: f64) {
    registry()
        .gauges
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((name, labels), v);
}

/// The syslog collector of forwarding target `target` (a configured name) confirmed `n`
/// audit records.
pub fn audit_forward_sent(target: &str, n: u64) {
    inc(
        "wardhook_audit_forward_records_total",
        vec![("target", target.to_owned())],
        n,
    );
}

/// A forwarding step of `target` failed for `reason` (a fixed word).
pub fn audit_forward_error(target: &str, reason: &'static str) {
    inc(
        "wardhook_audit_forward_errors_total",
        vec![("target", target.to_owned()), ("reason", reason.to_owned())],
        1,
    );
}

/// Records of `target` written but not yet confirmed by its collector.
pub fn audit_forward_backlog(target: &str, records: u64) {
    set_gauge(
        "wardhook_audit_forward_backlog",
        vec![("target", target.to_owned())],
        records as f64,
    );
}

/// `target`'s collector confirmed a batch at `unix` seconds.
pub fn audit_forward_last_success(target: &str, unix: i64) {
    set_gauge(
        "wardhook_audit_forward_last_success_timestamp_seconds",
        vec![("target", target.to_owned())],
        unix as f64,
    );
}

/// A delivery to `source` ended with `outcome` (`accepted`, `duplicate`, `quarantined`,
/// `rejected`, `unavailable`).
pub fn delivery(source: &str, outcome: &'static str) {
    inc(
        "wardhook_deliveries_total",
        vec![
            ("source", source.to_owned()),
            ("outcome", outcome.to_owned()),
        ],
        1,
    );
}

/// Per source, the last 24 clock hours of ack latency: (hour number since the epoch, count,
/// sum in ms). In memory only, so the dashboard's chart starts afresh after a restart.
type HourRing = [(i64, u64, f64); 24];

fn ack_hours() -> &'static Mutex<BTreeMap<String, HourRing>> {
    static HOURS: OnceLock<Mutex<BTreeMap<String, HourRing>>> = OnceLock::new();
    HOURS.get_or_init(Mutex::default)
}

fn record_ack_hour(source: &str, elapsed: Duration, now_secs: i64) {
    let hour = now_secs.div_euclid(3600);
    let slot = hour.rem_euclid(24) as usize;
    let mut hours = ack_hours().lock().unwrap_or_else(|p| p.into_inner());
    let ring = hours
        .entry(source.to_owned())
        .or_insert([(i64::MIN, 0, 0.0); 24]);
    if ring[slot].0 != hour {
        ring[slot] = (hour, 0, 0.0);
    }
    ring[slot].1 += 1;
    ring[slot].2 += elapsed.as_secs_f64() * 1000.0;
}

/// Mean ack latency (ms) of `source` per clock hour, for the 24 hours starting at the hour that
/// contains `start_secs`; `None` for hours without answers (or before the server started).
pub fn ack_hourly_means(source: &str, start_secs: i64) -> Vec<Option<f64>> {
    let first = start_secs.div_euclid(3600);
    let hours = ack_hours().lock().unwrap_or_else(|p| p.into_inner());
    let ring = hours.get(source);
    (0..24)
        .map(|i| {
            let hour = first + i;
            ring.and_then(|r| {
                let (h, n, sum) = r[hour.rem_euclid(24) as usize];
                (h == hour && n > 0).then(|| sum / n as f64)
            })
        })
        .collect()
}

/// The answer to a sender of `source` took `elapsed`.
pub fn ack_latency(source: &str, elapsed: Duration) {
    record_ack_hour(source, elapsed, chrono::Utc::now().timestamp());
    observe(
        "wardhook_ack_latency_seconds",
        vec![("source", source.to_owned())],
        ACK_BUCKETS,
        elapsed,
    );
}

/// The label value of requests to `/hooks/<name>` where `<name>` is no configured source.
pub const UNKNOWN_SOURCE: &str = "_unknown";

/// Classify one finished `/hooks/{source}` request by its status, for the outcomes the
/// intake code does not count itself (rejections and storage failures), and time it.
///
/// `source` is the configured source the path named, or `None` when it named none: the caller
/// resolves the path against the config, so whatever the status (404, 405, …) the caller's text
/// never becomes a label value.
pub fn hook_response(source: Option<&str>, status: u16, elapsed: Duration) {
    let source = source.unwrap_or(UNKNOWN_SOURCE);
    match status {
        401 | 403 | 404 | 405 | 413 | 429 => delivery(source, "rejected"),
        503 => {
            delivery(source, "unavailable");
            storage_error();
        }
        _ => {}
    }
    ack_latency(source, elapsed);
}

/// One handler attempt finished with `result` (`ok`, `retryable`, `permanent`).
pub fn handler_attempt(handler: &str, result: &'static str, latency: Duration) {
    inc(
        "wardhook_handler_attempts_total",
        vec![
            ("handler", handler.to_owned()),
            ("result", result.to_owned()),
        ],
        1,
    );
    observe(
        "wardhook_handler_latency_seconds",
        vec![("handler", handler.to_owned())],
        HANDLER_BUCKETS,
        latency,
    );
}

/// An invocation of `handler` (a configured name) panicked; the panic message is never a label.
pub fn handler_panic(handler: &str) {
    inc(
        "wardhook_handler_panics_total",
        vec![("handler", handler.to_owned())],
        1,
    );
}

/// A job of `handler` was dead-lettered.
pub fn dead_letter(handler: &str) {
    inc(
        "wardhook_dead_letters_total",
        vec![("handler", handler.to_owned())],
        1,
    );
}

/// A real-time route's lookup cache was consulted.
pub fn realtime_cache(hit: bool) {
    inc(
        "wardhook_realtime_cache_total",
        vec![("result", if hit { "hit" } else { "miss" }.to_owned())],
        1,
    );
}

/// A real-time route answered (computed or fallback) after `elapsed`.
pub fn realtime_reply(source: &str, fallback: bool, elapsed: Duration) {
    inc(
        "wardhook_realtime_replies_total",
        vec![
            ("source", source.to_owned()),
            (
                "reply",
                if fallback { "fallback" } else { "computed" }.to_owned(),
            ),
        ],
        1,
    );
    observe(
        "wardhook_realtime_reply_latency_seconds",
        vec![("source", source.to_owned())],
        ACK_BUCKETS,
        elapsed,
    );
}

/// A sealed record pulled from the DMZ relay ended with `result` (`accepted`, `duplicate`,
/// `quarantined`, `unopenable`).
pub fn relay_record(result: &'static str) {
    inc(
        "wardhook_relay_records_total",
        vec![("result", result.to_owned())],
        1,
    );
}

/// What the DMZ relay reported with the last pull: records waiting and the oldest one's age.
pub fn relay_backlog(records: u64, oldest_age: Duration) {
    set_gauge("wardhook_relay_backlog_records", Vec::new(), records as f64);
    set_gauge(
        "wardhook_relay_oldest_age_seconds",
        Vec::new(),
        oldest_age.as_secs_f64(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    set_gauge(
        "wardhook_relay_last_pull_timestamp_seconds",
        Vec::new(),
        now.as_secs_f64(),
    );
}

/// What the alert rules measured, for Prometheus rules that watch the same conditions:
/// failures in a row per handler, the data volume's use, the audit verification's result
/// (when it ran) and the unresolved alerts per rule.
pub fn alert_facts(
    in_a_row: &[(String, u64)],
    volume_used_percent: Option<f64>,
    audit_verified: Option<bool>,
    open_by_rule: &[(&'static str, u64)],
) {
    for (handler, n) in in_a_row {
        set_gauge(
            "wardhook_handler_failures_in_a_row",
            vec![("handler", handler.clone())],
            *n as f64,
        );
    }
    if let Some(p) = volume_used_percent {
        set_gauge("wardhook_storage_volume_used_percent", Vec::new(), p);
    }
    if let Some(ok) = audit_verified {
        set_gauge(
            "wardhook_audit_verified",
            Vec::new(),
            f64::from(u8::from(ok)),
        );
    }
    for (rule, n) in open_by_rule {
        set_gauge(
            "wardhook_alerts_open",
            vec![("rule", (*rule).to_owned())],
            *n as f64,
        );
    }
}

/// What the relay puller last recorded: the oldest buffered record's age and the Unix time of
/// the last successful pull (`None` before the first).
pub fn relay_state() -> (Option<f64>, Option<f64>) {
    let gauges = registry().gauges.lock().unwrap_or_else(|p| p.into_inner());
    let get = |name: &'static str| gauges.get(&(name, Vec::new())).copied();
    (
        get("wardhook_relay_oldest_age_seconds"),
        get("wardhook_relay_last_pull_timestamp_seconds"),
    )
}

/// Storage could not commit.
pub fn storage_error() {
    inc("wardhook_storage_errors_total", Vec::new(), 1);
}

/// An admin authentication failed.
pub fn admin_login_failure() {
    inc("wardhook_admin_login_failures_total", Vec::new(), 1);
}

/// Ack latency of `source` so far: (count, mean seconds), for the dashboard.
pub fn ack_summary(source: &str) -> (u64, f64) {
    let h = registry()
        .histograms
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    h.get(&(
        "wardhook_ack_latency_seconds",
        vec![("source", source.to_owned())],
    ))
    .map_or((0, 0.0), |h| {
        (
            h.count,
            if h.count == 0 {
                0.0
            } else {
                h.sum / h.count as f64
            },
        )
    })
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A gauge family measured at scrape time.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Series name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// (labels, value) per series.
    pub series: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// Render every registered series plus `gauges` in the Prometheus text format.
pub fn render(gauges: &[Gauge]) -> String {
    let mut out = String::new();
    let counters = registry()
        .counters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let histograms = registry()
        .histograms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let set_gauges = registry()
        .gauges
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (name, kind, help) in DESCRIPTIONS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        if *kind == "counter" {
            for ((n, labels), v) in counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {v}", label_text(labels, None));
            }
        } else if *kind == "gauge" {
            for ((n, labels), v) in set_gauges.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {v}", label_text(labels, None));
            }
        } else {
            for ((n, labels), h) in histograms.iter().filter(|((n, _), _)| n == name) {
                for (b, c) in h.bounds.iter().zip(&h.counts) {
                    let _ = writeln!(
                        out,
                        "{n}_bucket{} {c}",
                        label_text(labels, Some(("le", format!("{b}"))))
                    );
                }
                let _ = writeln!(
                    out,
                    "{n}_bucket{} {}",
                    label_text(labels, Some(("le", "+Inf".to_owned()))),
                    h.count
                );
                let _ = writeln!(out, "{n}_sum{} {}", label_text(labels, None), h.sum);
                let _ = writeln!(out, "{n}_count{} {}", label_text(labels, None), h.count);
            }
        }
    }
    for g in gauges {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
        for (labels, v) in &g.series {
            let _ = writeln!(out, "{}{} {v}", g.name, label_text(labels, None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_gauges_appear_once_a_pull_reported_them() {
        relay_backlog(7, Duration::from_secs(90));
        relay_record("unopenable");
        let text = render(&[]);
        assert!(
            text.contains(
                "# TYPE wardhook_relay_backlog_records gauge\nwardhook_relay_backlog_records 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("wardhook_relay_oldest_age_seconds 90\n"),
            "{text}"
        );
        assert!(
            text.contains("wardhook_relay_last_pull_timestamp_seconds "),
            "{text}"
        );
        assert!(
            text.contains("wardhook_relay_records_total{result=\"unopenable\"}"),
            "{text}"
        );
        // Every relay series the shipped alert rules read is one this node exports.
        let rules = include_str!("../deploy/alerts/wardhook.rules.yml");
        let mut named = 0;
        for (at, _) in rules.match_indices("wardhook_relay_") {
            let name: String = rules[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                text.contains(&format!("\n{name}")),
                "deploy/alerts/wardhook.rules.yml reads {name}, which /metrics lacks"
            );
            named += 1;
        }
        assert!(named >= 3, "the relay alerts read the relay series");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered_with_inf() {
        handler_attempt("unit-test-handler", "ok", Duration::from_millis(300));
        let text = render(&[]);
        assert!(text.contains(
            "wardhook_handler_latency_seconds_bucket{handler=\"unit-test-handler\",le=\"0.25\"} 0"
        ));
        assert!(text.contains(
            "wardhook_handler_latency_seconds_bucket{handler=\"unit-test-handler\",le=\"0.5\"} 1"
        ));
        assert!(text.contains(
            "wardhook_handler_latency_seconds_bucket{handler=\"unit-test-handler\",le=\"+Inf\"} 1"
        ));
    }

    #[test]
    fn unknown_sources_share_one_label_value() {
        hook_response(None, 404, Duration::from_millis(1));
        hook_response(None, 405, Duration::from_millis(1));
        let text = render(&[]);
        assert!(text.contains("source=\"_unknown\""));
    }
}

#[cfg(test)]
mod hourly_tests {
    use super::*;

    #[test]
    fn hourly_ack_means_fill_their_clock_hour_and_forget_a_day_later() {
        let base = 1_795_000_000 - 1_795_000_000 % 3600;
        record_ack_hour("hourly-test", Duration::from_millis(10), base + 5);
        record_ack_hour("hourly-test", Duration::from_millis(30), base + 10);
        record_ack_hour("hourly-test", Duration::from_millis(7), base + 3 * 3600);
        let means = ack_hourly_means("hourly-test", base);
        assert_eq!(means[0], Some(20.0));
        assert_eq!(means[1], None);
        assert_eq!(means[3], Some(7.0));
        // A day later the same ring slot belongs to a new hour.
        record_ack_hour("hourly-test", Duration::from_millis(1), base + 24 * 3600);
        assert_eq!(ack_hourly_means("hourly-test", base)[0], None);
    }
}
