//! The built-in `capture` step: download every artifact URL the event names, encrypting as it
//! streams, and record it with the delivery.
//!
//! It runs as a job like any handler (retries with backoff, dead letters, circuit breaker,
//! audit of each attempt), named `capture` in the route's `handlers`, ahead of the handlers
//! that use the artifacts — they wait for it and read its output as
//! `app_data.capture.data.artifacts`. Outcomes, as documented in `docs/ARTIFACTS.md`:
//!
//! | vendor answer | outcome |
//! | --- | --- |
//! | 2xx, accepted content type, within `max_bytes` | captured; the step succeeds |
//! | 401 / 403 | permanent: the credentials are wrong (dead letter) |
//! | 404 / 410 and other 4xx | permanent (dead letter) |
//! | 408 / 429 / 5xx, network error, timeout | retryable (backoff, `Retry-After` honoured) |
//! | content type not in `content_types` | permanent |
//! | larger than `max_bytes` (declared or streamed) | permanent; nothing kept |
//! | URL not `https`, host not in `allow_hosts` | permanent; nothing is requested |
//!
//! A field already captured for this delivery is never fetched again, so a retry after a
//! crash between the commit and the job's bookkeeping repeats nothing.

use std::collections::HashMap;
use std::sync::Arc;

use wardhook_sdk::http::Egress;
use wardhook_sdk::{Context, Event, Handler, HandlerError, Outcome};

use super::sealed_file::{self, FileKey, SealedReader, SealedWriter};
use crate::config::artifacts::{ArtifactsSettings, CaptureAuth, CaptureSource};
use crate::store::artifacts::{ArtifactSummary, NewArtifact};
use crate::store::{Storage, StoreError};

/// Redirects followed per download (each to an allowed `https` host, without credentials when
/// the host changes).
const MAX_REDIRECTS: usize = 3;

/// Why the capture step could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureSetupError {
    /// A source's `allow_hosts` or `ca_file` is unusable.
    #[error("artifacts.sources[{index}]: {message}")]
    Source {
        /// Index in `[[artifacts.sources]]`.
        index: usize,
        /// What is wrong (paths and keys only).
        message: String,
    },
}

struct SourceClient {
    settings: CaptureSource,
    egress: Egress,
    client: reqwest::Client,
}

/// The capture step. Built once at start-up from `[artifacts]`.
pub struct Capture {
    store: Arc<dyn Storage>,
    dir: std::path::PathBuf,
    max_bytes: u64,
    sources: HashMap<String, SourceClient>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// The step for `settings`, recording into `store`. Removes temporary files left by
    /// downloads a crash interrupted.
    pub fn build(
        settings: &ArtifactsSettings,
        store: Arc<dyn Storage>,
    ) -> Result<Self, CaptureSetupError> {
        let mut sources = HashMap::new();
        for (index, s) in settings.sources.iter().enumerate() {
            let fail = |message: String| CaptureSetupError::Source { index, message };
            let egress =
                Egress::new(std::iter::empty(), &s.allow_hosts, "allow_hosts").map_err(|p| {
                    fail(
                        p.into_iter()
                            .map(|p| format!("{}: {}", p.path, p.message))
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                })?;
            let mut builder = egress
                .client_builder()
                .tls_built_in_root_certs(true)
                .timeout(settings.timeout)
                .connect_timeout(std::time::Duration::from_secs(15));
            if let Some(ca) = &s.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| fail(format!("cannot read ca_file: {}", e.kind())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|_| fail("ca_file is not PEM".into()))?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            let client = builder
                .build()
                .map_err(|_| fail("HTTP client could not be set up".into()))?;
            sources.insert(
                s.source.clone(),
                SourceClient {
                    settings: s.clone(),
                    egress,
                    client,
                },
            );
        }
        let removed = sealed_file::remove_partials(&settings.dir);
        if removed > 0 {
            tracing::warn!(
                files = removed,
                "removed partial artifact downloads left by an interrupted run"
            );
        }
        Ok(Self {
            store,
            dir: settings.dir.clone(),
            max_bytes: settings.max_bytes,
            sources,
        })
    }
}

/// The string at dotted `path` under `data`.
fn field_value<'a>(data: &'a serde_json::Value, path: &str) -> Option<&'a str> {
    path.split('.')
        .try_fold(data, |v, key| v.get(key))
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

fn store_error(e: &StoreError) -> HandlerError {
    match e {
        StoreError::KeyDestroyed => HandlerError::permanent("the delivery's period was purged"),
        StoreError::NotFound(what) => HandlerError::permanent(format!("{what} not found")),
        other => HandlerError::retryable(format!("cannot record the artifact: {other}")),
    }
}

