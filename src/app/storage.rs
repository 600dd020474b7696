//! Opening the configured storage backend: SQLite (with its audit mirror and signed
//! checkpoints) or PostgreSQL.

use std::sync::Arc;

use super::AppError;
use crate::audit::Mirror;
use crate::config::{Config, StorageBackend};
use crate::crypto::Keyring;
use crate::store::postgres::PgStore;
use crate::store::{Storage, Store, StoreError, StoreOptions};

/// Records between signed audit checkpoints: truncating the log's tail is detectable up to the
/// last checkpoint, so they are frequent.
const AUDIT_CHECKPOINT_EVERY: u64 = 100;

/// The opened backend; the SQLite store also separately, when that is the backend (its audit
/// mirror takes checkpoints).
pub(super) struct Opened {
    pub store: Arc<dyn Storage>,
    pub sqlite: Option<Store>,
}

/// Open the backend `config` names, with the master key's keyring.
pub(super) async fn open(config: &Config) -> Result<Opened, AppError> {
    let keyring = Keyring::from_master(&config.master_key);
    match &config.storage_backend {
        StorageBackend::Sqlite => {
            let mirror = Mirror::new(&config.audit.dir)?.with_checkpoints(
                crate::audit::commands::checkpoint_path(&config.audit.dir),
                AUDIT_CHECKPOINT_EVERY,
                &keyring,
            );
            let store = Store::open(
                &config.storage_path,
                keyring,
                StoreOptions {
                    audit_mirror: Some(Arc::new(mirror)),
                    // SQLite's default page size is 4 KiB.
                    max_db_pages: config.storage_max_size_mb.map(|mb| mb * 256),
                    ..StoreOptions::default()
                },
            )?;
            Ok(Opened {
                store: Arc::new(store.clone()),
                sqlite: Some(store),
            })
        }
        StorageBackend::Postgres(settings) => Ok(Opened {
            store: Arc::new(PgStore::open(settings, keyring).await?),
            sqlite: None,
        }),
    }
}

/// A signed audit checkpoint, where the backend keeps them (the SQLite store's mirror).
pub(super) async fn checkpoint(sqlite: Option<&Store>) -> Option<Result<(), StoreError>> {
    Some(sqlite?.checkpoint_audit().await)
}
