//! Captured recordings and transcripts in the console: a metadata list for everyone who may
//! read metadata, and the decrypted content — played in the page or downloaded — for roles that
//! may reveal payloads. Every content request is one `payload_read` record (object kind
//! `artifact`) under the token, written by the store in the same transaction that unseals the
//! file key, before a byte is sent.
//!
//! Playing and downloading are plain `GET`s (an `<audio>` element cannot send a form): the
//! session cookie is `SameSite=Strict`, so no other site can make a browser send them, and a
//! request a browser marks as cross-site (`Sec-Fetch-Site`) is refused as well. The player
//! loads nothing until the operator presses play (`preload="none"`).

use std::fmt::Write as _;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Permission, Session};
use super::layout::{api_error_page, error_page, esc, html, page};
use super::pages::page_guard;
use super::{api, ApiError, Console, Denial};
use crate::artifacts::sealed_file::SealedReader;
use crate::artifacts::ReadError;
use crate::store::artifacts::{ArtifactFilter, ArtifactReader, ArtifactSummary};
use crate::store::types::Requester;
use crate::store::StoreError;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/artifacts", web::get().to(list))
        .route("/api/artifacts/{id}/content", web::get().to(api_content))
        .route("/artifacts/{id}", web::get().to(player))
        .route("/artifacts/{id}/content", web::get().to(page_content));
}

/// Query of `/api/artifacts`.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    delivery: Option<String>,
    limit: Option<usize>,
}

async fn list(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let delivery = q.delivery.clone().filter(|d| !d.is_empty());
    api::guard(
        &console,
        &req,
        Permission::ReadMetadata,
        ("artifact", delivery.clone()),
    )
    .await?;
    let filter = ArtifactFilter {
        delivery_id: delivery,
        since: None,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let rows = console.store.artifacts().list_artifacts(filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "artifacts": rows })))
}

/// Query of the content endpoints: `download=1` asks for an attachment.
#[derive(Debug, Default, Deserialize)]
struct ContentQuery {
    download: Option<String>,
}

impl ContentQuery {
    fn download(&self) -> bool {
        matches!(self.download.as_deref(), Some("1" | "true"))
    }
}

async fn api_content(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<ContentQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let p = api::guard(
        &console,
        &req,
        Permission::RevealPayload,
        ("artifact", None),
    )
    .await?;
    content(&console, p.requester(), id, q.download()).await
}

/// Unseal artifact `id` for `who` (the store writes the `payload_read` record first) and
/// stream its decrypted content. A purged artifact is `410 Gone`; an unknown one, or any when
/// capture is not configured, `404`.
async fn content(
    console: &Console,
    who: Requester,
    id: String,
    download: bool,
) -> Result<HttpResponse, ApiError> {
    let dir = console
        .setup
        .artifacts_dir
        .clone()
        .ok_or(ApiError::NotFound)?;
    let opened =
        crate::artifacts::open_artifact(&*console.store, &dir, &id, ArtifactReader::Person(who))
            .await;
    let (summary, reader) = match opened {
        Ok(v) => v,
        Err(ReadError::Store(StoreError::KeyDestroyed)) => return Err(ApiError::Gone),
        Err(ReadError::Store(e)) => return Err(e.into()),
        Err(ReadError::File(e)) => {
            tracing::error!(artifact = %id, error = %e, "admin: artifact file unreadable");
            return Err(ApiError::Unreadable);
        }
    };
    let disposition = if download {
        format!(
            "attachment; filename=\"{}{}\"",
            summary.id,
            crate::store::artifacts::file_extension(&summary.content_type)
        )
    } else {
        "inline".to_owned()
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, summary.content_type.clone()))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((
            header::HeaderName::from_static("x-artifact-sha256"),
            summary.sha256.clone(),
        ))
        .no_chunking(summary.size)
        .streaming(chunks(reader)))
}