fn to_ref(a: &ArtifactSummary) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
        "field": a.field,
    })
}

impl SourceClient {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.settings.auth {
            None => request,
            Some(CaptureAuth::Basic { username, password }) => request.basic_auth(
                String::from_utf8_lossy(username.expose()),
                Some(String::from_utf8_lossy(password.expose())),
            ),
            Some(CaptureAuth::Bearer { token }) => {
                request.bearer_auth(String::from_utf8_lossy(token.expose()))
            }
        }
    }

    /// GET `url`, following at most [`MAX_REDIRECTS`] redirects to allowed hosts.
    async fn get(&self, field: &str, url: reqwest::Url) -> Result<reqwest::Response, HandlerError> {
        let mut url = url;
        let origin = url.host_str().map(str::to_owned);
        for _ in 0..=MAX_REDIRECTS {
            if url.scheme() != "https" {
                return Err(HandlerError::permanent(format!(
                    "the artifact URL in field {field} is not https"
                )));
            }
            if self.egress.check_url(&url).is_err() {
                return Err(HandlerError::permanent(format!(
                    "the artifact URL in field {field} names a host not in allow_hosts"
                )));
            }
            let host = url.host_str().unwrap_or("").to_owned();
            let mut request = self.client.get(url.clone());
            // Credentials only to the host the event named (and config allowed), never to
            // the host of a redirect.
            if url.host_str().map(str::to_owned) == origin {
                request = self.authorize(request);
            }
            let response = request.send().await.map_err(|e| {
                if wardhook_sdk::http::refusal(&e).is_some() {
                    HandlerError::permanent(format!(
                        "the artifact host for field {field} resolves to an address not allowed"
                    ))
                } else {
                    HandlerError::network(&host, e.is_timeout())
                }
            })?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok());
                match next {
                    Some(next) => {
                        url = next;
                        continue;
                    }
                    None => {
                        return Err(HandlerError::permanent(format!(
                            "HTTP {} from {host} without a usable Location",
                            status.as_u16()
                        )))
                    }
                }
            }
            if !status.is_success() {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Err(HandlerError::from_http_status(
                    status.as_u16(),
                    retry_after.as_deref(),
                    &host,
                )
                .unwrap_or_else(|| {
                    HandlerError::permanent(format!("HTTP {} from {host}", status.as_u16()))
                }));
            }
            return Ok(response);
        }
        Err(HandlerError::permanent(format!(
            "more than {MAX_REDIRECTS} redirects for field {field}"
        )))
    }
}

