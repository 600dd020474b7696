//! The intake-side CLI commands: `deliveries list|show|index-phones`, `quarantine list|show`,
//! `keys rotate`, `purge`, `backup`.
//!
//! Plain functions over an opened [`Store`] that write their output to any `Write`, so clap
//! stays in `cli/mod.rs` and tests can drive the commands without a process. Listings show
//! metadata only; the `show` commands decrypt and are audited as reads by the store.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use crate::store::admin::{self, Requester};
use crate::store::StoreError;

/// `--format` of the list commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON array, for scripts.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            _ => Err("expected `table` or `json`".into()),
        }
    }
}

/// Parse `--since`/`--until`: RFC 3339 (`2026-11-22T10:00:00Z`) or a UTC day (`2026-11-22`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            StoreError::InvalidArgument(format!(
                "`{text}` is not a time: use RFC 3339 (2026-11-22T10:00:00Z) or a day (2026-11-22)"
            ))
        })
}

/// Parse `--older-than`: a number with a unit `s`, `m`, `h`, `d` or `w` (e.g. `90d`), bounded
/// like every duration ([`crate::config::MAX_DURATION`]) so the cut-off is a valid time.
pub fn parse_duration(text: &str) -> Result<chrono::Duration, StoreError> {
    let d = crate::config::parse_duration(text).map_err(|reason| {
        StoreError::InvalidArgument(format!(
            "`{}` is not a duration ({reason}): use a number and s, m, h, d or w (e.g. 90d)",
            text.trim()
        ))
    })?;
    chrono::Duration::from_std(d)
        .map_err(|_| StoreError::InvalidArgument(format!("`{}` is too long", text.trim())))
}

/// The `deliveries list` table or JSON, whichever backend listed the rows.
pub(crate) fn print_deliveries(
    rows: &[admin::DeliverySummary],
    format: OutputFormat,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let header = format!(
        "{:<36}  {:<16}  {:<24}  {:<27}  {:<8}  JOBS",
        "ID", "SOURCE", "EVENT", "RECEIVED", "STATUS"
    );
    print_rows(rows, format, out, &header, "deliveries", |r| {
        format!(
            "{:<36}  {:<16}  {:<24}  {:<27}  {:<8}  {}",
            r.id, r.source, r.event_type, r.received_at, r.status, r.jobs
        )
    })
}

/// `rows` as pretty JSON, or as a table: `header`, one `line` per row, then how many there
/// are (`N counted`).
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    format: OutputFormat,
    out: &mut impl Write,
    header: &str,
    counted: &str,
    line: impl Fn(&T) -> String,
) -> Result<(), StoreError> {
    match format {
        OutputFormat::Json => write_json(&rows, out)?,
        OutputFormat::Table => {
            writeln!(out, "{header}")?;
            for r in rows {
                writeln!(out, "{}", line(r))?;
            }
            writeln!(out, "{} {counted}", rows.len())?;
        }
    }
    Ok(())
}

/// `value` as pretty JSON and a newline.
fn write_json(value: &impl serde::Serialize, out: &mut impl Write) -> Result<(), StoreError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| StoreError::Output(e.into()))?;
    writeln!(out)?;
    Ok(())
}

/// A decrypted event as pretty JSON.
pub(crate) fn print_event(
    event: &wardhook_sdk::Event,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    write_json(event, out)
}

/// The `quarantine list` table or JSON, whichever backend listed the rows.
pub(crate) fn print_quarantine(
    rows: &[admin::QuarantineSummary],
    format: OutputFormat,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let header = format!(
        "{:<36}  {:<16}  {:<27}  {:<11}  REASON",
        "ID", "SOURCE", "RECEIVED", "STATUS"
    );
    print_rows(rows, format, out, &header, "quarantined", |r| {
        format!(
            "{:<36}  {:<16}  {:<27}  {:<11}  {}",
            r.id, r.source, r.received_at, r.status, r.reason
        )
    })
}

