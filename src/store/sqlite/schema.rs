//! Schema migrations, versioned in the code and applied in order on open.
//!
//! The version lives in SQLite's `user_version`; each migration runs in its own transaction with
//! the version bump, so a crash mid-migration leaves the previous version intact.

use rusqlite::Connection;

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
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "applied store schema migration");
    }
    Ok(())
}
