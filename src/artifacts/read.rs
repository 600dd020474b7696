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