/// One decrypted quarantine entry: metadata, signature headers, then the body.
pub(crate) fn print_quarantine_entry(
    entry: &admin::QuarantineEntry,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    writeln!(out, "id:           {}", entry.summary.id)?;
    writeln!(out, "source:       {}", entry.summary.source)?;
    writeln!(out, "received:     {}", entry.summary.received_at)?;
    writeln!(out, "reason:       {}", entry.summary.reason)?;
    writeln!(
        out,
        "content-type: {}",
        entry.content_type.as_deref().unwrap_or("-")
    )?;
    for (name, value) in &entry.signature_headers {
        writeln!(out, "header:       {name}: {value}")?;
    }
    writeln!(out)?;
    match std::str::from_utf8(&entry.body) {
        Ok(text) => writeln!(out, "{text}")?,
        Err(_) => {
            use base64::Engine;
            writeln!(
                out,
                "(not UTF-8; base64) {}",
                base64::engine::general_purpose::STANDARD.encode(&entry.body)
            )?;
        }
    }
    Ok(())
}

/// `keys rotate`: start (or resume) a rotation and print progress as rows are re-encrypted.
pub fn keys_rotate(
    store: &dyn crate::store::Maintenance,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let mut write_error = None;
    let report = store.rotate_keys(&Requester::cli_user(), &mut |p| {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        if let Err(e) = writeln!(
            out,
            "generation {}: re-encrypted {}/{} ({pct}%)",
            p.generation, p.done, p.total
        ) {
            write_error.get_or_insert(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writeln!(
        out,
        "{} key generation {}: {} rows re-encrypted, {} old data keys destroyed",
        if report.resumed {
            "resumed; now on"
        } else {
            "new writes use"
        },
        report.generation,
        report.reencrypted,
        report.keys_destroyed
    )?;
    Ok(())
}

/// `deliveries index-phones`: index the caller's phone of every delivery stored without one,
/// with progress on stderr and a summary on `out`.
pub fn index_phones(
    store: &dyn crate::store::Maintenance,
    batch: usize,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let mut shown = Tenths::new("deliveries index-phones", "deliveries", 1);
    let report = store.index_caller_phones(batch, &Requester::cli_user(), &mut |done, total| {
        shown.update(done, total)
    })?;
    writeln!(
        out,
        "read {} deliveries without a caller index; indexed {}, {} name no usable phone number (a rerun reads those again)",
        report.read,
        report.indexed,
        report.read.saturating_sub(report.indexed)
    )?;
    Ok(())
}

/// The one-line summary of a purge, whichever backend did it.
pub(crate) fn print_purge(
    cutoff: chrono::DateTime<Utc>,
    r: &admin::PurgeReport,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "purged before {}: {} delivery payloads, {} quarantined bodies, {} jobs; {} period keys destroyed (metadata kept for the audit trail)",
        cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.deliveries,
        r.quarantined,
        r.jobs,
        r.keys_destroyed
    )
}

/// Progress of a long maintenance command on stderr, in tenths, once the work is big enough to
/// take a while (`backup`, `purge`).
#[derive(Debug)]
pub(crate) struct Tenths {
    command: &'static str,
    unit: &'static str,
    min_total: u64,
    shown: u64,
}

impl Tenths {
    /// Report `command`'s progress in `unit`s when there are at least `min_total` of them.
    pub(crate) fn new(command: &'static str, unit: &'static str, min_total: u64) -> Self {
        Self {
            command,
            unit,
            min_total,
            shown: 0,
        }
    }

    /// Print a line when `done` of `total` crosses the next tenth.
    pub(crate) fn update(&mut self, done: u64, total: u64) {
        let tenth = (done.saturating_mul(10)).checked_div(total).unwrap_or(10);
        if total >= self.min_total && tenth > self.shown {
            self.shown = tenth;
            eprintln!(
                "{}: {}% ({done}/{total} {})",
                self.command,
                tenth * 10,
                self.unit
            );
        }
    }
}

/// `backup --to PATH`: an online copy of the database; never includes the master key.
pub fn backup(
    store: &dyn crate::store::Maintenance,
    to: &Path,
    master_key_file: Option<&Path>,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let mut shown = Tenths::new("backup", "pages", 25_600);
    let outcome = store.backup(
        to,
        master_key_file,
        &Requester::cli_user(),
        &mut |done, total| shown.update(done, total),
    )?;
    let r = match outcome {
        crate::store::maintenance::BackupOutcome::Written(r) => r,
        crate::store::maintenance::BackupOutcome::UseDatabaseTools(how) => {
            writeln!(out, "{how}")?;
            return Ok(());
        }
    };
    writeln!(
        out,
        "backup written to {} ({} bytes, sha256 {}); the master key is NOT in it: back it up separately and store it apart",
        r.path.display(),
        r.bytes,
        r.sha256
    )?;
    match (r.periods.first(), r.periods.last()) {
        (Some(oldest), Some(newest)) => writeln!(
            out,
            "it holds payloads of {} period(s), {oldest} to {newest} (listed in {}); a later purge does not reach this copy: delete it once {oldest} is past retention (`wardhook doctor` warns)",
            r.periods.len(),
            r.manifest.display()
        )?,
        _ => writeln!(
            out,
            "it holds no readable payloads (manifest: {})",
            r.manifest.display()
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse_or_explain() {
        assert_eq!(
            parse_duration("90d").expect("d"),
            chrono::Duration::days(90)
        );
        assert_eq!(
            parse_duration("12h").expect("h"),
            chrono::Duration::hours(12)
        );
        assert!(parse_duration("90").is_err());
        assert!(parse_duration("d").is_err());
        assert_eq!(parse_duration("2w").expect("w"), chrono::Duration::days(14));
        // Past chrono's range `now - age` would panic: refused before any arithmetic.
        for huge in ["99999999d", "18446744073709551615s", "9999999999999w"] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
        assert!(parse_duration("36500d").is_ok());
        assert!(parse_time("2026-11-22").is_ok());
        assert!(parse_time("2026-11-22T10:00:00Z").is_ok());
        assert!(parse_time("yesterday").is_err());
    }

    #[tokio::test]
    async fn list_show_rotate_purge_print_what_they_did() {
        use crate::crypto::{Keyring, MasterKey};
        use crate::normalize::{normalize, Envelope, IntakeInput};
        use crate::store::{JobSpec, Store, StoreOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::from_master(&MasterKey::from_bytes([9; 32]));
        let store = Store::open(
            &dir.path().join("w.db"),
            ring.clone(),
            StoreOptions::default(),
        )
        .expect("open");
        let input = IntakeInput::for_test(
            "nextphone",
            Envelope::NextPhone,
            br#"{"event":"call.ended","data":{"call_id":"c1","caller":{"name":"Zqx Doe"}}}"#,
        );
        let mut n = normalize(&input, Utc::now()).expect("normalize");
        let id = store
            .intake(input, &mut n, vec![JobSpec::new("crm")])
            .await
            .expect("intake");

        let mut out = Vec::new();
        let rows = admin::list_deliveries(&store, &admin::ListFilter::default()).expect("list");
        print_deliveries(&rows, OutputFormat::Json, &mut out).expect("print");
        let rows: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(rows[0]["id"], id.delivery_id());
        assert!(
            !String::from_utf8_lossy(&out).contains("Zqx"),
            "list shows metadata only"
        );

        let mut out = Vec::new();
        let event =
            admin::show_delivery(&store, id.delivery_id(), &Requester::cli_user()).expect("show");
        print_event(&event, &mut out).expect("print");
        assert!(String::from_utf8_lossy(&out).contains("Zqx Doe"));

        let mut out = Vec::new();
        let maintenance = crate::store::sqlite::SqliteMaintenance::new(
            &dir.path().join("w.db"),
            ring,
            &dir.path().join("audit"),
        )
        .expect("maintenance");
        keys_rotate(&maintenance, &mut out).expect("rotate");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("re-encrypted 1/1 (100%)"), "{text}");

        let mut out = Vec::new();
        let cutoff = Utc::now() - parse_duration("0s").expect("dur");
        let report =
            admin::purge_older_than(&store, cutoff, &Requester::cli_user()).expect("purge");
        print_purge(cutoff, &report, &mut out).expect("print");
        assert!(String::from_utf8_lossy(&out).contains("1 delivery payloads"));
    }
}
