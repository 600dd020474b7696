//! Bulk actions by filter ("the CRM was down from 9 to 10 — resend everything that failed
//! then"), and the per-attempt points the console's source and handler pages chart.
//!
//! A bulk action selects jobs by handler, source, error class and the time they reached their
//! state (died, or finished for a replay). The console first asks [`BulkFilter`] for a count
//! and a sample, and the highest job id it counted; after the operator confirms, it re-queues
//! in bounded batches up to that id only, so jobs that die later are not swept in unseen. Both
//! backends run the same statement built here; every value reaches the database as a parameter.
//! The error class is derived from the stored reason by [`error_class`] (the same words on both
//! backends), never stored itself.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::types::DeadLetter;

/// The most jobs one batch re-queues.
pub const MAX_BULK_BATCH: usize = 500;
/// The most jobs one bulk action counts (and so may touch).
pub const MAX_BULK_MATCH: usize = 100_000;
/// How many matching jobs a preview shows.
pub const BULK_SAMPLE: usize = 10;
/// The most attempt points one read returns.
pub const MAX_ATTEMPT_POINTS: usize = 200_000;
/// Rows read per page while counting.
const SCAN_PAGE: usize = 1000;

/// The error classes [`error_class`] yields, for forms and filters.
pub const ERROR_CLASSES: [&str; 8] = [
    "http_5xx",
    "http_429",
    "http_4xx",
    "timeout",
    "connection",
    "tls",
    "configuration",
    "other",
];

/// The class of a stored failure reason: a few stable words an operator can filter by.
/// Reasons carry no payload data; the class carries even less.
pub fn error_class(reason: Option<&str>) -> &'static str {
    let Some(r) = reason else {
        return "none";
    };
    let r = r.to_ascii_lowercase();
    let status = r
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|s| (400..600).contains(s) && (r.contains("http") || r.contains("status")));
    match status {
        Some(429) => "http_429",
        Some(s) if s >= 500 => "http_5xx",
        Some(_) => "http_4xx",
        None if r.contains("timed out") || r.contains("timeout") => "timeout",
        None if r.contains("tls") || r.contains("certificate") => "tls",
        None if r.contains("connect") || r.contains("network") || r.contains("dns") => "connection",
        None if r.contains("no longer configured") || r.contains("config") => "configuration",
        None => "other",
    }
}

/// What a bulk action does to the jobs it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkKind {
    /// Put dead letters back in the queue.
    Retry,
    /// Run finished jobs again (a replay of their deliveries to that handler).
    Replay,
}

impl BulkKind {
    /// `retry` or `replay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Replay => "replay",
        }
    }

    /// Parse the form's word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "retry" => Some(Self::Retry),
            "replay" => Some(Self::Replay),
            _ => None,
        }
    }

    /// The job status it selects.
    pub fn job_status(self) -> &'static str {
        match self {
            Self::Retry => "dead",
            Self::Replay => "done",
        }
    }
}

/// Which jobs a bulk action selects; every condition given must hold.
#[derive(Debug, Clone)]
pub struct BulkFilter {
    /// Retry dead letters or replay finished jobs.
    pub kind: BulkKind,
    /// Only this handler's jobs.
    pub handler: Option<String>,
    /// Only deliveries from this source.
    pub source: Option<String>,
    /// Only jobs whose last error has this class (see [`error_class`]).
    pub error_class: Option<String>,
    /// Reached their state at or after.
    pub since: Option<DateTime<Utc>>,
    /// Reached their state before.
    pub until: Option<DateTime<Utc>>,
}

/// What a filter matches now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkMatch {
    /// How many jobs (at most [`MAX_BULK_MATCH`]).
    pub count: u64,
    /// The first few, oldest job first.
    pub sample: Vec<DeadLetter>,
    /// The highest job id counted: the action goes no further.
    pub through_job: Option<i64>,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkStep {
    /// Jobs put back in the queue.
    pub requeued: u64,
    /// The job id the next batch starts after; `None` when there is nothing left.
    pub next_after: Option<i64>,
}

/// One handler attempt, with its delivery's source, for the source and handler pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPoint {
    /// The handler.
    pub handler: String,
    /// The delivery's source.
    pub source: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Whether it succeeded.
    pub ok: bool,
    /// How long it took.
    pub latency_ms: i64,
    /// Its failure reason (no payload data), if it failed.
    pub error: Option<String>,
}

/// A statement and its text parameters, in order.
pub(crate) struct BulkSql {
    pub sql: String,
    pub params: Vec<String>,
}

/// How a backend writes a parameter: `?n`/`$n`, and the casts that compare it with a stored
/// time or an integer id.
pub(crate) struct Dialect {
    pub placeholder: fn(usize) -> String,
    pub time: fn(String) -> String,
    pub int: fn(String) -> String,
}

impl BulkFilter {
    /// Whether a selected job's last error has the wanted class.
    pub fn keeps(&self, d: &DeadLetter) -> bool {
        self.error_class
            .as_deref()
            .is_none_or(|c| error_class(d.last_error.as_deref()) == c)
    }

