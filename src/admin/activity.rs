//! One source's or one handler's activity over the last 24 hours and 7 days: volume,
//! failures, latency p50/p95 per time bucket, and recent errors by class.
//!
//! Everything is computed from stored data (the audit log's intake records and the attempts
//! table, read through [`crate::store::Console`]), so the pages read the same after a restart
//! and on every node of a cluster. For a handler, volume is its attempts and failures the
//! attempts that failed; for a source, volume is what it sent (accepted, duplicate, quarantined,
//! rejected) and failures what was refused, while latency is that of the handler attempts its
//! deliveries caused. Error classes come from [`crate::store::console_bulk::error_class`].

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::Permission;
use super::health::window_start;
use super::{api, ApiError, Console};
use crate::store::console::HealthData;
use crate::store::console_bulk::{error_class, AttemptPoint};

/// One time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Its start (RFC 3339 UTC).
    pub start: String,
    /// Events in it.
    pub total: u64,
    /// Of which failed.
    pub failed: u64,
    /// Median latency, ms.
    pub p50_ms: Option<i64>,
    /// 95th percentile latency, ms.
    pub p95_ms: Option<i64>,
}

/// One window: its buckets and totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// `24h` or `7d`.
    pub name: &'static str,
    /// Hours per bucket.
    pub step_hours: i64,
    /// Oldest first.
    pub buckets: Vec<Bucket>,
    /// Events in the window.
    pub total: u64,
    /// Of which failed.
    pub failed: u64,
    /// Median latency over the window, ms.
    pub p50_ms: Option<i64>,
    /// 95th percentile latency over the window, ms.
    pub p95_ms: Option<i64>,
}

/// Failures of one class in the last 7 days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorClassCount {
    /// The class.
    pub class: &'static str,
    /// How many.
    pub count: u64,
    /// The latest (RFC 3339 UTC).
    pub last_at: String,
    /// The latest reason (no payload data).
    pub last_reason: String,
}

/// A source's or handler's page data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// `source` or `handler`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The last 24 hours, hourly.
    pub day: Window,
    /// The last 7 days, in 6-hour buckets.
    pub week: Window,
    /// Errors by class, most frequent first.
    pub errors: Vec<ErrorClassCount>,
}

/// The start of the 7-day window at `now` (whole hours, like the 24-hour one).
pub fn week_start(now: DateTime<Utc>) -> DateTime<Utc> {
    window_start(now) + Duration::hours(24) - Duration::days(7)
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx.min(sorted.len() - 1)).copied()
}

/// One volume event: when, how many, whether it failed.
struct Event {
    at: DateTime<Utc>,
    n: u64,
    failed: bool,
}

fn window(
    name: &'static str,
    start: DateTime<Utc>,
    step_hours: i64,
    buckets: usize,
    events: &[Event],
    latencies: &[(DateTime<Utc>, i64)],
) -> Window {
    let index = |t: DateTime<Utc>| {
        let i = (t - start).num_hours().div_euclid(step_hours);
        (t >= start && (0..buckets as i64).contains(&i)).then_some(i as usize)
    };
    let mut out: Vec<Bucket> = (0..buckets)
        .map(|i| Bucket {
            start: (start + Duration::hours(step_hours * i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ..Bucket::default()
        })
        .collect();
    let (mut total, mut failed) = (0u64, 0u64);
    for e in events {
        if let Some(i) = index(e.at) {
            out[i].total = out[i].total.saturating_add(e.n);
            total = total.saturating_add(e.n);
            if e.failed {
                out[i].failed = out[i].failed.saturating_add(e.n);
                failed = failed.saturating_add(e.n);
            }
        }
    }
    let mut per: Vec<Vec<i64>> = vec![Vec::new(); buckets];
    let mut all = Vec::new();
    for (at, ms) in latencies {
        if let Some(i) = index(*at) {
            per[i].push(*ms);
            all.push(*ms);
        }
    }
    for (b, mut l) in out.iter_mut().zip(per) {
        l.sort_unstable();
        b.p50_ms = percentile(&l, 0.5);
        b.p95_ms = percentile(&l, 0.95);
    }
    all.sort_unstable();
    Window {
        name,
        step_hours,
        buckets: out,
        total,
        failed,
        p50_ms: percentile(&all, 0.5),
        p95_ms: percentile(&all, 0.95),
    }
}

fn errors_by_class(
    points: &[AttemptPoint],
    since: DateTime<Utc>,
    extra: Vec<ErrorClassCount>,
) -> Vec<ErrorClassCount> {
    let mut by: BTreeMap<&'static str, ErrorClassCount> = BTreeMap::new();
    for p in points.iter().filter(|p| !p.ok && p.started_at >= since) {
        let class = error_class(p.error.as_deref());
        let at = p
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let e = by.entry(class).or_insert_with(|| ErrorClassCount {
            class,
            count: 0,
            last_at: String::new(),
            last_reason: String::new(),
        });
        e.count += 1;
        if at >= e.last_at {
            e.last_at = at;
            e.last_reason = p.error.clone().unwrap_or_default();
        }
    }
    let mut out: Vec<ErrorClassCount> = by.into_values().chain(extra).collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.class.cmp(b.class)));
    out
}

fn windows(
    now: DateTime<Utc>,
    events: &[Event],
    latencies: &[(DateTime<Utc>, i64)],
) -> (Window, Window) {
    (
        window("24h", window_start(now), 1, 24, events, latencies),
        window("7d", week_start(now), 6, 28, events, latencies),
    )
}

