//! Health of sources and handlers over the last 24 hours, for `/api/health` and the overview.
//!
//! Sources: counted from the audit log (accepted, duplicate, quarantined, rejected records carry
//! the source), because rejections store nothing else. Handlers: from the attempts table. Both
//! are bucketed per hour so the dashboard can draw a small chart of each. The numbers come from
//! [`crate::store::Console::health_data`] (cluster-wide on PostgreSQL); the arithmetic is here,
//! the same for both backends. Ack latency is this process's own measurement.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::Serialize;

use crate::dispatch::worker::CircuitState;
use crate::store::console::HealthData;

/// One hour's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HourBucket {
    /// Events in the hour.
    pub total: u64,
    /// Successful ones.
    pub ok: u64,
    /// Sum of latencies (ms), for the mean.
    pub latency_ms_sum: u64,
}

/// Health of one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    /// Source name.
    pub name: String,
    /// Accepted in 24 h.
    pub accepted: u64,
    /// Recognised retries in 24 h.
    pub duplicate: u64,
    /// Quarantined in 24 h.
    pub quarantined: u64,
    /// Rejected (signature, IP, rate limit…) in 24 h.
    pub rejected: u64,
    /// (accepted + duplicate) / all, or `None` without traffic.
    pub success_rate: Option<f64>,
    /// Mean ack latency since the server started, ms.
    pub ack_latency_ms_mean: Option<f64>,
    /// Mean ack latency per clock hour of the last 24 h (since the server started), ms.
    pub ack_latency_ms_hourly: Vec<Option<f64>>,
    /// 24 hourly buckets, oldest first.
    pub hourly: Vec<HourBucket>,
}

/// Health of one handler.
#[derive(Debug, Clone, Serialize)]
pub struct HandlerHealth {
    /// Handler name.
    pub name: String,
    /// Attempts in 24 h.
    pub attempts: u64,
    /// Successful attempts in 24 h.
    pub ok: u64,
    /// ok / attempts, or `None` without attempts.
    pub success_rate: Option<f64>,
    /// Median attempt latency, ms.
    pub latency_ms_p50: Option<i64>,
    /// 95th percentile attempt latency, ms.
    pub latency_ms_p95: Option<i64>,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Jobs pending, waiting or running for it.
    pub queue_depth: u64,
    /// Dead letters for it now.
    pub dead_letters: u64,
    /// 24 hourly buckets, oldest first.
    pub hourly: Vec<HourBucket>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Window start.
    pub since: String,
    /// Per source.
    pub sources: Vec<SourceHealth>,
    /// Per handler.
    pub handlers: Vec<HandlerHealth>,
    /// Jobs pending, waiting or running.
    pub queue_depth: u64,
    /// Age of the oldest due job, seconds.
    pub oldest_due_age_secs: Option<u64>,
    /// Dead letters now.
    pub dead_letters: u64,
}

/// `closed`, `open`, `half_open`.
pub fn circuit_name(c: CircuitState) -> &'static str {
    match c {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

fn hour_index(start: DateTime<Utc>, t: DateTime<Utc>) -> Option<usize> {
    let i = (t - start).num_hours();
    (0..24).contains(&i).then_some(i as usize)
}

fn hour_index_of(start: DateTime<Utc>, ts: &str) -> Option<usize> {
    hour_index(
        start,
        DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc),
    )
}

/// The start of the 24-hour window at `now`: whole hours, so each bucket is a clock hour and
/// the last one is the current hour.
pub fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let end = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        + Duration::hours(1);
    end - Duration::hours(24)
}

fn rate(ok: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| ok as f64 / total as f64)
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx.min(sorted.len() - 1)).copied()
}