    /// The statement selecting `id, delivery_id, source, event_type, handler, attempts,
    /// last_error, updated_at` of up to `limit` matching jobs after job `after` (and at most
    /// `through`), in id order. The error class is checked afterwards, by [`Self::keeps`].
    pub(crate) fn select_sql(
        &self,
        after: i64,
        through: Option<i64>,
        limit: usize,
        d: &Dialect,
    ) -> BulkSql {
        let mut params: Vec<String> = Vec::new();
        let mut param = |v: String| {
            params.push(v);
            (d.placeholder)(params.len())
        };
        let mut conds = vec![
            format!("j.status = {}", param(self.kind.job_status().to_owned())),
            format!("j.id > {}", (d.int)(param(after.to_string()))),
        ];
        if self.kind == BulkKind::Replay {
            // Internal jobs are not replayed on their own; purged payloads cannot be.
            conds.push("j.handler NOT LIKE '@%' AND d.status = 'accepted'".to_owned());
        }
        if let Some(t) = through {
            conds.push(format!("j.id <= {}", (d.int)(param(t.to_string()))));
        }
        if let Some(h) = &self.handler {
            conds.push(format!("j.handler = {}", param(h.clone())));
        }
        if let Some(s) = &self.source {
            conds.push(format!("d.source = {}", param(s.clone())));
        }
        if let Some(t) = self.since {
            conds.push(format!(
                "j.updated_at >= {}",
                (d.time)(param(super::payload::db_time(t)))
            ));
        }
        if let Some(t) = self.until {
            conds.push(format!(
                "j.updated_at < {}",
                (d.time)(param(super::payload::db_time(t)))
            ));
        }
        let limit = limit.clamp(1, SCAN_PAGE.max(MAX_BULK_BATCH));
        BulkSql {
            sql: format!(
                "SELECT j.id, j.delivery_id, d.source, d.event_type, j.handler, j.attempts,
                        j.last_error, j.updated_at
                 FROM jobs j JOIN deliveries d ON d.id = j.delivery_id
                 WHERE {} ORDER BY j.id LIMIT {limit}",
                conds.join(" AND ")
            ),
            params,
        }
    }
}

/// Counting a match page by page: feed each page of selected rows, get the next cursor.
#[derive(Debug, Default)]
pub(crate) struct MatchCounter {
    count: u64,
    sample: Vec<DeadLetter>,
    through: Option<i64>,
}

impl MatchCounter {
    /// Rows to ask for per page.
    pub(crate) const PAGE: usize = SCAN_PAGE;

    /// Take one page; the id to continue after, or `None` when counting is over.
    pub(crate) fn take(&mut self, filter: &BulkFilter, rows: Vec<DeadLetter>) -> Option<i64> {
        let full = rows.len() == Self::PAGE;
        let last = rows.last().map(|d| d.job_id);
        for d in rows {
            if self.count as usize >= MAX_BULK_MATCH {
                return None;
            }
            self.through = Some(d.job_id);
            if filter.keeps(&d) {
                self.count += 1;
                if self.sample.len() < BULK_SAMPLE {
                    self.sample.push(d);
                }
            }
        }
        if full {
            last
        } else {
            None
        }
    }

    /// The result.
    pub(crate) fn finish(self) -> BulkMatch {
        BulkMatch {
            count: self.count,
            sample: self.sample,
            through_job: self.through,
        }
    }
}

/// The batch after `rows` (a page of `batch` asked for): the ids to re-queue and the step.
pub(crate) fn batch_step(
    filter: &BulkFilter,
    rows: &[DeadLetter],
    batch: usize,
) -> (Vec<i64>, Option<i64>) {
    let ids = rows
        .iter()
        .filter(|d| filter.keeps(d))
        .map(|d| d.job_id)
        .collect();
    let next = if rows.len() == batch {
        rows.last().map(|d| d.job_id)
    } else {
        None
    };
    (ids, next)
}

/// The batch size actually used.
pub(crate) fn clamp_batch(batch: usize) -> usize {
    batch.clamp(1, MAX_BULK_BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fall_into_stable_classes() {
        assert_eq!(error_class(Some("HTTP 503 from crm.internal")), "http_5xx");
        assert_eq!(error_class(Some("http status 429")), "http_429");
        assert_eq!(error_class(Some("HTTP 400 from crm")), "http_4xx");
        assert_eq!(error_class(Some("request timed out")), "timeout");
        assert_eq!(error_class(Some("connection refused")), "connection");
        assert_eq!(
            error_class(Some("handler crm is no longer configured")),
            "configuration"
        );
        assert_eq!(error_class(Some("exit code 3")), "other");
        assert_eq!(error_class(None), "none");
        // A number that is not an HTTP status is not mistaken for one.
        assert_eq!(error_class(Some("exit code 503")), "other");
    }
}
