//! The blind-index levels: the dedup index of deliveries and the call-ref index of the audit
//! log, kept off the writer's commit path.
//!
//! A B-tree index on a random key (an HMAC) writes a whole page per insert once it outgrows the
//! cache: with the dedup and call-ref indexes in the database, each delivery cost two random
//! 4 KiB pages of WAL and their fsync (docs/BENCHMARKS.md §12). Here neither index is in the
//! database. The rows themselves stay the truth (`deliveries.dedup_index`,
//! `audit_log.call_ref`); a separate file, `<db>.index`, holds sorted runs of
//! `(key, row position)` in [`LEVELS`] tables per index, level `i` holding up to
//! `l0_keys × ratioⁱ` keys, filled by a background thread ([`spawn_merger`]) from rows past the
//! position it has merged up to. When level 0 overflows, it and the levels above the first one
//! with room for all of them are inserted into that level in key order and emptied: every key
//! moves down a handful of times, in sorted batches, instead of being written once at a random
//! place per commit.
//!
//! Rows past the merged position (the *tail*) are found by scanning them: the writer keeps
//! them in memory ([`super::dedup`]), readers add `seq > position` to their query
//! ([`call_ref_condition`]). The file is derived data: its position names the row it was
//! merged up to (a delivery's id, an audit record's MAC), and when that row is not there any
//! more (a restored backup, a swapped file) the file is rebuilt at open. A lost or damaged
//! file costs a rebuild, never a wrong answer: every candidate a level gives is checked
//! against the row it names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// Tables per index. Level 5 of the default shape holds a billion keys.
pub(crate) const LEVELS: usize = 6;

/// The sizes of the levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexShape {
    /// Keys level 0 holds before it is merged down.
    pub l0_keys: u64,
    /// How much bigger each level is than the one above.
    pub ratio: u64,
    /// Rows waiting past the merged position that start a merge (sooner when idle).
    pub merge_keys: i64,
}

impl IndexShape {
    /// Level 0 stays under two hundred pages, so sorted inserts into it stay in the cache; a
    /// merge takes 16 384 rows at a time, because each merge step has a fixed cost (its
    /// transaction, the index file's WAL, re-reading the rows) that smaller steps paid more
    /// often (docs/BENCHMARKS.md §19: 4 096 and 2 048 cost about 2 % more server CPU).
    pub const DEFAULT: IndexShape = IndexShape {
        l0_keys: 32_768,
        ratio: 8,
        merge_keys: 16_384,
    };

    fn capacity(&self, level: usize) -> u64 {
        let mut cap = self.l0_keys.max(1);
        for _ in 0..level {
            cap = cap.saturating_mul(self.ratio.max(2));
        }
        cap
    }
}

impl Default for IndexShape {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Most rows one merge step reads, so a step's transaction stays short.
const STEP_ROWS: i64 = 50_000;
/// A tail longer than this at open is merged before the store serves (with progress in the
/// log), so neither the writer's memory nor a reader's scan starts out long.
const OPEN_TAIL_ROWS: i64 = 65_536;
/// How often the merger looks for new rows.
const MERGE_POLL: Duration = Duration::from_millis(100);
/// Fewer than `merge_keys` waiting rows are merged after this long without a merge.
const MERGE_IDLE: Duration = Duration::from_secs(1);
/// How often a failing merge is tried again.
const MERGE_RETRY: Duration = Duration::from_secs(5);

/// The two indexes the levels hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// `deliveries.dedup_index` → the delivery's rowid.
    Dedup,
    /// `audit_log.call_ref` → the record's `seq`.
    CallRef,
}

impl Space {
    pub(crate) const ALL: [Space; 2] = [Space::Dedup, Space::CallRef];

