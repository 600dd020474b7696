//! Health of sources and handlers over the last 24 hours, for `/api/health` and the overview.
//!
//! Sources: counted from the audit log (accepted, duplicate, quarantined, rejected records carry
//! the source), because rejections store nothing else. Handlers: from the attempts table. Both
//! are bucketed per hour so the dashboard can draw a small chart of each.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::dispatch::worker::CircuitState;

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

fn hour_index(start: DateTime<Utc>, ts: &str) -> Option<usize> {
    let t = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    let i = (t - start).num_hours();
    (0..24).contains(&i).then_some(i as usize)
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

/// Compute health for the configured `sources` and `handlers` from the database at `now`.
pub fn compute(
    conn: &Connection,
    sources: &[String],
    handlers: &[String],
    circuit: &dyn Fn(&str) -> CircuitState,
    now: DateTime<Utc>,
) -> rusqlite::Result<Health> {
    // Whole hours, so each bucket is a clock hour and the last one is the current hour.
    let end = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        + Duration::hours(1);
    let start = end - Duration::hours(24);
    let since = start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

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
        let mut stmt = conn.prepare(
            "SELECT source, action, ts,
                    CASE WHEN action = 'delivery_rejected' AND json_valid(detail)
                         THEN COALESCE(json_extract(detail, '$.count'), 1) ELSE 1 END
             FROM audit_log
             WHERE ts >= ?1 AND source IS NOT NULL AND action IN
               ('delivery_accepted', 'delivery_duplicate', 'delivery_quarantined', 'delivery_rejected')",
        )?;
        let rows = stmt.query_map(params![since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (source, action, ts, n) = row?;
            let n = n.max(0) as u64;
            let Some(h) = src.get_mut(&source) else {
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
            if let Some(i) = hour_index(start, &ts) {
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
        let mut stmt = conn.prepare(
            "SELECT j.handler, a.result, a.latency_ms, a.started_at
             FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.started_at >= ?1",
        )?;
        let rows = stmt.query_map(params![since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (handler, result, latency, ts) = row?;
            let entry = per_handler
                .entry(handler)
                .or_insert_with(|| (vec![HourBucket::default(); 24], Vec::new(), 0));
            entry.1.push(latency);
            let ok = result == "ok";
            entry.2 += u64::from(ok);
            if let Some(i) = hour_index(start, &ts) {
                entry.0[i].total += 1;
                entry.0[i].ok += u64::from(ok);
                entry.0[i].latency_ms_sum += latency.max(0) as u64;
            }
        }
    }
    let mut queue_by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT handler,
                    SUM(status IN ('pending', 'waiting', 'running')),
                    SUM(status = 'dead')
             FROM jobs GROUP BY handler",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            ))
        })?;
        for row in rows {
            let (h, q, d) = row?;
            queue_by.insert(h, (q.max(0) as u64, d.max(0) as u64));
        }
    }
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
    let (queue_depth, oldest): (i64, Option<String>) = conn.query_row(
        "SELECT COUNT(*), MIN(CASE WHEN status = 'pending' THEN next_attempt_at END)
         FROM jobs WHERE status IN ('pending', 'waiting', 'running')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let oldest_due_age_secs = oldest
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| (now - t.with_timezone(&Utc)).num_seconds().max(0) as u64);
    let dead_letters: i64 =
        conn.query_row("SELECT COUNT(*) FROM jobs WHERE status = 'dead'", [], |r| {
            r.get(0)
        })?;
    Ok(Health {
        since,
        sources: src.into_values().collect(),
        handlers: handlers_out,
        queue_depth: queue_depth.max(0) as u64,
        oldest_due_age_secs,
        dead_letters: dead_letters.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keyring, MasterKey};
    use crate::listener::rejections::{RejectionLog, Tally};
    use crate::store::{Store, StoreOptions};

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
        let conn = store.connection().expect("connection");
        let health = compute(
            &conn,
            &["demo".to_owned()],
            &[],
            &|_| CircuitState::Closed,
            Utc::now(),
        )
        .expect("health");
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
