//! Mapping PostgreSQL and pool failures onto [`StoreError`].
//!
//! The rule is the SQLite store's: a condition that should pass by itself (connection lost,
//! server restarting or failed over to a read-only standby, pool exhausted, disk full, a
//! serialization conflict) is [`StoreError::Unavailable`] — 503 with `Retry-After`, readiness
//! red — and everything else is a [`StoreError::Postgres`] bug report. Messages carry the
//! SQLSTATE and the server's message only: the server's `DETAIL` can quote row values.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        from_pg(&e)
    }
}

/// See the module docs.
pub(super) fn from_pg(e: &tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable("database connection lost");
    }
    let Some(db) = e.as_db_error() else {
        // No server answer at all: an I/O error, a TLS failure, a timeout while connecting.
        return StoreError::Unavailable("database unreachable");
    };
    if let Some(reason) = unavailable_reason(db.code()) {
        return StoreError::Unavailable(reason);
    }
    StoreError::Postgres(format!("{} {}", db.code().code(), db.message()))
}

/// The SQLSTATEs that mean "try again later" rather than "this is a bug".
fn unavailable_reason(code: &SqlState) -> Option<&'static str> {
    let c = code.code();
    let reason = match c {
        // Class 08: connection exception.
        _ if c.starts_with("08") => "database connection failed",
        "53100" => "database disk full",
        "53200" => "database out of memory",
        "53300" => "database has too many connections",
        _ if c.starts_with("53") => "database out of resources",
        // Admin shutdown, crash shutdown, cannot connect now (starting up, recovering).
        "57P01" | "57P02" | "57P03" => "database restarting",
        // Statement timeout, lock timeout.
        "57014" | "55P03" => "database busy",
        // A read-only transaction: the server is a standby (failover in progress).
        "25006" => "database read-only",
        // Serialization failure and deadlock: the transaction can simply be retried.
        "40001" | "40P01" => "database conflict",
        "58030" => "database I/O error",
        _ => return None,
    };
    Some(reason)
}

/// A pool failure: timeouts and a closed pool are unavailability; a failure to connect is
/// mapped like any connection error.
pub(super) fn from_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) => StoreError::Unavailable("database pool timeout"),
        PoolError::Backend(e) => from_pg(&e),
        PoolError::Closed => StoreError::Unavailable("database pool closed"),
        PoolError::NoRuntimeSpecified => StoreError::Unavailable("database pool misconfigured"),
        PoolError::PostCreateHook(_) => StoreError::Unavailable("database connection setup failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_and_connection_states_are_unavailable_and_others_are_not() {
        let table = [
            ("08006", true, "connection failure"),
            ("53100", true, "disk full"),
            ("57P01", true, "admin shutdown"),
            ("25006", true, "read-only standby after failover"),
            ("40001", true, "serialization failure"),
            ("23505", false, "unique violation is a bug, not a condition"),
            ("42P01", false, "undefined table is a schema bug"),
        ];
        for (code, unavailable, why) in table {
            let got = unavailable_reason(&SqlState::from_code(code)).is_some();
            assert_eq!(got, unavailable, "{code}: {why}");
        }
    }
}
