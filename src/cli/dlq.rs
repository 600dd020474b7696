//! `wardhook dlq list|show|retry` and `wardhook deliveries replay`: dead letters and re-runs,
//! on the database, while the server runs (its workers pick retried jobs up within a second).

use std::io::Write;

use crate::store::jobs::{self, DeadFilter, DeadLetter};
use crate::store::StoreError;

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
