//! Search and export: filter records by time, call, source, action and actor, and stream them
//! out as JSONL or CSV without holding the result set in memory.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::chain::StoredRecord;
use super::mirror::JsonLine;
use super::record::{Action, CallRef, Code, ObjectId};
use super::source::RecordStream;
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

/// How many records match `filter` (for progress reporting).
pub fn count(stream: &(impl RecordStream + ?Sized), filter: &Filter) -> Result<u64, AuditError> {
    stream.count(filter)
}

/// Call `f` for each matching record in sequence order, streamed by the backend (constant
/// memory). Returns how many records were visited.
pub fn for_each_record(
    stream: &(impl RecordStream + ?Sized),
    filter: &Filter,
    mut f: impl FnMut(&StoredRecord) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    stream.for_each(filter, &mut |_, r| f(r))
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, the same shape as the mirror (verifiable with the MAC fields).
    Jsonl,
    /// RFC 4180 CSV with a header row; `detail` is a JSON column.
    Csv,
    /// A FHIR R4 `Bundle` of `AuditEvent` resources (`audit/fhir.rs`).
    Fhir,
}

impl std::str::FromStr for ExportFormat {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            "fhir" => Ok(Self::Fhir),
            _ => Err(AuditError::InvalidField {
                field: "format",
                rule: "jsonl, csv or fhir",
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

fn csv_line(node: Option<&str>, r: &StoredRecord) -> String {
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
    if let Some(node) = node {
        csv_field(&mut line, node);
        line.push(',');
    }
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push('\n');
    line
}

/// The header a console export in `format` starts with: CSV's column names, ending with a
/// `node` column when the records carry their node (PostgreSQL); nothing for JSONL.
pub(crate) fn export_header(format: ExportFormat, with_node: bool) -> String {
    match (format, with_node) {
        (ExportFormat::Csv, true) => format!("{},node\n", CSV_HEADER.trim_end()),
        (ExportFormat::Csv, false) => CSV_HEADER.to_owned(),
        (ExportFormat::Jsonl, _) => String::new(),
        (ExportFormat::Fhir, _) => String::new(),
    }
}

/// One record of `node`'s chain as a line of a console export in `format`, newline included:
/// JSONL carries `node` as the mirror line does; CSV ends with the node column. The columns
/// before it are the single-chain export's, so a reader of SQLite exports reads these too.
pub(crate) fn export_line(node: Option<&str>, r: &StoredRecord, format: ExportFormat) -> String {
    match format {
        ExportFormat::Jsonl => {
            let mut l = JsonLine::render_on(node, r);
            l.push('\n');
            l
        }
        ExportFormat::Csv => {
            let mut l = csv_line(None, r);
            if let Some(node) = node {
                l.pop();
                l.push(',');
                csv_field(&mut l, node);
                l.push('\n');
            }
            l
        }
        // Line by line there is no Bundle around the resources: one AuditEvent per line, the
        // FHIR bulk data (NDJSON) form.
        ExportFormat::Fhir => {
            let mut l = super::fhir::audit_event(node, r).to_string();
            l.push('\n');
            l
        }
    }
}

/// Stream matching records to `out` in `format`, reporting to `progress`. Memory use does not
/// depend on the number of records. Returns how many were written.
pub fn export(
    stream: &(impl RecordStream + ?Sized),
    filter: &Filter,
    format: ExportFormat,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<u64, AuditError> {
    if format == ExportFormat::Fhir {
        return super::fhir::export_bundle(stream, filter, out, progress);
    }
    progress.start(stream.count(filter)?);
    if format == ExportFormat::Csv {
        if stream.has_nodes() {
            out.write_all(b"node,").map_err(AuditError::Output)?;
        }
        out.write_all(CSV_HEADER.as_bytes())
            .map_err(AuditError::Output)?;
    }
    let mut done = 0;
    stream.for_each(filter, &mut |node, r| {
        let line = match format {
            ExportFormat::Jsonl => {
                let mut l = JsonLine::render_on(node, r);
                l.push('\n');
                l
            }
            ExportFormat::Csv => csv_line(node, r),
            // Not reached (FHIR exports return above); one resource per line if it were.
            ExportFormat::Fhir => export_line(node, r, ExportFormat::Fhir),
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
