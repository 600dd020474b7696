//! The `wardhook audit verify|search|export` commands, as plain functions: arguments in, text
//! out to a `Write`, a typed result back. The clap types and exit codes live in `src/cli`;
//! `src/cli/audit.rs` re-exports these.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

use super::source::{ChainReader, RecordStream};
use super::verify::{verify_jsonl_from, Problem};
use super::{
    export as export_records, verify_db, Action, AuditError, CallRef, Code, ExportFormat, Filter,
    ObjectId, Progress, VerifyReport,
};
use crate::crypto::Keyring;

/// Name of the signed checkpoint file inside the `[audit] dir`.
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";

/// The checkpoint file for an audit directory.
pub fn checkpoint_path(audit_dir: &Path) -> PathBuf {
    audit_dir.join(CHECKPOINT_FILE)
}

/// What `audit verify` established.
#[derive(Debug, Clone)]
pub struct VerifySummary {
    /// The database chain.
    pub database: VerifyReport,
    /// The JSONL mirror, if it was checked.
    pub mirror: Option<VerifyReport>,
}

fn fail(seq: u64, problem: Problem, location: String) -> AuditError {
    AuditError::VerifyFailed {
        seq,
        problem,
        location,
    }
}

fn describe(out: &mut dyn Write, what: &str, r: &VerifyReport) -> Result<(), AuditError> {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("sequence {a}..={b}"),
        _ => "empty".to_owned(),
    };
    let head = r.head_mac.as_deref().map_or("-", |m| &m[..m.len().min(16)]);
    writeln!(
        out,
        "{what}: OK, {} records ({range}), head mac {head}…, {} checkpoints matched",
        r.records, r.checkpoints_matched
    )
    .map_err(AuditError::Output)?;
    for w in &r.warnings {
        writeln!(out, "{what}: warning: {w}").map_err(AuditError::Output)?;
    }
    Ok(())
}

/// `wardhook audit verify`: verify the database chain against the signed checkpoints in
/// `audit_dir`, then (unless `skip_mirror`) the JSONL mirror in `audit_dir`, then that the two
/// agree. `allow_partial_mirror` accepts a mirror whose oldest files were archived away.
///
/// Fails with [`AuditError::VerifyFailed`] naming the first bad sequence number; a mirror that
/// holds records the database lacks means the database's tail was cut.
pub fn verify(
    conn: &(impl ChainReader + ?Sized),
    keyring: &Keyring,
    audit_dir: &Path,
    skip_mirror: bool,
    allow_partial_mirror: bool,
    out: &mut dyn Write,
) -> Result<VerifySummary, AuditError> {
    let cps = checkpoint_path(audit_dir);
    let database = verify_db(conn, keyring, Some(&cps))?;
    describe(out, "database", &database)?;
    if skip_mirror {
        return Ok(VerifySummary {
            database,
            mirror: None,
        });
    }
    let mirror = verify_jsonl_from(
        audit_dir,
        keyring,
        Some(&cps),
        allow_partial_mirror,
        &conn.genesis(),
    )?;
    describe(out, "mirror", &mirror)?;
    // Compare with the database as it is now, not at the start: a running server may have
    // committed and mirrored more records while the mirror was being read.
    let db_now = conn.head()?.map_or(0, |(seq, _, _)| seq);
    if let Some(m_last) = mirror.last_seq {
        if m_last > db_now {
            return Err(fail(
                db_now + 1,
                Problem::Missing { next_found: None },
                format!("database (the mirror has records up to sequence {m_last})"),
            ));
        }
        let db_mac = conn.mac_at(m_last)?;
        // Below the database's purge anchor the database has nothing to compare with.
        if let Some(db_mac) = db_mac {
            if Some(&db_mac) != mirror.head_mac.as_ref() {
                return Err(fail(
                    m_last,
                    Problem::Modified,
                    "database and mirror disagree".into(),
                ));
            }
        }
    }
    let m_last = mirror.last_seq.unwrap_or(0);
    let db_last = database.last_seq.unwrap_or(0);
    if m_last < db_last {
        writeln!(
            out,
            "mirror: warning: {} newer records not mirrored yet (the next audited action or server start mirrors them)",
            db_last - m_last
        )
        .map_err(AuditError::Output)?;
    }
    Ok(VerifySummary {
        database,
        mirror: Some(mirror),
    })
}

/// Filters for `audit search` and `audit export`, as the user typed them.
#[derive(Debug, Clone, Default)]
pub struct SearchArgs {
    /// Inclusive start: RFC 3339 (`2026-07-01T00:00:00Z`) or a UTC date (`2026-07-01`).
    pub since: Option<String>,
    /// Exclusive end, same forms.
    pub until: Option<String>,
    /// The sender's call id; turned into its blind index, never stored or printed.
    pub call_id: Option<String>,
    /// Delivery id.
    pub delivery_id: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Action name (`payload_read`).
    pub action: Option<String>,
    /// Actor: `cli_user:alice`, `admin_token:ops-1`, `system`, or just `alice`.
    pub actor: Option<String>,
}

