//! Audit records on SQLite: appended inside the change's transaction, then mirrored to JSONL.

use rusqlite::{Connection, Transaction};

use super::Store;
use crate::audit::AppendedRecord;
use crate::crypto::Keyring;
use crate::store::audit_hook::{to_record, AuditEvent};
use crate::store::StoreError;

/// Append `event` to the audit chain inside `tx` and return the sealed record, which the
/// caller hands to the JSONL mirror once the transaction has committed.
///
/// A value that the audit types refuse (e.g. a source name that is not a short identifier) is
/// left out of the record rather than failing the delivery: losing an accepted delivery to an
/// audit formatting rule would be worse than a record with one field fewer.
pub(crate) fn record_audit(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    event: &AuditEvent<'_>,
) -> Result<AppendedRecord, StoreError> {
    crate::audit::append(tx, keyring, &to_record(event)).map_err(StoreError::from)
}

/// Write the audit records of a committed transaction to the mirror, if configured: the
/// mirror appends every committed record it does not have yet, in order, under its file lock,
/// so this is safe while the server and other commands write too. A failure is logged; the
/// next write (or the server's next start) fills the gap.
pub(crate) fn mirror(store: &Store, conn: &Connection) {
    if let Some(m) = &store.shared.options.audit_mirror {
        if let Err(e) = m.catch_up(conn) {
            tracing::error!(error = %e, "audit mirror catch-up failed");
        }
    }
}
