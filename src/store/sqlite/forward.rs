//! [`ForwardStore`] on SQLite: the one audit chain of the file, and the forwarding cursor in a
//! table of its own (`audit_forward_cursor`, created on first use like the console's tokens, so
//! the versioned schema and files that never forward stay as they are).
//!
//! The forwarder's reads and its one-row cursor update run on a connection of their own, off
//! the writer thread: a cursor update is a single short statement and never holds the write
//! lock long enough to delay intake.

use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::audit::forward::ForwardStore;
use crate::audit::{AuditError, ChainReader, ChainRow};
use crate::store::{Store, StoreError};

/// The SQLite chain and cursor of one server.
#[derive(Debug)]
pub struct SqliteForward {
    store: Store,
    /// Opened on first use and dropped after an error, so a broken connection is replaced.
    conn: Mutex<Option<Connection>>,
}

impl SqliteForward {
    /// Over `store`'s file.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            conn: Mutex::new(None),
        }
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let conn = self
                .store
                .connection()
                .map_err(|e: StoreError| AuditError::Backend(e.to_string()))?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_ref() else {
            return Err(AuditError::Backend("no connection".into()));
        };
        let result = work(conn);
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

fn seq_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl ChainReader for SqliteForward {
    fn head(&self) -> Result<Option<(u64, String, String)>, AuditError> {
        self.with(|c| c.head())
    }

    fn rows_after(&self, after: u64, limit: usize) -> Result<Vec<ChainRow>, AuditError> {
        self.with(|c| c.rows_after(after, limit))
    }

    fn mac_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        self.with(|c| c.mac_at(seq))
    }

    fn purge_anchor_detail(&self) -> Result<Option<String>, AuditError> {
        self.with(|c| c.purge_anchor_detail())
    }
}

impl ForwardStore for SqliteForward {
    fn prepare_cursor(&self) -> Result<(), AuditError> {
        self.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS audit_forward_cursor (
                     name       TEXT PRIMARY KEY,   -- [audit_forward] name
                     seq        INTEGER NOT NULL,   -- last sequence number the collector confirmed
                     updated_at TEXT NOT NULL
                 ) STRICT;",
            )?;
            Ok(())
        })
    }

    fn cursor(&self, name: &str) -> Result<Option<u64>, AuditError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT seq FROM audit_forward_cursor WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(seq_of))
        })
    }

    fn set_cursor(&self, name: &str, seq: u64) -> Result<(), AuditError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let now = crate::audit::format_ts(chrono::Utc::now());
        self.with(|c| {
            c.execute(
                "INSERT INTO audit_forward_cursor (name, seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                params![name, seq, now],
            )?;
            Ok(())
        })
    }

    fn node(&self) -> Option<String> {
        None
    }
}
