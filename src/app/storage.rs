//! Opening the configured storage backend, SQLite or PostgreSQL, each with this node's audit
//! mirror and signed checkpoints.

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

/// The opened backend.
pub(super) struct Opened {
    pub store: Arc<dyn Storage>,
}

/// Open the backend `config` names, with the master key's keyring.
pub(super) async fn open(config: &Config) -> Result<Opened, AppError> {
    let keyring = Keyring::from_master(&config.master_key);
    // Each node (the SQLite server, or each PostgreSQL node) mirrors its own chain.
    let mirror = Arc::new(Mirror::new(&config.audit.dir)?.with_checkpoints(
        crate::audit::commands::checkpoint_path(&config.audit.dir),
        AUDIT_CHECKPOINT_EVERY,
        &keyring,
    ));
    match &config.storage_backend {
        StorageBackend::Sqlite => {
            let store = Store::open(
                &config.storage_path,
                keyring,
                StoreOptions {
                    audit_mirror: Some(mirror),
                    // SQLite's default page size is 4 KiB.
                    max_db_pages: config.storage_max_size_mb.map(|mb| mb * 256),
                    ..StoreOptions::default()
                },
            )?;
            Ok(Opened {
                store: Arc::new(store),
            })
        }
        StorageBackend::Postgres(settings) => Ok(Opened {
            store: Arc::new(PgStore::open_with_mirror(settings, keyring, Some(mirror)).await?),
        }),
    }
}

/// A signed audit checkpoint of this node's chain, after bringing its mirror up to date.
pub(super) async fn checkpoint(store: &dyn Storage) -> Result<(), StoreError> {
    store.checkpoint_audit().await
}
