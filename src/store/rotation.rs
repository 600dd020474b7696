//! `keys rotate`, the part both backends share: which values are encrypted, the SQL that
//! finds, moves and counts them, and the two audit records of a run.
//!
//! Every encrypted value in the schema is listed once, in [`SEALED_COLUMNS`]: delivery
//! payloads, quarantined bodies, handler outputs, stored real-time replies (both kept in
//! `jobs.out_*`) and captured artifacts' per-file keys. Rotation re-encrypts what that list
//! names and destroys a key only when no column of the list still refers to it, so a value the
//! list missed would keep its key alive and the next run would find it again; each backend has
//! a test comparing the list with its schema so a new ciphertext column cannot be forgotten.
//!
//! The statements are written once, with `?N` parameters and SQL both dialects read the same
//! (`CAST`, not `::`); [`Dialect::sql`] gives PostgreSQL its `$N`. The backends keep only what
//! really differs: how a transaction is opened and locked, how keys are cached, and (SQLite) the
//! pause that lets the intake writer in between batches.

use std::borrow::Cow;

use crate::crypto::RecordPlace;
use crate::store::audit_hook::{AuditAction, AuditEvent};
use crate::store::payload::{delivery_place, quarantine_place};
use crate::store::types::Requester;

/// Values re-encrypted per transaction.
pub(crate) const BATCH: usize = 256;

/// Which SQL dialect a statement is wanted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sql` (written with `?N` parameters and no other `?`) in this dialect.
    pub(crate) fn sql(self, sql: &str) -> Cow<'_, str> {
        match self {
            Self::Sqlite => Cow::Borrowed(sql),
            Self::Postgres => Cow::Owned(sql.replace('?', "$")),
        }
    }
}

/// One encrypted value kind of the schema: where it lives and how its AAD is formed. The
/// statements are built from these names (see the methods).
pub(crate) struct SealedColumns {
    /// The table (`t` in the statements).
    pub(crate) table: &'static str,
    /// The ciphertext column (NULL once purged).
    pub(crate) ciphertext: &'static str,
    /// Its nonce column.
    nonce: &'static str,
    /// The column naming its data key.
    pub(crate) key_column: &'static str,
    /// Whether the row id is an integer (it is bound as text for every kind, and cast back).
    integer_id: bool,
    /// The AAD id: the row's own `t.id`, or the delivery's `t.delivery_id`.
    aad_id: &'static str,
    /// Where the sender's source name is read: the row's own `t.source`, or `d.source` of
    /// the delivery the row belongs to (joined as `d` through `t.delivery_id`).
    source: &'static str,
    /// A further condition on `t` (` AND …`), when two kinds share a table.
    only: &'static str,
    /// The AAD of a row of this kind, from its AAD id, source and key id.
    pub(crate) place: for<'a> fn(&'a str, &'a str, i64) -> RecordPlace<'a>,
}

impl SealedColumns {
    /// `FROM … WHERE …` of the rows of this kind sealed under a generation older than `?1`.
    fn older_rows(&self) -> String {
        let (t, k, c, only) = (self.table, self.key_column, self.ciphertext, self.only);
        let delivery = if self.source.starts_with("d.") {
            "JOIN deliveries d ON d.id = t.delivery_id "
        } else {
            ""
        };
        format!(
            "FROM {t} t {delivery}JOIN data_keys k ON k.key_id = t.{k}
             WHERE t.{c} IS NOT NULL AND k.generation < ?1{only}"
        )
    }

    /// How many rows of this kind are sealed under a generation older than `?1`.
    pub(crate) fn count_older(&self, dialect: Dialect) -> String {
        dialect
            .sql(&format!("SELECT COUNT(*) {}", self.older_rows()))
            .into_owned()
    }

    /// Up to `?2` rows of this kind sealed under a generation older than `?1`: row id (text),
    /// AAD id, source, key id, key period, nonce, ciphertext.
    pub(crate) fn select_older(&self, dialect: Dialect) -> String {
        let (k, n, c) = (self.key_column, self.nonce, self.ciphertext);
        dialect
            .sql(&format!(
                "SELECT CAST(t.id AS TEXT), CAST({} AS TEXT), {}, t.{k}, k.period, t.{n}, t.{c} {}
                 LIMIT ?2",
                self.aad_id,
                self.source,
                self.older_rows()
            ))
            .into_owned()
    }

    /// Moves one row: `?1` new key id, `?2` nonce, `?3` ciphertext, `?4` row id (text), `?5`
    /// old key id (so a row changed meanwhile is left for the next batch).
    pub(crate) fn update(&self, dialect: Dialect) -> String {
        let (t, k, n, c) = (self.table, self.key_column, self.nonce, self.ciphertext);
        let id = if self.integer_id {
            "CAST(CAST(?4 AS TEXT) AS BIGINT)"
        } else {
            "?4"
        };
        dialect
            .sql(&format!(
                "UPDATE {t} SET {k} = ?1, {n} = ?2, {c} = ?3 WHERE id = {id} AND {k} = ?5"
            ))
            .into_owned()
    }
}

/// A received body, kept in its own row with its source (deliveries, quarantine entries).
const fn received(
    table: &'static str,
    place: for<'a> fn(&'a str, &'a str, i64) -> RecordPlace<'a>,
) -> SealedColumns {
    SealedColumns {
        table,
        ciphertext: "ciphertext",
        nonce: "nonce",
        key_column: "key_id",
        integer_id: false,
        aad_id: "t.id",
        source: "t.source",
        only: "",
        place,
    }
}

