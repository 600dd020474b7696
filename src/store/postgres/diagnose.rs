//! `doctor`'s checks of a PostgreSQL database: reachable, over TLS when configured, at the
//! schema version this build writes, and — where the server shows it to this role — how far
//! its standbys lag. Read-only: nothing is migrated or written.

use super::{PgStore, PgTls};
use crate::store::maintenance::Check;
use crate::store::StoreError;

/// A standby further behind than this is worth a warning (a failover would lose or delay what
/// it has not replayed).
const LAG_WARN_SECS: f64 = 60.0;

/// Every finding, in order; a failed connection ends the list.
pub(super) async fn findings(store: &PgStore, tls: &PgTls) -> Vec<Check> {
    let mut out = Vec::new();
    let client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "postgres (connection)",
                format!("cannot connect as node {}: {e}", store.node_id()),
                "check [storage.postgres] url, that the server runs and accepts this host (pg_hba.conf), and the ca_file",
            ));
            return out;
        }
    };
    match client
        .query_one(
            "SELECT current_database()::text, current_setting('server_version'), pg_is_in_recovery()",
            &[],
        )
        .await
    {
        Ok(row) => {
            let (db, version, standby): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
            out.push(if standby {
                Check::fail(
                    "postgres (connection)",
                    format!("connected to {db} (PostgreSQL {version}) but it is a read-only standby"),
                    "point [storage.postgres] url at the primary (or the failover address)",
                )
            } else {
                Check::ok(
                    "postgres (connection)",
                    format!("connected to {db} (PostgreSQL {version}) as node {}", store.node_id()),
                )
            });
        }
        Err(e) => {
            out.push(Check::fail(
                "postgres (connection)",
                format!("the server does not answer queries: {}", StoreError::from(e)),
                "check the server's log",
            ));
            return out;
        }
    }
    out.push(tls_finding(&client, tls).await);
    out.push(schema_finding(&client).await);
    out.push(replication_finding(&client).await);
    out
}

async fn tls_finding(client: &deadpool_postgres::Client, tls: &PgTls) -> Check {
    const NAME: &str = "postgres (tls)";
    let row = client
        .query_opt(
            "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await;
    let (ssl, version) = match row {
        Ok(Some(r)) => (r.get::<_, bool>(0), r.get::<_, String>(1)),
        Ok(None) => (false, String::new()),
        Err(e) => {
            return Check::warn(
                NAME,
                format!("cannot read pg_stat_ssl: {}", StoreError::from(e)),
                "grant this role pg_read_all_stats, or check TLS on the server side",
            )
        }
    };
    match (tls, ssl) {
        (PgTls::Require { ca_file }, true) => Check::ok(
            NAME,
            format!(
                "{version}, server certificate verified against {}",
                ca_file.display()
            ),
        ),
        (PgTls::Require { .. }, false) => Check::fail(
            NAME,
            "TLS is required but this connection is not encrypted",
            "check the server's ssl settings",
        ),
        (PgTls::Disable, true) => {
            Check::ok(NAME, format!("{version} (not verified: tls = \"disable\")"))
        }
        (PgTls::Disable, false) => Check::ok(
            NAME,
            "plain connection (tls = \"disable\", allowed only to loopback or a Unix socket)",
        ),
    }
}

async fn schema_finding(client: &deadpool_postgres::Client) -> Check {
    const NAME: &str = "postgres (schema)";
    let found = client
        .query_opt("SELECT version FROM wardhook_schema", &[])
        .await;
    let supported = super::schema::SCHEMA_VERSION;
    match found {
        Ok(Some(row)) => {
            let version = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
            if version == supported {
                Check::ok(NAME, format!("schema version {version} (this build's)"))
            } else if version < supported {
                Check::warn(
                    NAME,
                    format!("schema version {version}; this build writes {supported}"),
                    "the first `wardhook serve` of this build migrates it (take a backup first)",
                )
            } else {
                Check::fail(
                    NAME,
                    format!(
                        "schema version {version} is newer than this build supports ({supported})"
                    ),
                    "upgrade wardhook on this node to the version the other nodes run",
                )
            }
        }
        Ok(None) | Err(_) => Check::warn(
            NAME,
            "no wardhook schema yet",
            "it is created by the first `wardhook serve`",
        ),
    }
}

async fn replication_finding(client: &deadpool_postgres::Client) -> Check {
    const NAME: &str = "postgres (replication)";
    let rows = client
        .query(
            "SELECT coalesce(application_name, ''), coalesce(state, ''),
                    coalesce(sync_state, ''), EXTRACT(EPOCH FROM replay_lag)::float8
             FROM pg_stat_replication",
            &[],
        )
        .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            return Check::ok(
                NAME,
                format!("not visible to this role ({})", StoreError::from(e)),
            )
        }
    };
    if rows.is_empty() {
        return Check::ok(
            NAME,
            "no standby streams from this server (or this role cannot see them)",
        );
    }
    let mut worst = 0.0f64;
    let mut described = Vec::new();
    for r in &rows {
        let (name, state, sync): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let lag: Option<f64> = r.get(3);
        if let Some(l) = lag {
            worst = worst.max(l);
        }
        described.push(format!(
            "{} {state}/{sync} lag {}",
            if name.is_empty() { "standby" } else { &name },
            lag.map_or_else(|| "not shown".to_owned(), |l| format!("{l:.1} s"))
        ));
    }
    let text = described.join(", ");
    if worst > LAG_WARN_SECS {
        Check::warn(
            NAME,
            text,
            "a standby this far behind loses or delays what it has not replayed on failover: check its disk, network and load",
        )
    } else {
        Check::ok(NAME, text)
    }
}
