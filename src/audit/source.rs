//! What the audit logic needs from the database that holds a chain, as traits: the audit module
//! keeps the record format, the MAC chain and verification, and the storage backends (SQLite in
//! `store/sqlite/audit_log.rs`, PostgreSQL in `store/postgres/audit_chain.rs`) implement these
//! with their SQL. So `audit/` holds no SQL, and one verifier, one mirror and one purge rule
//! serve both backends.
//!
//! A [`ChainReader`] is one chain (the SQLite log, or one PostgreSQL node's chain); a
//! [`RecordStream`] is every record an installation holds, for search and export (on
//! PostgreSQL, every node's chain, each record tagged with its node).

use super::chain::{StoredRecord, GENESIS_MAC};
use super::query::Filter;
use super::verify::VerifyReport;
use super::AuditError;

/// One row read back from a chain: a record, or a row whose columns do not have the types the
/// log writes (only tampering produces one; verification reports it as modified).
#[derive(Debug, Clone)]
pub enum ChainRow {
    /// A readable record.
    Record(Box<StoredRecord>),
    /// An unreadable row.
    Malformed,
}

/// Reads of one MAC chain.
pub trait ChainReader {
    /// The newest record's `(seq, mac, ts)`, or `None` for an empty chain.
    fn head(&self) -> Result<Option<(u64, String, String)>, AuditError>;

    /// Up to `limit` rows with `seq > after`, in sequence order.
    fn rows_after(&self, after: u64, limit: usize) -> Result<Vec<ChainRow>, AuditError>;

    /// The MAC of record `seq`, if it is present.
    fn mac_at(&self, seq: u64) -> Result<Option<String>, AuditError>;

    /// The `detail` of the newest `audit_purged` record that names a chain anchor (where an
    /// audit purge cut the chain), if any.
    fn purge_anchor_detail(&self) -> Result<Option<String>, AuditError>;

    /// The `prev_mac` the chain's first record links to.
    fn genesis(&self) -> String {
        GENESIS_MAC.to_owned()
    }

    /// How errors name this chain (`database`, `node a`).
    fn location(&self) -> String {
        "database".to_owned()
    }

    /// Run `walk` on one consistent view of the chain, so records committed (or purged) by
    /// others meanwhile cannot make a good log look broken.
    fn in_snapshot(
        &self,
        walk: &mut dyn FnMut() -> Result<VerifyReport, AuditError>,
    ) -> Result<VerifyReport, AuditError> {
        walk()
    }
}

/// Writes to one MAC chain, inside the caller's transaction.
pub trait ChainWriter: ChainReader {
    /// Store a sealed record.
    fn insert(&self, record: &StoredRecord) -> Result<(), AuditError>;

    /// The lowest and highest sequence numbers present, if any.
    fn bounds(&self) -> Result<Option<(u64, u64)>, AuditError>;

    /// The first sequence number whose time is at or after `ts` (the log's text form).
    fn first_seq_from(&self, ts: &str) -> Result<Option<u64>, AuditError>;

    /// Delete every record up to `through` (an audit purge's prefix); how many were deleted.
    fn delete_through(&self, through: u64) -> Result<u64, AuditError>;
}

/// Every audit record an installation holds, for `audit search` and `audit export`.
pub trait RecordStream {
    /// True when records belong to several chains (PostgreSQL nodes): search and export then
    /// name each record's node.
    fn has_nodes(&self) -> bool {
        false
    }

    /// How many records match `filter`.
    fn count(&self, filter: &Filter) -> Result<u64, AuditError>;

    /// Call `visit` for each matching record, in time order (sequence order within a chain),
    /// with the node whose chain holds it (`None` for the single SQLite chain). Streams:
    /// memory use does not depend on how many match. Returns how many were visited.
    fn for_each(&self, filter: &Filter, visit: &mut RecordVisitor<'_>) -> Result<u64, AuditError>;
}

/// What [`RecordStream::for_each`] calls for each record: the node whose chain holds it (`None`
/// for the single SQLite chain) and the record.
pub type RecordVisitor<'v> = dyn FnMut(Option<&str>, &StoredRecord) -> Result<(), AuditError> + 'v;

/// A [`ChainRow`] iterator over a whole chain, read page by page (constant memory).
pub(crate) struct ChainRows<'a, R: ChainReader + ?Sized> {
    reader: &'a R,
    after: u64,
    page: std::vec::IntoIter<ChainRow>,
    done: bool,
}

/// Rows fetched per page while walking a chain.
const PAGE: usize = 2048;

impl<'a, R: ChainReader + ?Sized> ChainRows<'a, R> {
    pub(crate) fn new(reader: &'a R) -> Self {
        Self {
            reader,
            after: 0,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl<R: ChainReader + ?Sized> Iterator for ChainRows<'_, R> {
    type Item = Result<ChainRow, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.page.next() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        let page = match self.reader.rows_after(self.after, PAGE) {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if page.len() < PAGE {
            self.done = true;
        }
        match page.last() {
            Some(ChainRow::Record(r)) => self.after = r.seq,
            // The walk stops at an unreadable row; nothing after it is needed.
            Some(ChainRow::Malformed) => self.done = true,
            None => return None,
        }
        self.page = page.into_iter();
        self.page.next().map(Ok)
    }
}