/// A handler's activity from its attempts since [`week_start`].
pub fn for_handler(name: &str, points: &[AttemptPoint], now: DateTime<Utc>) -> Activity {
    let events: Vec<Event> = points
        .iter()
        .map(|p| Event {
            at: p.started_at,
            n: 1,
            failed: !p.ok,
        })
        .collect();
    let latencies: Vec<(DateTime<Utc>, i64)> = points
        .iter()
        .map(|p| (p.started_at, p.latency_ms))
        .collect();
    let (day, week) = windows(now, &events, &latencies);
    Activity {
        kind: "handler",
        name: name.to_owned(),
        day,
        week,
        errors: errors_by_class(points, week_start(now), Vec::new()),
    }
}

/// A source's activity from the intake records in `data` and the attempts its deliveries
/// caused, both since [`week_start`].
pub fn for_source(
    name: &str,
    data: &HealthData,
    points: &[AttemptPoint],
    now: DateTime<Utc>,
) -> Activity {
    let mut refused: BTreeMap<&'static str, ErrorClassCount> = BTreeMap::new();
    let mut events = Vec::new();
    for e in data.source_events.iter().filter(|e| e.source == name) {
        let Ok(at) = DateTime::parse_from_rfc3339(&e.ts) else {
            continue;
        };
        let n = e.count.max(0) as u64;
        let class = match e.action.as_str() {
            "delivery_accepted" | "delivery_duplicate" => None,
            "delivery_quarantined" => Some("quarantined"),
            _ => Some("rejected"),
        };
        if let Some(class) = class {
            let r = refused.entry(class).or_insert_with(|| ErrorClassCount {
                class,
                count: 0,
                last_at: String::new(),
                last_reason: String::new(),
            });
            r.count = r.count.saturating_add(n);
            if e.ts >= r.last_at {
                r.last_at.clone_from(&e.ts);
            }
        }
        events.push(Event {
            at: at.with_timezone(&Utc),
            n,
            failed: class.is_some(),
        });
    }
    let latencies: Vec<(DateTime<Utc>, i64)> = points
        .iter()
        .map(|p| (p.started_at, p.latency_ms))
        .collect();
    let (day, week) = windows(now, &events, &latencies);
    Activity {
        kind: "source",
        name: name.to_owned(),
        day,
        week,
        errors: errors_by_class(points, week_start(now), refused.into_values().collect()),
    }
}

/// Which page: a source's or a handler's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    Source,
    Handler,
}

/// Load and compute the activity of the configured source or handler `name`; an unknown
/// name is [`ApiError::NotFound`] (nothing is read for it).
pub(super) async fn load(
    console: &Console,
    subject: Subject,
    name: &str,
) -> Result<Activity, ApiError> {
    let view = console.setup.view();
    let known = match subject {
        Subject::Source => &view.sources,
        Subject::Handler => &view.handlers,
    };
    if !known.iter().any(|n| n == name) {
        return Err(ApiError::NotFound);
    }
    let now = Utc::now();
    let since = week_start(now);
    let store = console.store.console();
    Ok(match subject {
        Subject::Handler => {
            let points = store
                .attempt_points(since, Some(name.to_owned()), None)
                .await?;
            for_handler(name, &points, now)
        }
        Subject::Source => {
            let data = store.health_data(since).await?;
            let points = store
                .attempt_points(since, None, Some(name.to_owned()))
                .await?;
            for_source(name, &data, &points, now)
        }
    })
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/sources/{name}/activity", web::get().to(source_api))
        .route("/api/handlers/{name}/activity", web::get().to(handler_api));
}

async fn source_api(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    api::guard(&console, &req, Permission::ReadMetadata, ("source", None)).await?;
    Ok(HttpResponse::Ok().json(load(&console, Subject::Source, &path).await?))
}

async fn handler_api(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    api::guard(&console, &req, Permission::ReadMetadata, ("handler", None)).await?;
    Ok(HttpResponse::Ok().json(load(&console, Subject::Handler, &path).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: DateTime<Utc>, ok: bool, ms: i64, error: Option<&str>) -> AttemptPoint {
        AttemptPoint {
            handler: "crm".into(),
            source: "demo".into(),
            started_at: at,
            ok,
            latency_ms: ms,
            error: error.map(Into::into),
        }
    }

    #[test]
    fn attempts_fall_into_hourly_and_six_hour_buckets_with_percentiles() {
        let now = Utc::now();
        let points = vec![
            point(now, true, 10, None),
            point(now, true, 20, None),
            point(now, false, 300, Some("HTTP 503 from crm")),
            point(now, false, 310, Some("HTTP 502 from crm")),
            point(
                now - Duration::days(3),
                false,
                40,
                Some("request timed out"),
            ),
            point(now - Duration::days(30), false, 1, Some("too old")),
        ];
        let a = for_handler("crm", &points, now);
        assert_eq!(a.day.buckets.len(), 24);
        assert_eq!(a.week.buckets.len(), 28);
        assert_eq!((a.day.total, a.day.failed), (4, 2));
        assert_eq!(
            (a.week.total, a.week.failed),
            (5, 3),
            "the too-old one is outside"
        );
        let last = a.day.buckets.last().expect("the current hour");
        assert_eq!(
            (last.total, last.p50_ms, last.p95_ms),
            (4, Some(300), Some(310))
        );
        assert_eq!((a.errors[0].class, a.errors[0].count), ("http_5xx", 2));
        assert_eq!(a.errors.len(), 2, "the too-old one is outside the week");
        let classes: Vec<&str> = a.errors.iter().map(|e| e.class).collect();
        assert!(classes.contains(&"http_5xx") && classes.contains(&"timeout"));
    }
}
