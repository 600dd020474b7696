//! Opening the configured backend: settings in, a running store out. The one place that
//! knows how each backend is built — the serving node's store with this node's audit mirror
//! and signed checkpoints (plus the background task PostgreSQL needs for them), the
//! maintenance object of the operator commands, the read-only inspection `doctor` runs, and the
//! offline check `check-config` runs. `app` and `cli` call these and nothing else.

use std::path::Path;
use std::sync::Arc;

use super::postgres::{MirrorTask, PgMaintenance, PgRelayBuffer, PgSettings, PgStore};
use super::relay_buffer::{RelayBuffer, RelayBufferSettings};
use super::sqlite::{SqliteMaintenance, SqliteRelayBuffer};
use super::{Maintenance, Storage, Store, StoreError, StoreOptions};
use crate::audit::Mirror;
use crate::config::{Config, OfflineConfig, StorageBackend};
use crate::crypto::Keyring;

/// Records between signed audit checkpoints: truncating the log's tail is detectable up to the
/// last checkpoint, so they are frequent.
pub const AUDIT_CHECKPOINT_EVERY: u64 = 100;

/// What opening a store needs from the settings, for the server and the offline commands
/// alike.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings<'a> {
    /// Which backend, with PostgreSQL's connection settings.
    pub backend: &'a StorageBackend,
    /// The SQLite file (unused on PostgreSQL).
    pub sqlite_path: &'a Path,
    /// `[storage] max_size_mb` (SQLite only).
    pub max_size_mb: Option<u64>,
    /// This node's audit mirror and checkpoint folder.
    pub audit_dir: &'a Path,
}

impl<'a> StoreSettings<'a> {
    /// The server's storage settings.
    pub fn of(config: &'a Config) -> Self {
        Self {
            backend: &config.storage_backend,
            sqlite_path: &config.storage_path,
            max_size_mb: config.storage_max_size_mb,
            audit_dir: &config.audit.dir,
        }
    }

    /// An offline command's storage settings.
    pub fn offline(config: &'a OfflineConfig) -> Self {
        Self {
            backend: &config.storage_backend,
            sqlite_path: &config.storage_path,
            max_size_mb: None,
            audit_dir: &config.audit.dir,
        }
    }
}

/// A serving node's opened store and the background work it needs.
#[derive(Debug)]
pub struct OpenedStorage {
    /// The store every stage shares.
    pub store: Arc<dyn Storage>,
    /// Work running beside the store, stopped by [`OpenedStorage::close`].
    background: Background,
}

/// Background work of an opened store. SQLite runs its writer and checkpointer threads inside
/// the store (they end with it); PostgreSQL runs this node's audit-mirror task.
#[derive(Debug, Default)]
struct Background {
    mirror: Option<MirrorTask>,
    /// This node's store again, to close its intake committer.
    pg: Option<PgStore>,
}

impl OpenedStorage {
    /// Once no request is in flight any more (the listener has stopped): finish the intakes
    /// still queued for commit — those of requests whose answers were abandoned — so that
    /// nothing commits after the stop record or after [`OpenedStorage::close`]'s final mirror
    /// catch-up. Intakes after this answer unavailable. (SQLite's writer mirrors each batch
    /// itself as it commits.)
    pub async fn finish_intake(&self) {
        if let Some(pg) = &self.background.pg {
            pg.close_intake().await;
        }
    }

    /// After the last write of a graceful shutdown: stop the background work, waiting for any
    /// mirror write in flight, then bring this node's mirror up to date and sign a checkpoint
    /// of its last record. Afterwards nothing writes the mirror, and it names every record the
    /// node committed.
    pub async fn close(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.background.mirror.take() {
            task.stop().await;
        }
        self.store.checkpoint_audit().await
    }
}

impl OpenedStorage {
    /// On a DMZ relay: its buffer of sealed deliveries, in the same storage as its audit chain
    /// (the SQLite file `settings` name, with the relay's mirror caught up after each commit;
    /// or this node's PostgreSQL database, mirrored by the node's mirror task).
    pub fn relay_buffer(
        &self,
        settings: &StoreSettings<'_>,
        keyring: Keyring,
        buffer: RelayBufferSettings,
    ) -> Result<Arc<dyn RelayBuffer>, StoreError> {
        match (&self.background.pg, settings.backend) {
            (Some(pg), StorageBackend::Postgres(_)) => {
                Ok(Arc::new(PgRelayBuffer::new(pg.clone(), buffer)))
            }
            (None, StorageBackend::Sqlite) => Ok(Arc::new(SqliteRelayBuffer::open(
                settings.sqlite_path,
                keyring,
                Some(Mirror::new(settings.audit_dir)?),
                buffer,
            )?)),
            _ => Err(StoreError::InvalidArgument(
                "the relay buffer's settings name another backend than the opened store".into(),
            )),
        }
    }
}

/// This node's audit mirror with its checkpoint policy.
fn node_mirror(audit_dir: &Path, keyring: &Keyring) -> Result<Arc<Mirror>, StoreError> {
    Ok(Arc::new(Mirror::new(audit_dir)?.with_checkpoints(
        crate::audit::commands::checkpoint_path(audit_dir),
        AUDIT_CHECKPOINT_EVERY,
        keyring,
    )))
}

