//! The audit export the API and the dashboard download: streamed page by page from
//! [`crate::store::Console::audit_page`], so memory does not grow with the log, and recorded as
//! one `audit_exported` record naming how many records went out.
//!
//! The first page is read before the response starts, so an unusable filter is still a 400.
//! The `audit_exported` record is written after the last page and before the body ends: if it
//! cannot be written, the body ends with an error instead of its last chunk, so no complete
//! export leaves without its record.

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;

use super::api::{audit_error, AuditQuery};
use super::auth::Principal;
use super::{ApiError, Console};
use crate::audit::commands::SearchArgs;
use crate::audit::{export_header, export_line, Action, Actor, AuditRecord, DetailKey};
use crate::audit::{ExportFormat, Outcome};
use crate::store::console::{AuditCursor, AuditPageRow};

/// Records read (and sent) per page.
pub(super) const EXPORT_PAGE: usize = 256;

/// Where a streamed export is.
struct Export {
    console: web::Data<Console>,
    args: SearchArgs,
    format: ExportFormat,
    actor: Actor,
    /// The page read before the response started, not yet sent.
    first: Option<Vec<AuditPageRow>>,
    after: Option<AuditCursor>,
    sent: u64,
    done: bool,
}

impl Export {
    /// The next chunk: one page's lines (the first with the header); after the last page, the
    /// `audit_exported` record.
    async fn next_chunk(&mut self) -> Result<Bytes, std::io::Error> {
        let first = self.first.take();
        let header = first
            .as_ref()
            .map(|rows| export_header(self.format, rows.first().is_some_and(|r| r.node.is_some())));
        let rows = match first {
            Some(rows) => rows,
            None => self
                .console
                .store
                .console()
                .audit_page(self.args.clone(), self.after.clone(), EXPORT_PAGE)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "admin: audit export page failed");
                    std::io::Error::other("audit export interrupted")
                })?,
        };
        let mut chunk = header.unwrap_or_default();
        for r in &rows {
            chunk.push_str(&export_line(r.node.as_deref(), &r.record, self.format));
        }
        self.sent += rows.len() as u64;
        if let Some(last) = rows.last() {
            self.after = Some(last.cursor());
        }
        if rows.len() < EXPORT_PAGE {
            self.done = true;
            self.record().await?;
        }
        Ok(Bytes::from(chunk))
    }

    async fn record(&self) -> Result<(), std::io::Error> {
        let mut r = AuditRecord::new(self.actor.clone(), Action::AuditExported, Outcome::Success);
        r.detail.insert(
            DetailKey::Count,
            i64::try_from(self.sent).unwrap_or(i64::MAX),
        );
        if let Ok(v) = crate::audit::Code::parse("admin_api") {
            r.detail.insert(DetailKey::Via, v);
        }
        self.console.append_audit(r).await.map_err(|_| {
            tracing::error!("admin: cannot record an audit export; the download is cut off");
            std::io::Error::other("audit export not recorded")
        })
    }
}

/// Export the records matching `q` as JSONL or CSV for `p`, streamed.
pub(super) async fn export_response(
    console: web::Data<Console>,
    p: &Principal,
    q: &AuditQuery,
) -> Result<HttpResponse, ApiError> {
    let (format, content_type, file) = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => (
            ExportFormat::Jsonl,
            "application/x-ndjson",
            "wardhook-audit.jsonl",
        ),
        "csv" => (
            ExportFormat::Csv,
            "text/csv; charset=utf-8",
            "wardhook-audit.csv",
        ),
        _ => return Err(ApiError::BadRequest("format must be jsonl or csv")),
    };
    let args = q.args();
    let first = console
        .store
        .console()
        .audit_page(args.clone(), None, EXPORT_PAGE)
        .await
        .map_err(audit_error)?;
    let export = Export {
        console,
        args,
        format,
        actor: p.actor(),
        first: Some(first),
        after: None,
        sent: 0,
        done: false,
    };
    let body = futures_util::stream::unfold(export, |mut e| async move {
        if e.done {
            return None;
        }
        let chunk = e.next_chunk().await;
        if chunk.is_err() {
            e.done = true;
        }
        Some((chunk, e))
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .streaming(body))
}
