//! The SQLite backend: one file, one writer thread with group commit.
//!
//! The serving side (`Store`, the writer, jobs) is in the parent module for now; this folder
//! holds what has moved here: the audit table behind the audit module's traits
//! ([`audit_log`]) and the [`crate::store::Maintenance`] implementation ([`maintenance`]).

pub mod audit_log;
mod maintenance;

// The audit module's chain, mirror, purge and verification, on real SQLite files (they
// tamper with the table directly, so they live with the SQL).
#[cfg(test)]
mod audit_mirror_tests;
#[cfg(test)]
mod audit_tests;

pub use maintenance::SqliteMaintenance;
