//! `wardhook dlq list|show|retry` and `wardhook deliveries replay`: dead letters and re-runs,
//! on the database, while the server runs (its workers pick retried jobs up within a second).

use std::io::Write;

use crate::store::admin::Requester;
use crate::store::jobs::{self, DeadFilter, DeadLetter};
use crate::store::{Store, StoreError};

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// Asked to show a job that is not a dead letter.
    #[error("no dead letter with job id {0}")]
    NotFound(i64),
    /// `retry` without an id or `--all`.
    #[error("name a job id, or pass --all (with --handler/--source to narrow it)")]
    NothingChosen,
}

/// `dlq list`: one line per dead letter (metadata only), as a table or JSON.
pub fn list(
    store: &Store,
    filter: &DeadFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<usize, DlqError> {
    let rows = jobs::list_dead(store, filter)?;
    print_dead(&rows, json, out)?;
    Ok(rows.len())
}

/// The dead letters as a table or JSON, whichever backend listed them.
pub(crate) fn print_dead(
    rows: &[DeadLetter],
    json: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<8} {:<36} {:<14} {:<16} {:<18} {:>8}  last error",
            "job", "delivery", "source", "event", "handler", "attempts"
        )?;
        for d in rows {
            writeln!(
                out,
                "{:<8} {:<36} {:<14} {:<16} {:<18} {:>8}  {}",
                d.job_id,
                d.delivery_id,
                d.source,
                d.event_type,
                d.handler,
                d.attempts,
                d.last_error.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

/// `dlq show JOB`: the dead letter and its attempts timeline (no payload).
pub fn show(store: &Store, job_id: i64, out: &mut dyn Write) -> Result<DeadLetter, DlqError> {
    let filter = DeadFilter {
        job_id: Some(job_id),
        ..DeadFilter::default()
    };
    let dead = jobs::list_dead(store, &filter)?
        .pop()
        .ok_or(DlqError::NotFound(job_id))?;
    print_dead_letter(&dead, &jobs::job_attempts(store, job_id)?, out)?;
    Ok(dead)
}

/// One dead letter and its attempts timeline (no payload), whichever backend read them.
pub(crate) fn print_dead_letter(
    dead: &DeadLetter,
    attempts: &[jobs::AttemptSummary],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "job        {}", dead.job_id)?;
    writeln!(out, "delivery   {}", dead.delivery_id)?;
    writeln!(out, "source     {} ({})", dead.source, dead.event_type)?;
    writeln!(out, "handler    {}", dead.handler)?;
    writeln!(out, "attempts:")?;
    for a in attempts {
        writeln!(
            out,
            "  #{:<3} {}  {:<9} {:>6} ms  {}  {}",
            a.attempt,
            a.started_at,
            a.result,
            a.latency_ms,
            a.http_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            a.error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `dlq retry JOB` or `dlq retry --all [filters]`.
pub fn retry(
    store: &Store,
    job_id: Option<i64>,
    all: bool,
    filter: DeadFilter,
    out: &mut dyn Write,
) -> Result<u64, DlqError> {
    let filter = retry_filter(job_id, all, filter)?;
    let n = jobs::retry_dead(store, &filter, &Requester::cli_user())?;
    print_retried(n, out)?;
    Ok(n)
}

/// What `dlq retry` acts on: one job, or `--all` matching the filter; neither is an error.
pub(crate) fn retry_filter(
    job_id: Option<i64>,
    all: bool,
    mut filter: DeadFilter,
) -> Result<DeadFilter, DlqError> {
    match (job_id, all) {
        (Some(id), _) => filter.job_id = Some(id),
        (None, true) => {}
        (None, false) => return Err(DlqError::NothingChosen),
    }
    Ok(filter)
}

pub(crate) fn print_retried(n: u64, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "re-queued {n} dead letter{}; a running server delivers them within a second",
        if n == 1 { "" } else { "s" }
    )
}

/// `deliveries replay ID [--handler NAME]`.
pub fn replay(
    store: &Store,
    delivery_id: &str,
    handler: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64, DlqError> {
    let n = jobs::replay(store, delivery_id, handler, &Requester::cli_user())?;
    print_replayed(n, delivery_id, out)?;
    Ok(n)
}

pub(crate) fn print_replayed(
    n: u64,
    delivery_id: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "re-queued {n} job{} of delivery {delivery_id}",
        if n == 1 { "" } else { "s" }
    )
}
