//! The PostgreSQL schema, versioned in the code like SQLite's, applied once across nodes.
//!
//! It mirrors `store::schema` (deliveries, jobs, attempts, quarantine, data keys), the audit
//! table and the console's tokens, with BYTEA for nonces and ciphertexts, TIMESTAMPTZ for times, and what several nodes
//! add: the node that wrote a delivery or attempt, the lease owner of a running job, and one
//! audit chain head per node. Audit `ts` stays text because the record MAC covers it verbatim.
//!
//! All pending migrations run in one transaction that first takes a transaction-scoped advisory
//! lock: when several nodes start together, one migrates and the others wait, then find the
//! version already current. DDL is transactional in PostgreSQL, so a crash mid-migration leaves
//! the previous version intact.

use crate::store::StoreError;

/// Advisory lock key for migrations ("wardhook" in ASCII, as a 64-bit integer).
const MIGRATION_LOCK: i64 = 0x7761_7264_686f_6f6b;

/// Each entry migrates from version `index` to `index + 1`. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // v1: everything SQLite's v1–v4 have, plus node ids, leases and per-node audit chains.
    r#"
    CREATE TABLE data_keys (
        key_id       BIGSERIAL PRIMARY KEY,
        period       TEXT NOT NULL,              -- UTC day, YYYY-MM-DD
        generation   BIGINT NOT NULL,            -- bumped by `keys rotate`
        wrapped      BYTEA,                      -- NULL once destroyed (crypto-shredded)
        created_at   TIMESTAMPTZ NOT NULL,
        destroyed_at TIMESTAMPTZ,
        UNIQUE (period, generation)
    );
    CREATE TABLE deliveries (
        id           TEXT PRIMARY KEY,           -- UUID v7, assigned at intake
        source       TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        dedup_kind   TEXT NOT NULL,              -- which dedup rule applied (no value)
        dedup_index  TEXT NOT NULL,              -- HMAC blind index of the dedup key
        call_ref     TEXT,                       -- HMAC blind index of the call id
        received_at  TIMESTAMPTZ NOT NULL,
        status       TEXT NOT NULL,              -- accepted | purged
        key_id       BIGINT REFERENCES data_keys (key_id),
        nonce        BYTEA,                      -- NULL once purged
        ciphertext   BYTEA,                      -- AES-256-GCM of the stored payload
        purged_at    TIMESTAMPTZ,
        node_id      TEXT NOT NULL,              -- the node that accepted it
        UNIQUE (source, dedup_index)
    );
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE INDEX deliveries_key ON deliveries (key_id);
    CREATE TABLE jobs (
        id              BIGSERIAL PRIMARY KEY,
        delivery_id     TEXT NOT NULL REFERENCES deliveries (id),
        handler         TEXT NOT NULL,
        position        INTEGER NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        created_at      TIMESTAMPTZ NOT NULL,
        lease_until     TIMESTAMPTZ,
        lease_owner     TEXT,                    -- node id holding the lease
        last_error      TEXT,                    -- error class and reason, no payload
        updated_at      TIMESTAMPTZ,
        out_key_id      BIGINT REFERENCES data_keys (key_id),
        out_nonce       BYTEA,
        out_ciphertext  BYTEA,                   -- app_data entry for later handlers
        UNIQUE (delivery_id, handler)
    );
    CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
    CREATE INDEX jobs_dead ON jobs (updated_at) WHERE status = 'dead';
    CREATE TABLE attempts (
        id           BIGSERIAL PRIMARY KEY,
        job_id       BIGINT NOT NULL REFERENCES jobs (id),
        attempt      INTEGER NOT NULL,
        started_at   TIMESTAMPTZ NOT NULL,
        finished_at  TIMESTAMPTZ NOT NULL,
        result       TEXT NOT NULL,              -- ok | retryable | permanent
        http_status  INTEGER,
        latency_ms   BIGINT NOT NULL,
        destination  TEXT,
        error        TEXT,                       -- reason without payload data
        node_id      TEXT NOT NULL
    );
    CREATE INDEX attempts_job ON attempts (job_id);
    CREATE TABLE quarantine (
        id           TEXT PRIMARY KEY,
        source       TEXT NOT NULL,
        reason       TEXT NOT NULL,              -- NormalizeError text: paths only, no content
        received_at  TIMESTAMPTZ NOT NULL,
        status       TEXT NOT NULL,              -- quarantined | purged
        key_id       BIGINT REFERENCES data_keys (key_id),
        nonce        BYTEA,
        ciphertext   BYTEA,
        purged_at    TIMESTAMPTZ,
        body_index   TEXT NOT NULL               -- blind index of the body: retries dedup
    );
    CREATE INDEX quarantine_received ON quarantine (received_at);
    CREATE UNIQUE INDEX quarantine_body ON quarantine (source, body_index)
        WHERE status = 'quarantined';
    CREATE TABLE store_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO store_meta (name, value) VALUES ('key_generation', '1');
    CREATE TABLE health_probe (
        id     BIGSERIAL PRIMARY KEY,
        filler BYTEA NOT NULL
    );
    CREATE TABLE audit_log (
        node_id     TEXT NOT NULL,               -- whose chain
        seq         BIGINT NOT NULL,             -- position in that chain, 1-based, gap-free
        ts          TEXT NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        delivery_id TEXT,
        source      TEXT,
        call_ref    TEXT,
        remote_addr TEXT,
        detail      TEXT NOT NULL,
        prev_mac    TEXT NOT NULL,
        mac         TEXT NOT NULL,
        PRIMARY KEY (node_id, seq)
    );
    CREATE INDEX audit_log_ts ON audit_log (ts);
    CREATE INDEX audit_log_call_ref ON audit_log (call_ref) WHERE call_ref IS NOT NULL;
    CREATE INDEX audit_log_delivery ON audit_log (delivery_id) WHERE delivery_id IS NOT NULL;
    -- One row per node: the head of its chain, locked by each append so one node's records
    -- chain in commit order while other nodes append in parallel.
    CREATE TABLE audit_heads (
        node_id TEXT PRIMARY KEY,
        seq     BIGINT NOT NULL,
        mac     TEXT NOT NULL,
        ts      TEXT NOT NULL
    );
    -- A guard against bugs, not against the database owner (the MAC chain is for that).
    CREATE FUNCTION wardhook_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only';
    END $$;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION wardhook_audit_append_only();
    "#,
    // v2: the operator console's tokens, shared by every node (SQLite keeps them in the same
    // file, created by the console). Times are RFC 3339 text, as the console shows them.
    r#"
    CREATE TABLE admin_tokens (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL,
        hash        BYTEA NOT NULL,              -- SHA-256 of the whole token text
        created_at  TEXT NOT NULL,
        expires_at  TEXT,
        revoked_at  TEXT
    );
    CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens (name) WHERE revoked_at IS NULL;
    "#,
    // v3: "find a call" by the caller's phone: the blind index of the number the event names
    // (`Keyring::caller_ref`, never the number), cleared when the delivery is purged.
    r#"
    ALTER TABLE deliveries ADD COLUMN caller_ref TEXT;
    CREATE INDEX deliveries_caller_ref ON deliveries (caller_ref) WHERE caller_ref IS NOT NULL;
    "#,
    // v4: the DMZ relay's buffer of sealed deliveries (`store::relay_buffer`), as SQLite keeps
    // it in the relay's file, plus the size of the sealed data: one row every storing put and
    // every acknowledgement updates, so the cap holds across relay nodes and the pull cursor
    // (`seq`, drawn after that row is locked) grows in commit order.
    r#"
    CREATE TABLE relay_sealed (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,       -- relay id (UUID), the seal's associated data
        received_at  TIMESTAMPTZ NOT NULL,
        key_id       TEXT NOT NULL,              -- the inside node's public key it is sealed to
        enc          BYTEA NOT NULL,             -- HPKE encapsulated key
        ciphertext   BYTEA NOT NULL,             -- HPKE ciphertext the relay cannot open
        node_id      TEXT NOT NULL               -- the relay node that stored it
    );
    CREATE TABLE relay_dedup (
        dedup_index  TEXT PRIMARY KEY,           -- blind index under the relay's key
        id           TEXT NOT NULL,
        received_at  TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX relay_dedup_received ON relay_dedup (received_at);
    CREATE TABLE relay_size (
        id    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
        bytes BIGINT NOT NULL CHECK (bytes >= 0)
    );
    INSERT INTO relay_size (id, bytes) VALUES (TRUE, 0);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Bring the database up to [`SCHEMA_VERSION`], once across all nodes (see the module docs).
/// Refuses a database from a newer build rather than guessing at its layout.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS wardhook_schema (
             id      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
             version INTEGER NOT NULL
         );
         INSERT INTO wardhook_schema (id, version) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT version FROM wardhook_schema", &[])
        .await?
        .get(0);
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await?;
        let next = i32::try_from(version + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE wardhook_schema SET version = $1", &[&next])
            .await?;
        tracing::info!(version = version + 1, "applied postgres schema migration");
    }
    tx.commit().await?;
    Ok(())
}