/// The decrypted chunks as a body stream. A chunk that fails authentication ends the stream
/// with an error: the connection is cut short of the announced length, never padded with
/// unauthenticated bytes.
fn chunks(
    reader: SealedReader,
) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.next_chunk() {
            Ok(Some(chunk)) => Some((Ok(web::Bytes::copy_from_slice(&chunk)), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

/// Whether a browser marked the request as coming from another site.
fn cross_site(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v, "same-origin" | "none"))
}

async fn page_content(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<ContentQuery>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = match page_guard(
        &console,
        &req,
        Permission::RevealPayload,
        ("artifact", None),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    if cross_site(&req) {
        let denial = Denial {
            actor: Some(s.principal.actor()),
            remote: api::client_ip(&req),
            reason: "cross_site",
            status: 403,
            object_kind: Some("artifact"),
            delivery_id: None,
            via: "dashboard",
        };
        console.record_denial(&denial).await;
        return error_page(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Cross-site request refused.",
        );
    }
    match content(&console, s.principal.requester(), id, q.download()).await {
        Ok(r) => r,
        Err(e) => api_error_page(&e, Some(&s)),
    }
}

/// The player page: metadata, an `<audio>` (or a link, for transcripts) and a download link.
/// Nothing is decrypted until the operator presses play or download.
async fn player(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = path.into_inner();
    let s = match page_guard(
        &console,
        &req,
        Permission::RevealPayload,
        ("artifact", None),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Metadata only: nothing is unsealed, so showing the page is not a read.
    let found = match console.store.artifacts().artifact(id.clone()).await {
        Ok(found) => found,
        Err(e) => return api_error_page(&ApiError::from(e), Some(&s)),
    };
    let Some(a) = found else {
        return api_error_page(&ApiError::NotFound, Some(&s));
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<dl class=\"meta\"><dt>artifact</dt><dd class=\"mono\">{}</dd>\
         <dt>delivery</dt><dd class=\"mono\"><a href=\"/deliveries/{d}\">{d}</a></dd>\
         <dt>type</dt><dd>{}</dd><dt>size</dt><dd>{} bytes</dd>\
         <dt>SHA-256</dt><dd class=\"mono\">{}</dd></dl>",
        esc(&a.id),
        esc(&a.content_type),
        a.size,
        esc(&a.sha256),
        d = esc(&a.delivery_id),
    );
    if !a.readable {
        b.push_str("<p class=\"notice warn\" role=\"status\">This artifact was purged: its key has been destroyed.</p>");
    } else {
        let src = format!("/artifacts/{}/content", esc(&a.id));
        if a.content_type.starts_with("audio/") {
            let _ = write!(
                b,
                "<audio id=\"player\" controls preload=\"none\" src=\"{src}\"></audio>"
            );
        }
        let _ = write!(
            b,
            "<p><a id=\"download\" href=\"{src}?download=1\">Download</a></p>\
             <p class=\"muted\">Playing or downloading decrypts the recording; each is \
             recorded in the audit log under your token. Do not copy patient data elsewhere.</p>"
        );
    }
    html(
        StatusCode::OK,
        page("Artifact", Some(&s), "/deliveries", &b),
    )
}

/// The delivery page's section: one row per artifact, with a link to its player for roles
/// that may reveal payloads.
pub(super) fn section(rows: &[ArtifactSummary], s: &Session) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let reveal = s.principal.role.allows(Permission::RevealPayload);
    let mut b = String::from(
        "<h2>Artifacts</h2><div class=\"table-wrap\"><table><thead><tr><th>id</th><th>field</th>\
         <th>type</th><th>bytes</th><th>state</th><th></th></tr></thead><tbody>",
    );
    for a in rows {
        let state = if !a.readable {
            "purged"
        } else if a.vendor_deleted_at.is_some() {
            "kept (deleted at vendor)"
        } else {
            "kept"
        };
        let action = if reveal && a.readable {
            format!(
                "<a class=\"artifact\" href=\"/artifacts/{id}\">Play / download</a>",
                id = esc(&a.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.id),
            esc(&a.field),
            esc(&a.content_type),
            a.size,
            state,
            action
        );
    }
    b.push_str("</tbody></table></div>");
    b
}