    fn name(self) -> &'static str {
        match self {
            Space::Dedup => "dedup",
            Space::CallRef => "callref",
        }
    }

    fn table(self, level: usize) -> String {
        format!("{}_{level}", self.name())
    }

    /// Rows past a position, in order: (position, indexed value or NULL, check).
    fn rows_sql(self) -> &'static str {
        match self {
            Space::Dedup => {
                "SELECT rowid, dedup_index, id FROM deliveries WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            }
            Space::CallRef => {
                "SELECT seq, call_ref, mac FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            }
        }
    }

    /// The check of the row at a position.
    fn check_sql(self) -> &'static str {
        match self {
            Space::Dedup => "SELECT id FROM deliveries WHERE rowid = ?1",
            Space::CallRef => "SELECT mac FROM audit_log WHERE seq = ?1",
        }
    }

    fn last_sql(self) -> &'static str {
        match self {
            Space::Dedup => "SELECT coalesce(max(rowid), 0) FROM deliveries",
            Space::CallRef => "SELECT coalesce(max(seq), 0) FROM audit_log",
        }
    }
}

/// The index file of the database at `db`.
pub(crate) fn index_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".index");
    PathBuf::from(p)
}

/// The level key of a blind index: its first 64 bits (it is an HMAC, so uniform), or of a
/// SHA-256 of it if it is not hex. Collisions only add a candidate that the row check drops.
pub(crate) fn key_of(value: &str) -> i64 {
    let head = value
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok());
    let bits = head.unwrap_or_else(|| {
        let digest = Sha256::digest(value.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(b)
    });
    bits as i64
}

/// Positions merged so far, published by the merger for the writer (which then drops those
/// rows from its in-memory tail).
#[derive(Debug, Default)]
pub(crate) struct Merged {
    dedup: AtomicI64,
}

impl Merged {
    pub(crate) fn dedup(&self) -> i64 {
        self.dedup.load(Ordering::Acquire)
    }

    fn publish(&self, space: Space, position: i64) {
        if space == Space::Dedup {
            self.dedup.fetch_max(position, Ordering::AcqRel);
        }
    }
}

fn index_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Open (creating `0600` if needed) the index file of `db` and its tables.
pub(crate) fn open_index(db: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let path = index_path(db);
    crate::fsutil::ensure_private_file(&path).map_err(|e| index_error(&path, e))?;
    let conn = Connection::open(&path)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Derived data: a commit lost to a power cut only leaves the position further behind.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let mut ddl =
        String::from("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY) STRICT;");
    for space in Space::ALL {
        for level in 0..LEVELS {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k INTEGER NOT NULL, v INTEGER NOT NULL,
                 PRIMARY KEY (k, v)) WITHOUT ROWID;",
                space.table(level)
            ));
        }
    }
    conn.execute_batch(&ddl)?;
    // Its -wal and -shm take the file's 0600, as the database's do.
    Ok(conn)
}

fn meta_get(conn: &Connection, name: &str) -> rusqlite::Result<Option<rusqlite::types::Value>> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

fn meta_set(conn: &Connection, name: &str, value: impl rusqlite::ToSql) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )
    .map(drop)
}

/// The merged position of `space` and the check of the row there (`None` before the first
/// merge).
fn position(conn: &Connection, space: Space) -> rusqlite::Result<(i64, Option<String>)> {
    use rusqlite::types::Value;
    let pos = match meta_get(conn, &format!("{}_pos", space.name()))? {
        Some(Value::Integer(p)) => p,
        _ => 0,
    };
    let check = match meta_get(conn, &format!("{}_check", space.name()))? {
        Some(Value::Text(c)) => Some(c),
        _ => None,
    };
    Ok((pos, check))
}

fn counts(conn: &Connection, space: Space) -> rusqlite::Result<[u64; LEVELS]> {
    let mut out = [0u64; LEVELS];
    for (level, n) in out.iter_mut().enumerate() {
        if let Some(rusqlite::types::Value::Integer(c)) =
            meta_get(conn, &format!("{}_count_{level}", space.name()))?
        {
            *n = u64::try_from(c).unwrap_or(0);
        }
    }
    Ok(out)
}

fn set_count(conn: &Connection, space: Space, level: usize, n: u64) -> rusqlite::Result<()> {
    meta_set(
        conn,
        &format!("{}_count_{level}", space.name()),
        i64::try_from(n).unwrap_or(i64::MAX),
    )
}