/// A kind kept in `jobs.out_*` (two kinds share those columns, told apart by `only`).
const fn job_output(
    aad_id: &'static str,
    only: &'static str,
    place: for<'a> fn(&'a str, &'a str, i64) -> RecordPlace<'a>,
) -> SealedColumns {
    SealedColumns {
        table: "jobs",
        ciphertext: "out_ciphertext",
        nonce: "out_nonce",
        key_column: "out_key_id",
        integer_id: true,
        aad_id,
        source: "d.source",
        only,
        place,
    }
}

/// Every encrypted value the schema holds, the same in both backends. See the module docs.
pub(crate) const SEALED_COLUMNS: &[SealedColumns] = &[
    received("deliveries", delivery_place),
    received("quarantine", quarantine_place),
    // Handler outputs (`app_data` for later handlers): AAD id is the job id.
    job_output(
        "t.id",
        " AND t.handler <> '@realtime'",
        crate::store::jobs::output_place,
    ),
    // Real-time replies, the `@realtime` pseudo-job of a delivery: AAD id is the delivery id.
    job_output(
        "t.delivery_id",
        " AND t.handler = '@realtime'",
        crate::store::realtime::place,
    ),
    // Captured artifacts' per-file keys (the files themselves are not touched): AAD id is the
    // artifact id.
    SealedColumns {
        table: "artifacts",
        ciphertext: "key_ciphertext",
        nonce: "key_nonce",
        key_column: "key_id",
        integer_id: false,
        aad_id: "t.id",
        source: "d.source",
        only: "",
        place: crate::store::artifacts::key_place,
    },
];

/// Starts a new generation: `?1` the new generation (as text, `store_meta` holds text).
pub(crate) const BUMP_GENERATION: &str =
    "UPDATE store_meta SET value = ?1 WHERE name = 'key_generation'";

/// Destroys every key older than generation `?1` that no sealed column refers to any more,
/// stamping it with `?2` (now).
pub(crate) fn destroy_unused_keys(dialect: Dialect) -> String {
    let unused: String = SEALED_COLUMNS
        .iter()
        .map(|s| {
            format!(
                " AND NOT EXISTS (SELECT 1 FROM {t} WHERE {t}.{k} = data_keys.key_id AND {t}.{c} IS NOT NULL)",
                t = s.table,
                k = s.key_column,
                c = s.ciphertext
            )
        })
        .collect();
    dialect
        .sql(&format!(
            "UPDATE data_keys SET wrapped = NULL, destroyed_at = ?2
             WHERE generation < ?1 AND wrapped IS NOT NULL{unused}"
        ))
        .into_owned()
}

/// The audit record of a run that starts `generation` (a resumed run writes none).
pub(crate) fn started(who: &Requester, generation: i64) -> AuditEvent<'static> {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
    ev.reason = Some("rotation_started");
    ev.count = Some(generation);
    ev.via = Some(who.via);
    ev
}

/// The audit record of a finished run that moved `reencrypted` values.
pub(crate) fn completed(who: &Requester, reencrypted: u64) -> AuditEvent<'static> {
    let mut ev = AuditEvent::new(who.actor(), AuditAction::KeyRotated);
    ev.reason = Some("rotation_completed");
    ev.count = Some(i64::try_from(reencrypted).unwrap_or(i64::MAX));
    ev.object_kind = Some("data_key");
    ev.via = Some(who.via);
    ev
}

/// Whether `(table, column)` of a schema holds ciphertext that [`SEALED_COLUMNS`] does not
/// name (the wrapped keys themselves are destroyed, not re-encrypted; a relay's sealed
/// records are HPKE ciphertext to the inside node's public key, which the relay's master key
/// never encrypted). For the schema tests.
#[cfg(test)]
pub(crate) fn missed(table: &str, column: &str) -> bool {
    (column.contains("ciphertext") || column.contains("wrapped"))
        && (table, column) != ("data_keys", "wrapped")
        && (table, column) != ("relay_sealed", "ciphertext")
        && !SEALED_COLUMNS
            .iter()
            .any(|s| s.table == table && s.ciphertext == column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_statements_number_their_parameters_with_dollars() {
        let sql = SEALED_COLUMNS[2].update(Dialect::Postgres);
        assert!(sql.contains("$4") && sql.contains("$5"), "{sql}");
        assert!(!sql.contains('?'), "{sql}");
        assert!(!destroy_unused_keys(Dialect::Postgres).contains('?'));
        assert_eq!(
            SEALED_COLUMNS[0].update(Dialect::Sqlite),
            "UPDATE deliveries SET key_id = ?1, nonce = ?2, ciphertext = ?3 WHERE id = ?4 AND key_id = ?5"
        );
    }

    #[test]
    fn rows_of_another_table_read_their_source_from_their_delivery() {
        let sql = SEALED_COLUMNS[4].select_older(Dialect::Sqlite);
        assert!(
            sql.contains("JOIN deliveries d ON d.id = t.delivery_id"),
            "{sql}"
        );
        assert!(!SEALED_COLUMNS[0]
            .select_older(Dialect::Sqlite)
            .contains("JOIN deliveries"));
    }

    #[test]
    fn a_ciphertext_column_outside_the_list_is_reported() {
        assert!(missed("deliveries", "body_ciphertext"));
        assert!(!missed("deliveries", "ciphertext"));
        assert!(!missed("data_keys", "wrapped"));
        assert!(!missed("deliveries", "source"));
    }
}