/// Parse `2026-07-01T00:00:00Z` (any RFC 3339 offset) or `2026-07-01` (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or(AuditError::InvalidField {
            field: "time",
            rule: "RFC 3339 (2026-07-01T00:00:00Z) or a date (2026-07-01)",
        })
}

impl SearchArgs {
    /// Turn the typed strings into a [`Filter`]; the call id becomes its blind index here.
    pub fn to_filter(&self, keyring: &Keyring) -> Result<Filter, AuditError> {
        Ok(Filter {
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
            call_ref: self
                .call_id
                .as_deref()
                .map(|c| CallRef::from_call_id(keyring, c)),
            source: self.source.as_deref().map(Code::parse).transpose()?,
            action: self.action.as_deref().map(Action::parse).transpose()?,
            actor: self.actor.as_deref().map(Code::parse).transpose()?,
            delivery_id: self
                .delivery_id
                .as_deref()
                .map(ObjectId::parse)
                .transpose()?,
        })
    }
}

/// `wardhook audit search`: print matching records, one tab-separated line each, oldest first.
/// Returns how many matched.
pub fn search(
    conn: &(impl RecordStream + ?Sized),
    keyring: &Keyring,
    args: &SearchArgs,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let filter = args.to_filter(keyring)?;
    if conn.has_nodes() {
        write!(out, "node\t").map_err(AuditError::Output)?;
    }
    writeln!(
        out,
        "seq\tts\tactor\taction\toutcome\tdelivery_id\tsource\tcall_ref\tremote_addr\tdetail"
    )
    .map_err(AuditError::Output)?;
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_owned());
    let n = conn.for_each(&filter, &mut |node, r| {
        if let Some(node) = node {
            write!(out, "{node}\t").map_err(AuditError::Output)?;
        }
        let call_ref = r
            .call_ref
            .as_deref()
            .map_or_else(|| "-".to_owned(), |c| format!("{}…", &c[..c.len().min(12)]));
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.seq,
            r.ts,
            r.actor,
            r.action,
            r.outcome,
            dash(&r.delivery_id),
            dash(&r.source),
            call_ref,
            dash(&r.remote_addr),
            r.detail
        )
        .map_err(AuditError::Output)
    })?;
    writeln!(out, "{n} records").map_err(AuditError::Output)?;
    Ok(n)
}

/// Progress for large exports as a counter line on a terminal-ish sink (stderr): updated every
/// 1% (at least every 1,000 records), silent below `threshold` records.
#[derive(Debug)]
pub struct CounterProgress<W: Write> {
    sink: W,
    total: u64,
    step: u64,
    threshold: u64,
}

impl<W: Write> CounterProgress<W> {
    /// Report to `sink` when an export has at least `threshold` records.
    pub fn new(sink: W, threshold: u64) -> Self {
        Self {
            sink,
            total: 0,
            step: u64::MAX,
            threshold,
        }
    }

    /// Give back the sink.
    pub fn into_inner(self) -> W {
        self.sink
    }
}

impl<W: Write> Progress for CounterProgress<W> {
    fn start(&mut self, total: u64) {
        self.total = total;
        if total >= self.threshold {
            self.step = (total / 100).max(1_000);
        }
    }
    fn advance(&mut self, done: u64) {
        if done % self.step == 0 {
            // Progress is best effort: a closed stderr must not fail the export.
            let _ = write!(
                self.sink,
                "\raudit export: {done}/{} records ({}%)",
                self.total,
                done * 100 / self.total.max(1)
            );
            let _ = self.sink.flush();
        }
    }
    fn finish(&mut self, done: u64) {
        if self.step != u64::MAX {
            let _ = writeln!(
                self.sink,
                "\raudit export: {done}/{} records (100%)",
                self.total
            );
        }
    }
}

/// `wardhook audit export`: stream matching records to `out` as JSONL or CSV in constant memory,
/// reporting progress for large ranges to `progress` (stderr). Returns how many were written.
pub fn export(
    conn: &(impl RecordStream + ?Sized),
    keyring: &Keyring,
    format: ExportFormat,
    args: &SearchArgs,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<u64, AuditError> {
    let filter = args.to_filter(keyring)?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut progress = CounterProgress::new(progress, 10_000);
    let n = export_records(conn, &filter, format, &mut out, &mut progress)?;
    out.flush().map_err(AuditError::Output)?;
    Ok(n)
}