/// Compute health for the configured `sources` and `handlers` at `now` from `data`, read
/// since [`window_start`]`(now)`.
pub fn compute(
    data: &HealthData,
    sources: &[String],
    handlers: &[String],
    circuit: &dyn Fn(&str) -> CircuitState,
    now: DateTime<Utc>,
) -> Health {
    let start = window_start(now);

    let mut src: BTreeMap<String, SourceHealth> = sources
        .iter()
        .map(|s| {
            (
                s.clone(),
                SourceHealth {
                    name: s.clone(),
                    accepted: 0,
                    duplicate: 0,
                    quarantined: 0,
                    rejected: 0,
                    success_rate: None,
                    ack_latency_ms_mean: None,
                    ack_latency_ms_hourly: Vec::new(),
                    hourly: vec![HourBucket::default(); 24],
                },
            )
        })
        .collect();
    {
        // A `delivery_rejected` record with a `count` stands for that many rejections (tallied
        // per interval by the listener); every other record for one.
        for e in &data.source_events {
            let (source, action, ts, n) = (&e.source, &e.action, &e.ts, e.count);
            let n = n.max(0) as u64;
            let Some(h) = src.get_mut(source) else {
                continue;
            };
            let ok = match action.as_str() {
                "delivery_accepted" => {
                    h.accepted += 1;
                    true
                }
                "delivery_duplicate" => {
                    h.duplicate += 1;
                    true
                }
                "delivery_quarantined" => {
                    h.quarantined += 1;
                    false
                }
                _ => {
                    h.rejected = h.rejected.saturating_add(n);
                    false
                }
            };
            if let Some(i) = hour_index_of(start, ts) {
                h.hourly[i].total = h.hourly[i].total.saturating_add(n);
                h.hourly[i].ok += u64::from(ok);
            }
        }
    }
    for h in src.values_mut() {
        let total = h.accepted + h.duplicate + h.quarantined + h.rejected;
        h.success_rate = rate(h.accepted + h.duplicate, total);
        let (n, mean) = crate::metrics::ack_summary(&h.name);
        h.ack_latency_ms_mean = (n > 0).then_some(mean * 1000.0);
        h.ack_latency_ms_hourly = crate::metrics::ack_hourly_means(&h.name, start.timestamp());
    }

    let mut per_handler: BTreeMap<String, (Vec<HourBucket>, Vec<i64>, u64)> = handlers
        .iter()
        .map(|h| (h.clone(), (vec![HourBucket::default(); 24], Vec::new(), 0)))
        .collect();
    {
        for sample in &data.attempts {
            let (handler, latency, ts) =
                (sample.handler.clone(), sample.latency_ms, sample.started_at);
            let entry = per_handler
                .entry(handler)
                .or_insert_with(|| (vec![HourBucket::default(); 24], Vec::new(), 0));
            entry.1.push(latency);
            let ok = sample.ok;
            entry.2 += u64::from(ok);
            if let Some(i) = hour_index(start, ts) {
                entry.0[i].total += 1;
                entry.0[i].ok += u64::from(ok);
                entry.0[i].latency_ms_sum += latency.max(0) as u64;
            }
        }
    }
    let queue_by: BTreeMap<String, (u64, u64)> = data
        .queues
        .iter()
        .map(|q| (q.handler.clone(), (q.queued, q.dead)))
        .collect();
    let handlers_out: Vec<HandlerHealth> = per_handler
        .into_iter()
        .map(|(name, (hourly, mut lat, ok))| {
            lat.sort_unstable();
            let attempts = lat.len() as u64;
            let (queue_depth, dead_letters) = queue_by.get(&name).copied().unwrap_or((0, 0));
            HandlerHealth {
                circuit: circuit_name(circuit(&name)),
                success_rate: rate(ok, attempts),
                latency_ms_p50: percentile(&lat, 0.5),
                latency_ms_p95: percentile(&lat, 0.95),
                attempts,
                ok,
                queue_depth,
                dead_letters,
                hourly,
                name,
            }
        })
        .collect();
    let oldest_due_age_secs = data
        .oldest_pending
        .map(|t| (now - t).num_seconds().max(0) as u64);
    Health {
        since: start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        sources: src.into_values().collect(),
        handlers: handlers_out,
        queue_depth: data.queue_depth,
        oldest_due_age_secs,
        dead_letters: data.dead_letters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keyring, MasterKey};
    use crate::listener::rejections::{RejectionLog, Tally};
    use crate::store::{Storage, Store, StoreOptions};

    #[tokio::test]
    async fn a_tally_of_rejections_counts_as_the_rejections_it_stands_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::from_master(&MasterKey::from_bytes([3; 32]));
        let store =
            Store::open(&dir.path().join("h.db"), ring, StoreOptions::default()).expect("open");
        let log = RejectionLog::new(8);
        let client = "203.0.113.7".parse().expect("ip");
        for _ in 0..50 {
            if let Tally::RecordNow(r) = log.note("demo", "bad_signature", client, Utc::now()) {
                store.record_audit(*r).await.expect("first record");
            }
        }
        for r in log.drain() {
            store.record_audit(r).await.expect("tally");
        }
        let now = Utc::now();
        let data = store
            .console()
            .health_data(window_start(now))
            .await
            .expect("health data");
        let health = compute(
            &data,
            &["demo".to_owned()],
            &[],
            &|_| CircuitState::Closed,
            now,
        );
        assert_eq!(health.sources[0].rejected, 50);
        assert_eq!(
            health.sources[0]
                .hourly
                .iter()
                .map(|h| h.total)
                .sum::<u64>(),
            50
        );
    }
}
