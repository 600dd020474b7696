//! What captured artifacts (call recordings, transcripts) need from the database, whichever
//! database that is.
//!
//! The content lives in files (written by the capture step); the database holds one row per
//! artifact: which delivery and event field it came from, its content type, size and SHA-256,
//! and its per-file key sealed under the delivery's period data key. Sealing the file key
//! there is what puts the file under the delivery's retention: `purge` destroys the period's
//! data key, the file key can no longer be unsealed, and the file is unreadable wherever copies
//! of it went; `keys rotate` re-seals the file key like any other sealed column.
//!
//! Every change and every decrypting read writes its audit record in the same transaction:
//! `artifact_captured`, `payload_read` (object kind `artifact`, by operator or by handler) and
//! `artifact_deleted_at_vendor`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use zeroize::Zeroizing;

use super::types::Requester;
use super::StoreFuture;
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, Digest, ObjectId, Outcome};
use crate::crypto::RecordPlace;

/// A captured artifact to record: the file is already written and fsync'd.
pub struct NewArtifact {
    /// `art_…`, chosen by the capture (it names the file and is the AAD of its chunks).
    pub id: String,
    /// The delivery whose event linked to it.
    pub delivery_id: String,
    /// The configured event field the URL came from (an identifier from config).
    pub field: String,
    /// The content type, as the configured allowlist spells it.
    pub content_type: String,
    /// Content bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The per-file key, sealed by the store under the delivery's period data key.
    pub file_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for NewArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewArtifact")
            .field("id", &self.id)
            .field("delivery_id", &self.delivery_id)
            .finish_non_exhaustive()
    }
}

/// One artifact as listed: metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactSummary {
    /// `art_…`
    pub id: String,
    /// The delivery it belongs to.
    pub delivery_id: String,
    /// The source the delivery came in on.
    pub source: String,
    /// The event field the URL came from.
    pub field: String,
    /// Content type.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Content bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// When it was captured.
    pub captured_at: DateTime<Utc>,
    /// False once `purge` destroyed the key it is sealed under.
    pub readable: bool,
    /// When it was deleted at the vendor, if it was.
    pub vendor_deleted_at: Option<DateTime<Utc>>,
}

/// Which artifacts to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct ArtifactFilter {
    /// Only this delivery's.
    pub delivery_id: Option<String>,
    /// Only those captured at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many (0: 100).
    pub limit: usize,
}

impl ArtifactFilter {
    /// The limit to apply.
    pub fn effective_limit(&self) -> i64 {
        if self.limit == 0 {
            100
        } else {
            i64::try_from(self.limit.min(100_000)).unwrap_or(100_000)
        }
    }
}

/// Who reads an artifact's content, for its audit record.
#[derive(Debug, Clone)]
pub enum ArtifactReader {
    /// An operator (CLI user or admin token).
    Person(Requester),
    /// A handler of a route, for the delivery being dispatched.
    Handler {
        /// The handler's configured name.
        handler: String,
        /// The delivery being dispatched: the artifact must belong to it.
        delivery_id: String,
    },
}

/// An artifact opened for reading: its metadata and the unsealed per-file key.
pub struct OpenedArtifact {
    /// Metadata.
    pub summary: ArtifactSummary,
    /// The per-file key (zeroized on drop).
    pub file_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for OpenedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedArtifact")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The artifact table, on either backend. Boxed futures keep the trait object-safe.
pub trait ArtifactStore: Send + Sync {
    /// Seal the file key under the delivery's period key and insert the row with its
    /// `artifact_captured` record, in one transaction. Idempotent per (delivery, field): a
    /// second capture of the same field returns the first row and records nothing.
    fn record_artifact(&self, new: NewArtifact) -> StoreFuture<'_, ArtifactSummary>;

    /// The artifacts of one delivery, in capture order.
    fn delivery_artifacts(&self, delivery_id: String) -> StoreFuture<'_, Vec<ArtifactSummary>>;

