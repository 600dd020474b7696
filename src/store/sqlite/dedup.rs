//! The writer's dedup check, without a dedup index in the database.
//!
//! A delivery is a duplicate if a row of `deliveries` has its source and dedup index. Rows up
//! to the merged position are found through the index levels ([`super::levels`]), asked only
//! when the Bloom filter over their keys says they may hold the key; rows past it (the tail)
//! are kept in memory, and so are the rows of the open transaction (pending). Every candidate
//! is checked against its row, so a stale or colliding entry never makes a false duplicate.
//!
//! The check runs inside the writer's `BEGIN IMMEDIATE` transaction, which holds the database's
//! write lock: no other connection can add a row between the check and the insert. Rows other
//! connections committed before it (a second server on the same file) are read into the tail at
//! the start of each batch ([`DedupIndex::begin`]).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::bloom::Bloom;
use super::levels::{key_of, LevelReader, Merged, Space};
use crate::store::StoreError;

/// See the module docs.
pub(super) struct DedupIndex {
    levels: LevelReader,
    bloom: Bloom,
    /// Key → rowids of committed rows past the merged position.
    tail: HashMap<i64, Vec<i64>>,
    /// The tail's (rowid, key) in rowid order, to drop what the merger has taken.
    order: VecDeque<(i64, i64)>,
    /// The highest rowid in the tail or the levels.
    known: i64,
    /// (key, rowid) inserted by the open transaction.
    pending: Vec<(i64, i64)>,
    merged: Arc<Merged>,
}

impl DedupIndex {
    /// Read the levels' keys into the Bloom filter and the rows past them into the tail.
    pub(super) fn load(
        main: &Connection,
        db: &Path,
        busy: Duration,
        merged: Arc<Merged>,
    ) -> Result<Self, StoreError> {
        let mut levels = LevelReader::open(db, busy, Space::Dedup)?;
        let mut bloom = Bloom::default();
        let position = levels.snapshot(Space::Dedup, |k| bloom.insert(k))?;
        let mut index = Self {
            levels,
            bloom,
            tail: HashMap::new(),
            order: VecDeque::new(),
            known: position,
            pending: Vec::new(),
            merged,
        };
        index.catch_up(main)?;
        tracing::debug!(
            merged_keys = index.bloom.keys(),
            position,
            tail = index.order.len(),
            "dedup index loaded"
        );
        Ok(index)
    }

    /// At the start of a batch, inside its write transaction: drop what the merger has taken
    /// from the tail, and add rows other connections committed since the last batch.
    pub(super) fn begin(&mut self, tx: &Connection) -> Result<(), StoreError> {
        self.pending.clear();
        let merged = self.merged.dedup();
        while let Some(&(rowid, key)) = self.order.front() {
            if rowid > merged {
                break;
            }
            self.order.pop_front();
            if let Some(rows) = self.tail.get_mut(&key) {
                rows.retain(|r| *r != rowid);
                if rows.is_empty() {
                    self.tail.remove(&key);
                }
            }
        }
        let newest: i64 = tx
            .prepare_cached("SELECT coalesce(max(rowid), 0) FROM deliveries")?
            .query_row([], |r| r.get(0))?;
        if newest > self.known {
            self.catch_up(tx)?;
        }
        Ok(())
    }

    fn catch_up(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, dedup_index FROM deliveries WHERE rowid > ?1 ORDER BY rowid",
        )?;
        let mut rows = stmt.query([self.known])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let dedup: String = row.get(1)?;
            self.add_committed(key_of(&dedup), rowid);
        }
        Ok(())
    }

    fn add_committed(&mut self, key: i64, rowid: i64) {
        self.bloom.insert(key);
        self.tail.entry(key).or_default().push(rowid);
        self.order.push_back((rowid, key));
        self.known = self.known.max(rowid);
    }

    /// The id of the first delivery from `source` with this dedup index, if any.
    pub(super) fn find(
        &self,
        tx: &Connection,
        source: &str,
        dedup: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = key_of(dedup);
        let mut candidates: Vec<i64> = self.tail.get(&key).cloned().unwrap_or_default();
        candidates.extend(
            self.pending
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, r)| *r),
        );
        if self.bloom.may_hold(key) {
            self.levels.lookup(key, &mut candidates)?;
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut check = tx.prepare_cached(
            "SELECT id FROM deliveries WHERE rowid = ?1 AND source = ?2 AND dedup_index = ?3",
        )?;
        for rowid in candidates {
            let id: Option<String> = check
                .query_row(params![rowid, source, dedup], |r| r.get(0))
                .optional()?;
            if id.is_some() {
                return Ok(id);
            }
        }
        Ok(None)
    }

    /// A row the open transaction inserted.
    pub(super) fn admit(&mut self, dedup: &str, rowid: i64) {
        self.pending.push((key_of(dedup), rowid));
    }

    /// A mark to forget back to if a savepoint rolls back.
    pub(super) fn mark(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn forget_since(&mut self, mark: usize) {
        self.pending.truncate(mark);
    }

    /// The open transaction rolled back: its rows are gone.
    pub(super) fn abandon(&mut self) {
        self.pending.clear();
    }

    /// The open transaction committed: its rows join the tail.
    pub(super) fn committed(&mut self) {
        for (key, rowid) in std::mem::take(&mut self.pending) {
            self.add_committed(key, rowid);
        }
    }
}
