//! Former home of the store's reads and maintenance, kept so existing paths compile: the
//! vocabulary is in [`super::types`], the SQLite functions in [`super::sqlite`] (`reads`,
//! purge, rotation, backup). New code goes through the [`super::Storage`] trait.

pub use super::sqlite::reads::{list_deliveries, list_quarantine, show_delivery, show_quarantine};
pub use super::sqlite::{
    backup_to, backup_to_with_progress, manifest_path, purge_older_than, purge_with_progress,
    rotate_keys, BackupReport, MANIFEST_FORMAT, PURGE_CHUNK,
};
pub use super::types::{
    DeliverySummary, ListFilter, PurgeProgress, PurgeReport, QuarantineEntry, QuarantineSummary,
    Requester, RotationProgress, RotationReport,
};
