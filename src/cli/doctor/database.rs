//! `doctor`'s database checks: the SQLite file's permissions plus the backend's own checks
//! ([`Maintenance::health`]: SQLite's integrity check; PostgreSQL's connection, TLS, schema
//! version and replication lag).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::files::mode_open_to_others;
use super::{Check, Paths};
use crate::config::{Config, StorageBackend};
use crate::crypto::{Keyring, MasterKey};
use crate::store::open::{inspect, StoreSettings};
use crate::store::Maintenance;

pub(super) fn check_database(paths: &Paths) -> Vec<Check> {
    let storage = paths.storage.as_path();
    const NAME: &str = "storage.path (database)";
    let shown = storage.display();
    let meta = match std::fs::metadata(storage) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::warn(
                NAME,
                format!("{shown} does not exist yet"),
                "it is created by the first `wardhook serve`; if deliveries were expected, check storage.path and the working directory",
            )]
        }
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("{shown}: {e}"),
                "run doctor as the service user or as root",
            )]
        }
    };
    let mut checks = Vec::new();
    let mode = meta.permissions().mode() & 0o777;
    if mode_open_to_others(mode) {
        checks.push(Check::warn(
            NAME,
            format!("{shown} has mode {mode:04o}"),
            format!("chmod 600 {shown}; the service's UMask=0077 keeps new files private"),
        ));
    }
    if let Some(dir) = storage.parent() {
        if let Ok(dmeta) = std::fs::metadata(dir) {
            let dmode = dmeta.permissions().mode() & 0o777;
            if mode_open_to_others(dmode) {
                checks.push(Check::warn(
                    NAME,
                    format!("folder {} has mode {dmode:04o}", dir.display()),
                    format!("chmod 700 {}", dir.display()),
                ));
            }
        }
    }
    match inspect(&sqlite_settings(paths), None) {
        Ok(store) => checks.extend(store.health()),
        Err(e) => checks.push(Check::fail(
            NAME,
            format!("cannot open {shown}: {e}"),
            "run doctor as the service user or as root",
        )),
    }
    checks
}

/// The SQLite store for the audit check, or why it cannot be checked.
pub(super) fn open_sqlite(
    paths: &Paths,
    key_usable: bool,
    db_usable: bool,
) -> Result<Box<dyn Maintenance>, String> {
    let Some(key_path) = paths.master_key.as_deref().filter(|_| key_usable) else {
        return Err("the master key is not usable".into());
    };
    if !db_usable {
        return Err("the database is missing or not healthy".into());
    }
    let keyring = Keyring::from_master(&MasterKey::load(key_path).map_err(|e| e.to_string())?);
    inspect(&sqlite_settings(paths), Some(keyring)).map_err(|e| e.to_string())
}

/// The SQLite file and audit folder `doctor` found, as the store builder's settings.
fn sqlite_settings(paths: &Paths) -> StoreSettings<'_> {
    StoreSettings {
        backend: &StorageBackend::Sqlite,
        sqlite_path: &paths.storage,
        max_size_mb: None,
        audit_dir: &paths.audit_dir,
    }
}

/// With `[storage] backend = "postgres"`: connect as this node (writing nothing) and run the
/// backend's checks. Returns the store for the audit check when it connected.
pub(super) fn check_postgres(config_path: &Path) -> (Vec<Check>, Option<Box<dyn Maintenance>>) {
    const NAME: &str = "postgres (connection)";
    let offline = match Config::load_offline(config_path) {
        Ok(o) => o,
        Err(e) => {
            return (
                vec![Check::fail(
                    NAME,
                    format!("cannot read the storage settings: {e}"),
                    "run `wardhook check-config` and fix what it reports",
                )],
                None,
            )
        }
    };
    let StorageBackend::Postgres(_) = &offline.storage_backend else {
        return (
            vec![Check::fail(
                NAME,
                "the config does not name a postgres backend after all",
                "run `wardhook check-config`",
            )],
            None,
        );
    };
    let keyring = Keyring::from_master(&offline.master_key);
    match inspect(&StoreSettings::offline(&offline), Some(keyring)) {
        Ok(store) => {
            let checks = store.health();
            (checks, Some(store))
        }
        Err(e) => (
            vec![Check::fail(
                NAME,
                format!("cannot set up the connection: {e}"),
                "check [storage.postgres] url and ca_file",
            )],
            None,
        ),
    }
}