/// Whether the row at the index's position is the one it was merged up to.
fn position_holds(main: &Connection, space: Space, pos: i64, check: Option<&str>) -> bool {
    if pos == 0 {
        return true;
    }
    let found: Option<String> = main
        .query_row(space.check_sql(), [pos], |r| r.get(0))
        .optional()
        .ok()
        .flatten();
    matches!((found.as_deref(), check), (Some(f), Some(c)) if f == c)
}

/// Empty every level of `space` and start again from the first row.
fn reset(conn: &Connection, space: Space) -> rusqlite::Result<()> {
    for level in 0..LEVELS {
        conn.execute(&format!("DELETE FROM {}", space.table(level)), [])?;
        set_count(conn, space, level, 0)?;
    }
    meta_set(conn, &format!("{}_pos", space.name()), 0i64)?;
    conn.execute(
        "DELETE FROM meta WHERE name = ?1",
        [format!("{}_check", space.name())],
    )?;
    Ok(())
}

/// At open, before the writer starts: check each index against the database (rebuilding one
/// whose position names another row), and merge a long tail now, logging progress. A damaged
/// index file is set aside and built again.
pub(crate) fn prepare(
    main: &Connection,
    db: &Path,
    shape: IndexShape,
    busy: Duration,
    merged: &Merged,
) -> Result<(), StoreError> {
    let path = index_path(db);
    let mut idx = match open_index(db, busy) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "index file unreadable; rebuilding it");
            remove_index(db).map_err(|e| index_error(&path, e))?;
            open_index(db, busy)?
        }
    };
    for space in Space::ALL {
        let (pos, check) = position(&idx, space)?;
        if !position_holds(main, space, pos, check.as_deref()) {
            tracing::warn!(
                index = space.name(),
                position = pos,
                "index file does not match the database (restored or replaced); rebuilding it"
            );
            let tx = idx.transaction_with_behavior(TransactionBehavior::Immediate)?;
            reset(&tx, space)?;
            tx.commit()?;
        }
        let (pos, _) = position(&idx, space)?;
        let last: i64 = main.query_row(space.last_sql(), [], |r| r.get(0))?;
        if last.saturating_sub(pos) > OPEN_TAIL_ROWS {
            let started = Instant::now();
            tracing::info!(
                index = space.name(),
                rows = last.saturating_sub(pos),
                "building the index from rows not yet in it"
            );
            let mut done = 0i64;
            loop {
                let n = merge_step(&mut idx, main, space, shape)?;
                if n == 0 {
                    break;
                }
                done += n;
                if done % (STEP_ROWS * 10) < n {
                    tracing::info!(
                        index = space.name(),
                        rows = done,
                        of = last.saturating_sub(pos),
                        "index build progress"
                    );
                }
            }
            tracing::info!(
                index = space.name(),
                rows = done,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "index built"
            );
        }
        let (pos, _) = position(&idx, space)?;
        merged.publish(space, pos);
    }
    Ok(())
}

/// Delete the index file and its WAL (it is rebuilt from the database).
pub(crate) fn remove_index(db: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = index_path(db).into_os_string();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Merge up to [`STEP_ROWS`] rows past the position into level 0, cascading a full level down.
/// Returns the rows merged (0: caught up). One transaction on the index file: the position
/// moves only with the keys it covers.
pub(crate) fn merge_step(
    idx: &mut Connection,
    main: &Connection,
    space: Space,
    shape: IndexShape,
) -> Result<i64, StoreError> {
    let tx = idx.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read again inside the write transaction: another process may have merged meanwhile.
    let (pos, _) = position(&tx, space)?;
    let mut keys: Vec<(i64, i64)> = Vec::new();
    let mut last: Option<(i64, String)> = None;
    let mut n = 0i64;
    {
        let mut stmt = main.prepare_cached(space.rows_sql())?;
        let mut rows = stmt.query(params![pos, STEP_ROWS])?;
        while let Some(row) = rows.next()? {
            let at: i64 = row.get(0)?;
            if let Some(value) = row.get::<_, Option<String>>(1)? {
                keys.push((key_of(&value), at));
            }
            last = Some((at, row.get(2)?));
            n += 1;
        }
    }
    let Some((at, check)) = last else {
        return Ok(0);
    };
    keys.sort_unstable();
    let mut level_counts = counts(&tx, space)?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO {} (k, v) VALUES (?1, ?2)",
            space.table(0)
        ))?;
        for (k, v) in &keys {
            level_counts[0] += insert.execute(params![k, v])? as u64;
        }
    }
    set_count(&tx, space, 0, level_counts[0])?;
    if level_counts[0] > shape.capacity(0) {
        cascade(&tx, space, shape, &mut level_counts)?;
    }
    meta_set(&tx, &format!("{}_pos", space.name()), at)?;
    meta_set(&tx, &format!("{}_check", space.name()), check)?;
    tx.commit()?;
    Ok(n)
}