impl Capture {
    /// Download, encrypt and record one artifact.
    async fn capture_one(
        &self,
        src: &SourceClient,
        event: &Event,
        field: &str,
        url: &str,
    ) -> Result<(ArtifactSummary, FileKey), HandlerError> {
        let url = reqwest::Url::parse(url).map_err(|_| {
            HandlerError::permanent(format!("the value of field {field} is not a URL"))
        })?;
        let mut response = src.get(field, url).await?;
        let host = response.url().host_str().unwrap_or("").to_owned();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let Some(content_type) = src
            .settings
            .content_types
            .iter()
            .find(|t| **t == content_type)
            .cloned()
        else {
            return Err(HandlerError::permanent(format!(
                "the artifact from {host} for field {field} has a content type not in content_types"
            )));
        };
        let too_large = || {
            HandlerError::permanent(format!(
                "the artifact from {host} for field {field} is larger than max_bytes ({})",
                self.max_bytes
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large());
        }
        let id = format!("art_{}", uuid::Uuid::new_v4().simple());
        let key = FileKey::generate();
        let write_failed = |e: sealed_file::SealedFileError| {
            HandlerError::retryable(format!("cannot write the artifact: {e}"))
        };
        let mut writer = SealedWriter::create(&self.dir, &id, &key).map_err(write_failed)?;
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| HandlerError::network(&host, e.is_timeout()))?;
            let Some(chunk) = chunk else { break };
            if writer.size().saturating_add(chunk.len() as u64) > self.max_bytes {
                // Dropping the writer removes the partial file.
                return Err(too_large());
            }
            writer.write(&chunk).map_err(write_failed)?;
        }
        let written = writer.finish().map_err(write_failed)?;
        let new = NewArtifact {
            id: id.clone(),
            delivery_id: event.delivery_id.clone(),
            field: field.to_owned(),
            content_type,
            size: written.size,
            sha256: written.sha256,
            file_key: zeroize::Zeroizing::new(key.expose().to_vec()),
        };
        match self.store.artifacts().record_artifact(new).await {
            Ok(summary) => {
                if summary.id != id {
                    // Another attempt recorded this field first; this copy is not needed.
                    let _ = std::fs::remove_file(&written.path);
                }
                Ok((summary, key))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&written.path);
                Err(store_error(&e))
            }
        }
    }

    /// After a capture verified by reading the file back (the SHA-256 must match), delete the
    /// artifact at the vendor; the outcome is audited either way and never fails the step.
    async fn delete_at_vendor(
        &self,
        src: &SourceClient,
        summary: &ArtifactSummary,
        key: &FileKey,
        url: &str,
    ) {
        let path = sealed_file::final_path(&self.dir, &summary.id);
        let verified = SealedReader::open(&path, &summary.id, key)
            .and_then(SealedReader::read_all)
            .map(|content| {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(&content[..])) == summary.sha256
            })
            .unwrap_or(false);
        if !verified {
            tracing::error!(artifact = %summary.id, "capture did not verify; not deleting at the vendor");
            return;
        }
        let Ok(url) = reqwest::Url::parse(url) else {
            return;
        };
        if url.scheme() != "https" || src.egress.check_url(&url).is_err() {
            return;
        }
        let host = url.host_str().unwrap_or("").to_owned();
        let result = src.authorize(src.client.delete(url)).send().await;
        let (status, deleted) = match result {
            Ok(r) => {
                let s = r.status().as_u16();
                // 404: already gone at the vendor, which is what was asked.
                (Some(s), r.status().is_success() || s == 404)
            }
            Err(_) => (None, false),
        };
        if let Err(e) = self
            .store
            .artifacts()
            .record_vendor_deletion(summary.id.clone(), host, status, deleted)
            .await
        {
            tracing::error!(artifact = %summary.id, error = %e, "cannot record the vendor deletion");
        }
    }
}

#[wardhook_sdk::async_trait]
impl Handler for Capture {
    fn name(&self) -> &str {
        wardhook_sdk::artifacts::CAPTURE_STEP
    }

    async fn handle(&self, event: &Event, _ctx: &mut Context) -> Result<Outcome, HandlerError> {
        let Some(src) = self.sources.get(&event.source) else {
            return Err(HandlerError::permanent(format!(
                "source {} has no [[artifacts.sources]] settings",
                event.source
            )));
        };
        let existing = self
            .store
            .artifacts()
            .delivery_artifacts(event.delivery_id.clone())
            .await
            .map_err(|e| store_error(&e))?;
        let mut refs = Vec::new();
        let mut hosts = Vec::new();
        for field in &src.settings.fields {
            let Some(url) = field_value(&event.data, field) else {
                continue;
            };
            if let Some(done) = existing.iter().find(|a| a.field == *field) {
                refs.push(to_ref(done));
                continue;
            }
            let (summary, key) = self.capture_one(src, event, field, url).await?;
            if let Some(h) = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
            {
                hosts.push(h);
            }
            if src.settings.delete_at_vendor {
                self.delete_at_vendor(src, &summary, &key, url).await;
            }
            refs.push(to_ref(&summary));
        }
        let mut outcome = Outcome::done().with_data(serde_json::json!({ "artifacts": refs }));
        if let Some(h) = hosts.first() {
            outcome = outcome.with_destination(h.clone());
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_dotted_paths_to_non_empty_strings() {
        let data = serde_json::json!({"RecordingUrl": "https://a/b", "artifact": {"recordingUrl": "x"}, "n": 1, "e": ""});
        assert_eq!(field_value(&data, "RecordingUrl"), Some("https://a/b"));
        assert_eq!(field_value(&data, "artifact.recordingUrl"), Some("x"));
        assert_eq!(field_value(&data, "n"), None);
        assert_eq!(field_value(&data, "e"), None);
        assert_eq!(field_value(&data, "missing.x"), None);
    }

    #[test]
    fn a_purged_period_ends_the_capture_and_a_busy_database_retries_it() {
        let purged = store_error(&StoreError::KeyDestroyed);
        assert!(!purged.is_retryable());
        assert!(
            purged
                .to_string()
                .contains("the delivery's period was purged"),
            "{purged}"
        );
        assert!(!store_error(&StoreError::NotFound("delivery")).is_retryable());
        assert!(store_error(&StoreError::Unavailable("database locked")).is_retryable());
    }
}