/// Open the serving store `settings` name, with this node's mirror and checkpoints (each node
/// — the SQLite server, or each PostgreSQL node — mirrors its own chain).
pub async fn open(
    settings: &StoreSettings<'_>,
    keyring: Keyring,
) -> Result<OpenedStorage, StoreError> {
    let mirror = node_mirror(settings.audit_dir, &keyring)?;
    match settings.backend {
        StorageBackend::Sqlite => {
            let store = Store::open(
                settings.sqlite_path,
                keyring,
                StoreOptions {
                    audit_mirror: Some(mirror),
                    // SQLite's default page size is 4 KiB.
                    max_db_pages: settings.max_size_mb.map(|mb| mb.saturating_mul(256)),
                    ..StoreOptions::default()
                },
            )?;
            Ok(OpenedStorage {
                store: Arc::new(store),
                background: Background::default(),
            })
        }
        StorageBackend::Postgres(pg) => {
            let (store, mirror) = PgStore::open_with_mirror_task(pg, keyring, Some(mirror)).await?;
            Ok(OpenedStorage {
                store: Arc::new(store.clone()),
                background: Background {
                    mirror,
                    pg: Some(store),
                },
            })
        }
    }
}

/// What `check-config` can prove about the storage settings without touching the database:
/// on PostgreSQL, that the URL parses and the CA file holds usable certificates (the same
/// connection set-up [`open`] uses). Returns the key path and the reason of a problem.
pub fn check(settings: &StoreSettings<'_>) -> Result<(), (&'static str, String)> {
    match settings.backend {
        StorageBackend::Sqlite => Ok(()),
        StorageBackend::Postgres(pg) => {
            super::postgres::check_settings(pg).map_err(|e| ("storage.postgres", e.to_string()))
        }
    }
}

/// The [`Maintenance`] of the operator commands: the SQLite file (which must exist) or this
/// PostgreSQL node (migrating if needed), with this node's mirror and checkpoints.
pub fn open_maintenance(
    settings: &StoreSettings<'_>,
    keyring: Keyring,
) -> Result<Box<dyn Maintenance>, StoreError> {
    maintenance(settings, keyring, PgMaintenance::open)
}

/// The [`Maintenance`] `doctor` inspects: like [`open_maintenance`] but writing nothing on
/// PostgreSQL (no migration; an unreachable server shows in its health findings). Without a
/// usable master key (`None`), a keyring nothing was sealed under: enough for checks that
/// decrypt and verify nothing.
pub fn inspect(
    settings: &StoreSettings<'_>,
    keyring: Option<Keyring>,
) -> Result<Box<dyn Maintenance>, StoreError> {
    let keyring = keyring.unwrap_or_else(unusable_keyring);
    maintenance(settings, keyring, PgMaintenance::inspect)
}

/// The backend's [`Maintenance`], PostgreSQL's connected by `connect`.
fn maintenance(
    settings: &StoreSettings<'_>,
    keyring: Keyring,
    connect: fn(&PgSettings, Keyring, &Path) -> Result<PgMaintenance, StoreError>,
) -> Result<Box<dyn Maintenance>, StoreError> {
    Ok(match settings.backend {
        StorageBackend::Postgres(pg) => Box::new(connect(pg, keyring, settings.audit_dir)?),
        StorageBackend::Sqlite => Box::new(SqliteMaintenance::new(
            settings.sqlite_path,
            keyring,
            settings.audit_dir,
        )?),
    })
}

/// A keyring from a random master key: no data was sealed under it, so nothing can be read
/// with it.
pub(crate) fn unusable_keyring() -> Keyring {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    Keyring::from_master(&crate::crypto::MasterKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{PgSettings, PgTls};
    use crate::crypto::MasterKey;

    fn pg_backend(ca_file: &Path) -> StorageBackend {
        StorageBackend::Postgres(PgSettings {
            url: zeroize::Zeroizing::new("postgres://u@db.example/w".into()),
            tls: PgTls::Require {
                ca_file: ca_file.to_owned(),
            },
            pool_size: 2,
            node_id: "n1".into(),
            wait_timeout: std::time::Duration::from_secs(1),
        })
    }

    #[test]
    fn check_refuses_a_ca_file_without_certificates_under_its_key_path() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let backend = pg_backend(&ca);
        let settings = StoreSettings {
            backend: &backend,
            sqlite_path: &dir.path().join("unused.db"),
            max_size_mb: None,
            audit_dir: dir.path(),
        };
        let (path, reason) = check(&settings).unwrap_err();
        assert_eq!(path, "storage.postgres");
        assert!(reason.contains("ca_file"), "{reason}");
        assert!(check(&StoreSettings {
            backend: &StorageBackend::Sqlite,
            ..settings
        })
        .is_ok());
    }

    #[tokio::test]
    async fn sqlite_store_closes_with_a_signed_checkpoint_of_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let audit_dir = dir.path().join("audit");
        let master = MasterKey::from_bytes([7; 32]);
        let settings = StoreSettings {
            backend: &StorageBackend::Sqlite,
            sqlite_path: &dir.path().join("w.db"),
            max_size_mb: Some(64),
            audit_dir: &audit_dir,
        };
        let mut opened = open(&settings, Keyring::from_master(&master))
            .await
            .unwrap();
        opened
            .store
            .record_audit(crate::audit::lifecycle_record(
                crate::audit::Action::ServerStopped,
                None,
            ))
            .await
            .unwrap();
        opened.close().await.unwrap();
        let checkpoints = crate::audit::commands::checkpoint_path(&audit_dir);
        let text = std::fs::read_to_string(checkpoints).unwrap();
        assert!(!text.trim().is_empty());
    }
}
