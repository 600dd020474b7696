//! Schema migrations, versioned in the code and applied in order on open.
//!
//! The version lives in SQLite's `user_version`; each migration runs in its own transaction with
//! the version bump, so a crash mid-migration leaves the previous version intact.

use rusqlite::{Connection, OptionalExtension};

/// Each entry migrates from version `index` to `index + 1`. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // v1: deliveries, jobs, quarantine, data keys, metadata.
    r#"
    CREATE TABLE data_keys (
        key_id       INTEGER PRIMARY KEY AUTOINCREMENT,
        period       TEXT NOT NULL,              -- UTC day, YYYY-MM-DD
        generation   INTEGER NOT NULL,           -- bumped by `keys rotate`
        wrapped      BLOB,                       -- NULL once destroyed (crypto-shredded)
        created_at   TEXT NOT NULL,
        destroyed_at TEXT,
        UNIQUE (period, generation)
    );
    CREATE TABLE deliveries (
        id           TEXT PRIMARY KEY,           -- UUID v7, assigned at intake
        source       TEXT NOT NULL,
        event_type   TEXT NOT NULL,              -- short identifier, validated at normalize
        dedup_kind   TEXT NOT NULL,              -- which dedup rule applied (no value)
        dedup_index  TEXT NOT NULL,              -- HMAC blind index of the dedup key
        call_ref     TEXT,                       -- HMAC blind index of the call id
        received_at  TEXT NOT NULL,              -- RFC 3339 UTC
        status       TEXT NOT NULL,              -- accepted | purged
        key_id       INTEGER REFERENCES data_keys(key_id),
        nonce        BLOB,                       -- NULL once purged
        ciphertext   BLOB,                       -- AES-256-GCM of the stored payload
        purged_at    TEXT,
        UNIQUE (source, dedup_index)
    );
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE INDEX deliveries_call_ref ON deliveries (call_ref);
    CREATE INDEX deliveries_key ON deliveries (key_id);
    CREATE TABLE jobs (
        id              INTEGER PRIMARY KEY,
        delivery_id     TEXT NOT NULL REFERENCES deliveries(id),
        handler         TEXT NOT NULL,
        position        INTEGER NOT NULL,        -- order within the matched routes
        status          TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        UNIQUE (delivery_id, handler)
    );
    CREATE INDEX jobs_due ON jobs (status, next_attempt_at);
    CREATE TABLE quarantine (
        id           TEXT PRIMARY KEY,
        source       TEXT NOT NULL,
        reason       TEXT NOT NULL,              -- NormalizeError text: paths only, no content
        received_at  TEXT NOT NULL,
        status       TEXT NOT NULL,              -- quarantined | purged
        key_id       INTEGER REFERENCES data_keys(key_id),
        nonce        BLOB,
        ciphertext   BLOB,
        purged_at    TEXT
    );
    CREATE INDEX quarantine_received ON quarantine (received_at);
    CREATE INDEX quarantine_key ON quarantine (key_id);
    CREATE TABLE store_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO store_meta (name, value) VALUES ('key_generation', '1');
    -- Written and emptied by readiness probes: proves a page can be allocated and fsync'd.
    CREATE TABLE health_probe (
        id     INTEGER PRIMARY KEY,
        filler BLOB NOT NULL
    );
    "#,
    // v2: the dispatch queue: leases, per-attempt records, encrypted handler outputs.
    r#"
    ALTER TABLE jobs ADD COLUMN lease_until TEXT;
    ALTER TABLE jobs ADD COLUMN last_error TEXT;       -- error class and reason, no payload
    ALTER TABLE jobs ADD COLUMN updated_at TEXT;
    ALTER TABLE jobs ADD COLUMN out_key_id INTEGER REFERENCES data_keys(key_id);
    ALTER TABLE jobs ADD COLUMN out_nonce BLOB;
    ALTER TABLE jobs ADD COLUMN out_ciphertext BLOB;   -- app_data entry for later handlers
    CREATE TABLE attempts (
        id           INTEGER PRIMARY KEY,
        job_id       INTEGER NOT NULL REFERENCES jobs(id),
        attempt      INTEGER NOT NULL,
        started_at   TEXT NOT NULL,
        finished_at  TEXT NOT NULL,
        result       TEXT NOT NULL,                    -- ok | retryable | permanent
        http_status  INTEGER,
        latency_ms   INTEGER NOT NULL,
        destination  TEXT,                             -- host or program name
        error        TEXT                              -- reason without payload data
    );
    CREATE INDEX attempts_job ON attempts (job_id);
    CREATE INDEX jobs_delivery ON jobs (delivery_id);
    "#,
    // v3: drop indexes no query uses, each a B-tree page written per delivery. No query looks
    // deliveries up by call_ref (the audit log's own call_ref index serves call searches), and
    // UNIQUE (delivery_id, handler) already indexes jobs by delivery_id.
    r#"
    DROP INDEX IF EXISTS deliveries_call_ref;
    DROP INDEX IF EXISTS jobs_delivery;
    "#,
    // v4: a sender retrying an authentic but unparseable delivery gets the same quarantine
    // entry back instead of a new one each time (keyed by a blind index of the body).
    r#"
    ALTER TABLE quarantine ADD COLUMN body_index TEXT;
    CREATE INDEX quarantine_body ON quarantine (source, body_index);
    "#,
    // v5: "find a call" by the caller's phone: the blind index of the number the event names
    // (`Keyring::caller_ref`, never the number), cleared when the delivery is purged.
    r#"
    ALTER TABLE deliveries ADD COLUMN caller_ref TEXT;
    CREATE INDEX deliveries_caller_ref ON deliveries (caller_ref) WHERE caller_ref IS NOT NULL;
    "#,
    // v6: no dedup index in the database. `UNIQUE (source, dedup_index)` wrote a random 4 KiB
    // page per delivery; the writer's dedup check now runs on the index levels in
    // `<db>.index` (see `levels`). SQLite cannot drop a constraint, so the table is rebuilt
    // (rowids kept: the levels name rows by rowid), with foreign keys off (`migrate`).
    r#"
    CREATE TABLE deliveries_v6 (
        id           TEXT PRIMARY KEY,           -- UUID v7, assigned at intake
        source       TEXT NOT NULL,
        event_type   TEXT NOT NULL,              -- short identifier, validated at normalize
        dedup_kind   TEXT NOT NULL,              -- which dedup rule applied (no value)
        dedup_index  TEXT NOT NULL,              -- HMAC blind index of the dedup key
        call_ref     TEXT,                       -- HMAC blind index of the call id
        received_at  TEXT NOT NULL,              -- RFC 3339 UTC
        status       TEXT NOT NULL,              -- accepted | purged
        key_id       INTEGER REFERENCES data_keys(key_id),
        nonce        BLOB,                       -- NULL once purged
        ciphertext   BLOB,                       -- AES-256-GCM of the stored payload
        purged_at    TEXT,
        caller_ref   TEXT                        -- blind index of the caller's phone
    );
    INSERT INTO deliveries_v6 (rowid, id, source, event_type, dedup_kind, dedup_index, call_ref,
                               received_at, status, key_id, nonce, ciphertext, purged_at,
                               caller_ref)
        SELECT rowid, id, source, event_type, dedup_kind, dedup_index, call_ref, received_at,
               status, key_id, nonce, ciphertext, purged_at, caller_ref
        FROM deliveries ORDER BY rowid;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v6 RENAME TO deliveries;
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE INDEX deliveries_key ON deliveries (key_id);
    CREATE INDEX deliveries_caller_ref ON deliveries (caller_ref) WHERE caller_ref IS NOT NULL;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Bring the database up to [`SCHEMA_VERSION`]. Refuses a database from a newer build rather
/// than guessing at its layout.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), crate::store::StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > SCHEMA_VERSION {
        return Err(crate::store::StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    migrate_to(conn, current, SCHEMA_VERSION)
}

/// Apply the migrations from `current` up to `target`. Foreign keys are off meanwhile (a
/// rebuilt table is dropped while other tables still point at it) and checked before each
/// commit instead, so a migration that broke a reference rolls back.
fn migrate_to(
    conn: &mut Connection,
    current: usize,
    target: usize,
) -> Result<(), crate::store::StoreError> {
    if current >= target {
        return Ok(());
    }
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = (|| {
        for (version, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
            let started = std::time::Instant::now();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx
                .query_row(
                    "SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(table) = broken {
                tracing::error!(
                    version = version + 1,
                    table,
                    "migration broke a foreign key"
                );
                return Err(crate::store::StoreError::Corrupt(
                    "a schema migration broke a foreign key; nothing was changed",
                ));
            }
            tx.pragma_update(None, "user_version", (version + 1) as i64)?;
            tx.commit()?;
            tracing::info!(
                version = version + 1,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "applied store schema migration"
            );
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    result
}