    /// Artifact `id`'s metadata, if it exists (nothing is unsealed; not a read).
    fn artifact(&self, id: String) -> StoreFuture<'_, Option<ArtifactSummary>>;

    /// Artifacts matching `filter`, newest first.
    fn list_artifacts(&self, filter: ArtifactFilter) -> StoreFuture<'_, Vec<ArtifactSummary>>;

    /// Unseal artifact `id`'s file key for `reader`, writing the `payload_read` record in the
    /// same transaction. `KeyDestroyed` once purged; `NotFound` for an unknown id or, for a
    /// handler, an artifact of another delivery.
    fn open_artifact(&self, id: String, reader: ArtifactReader) -> StoreFuture<'_, OpenedArtifact>;

    /// Record that artifact `id` was deleted at the vendor (`host`, HTTP `status`), with its
    /// audit record; a failed deletion is recorded as a failure and changes nothing else.
    fn record_vendor_deletion(
        &self,
        id: String,
        host: String,
        status: Option<u16>,
        deleted: bool,
    ) -> StoreFuture<'_, ()>;
}

pub use wardhook_sdk::artifacts::file_extension;

/// The AAD place of an artifact's sealed file key.
pub(crate) fn key_place<'a>(id: &'a str, source: &'a str, key_id: i64) -> RecordPlace<'a> {
    RecordPlace {
        kind: "artifact_key",
        id,
        source,
        key_id,
    }
}

fn base_record(action: Action, outcome: Outcome, summary: &ArtifactSummary) -> AuditRecord {
    let mut record = AuditRecord::new(Actor::System, action, outcome);
    record.delivery_id = ObjectId::parse(&summary.delivery_id).ok();
    record.source = Code::parse(&summary.source).ok();
    if let Ok(id) = ObjectId::parse(&summary.id) {
        record.detail.insert(DetailKey::ObjectId, id);
    }
    if let Ok(kind) = Code::parse("artifact") {
        record.detail.insert(DetailKey::ObjectKind, kind);
    }
    record
}

/// `artifact_captured`: id, size, SHA-256 and field; never the URL.
pub(crate) fn captured_record(summary: &ArtifactSummary) -> AuditRecord {
    let mut record = base_record(Action::ArtifactCaptured, Outcome::Success, summary);
    if let Ok(d) = Digest::parse(&summary.sha256) {
        record.detail.insert(DetailKey::Sha256, d);
    }
    record.detail.insert(
        DetailKey::Bytes,
        i64::try_from(summary.size).unwrap_or(i64::MAX),
    );
    if let Ok(field) = Code::parse(&summary.field) {
        record.detail.insert(DetailKey::Reason, field);
    }
    record
}

/// `payload_read` of an artifact by an operator or a handler.
pub(crate) fn read_record(summary: &ArtifactSummary, reader: &ArtifactReader) -> AuditRecord {
    let mut record = base_record(Action::PayloadRead, Outcome::Success, summary);
    match reader {
        ArtifactReader::Person(who) => {
            record.actor = who.audit_actor();
            if let Ok(via) = Code::parse(who.via) {
                record.detail.insert(DetailKey::Via, via);
            }
        }
        ArtifactReader::Handler { handler, .. } => {
            if let Ok(h) = Code::parse(handler) {
                record.detail.insert(DetailKey::Handler, h);
            }
            if let Ok(via) = Code::parse("handler") {
                record.detail.insert(DetailKey::Via, via);
            }
        }
    }
    record
}

/// `artifact_deleted_at_vendor`, success or failure, with the host and HTTP status.
pub(crate) fn vendor_record(
    summary: &ArtifactSummary,
    host: &str,
    status: Option<u16>,
    deleted: bool,
) -> AuditRecord {
    let outcome = if deleted {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut record = base_record(Action::ArtifactDeletedAtVendor, outcome, summary);
    if let Ok(h) = Code::parse(host) {
        record.detail.insert(DetailKey::Host, h);
    }
    if let Some(s) = status {
        record.detail.insert(DetailKey::Status, s);
    }
    record
}
