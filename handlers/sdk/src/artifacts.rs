//! Captured artifacts (call recordings, transcripts) as handlers see them: by reference.
//!
//! When a route runs wardhook's built-in `capture` step, the files a sender only linked to
//! (Twilio's `RecordingUrl`, a Retell or Vapi recording URL) are downloaded, encrypted and
//! stored on the clinic's disk before the route's later handlers run. Those handlers see a
//! list of [`ArtifactRef`] — id, content type, size, SHA-256 — never the bytes and never the
//! vendor's URL, through [`crate::Context::artifacts`], and in templates as
//! `app_data.capture.data.artifacts`. A handler that needs the content (the FHIR handler
//! attaching a transcript, the e-mail handler attaching a recording) asks for a decrypted
//! stream with [`crate::Context::open_artifact`]; wardhook audits the read. Handlers that attach
//! artifacts whole use [`read_attachments`], which bounds each by the handler's limit.
//!
//! Minimum necessary applies: a `phi = "none"` handler is handed neither the references nor
//! a way to open them (the `MinimumNecessary` guard removes both).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::HandlerError;

/// The name of the built-in capture step in a route's `handlers` and in `app_data`.
pub const CAPTURE_STEP: &str = "capture";

/// One captured artifact, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// wardhook's id of the artifact (`art_…`), for [`crate::Context::open_artifact`] and
    /// `wardhook artifacts get`.
    pub id: String,
    /// The content type the vendor served, e.g. `audio/x-wav`.
    #[serde(rename = "type")]
    pub content_type: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The event field the URL came from (`RecordingUrl`, `recording_url`).
    pub field: String,
}

impl ArtifactRef {
    /// A file name for the content: the id and an extension for its type (`art_….wav`), for
    /// attachments and downloads. Made only of the id wardhook chose and a fixed extension,
    /// never of anything the vendor sent.
    pub fn file_name(&self) -> String {
        format!("{}{}", self.id, file_extension(&self.content_type))
    }
}

/// A file name extension for an artifact written out (downloads, attachments, emergency
/// archives), from the content types capture accepts by default; empty for any other.
pub fn file_extension(content_type: &str) -> &'static str {
    match content_type {
        "audio/wav" | "audio/x-wav" | "audio/wave" => ".wav",
        "audio/mpeg" | "audio/mp3" => ".mp3",
        "audio/ogg" => ".ogg",
        "audio/webm" => ".webm",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => ".m4a",
        "text/plain" => ".txt",
        "application/json" => ".json",
        _ => "",
    }
}

/// One artifact's decrypted content, read whole for a handler that attaches it. Its `Debug`
/// shows the reference and the length, never the content.
pub struct Attachment {
    /// The artifact, as the capture step recorded it.
    pub reference: ArtifactRef,
    /// The decrypted content (zeroized when dropped); its length is `reference.size`.
    pub content: Zeroizing<Vec<u8>>,
}

/// Every artifact of this delivery read whole, in the capture step's order, for handlers that
/// attach them (the FHIR handler's `DocumentReference`, the e-mail handler's attachments).
///
/// An artifact larger than `max_bytes` fails the invocation permanently before it is opened,
/// naming the artifact and `key` (the setting that raises the limit), so the content is never
/// sent short. Each open is audited like any artifact read; a handler that may not see PHI
/// cannot open them (permanent). Empty when the route stored no artifact for the delivery.
pub async fn read_attachments(
    ctx: &crate::Context,
    max_bytes: u64,
    key: &str,
) -> Result<Vec<Attachment>, HandlerError> {
    let mut out = Vec::new();
    for reference in ctx.artifacts() {
        if reference.size > max_bytes {
            return Err(too_large(&reference.id, max_bytes, key));
        }
        let mut stream = ctx.open_artifact(&reference.id).await?;
        let content = read_to_end(&mut *stream, max_bytes).await?;
        if content.len() as u64 != reference.size {
            return Err(HandlerError::permanent(format!(
                "artifact {} does not have the size recorded at capture",
                reference.id
            )));
        }
        out.push(Attachment { reference, content });
    }
    Ok(out)
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("reference", &self.reference)
            .field("len", &self.content.len())
            .finish()
    }
}

fn too_large(id: &str, max_bytes: u64, key: &str) -> HandlerError {
    HandlerError::permanent(format!(
        "artifact {id} is larger than {key} ({max_bytes} bytes); raise it, then retry the dead letter"
    ))
}

/// The artifacts of this delivery as the capture step recorded them in `app_data`: empty when
/// the route has no capture step, the event linked nothing, or the handler may not see PHI.
pub fn from_app_data(app_data: &crate::AppData) -> Vec<ArtifactRef> {
    app_data
        .get(CAPTURE_STEP)
        .and_then(|entry| entry.get("data"))
        .and_then(|data| data.get("artifacts"))
        .and_then(|list| serde_json::from_value(list.clone()).ok())
        .unwrap_or_default()
}

/// Decrypted content, chunk by chunk. Each chunk is authenticated before it is returned, and
/// the end is authenticated too: a truncated or altered file is an error, never short content.
#[async_trait::async_trait]
pub trait ArtifactStream: Send {
    /// The next chunk of plaintext (zeroized when dropped), `None` at the authenticated end.
    async fn next_chunk(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, HandlerError>;
}

/// What opens artifacts for handlers; wardhook installs one in each [`crate::Context`] of a
/// handler allowed to see PHI.
#[async_trait::async_trait]
pub trait ArtifactSource: Send + Sync + std::fmt::Debug {
    /// A decrypted stream of artifact `artifact_id` of delivery `delivery_id` for handler
    /// `handler`. Refused (permanent) when the artifact belongs to another delivery.
    async fn open(
        &self,
        delivery_id: &str,
        handler: &str,
        artifact_id: &str,
    ) -> Result<Box<dyn ArtifactStream>, HandlerError>;
}

/// Read a whole stream into memory (for attachments known to be small); refuses content
/// longer than `max_bytes` rather than growing without bound.
pub async fn read_to_end(
    stream: &mut dyn ArtifactStream,
    max_bytes: u64,
) -> Result<Zeroizing<Vec<u8>>, HandlerError> {
    let mut out = Zeroizing::new(Vec::new());
    while let Some(chunk) = stream.next_chunk().await? {
        if (out.len() as u64).saturating_add(chunk.len() as u64) > max_bytes {
            return Err(HandlerError::permanent(format!(
                "artifact is larger than {max_bytes} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_from_the_capture_steps_output() {
        let mut app = crate::AppData::new();
        assert!(from_app_data(&app).is_empty());
        app.insert(
            CAPTURE_STEP.into(),
            serde_json::json!({"data": {"artifacts": [
                {"id": "art_1", "type": "audio/x-wav", "size": 44, "sha256": "ab", "field": "RecordingUrl"}
            ]}}),
        );
        let refs = from_app_data(&app);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].content_type, "audio/x-wav");
        assert_eq!(refs[0].size, 44);
    }
}
