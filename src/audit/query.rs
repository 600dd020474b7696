//! Search and export: filter records by time, call, source, action and actor, and stream them
//! out as JSONL or CSV without holding the result set in memory.

use std::io::Write;

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};

use super::chain::{format_ts, StoredRecord, COLUMNS};
use super::mirror::JsonLine;
use super::record::{Action, CallRef, Code, ObjectId};
use super::AuditError;

/// Which records to select. Empty filter = everything. Conditions are ANDed.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Records strictly before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Records about this call (its blind index; see [`CallRef::from_call_id`]).
    pub call_ref: Option<CallRef>,
    /// Records about this source.
    pub source: Option<Code>,
    /// Records of this action.
    pub action: Option<Action>,
    /// Records by this actor: the full form (`cli_user:alice`, `system`) or just the id
    /// (`alice`), which matches any actor kind with that id.
    pub actor: Option<Code>,
    /// Records about this delivery.
    pub delivery_id: Option<ObjectId>,
}

impl Filter {
    fn where_clause(&self) -> (String, Vec<SqlValue>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        let mut push = |cond: &str, v: SqlValue| {
            params.push(v);
            conds.push(cond.replace('?', &format!("?{}", params.len())));
        };
        if let Some(t) = self.since {
            push("ts >= ?", SqlValue::Text(format_ts(t)));
        }
        if let Some(t) = self.until {
            push("ts < ?", SqlValue::Text(format_ts(t)));
        }
        if let Some(c) = &self.call_ref {
            push("call_ref = ?", SqlValue::Text(c.as_str().to_owned()));
        }
        if let Some(s) = &self.source {
            push("source = ?", SqlValue::Text(s.as_str().to_owned()));
        }
        if let Some(a) = self.action {
            push("action = ?", SqlValue::Text(a.as_str().to_owned()));
        }
        if let Some(a) = &self.actor {
            push(
                "(actor = ? OR substr(actor, instr(actor, ':') + 1) = ?)",
                SqlValue::Text(a.as_str().to_owned()),
            );
        }
        if let Some(d) = &self.delivery_id {
            push("delivery_id = ?", SqlValue::Text(d.as_str().to_owned()));
        }
        let clause = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (clause, params)
    }
}

/// How many records match `filter` (for progress reporting).
pub fn count(conn: &Connection, filter: &Filter) -> Result<u64, AuditError> {
    let (clause, params) = filter.where_clause();
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM audit_log{clause}"),
        params_from_iter(params),
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Call `f` for each matching record in sequence order, one row at a time straight off the
/// SQLite cursor (constant memory). Returns how many records were visited.
pub fn for_each_record(
    conn: &Connection,
    filter: &Filter,
    mut f: impl FnMut(&StoredRecord) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let (clause, params) = filter.where_clause();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM audit_log{clause} ORDER BY seq"
    ))?;
    let mut rows = stmt.query(params_from_iter(params))?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        f(&StoredRecord::from_row(row)?)?;
        n += 1;
    }
    Ok(n)
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, the same shape as the mirror (verifiable with the MAC fields).
    Jsonl,
    /// RFC 4180 CSV with a header row; `detail` is a JSON column.
    Csv,
}

impl std::str::FromStr for ExportFormat {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            _ => Err(AuditError::InvalidField {
                field: "format",
                rule: "jsonl or csv",
            }),
        }
    }
}

/// Receives export progress. `()` ignores it.
pub trait Progress {
    /// Called once before the first record with the number of records to export.
    fn start(&mut self, total: u64);
    /// Called after each record with the number exported so far.
    fn advance(&mut self, done: u64);
    /// Called once at the end.
    fn finish(&mut self, done: u64);
}

impl Progress for () {
    fn start(&mut self, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self, _: u64) {}
}

const CSV_HEADER: &str =
    "seq,ts,actor,action,outcome,delivery_id,source,call_ref,remote_addr,detail,prev_mac,mac\n";

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_line(r: &StoredRecord) -> String {
    let seq = r.seq.to_string();
    let fields: [&str; 12] = [
        &seq,
        &r.ts,
        &r.actor,
        &r.action,
        &r.outcome,
        r.delivery_id.as_deref().unwrap_or(""),
        r.source.as_deref().unwrap_or(""),
        r.call_ref.as_deref().unwrap_or(""),
        r.remote_addr.as_deref().unwrap_or(""),
        &r.detail,
        &r.prev_mac,
        &r.mac,
    ];
    let mut line = String::with_capacity(512);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push('\n');
    line
}

/// The header an export in `format` starts with (CSV's column names; nothing for JSONL).
pub(crate) fn export_header(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Csv => CSV_HEADER,
        ExportFormat::Jsonl => "",
    }
}

/// One record as a line of an export in `format`, newline included.
pub(crate) fn export_line(r: &StoredRecord, format: ExportFormat) -> String {
    match format {
        ExportFormat::Jsonl => {
            let mut l = JsonLine::render(r);
            l.push('\n');
            l
        }
        ExportFormat::Csv => csv_line(r),
    }
}

/// Stream matching records to `out` in `format`, reporting to `progress`. Memory use does not
/// depend on the number of records. Returns how many were written.
pub fn export(
    conn: &Connection,
    filter: &Filter,
    format: ExportFormat,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<u64, AuditError> {
    progress.start(count(conn, filter)?);
    if format == ExportFormat::Csv {
        out.write_all(CSV_HEADER.as_bytes())
            .map_err(AuditError::Output)?;
    }
    let mut done = 0;
    for_each_record(conn, filter, |r| {
        let line = match format {
            ExportFormat::Jsonl => {
                let mut l = JsonLine::render(r);
                l.push('\n');
                l
            }
            ExportFormat::Csv => csv_line(r),
        };
        out.write_all(line.as_bytes()).map_err(AuditError::Output)?;
        done += 1;
        progress.advance(done);
        Ok(())
    })?;
    out.flush().map_err(AuditError::Output)?;
    progress.finish(done);
    Ok(done)
}
