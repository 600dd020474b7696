//! Reading a captured artifact: the store unseals its file key (writing the `payload_read`
//! record), then the file is decrypted chunk by chunk. Used by the CLI (`artifacts get`) and,
//! through [`StoreArtifactSource`], by handlers allowed to see PHI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wardhook_sdk::artifacts::{ArtifactSource, ArtifactStream};
use wardhook_sdk::HandlerError;
use zeroize::Zeroizing;

use super::sealed_file::{final_path, FileKey, SealedFileError, SealedReader};
use crate::store::artifacts::{ArtifactReader, ArtifactSummary};
use crate::store::{Storage, StoreError};

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The store refused or failed (unknown id, purged, database down).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is missing, altered or truncated.
    #[error(transparent)]
    File(#[from] SealedFileError),
}

/// Open artifact `id` for `reader` (audited): its metadata and a decrypting reader.
pub async fn open_artifact(
    store: &dyn Storage,
    dir: &Path,
    id: &str,
    reader: ArtifactReader,
) -> Result<(ArtifactSummary, SealedReader), ReadError> {
    let opened = store
        .artifacts()
        .open_artifact(id.to_owned(), reader)
        .await?;
    let key = FileKey::from_slice(&opened.file_key).ok_or(SealedFileError::Corrupt)?;
    let file = SealedReader::open(&final_path(dir, id), id, &key)?;
    Ok((opened.summary, file))
}

/// Opens artifacts for handlers: only the delivery's own, each read audited under the
/// handler's name.
#[derive(Debug)]
pub struct StoreArtifactSource {
    store: Arc<dyn Storage>,
    dir: PathBuf,
}

impl StoreArtifactSource {
    /// A source over `store` and the artifact folder `dir`.
    pub fn new(store: Arc<dyn Storage>, dir: PathBuf) -> Self {
        Self { store, dir }
    }
}

struct Stream(SealedReader);

#[wardhook_sdk::async_trait]
impl ArtifactStream for Stream {
    async fn next_chunk(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, HandlerError> {
        self.0
            .next_chunk()
            .map_err(|e| HandlerError::permanent(format!("artifact unreadable: {e}")))
    }
}

#[wardhook_sdk::async_trait]
impl ArtifactSource for StoreArtifactSource {
    async fn open(
        &self,
        delivery_id: &str,
        handler: &str,
        artifact_id: &str,
    ) -> Result<Box<dyn ArtifactStream>, HandlerError> {
        let reader = ArtifactReader::Handler {
            handler: handler.to_owned(),
            delivery_id: delivery_id.to_owned(),
        };
        match open_artifact(&*self.store, &self.dir, artifact_id, reader).await {
            Ok((_, file)) => Ok(Box::new(Stream(file))),
            Err(ReadError::Store(StoreError::KeyDestroyed)) => {
                Err(HandlerError::permanent("the artifact was purged"))
            }
            Err(ReadError::Store(StoreError::NotFound(_))) => Err(HandlerError::permanent(
                "no such artifact for this delivery",
            )),
            Err(ReadError::Store(e)) => Err(HandlerError::retryable(format!(
                "cannot open the artifact: {e}"
            ))),
            Err(ReadError::File(e)) => {
                Err(HandlerError::permanent(format!("artifact unreadable: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use wardhook_sdk::{Context, Event, Handler, Outcome, PhiLevel};

    use super::*;
    use crate::artifacts::sealed_file::SealedWriter;
    use crate::store::artifacts::NewArtifact;
    use crate::store::sqlite::tests::{keyring, nextphone};
    use crate::store::{JobSpec, Store, StoreOptions};

    /// A handler that opens the first artifact it is shown and answers with its SHA-256.
    #[derive(Debug)]
    struct Attacher;

    #[wardhook_sdk::async_trait]
    impl Handler for Attacher {
        fn name(&self) -> &str {
            "ehr"
        }
        async fn handle(&self, _: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
            let id = ctx
                .artifacts()
                .first()
                .map(|a| a.id.clone())
                .unwrap_or_else(|| "art_guessed".into());
            let mut stream = ctx.open_artifact(&id).await?;
            let bytes = wardhook_sdk::artifacts::read_to_end(&mut *stream, 1 << 20).await?;
            Ok(Outcome::done().with_data(
                serde_json::json!({ "sha256": hex::encode(Sha256::digest(&bytes[..])) }),
            ))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_phi_handler_streams_its_deliverys_artifact_and_a_phi_none_handler_cannot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Storage> = Arc::new(
            Store::open(&dir.path().join("w.db"), keyring(), StoreOptions::default())
                .expect("open"),
        );
        let input = nextphone("call.ended", "c1");
        let mut normalized =
            crate::normalize::normalize(&input, chrono::Utc::now()).expect("normalizes");
        let delivery = store
            .intake(input, &mut normalized, vec![JobSpec::new("ehr")])
            .await
            .expect("intake")
            .delivery_id()
            .to_string();
        let content = b"RIFF recording with a voice in it".repeat(5000);
        let key = FileKey::generate();
        let mut writer = SealedWriter::create(dir.path(), "art_1", &key).expect("create");
        writer.write(&content).expect("write");
        let written = writer.finish().expect("finish");
        store
            .artifacts()
            .record_artifact(NewArtifact {
                id: "art_1".into(),
                delivery_id: delivery.clone(),
                field: "recording_url".into(),
                content_type: "audio/x-wav".into(),
                size: written.size,
                sha256: written.sha256.clone(),
                file_key: Zeroizing::new(key.expose().to_vec()),
            })
            .await
            .expect("record");
        let source: Arc<dyn ArtifactSource> = Arc::new(StoreArtifactSource::new(
            store.clone(),
            dir.path().to_owned(),
        ));
        let mut app_data = wardhook_sdk::AppData::new();
        app_data.insert(
            wardhook_sdk::artifacts::CAPTURE_STEP.into(),
            serde_json::json!({"data": {"artifacts": [{"id": "art_1", "type": "audio/x-wav",
                "size": written.size, "sha256": written.sha256, "field": "recording_url"}]}}),
        );
        let event = Event {
            delivery_id: delivery.clone(),
            source: "nextphone".into(),
            event_type: "call.ended".into(),
            call_id: None,
            occurred_at: None,
            received_at: chrono::Utc::now(),
            caller: wardhook_sdk::Caller::default(),
            data: serde_json::json!({}),
        };
        let ctx = |delivery_id: &str| {
            Context::new(delivery_id, "ehr", 1)
                .with_app_data(app_data.clone())
                .with_artifact_source(source.clone())
        };

        let full = wardhook_sdk::phi::MinimumNecessary::guard(Arc::new(Attacher), PhiLevel::Full);
        let out = full
            .handle(&event, &mut ctx(&delivery))
            .await
            .expect("opens");
        assert_eq!(
            out.data,
            Some(serde_json::json!({ "sha256": hex::encode(Sha256::digest(&content)) }))
        );

        // Another delivery's handler cannot open it, even knowing the id.
        let err = full
            .handle(&event, &mut ctx("another-delivery"))
            .await
            .expect_err("not its delivery");
        assert!(!err.is_retryable());

        // A phi = "none" handler is handed neither the reference nor the opener.
        let none = wardhook_sdk::phi::MinimumNecessary::guard(Arc::new(Attacher), PhiLevel::None);
        let err = none
            .handle(&event, &mut ctx(&delivery))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("may not open artifacts"), "{err}");
    }
}
