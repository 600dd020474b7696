//! `wardhook artifacts list|get`: captured recordings and transcripts for operators. Listing
//! shows metadata only; `get` decrypts one artifact to a new owner-only file (or stdout) and
//! is a `payload_read` audit record naming the operator.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::storage::OfflineStore;
use crate::artifacts::ReadError;
use crate::store::artifacts::{ArtifactFilter, ArtifactReader, ArtifactSummary};
use crate::store::types::Requester;
use crate::store::StoreError;

/// `artifacts` subcommands.
#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Captured artifacts, newest first (metadata only: id, delivery, type, size, SHA-256).
    List {
        /// Only this delivery's.
        #[arg(long)]
        delivery: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Decrypt one artifact (audited) to `--out` (created 0600; must not exist) or stdout.
    Get {
        /// The artifact id (`art_…`).
        id: String,
        /// Where to write the content.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Run an `artifacts` subcommand.
pub fn run(config: &Path, command: ArtifactsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ArtifactsCommand::List {
            delivery,
            limit,
            format,
        } => {
            let json = match format.as_str() {
                "json" => true,
                "table" => false,
                _ => anyhow::bail!("--format must be table or json"),
            };
            let store = OfflineStore::open(config)?;
            let filter = ArtifactFilter {
                delivery_id: delivery,
                since: None,
                limit,
            };
            let rows = store.run(|s| s.artifacts().list_artifacts(filter))?;
            print_list(&rows, json, &mut std::io::stdout().lock())?;
        }
        ArtifactsCommand::Get { id, out } => {
            let settings = crate::app::load_checked(config)?;
            let dir = settings
                .artifacts
                .as_ref()
                .map(|a| a.dir.clone())
                .context("the config has no [artifacts] section")?;
            let store = OfflineStore::open(config)?;
            let reader = ArtifactReader::Person(Requester::cli_user());
            let opened = store.block_on(|s| {
                Box::pin(async move { crate::artifacts::open_artifact(s, &dir, &id, reader).await })
            });
            let (summary, mut file) = match opened {
                Ok(v) => v,
                Err(crate::artifacts::ReadError::Store(crate::store::StoreError::KeyDestroyed)) => {
                    anyhow::bail!("the artifact was purged: its key has been destroyed")
                }
                Err(e) => return Err(e.into()),
            };
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(
                    crate::fsutil::create_new_private(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = file.next_chunk()? {
                sink.write_all(&chunk)?;
            }
            sink.flush()?;
            if out.is_some() {
                eprintln!(
                    "{}: {} bytes, {}, sha256 {}",
                    summary.id, summary.size, summary.content_type, summary.sha256
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(
    rows: &[ArtifactSummary],
    json: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<36} {:<36} {:<16} {:>10} {:<8} SHA-256",
        "ID", "DELIVERY", "TYPE", "BYTES", "STATE"
    )?;
    for r in rows {
        let state = if !r.readable {
            "purged"
        } else if r.vendor_deleted_at.is_some() {
            "local"
        } else {
            "kept"
        };
        writeln!(
            out,
            "{:<36} {:<36} {:<16} {:>10} {:<8} {}",
            r.id, r.delivery_id, r.content_type, r.size, state, r.sha256
        )?;
    }
    Ok(())
}

/// `emergency-export --with-artifacts`: the exported deliveries' artifacts, decrypted into the
/// archive after the deliveries. Each artifact is opened like `artifacts get` (a `payload_read`
/// record naming the operator); purged ones are skipped.
pub(super) struct ArchiveArtifacts {
    store: OfflineStore,
    dir: PathBuf,
}

impl ArchiveArtifacts {
    /// The store and the artifact folder of `config`, which must configure capture.
    pub(super) fn open(config: &Path) -> anyhow::Result<Self> {
        let settings = crate::app::load_checked(config)?;
        let dir = settings
            .artifacts
            .as_ref()
            .map(|a| a.dir.clone())
            .context("--with-artifacts: the config has no [artifacts] section")?;
        Ok(Self {
            store: OfflineStore::open(config)?,
            dir,
        })
    }

    /// Append the artifacts of `deliveries` to `sink`: per artifact its metadata record, then
    /// its content in records of one decrypted chunk each. Returns how many were added.
    pub(super) fn append(
        &self,
        deliveries: &[String],
        sink: crate::store::archive::ArchiveRecords<'_>,
    ) -> Result<u64, StoreError> {
        use base64::Engine as _;
        let mut added = 0u64;
        for delivery in deliveries {
            let delivery = delivery.clone();
            let rows = self
                .store
                .run(move |s| s.artifacts().delivery_artifacts(delivery))?;
            for row in rows.into_iter().filter(|r| r.readable) {
                let dir = self.dir.clone();
                let reader = ArtifactReader::Person(Requester::cli_user());
                let id = row.id.clone();
                let opened = self.store.block_on(|s| {
                    Box::pin(
                        async move { crate::artifacts::open_artifact(s, &dir, &id, reader).await },
                    )
                });
                let (summary, mut file) = match opened {
                    Ok(v) => v,
                    // Purged between the listing and the read.
                    Err(ReadError::Store(StoreError::KeyDestroyed)) => continue,
                    Err(ReadError::Store(e)) => return Err(e),
                    Err(ReadError::File(e)) => {
                        tracing::error!(artifact = %row.id, error = %e, "artifact file unreadable");
                        return Err(StoreError::Corrupt("an artifact file is unreadable"));
                    }
                };
                sink(&serde_json::json!({ "artifact": summary }))?;
                loop {
                    let chunk = file
                        .next_chunk()
                        .map_err(|_| StoreError::Corrupt("an artifact file is unreadable"))?;
                    let Some(chunk) = chunk else { break };
                    let data = zeroize::Zeroizing::new(
                        base64::engine::general_purpose::STANDARD.encode(&chunk[..]),
                    );
                    sink(
                        &serde_json::json!({ "artifact_part": summary.id, "data_b64": data.as_str() }),
                    )?;
                }
                added += 1;
            }
        }
        Ok(added)
    }
}