/// Merge level 0 and the levels below it down into the first level with room for all of them
/// (or the last): their keys inserted into it in key order, then they are emptied. Sorted
/// inserts touch each page of the target once, and cost per key moved rather than per key the
/// target already holds, as a rewrite of the target would.
fn cascade(
    conn: &Connection,
    space: Space,
    shape: IndexShape,
    level_counts: &mut [u64; LEVELS],
) -> rusqlite::Result<()> {
    let mut target = LEVELS - 1;
    let mut total = 0u64;
    for (level, n) in level_counts.iter().enumerate() {
        total += n;
        if level > 0 && total <= shape.capacity(level) {
            target = level;
            break;
        }
    }
    let union = (0..target)
        .map(|l| format!("SELECT k, v FROM {}", space.table(l)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let added = conn.execute(
        &format!(
            "INSERT OR IGNORE INTO {} (k, v) SELECT k, v FROM ({union}) ORDER BY k, v",
            space.table(target)
        ),
        [],
    )? as u64;
    for (level, n) in level_counts.iter_mut().enumerate().take(target) {
        conn.execute(&format!("DELETE FROM {}", space.table(level)), [])?;
        *n = 0;
        set_count(conn, space, level, 0)?;
    }
    level_counts[target] += added;
    set_count(conn, space, target, level_counts[target])?;
    Ok(())
}

/// Rows of `space` (`deliveries`/`audit_log`) whose key is `key`, from every level: the SQL of
/// one statement, for a connection with the index file attached as `idx` (or opened as main,
/// with `schema` empty).
fn level_lookup_sql(space: Space, schema: &str, key: &str) -> String {
    (0..LEVELS)
        .map(|l| format!("SELECT v FROM {schema}{} WHERE k = {key}", space.table(l)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Reads of one index on the writer's own connection to the index file.
pub(crate) struct LevelReader {
    conn: Connection,
    lookup: String,
    keys: String,
}

impl LevelReader {
    pub(crate) fn open(db: &Path, busy: Duration, space: Space) -> Result<Self, StoreError> {
        Ok(Self {
            conn: open_index(db, busy)?,
            lookup: level_lookup_sql(space, "", "?1"),
            keys: (0..LEVELS)
                .map(|l| format!("SELECT k FROM {}", space.table(l)))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
        })
    }

    /// The merged position and every key in the levels, read in one snapshot.
    pub(crate) fn snapshot(
        &mut self,
        space: Space,
        mut key: impl FnMut(i64),
    ) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        let (pos, _) = position(&tx, space)?;
        {
            let mut stmt = tx.prepare(&self.keys)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                key(row.get(0)?);
            }
        }
        tx.commit()?;
        Ok(pos)
    }

    /// Row positions the levels hold for `key`.
    pub(crate) fn lookup(&self, key: i64, out: &mut Vec<i64>) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&self.lookup)?;
        let mut rows = stmt.query([key])?;
        while let Some(row) = rows.next()? {
            out.push(row.get(0)?);
        }
        Ok(())
    }
}

/// Attach the index file of `db` to a reading connection as `idx`, if it exists. Readers that
/// cannot attach it still answer right, by scanning ([`call_ref_condition`]).
pub(crate) fn attach(conn: &Connection, db: &Path) {
    let path = index_path(db);
    if !path.exists() {
        return;
    }
    if let Err(e) = conn.execute("ATTACH DATABASE ?1 AS idx", [path.to_string_lossy()]) {
        tracing::debug!(error = %e, "index file not attached; call searches scan");
    }
}

/// The SQL condition selecting the audit records with call ref `placeholder` (a parameter
/// holding `call_ref`): through the attached call-ref levels up to their position plus the
/// records past it, or, when no index matching this database is attached, every record.
pub(crate) fn call_ref_condition(conn: &Connection, placeholder: &str, call_ref: &str) -> String {
    let scan = format!("call_ref = {placeholder}");
    let attached: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_database_list WHERE name = 'idx'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .unwrap_or(false);
    if !attached {
        return scan;
    }
    let read = |name: &str| -> Option<rusqlite::types::Value> {
        conn.query_row("SELECT value FROM idx.meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .ok()
        .flatten()
    };
    use rusqlite::types::Value;
    let pos = match read("callref_pos") {
        Some(Value::Integer(p)) if p > 0 => p,
        _ => return scan,
    };
    let check = match read("callref_check") {
        Some(Value::Text(c)) => c,
        _ => return scan,
    };
    if !position_holds(conn, Space::CallRef, pos, Some(&check)) {
        return scan;
    }
    let levels = level_lookup_sql(Space::CallRef, "idx.", &key_of(call_ref).to_string());
    format!("({scan} AND (seq > {pos} OR seq IN ({levels})))")
}

/// Merge new rows into the levels on their own thread and connections, until the returned
/// sender is dropped.
pub(crate) fn spawn_merger(
    db: &Path,
    busy: Duration,
    shape: IndexShape,
    merged: Arc<Merged>,
    main: Connection,
) -> Option<std::sync::mpsc::Sender<()>> {
    let mut idx = match open_index(db, busy) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the index file; deliveries are not indexed until a restart");
            return None;
        }
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("wardhook-merge".into())
        .spawn(move || {
            let mut last_merge = [Instant::now(); 2];
            // A failing merge (a full disk) is logged once, retried less often, and its end
            // logged; meanwhile the writer's tail and the readers' scans cover the rows.
            let mut failing = false;
            loop {
                let wait = if failing { MERGE_RETRY } else { MERGE_POLL };
                let last = matches!(
                    stopped.recv_timeout(wait),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                );
                let mut failed = false;
                for (i, space) in Space::ALL.into_iter().enumerate() {
                    // A panicking step (a bug) must not end the merger: the step fails like
                    // an error and is tried again.
                    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        merge_if_due(&mut idx, &main, space, shape, &merged, last, &mut last_merge[i])
                    }))
                    .unwrap_or(Err(StoreError::Unavailable("index merge panicked")));
                    if let Err(e) = step {
                        failed = true;
                        if !failing {
                            tracing::warn!(index = space.name(), error = %e, "index merge failed; retrying every few seconds");
                        }
                    }
                }
                if failing && !failed {
                    tracing::info!("index merges work again");
                }
                failing = failed;
                if last {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Some(stop),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the index merger");
            None
        }
    }
}

fn merge_if_due(
    idx: &mut Connection,
    main: &Connection,
    space: Space,
    shape: IndexShape,
    merged: &Merged,
    stopping: bool,
    last_merge: &mut Instant,
) -> Result<(), StoreError> {
    let (pos, _) = position(idx, space)?;
    let newest: i64 = main.query_row(space.last_sql(), [], |r| r.get(0))?;
    let waiting = newest.saturating_sub(pos);
    let due = waiting >= shape.merge_keys
        || (waiting > 0 && (stopping || last_merge.elapsed() >= MERGE_IDLE));
    if !due {
        return Ok(());
    }
    merge_step(idx, main, space, shape)?;
    *last_merge = Instant::now();
    let (pos, _) = position(idx, space)?;
    merged.publish(space, pos);
    Ok(())
}
