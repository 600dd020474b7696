//! The store writer's essential work per delivery, in several storage designs, on this machine
//! (docs/BENCHMARKS.md §12 and §13).
//!
//! `today`: the SQLite layout the server writes (schema v4): a `deliveries` row with a TEXT
//! UUID key, hex blind indexes and the sealed payload inline, its unique dedup index and the
//! `received_at` and `key_id` indexes; a dedup lookup before the insert; an `audit_log` row with
//! its four indexes and hex MACs.
//!
//! `lean`: the design of docs/BENCHMARKS.md §10 ("what would reach them"): the sealed payload
//! appended to a segment file (one `write` per batch, `fdatasync` before the commit), the row
//! keeping an integer time-ordered key, binary blind indexes and the payload's offset and
//! length; the dedup lookup against an in-memory set of recent blind indexes (the unique index
//! stays in the database as the guarantee); the audit row reduced to what cannot be derived
//! from the delivery (sequence, delivery key, action, previous MAC, MAC).
//!
//! Both: the same payload bytes per delivery, the same HMAC-SHA256 chain link per record,
//! group commit of `--batch` deliveries per transaction, WAL with `synchronous=FULL` (an fsync
//! per commit), an 8 MiB page cache, `secure_delete`, a passive checkpoint every 64 batches
//! measured apart (the server runs it on its own thread). CPU is this thread's run time from
//! `/proc/thread-self/schedstat`; WAL bytes are what the thread wrote during its commits
//! (`wchar` in `/proc/thread-self/io`, less the segment file's bytes).
//!
//! Designs in between tell the parts apart: `today-upsert` (today's layout, the dedup
//! answered by the unique index during the insert, `ON CONFLICT DO NOTHING`, instead of a
//! lookup before it), `lean-inline` (the lean rows with the payload kept in the row),
//! `lean-1k` (lean with 1 KiB database pages, so a random index leaf costs a quarter of the WAL
//! bytes) and `lean-no-random-index`, a bound rather than a design: lean without the unique
//! dedup index and the call-ref index, the two B-trees whose inserts land on a random leaf.
//!
//! `lean-log*`: lean without the two random-key indexes on the commit path. The writer appends
//! each delivery's dedup and call-ref blind indexes to two time-ordered log tables (integer key:
//! one page per batch) in the same transaction, and checks a new delivery against an in-memory
//! set of the keys not yet merged (plus a bounded recent window) and then the merged index (a
//! read, no write). A merge thread with its own connections (like the checkpointer) reads the
//! logged keys, sorts them and inserts them into the merged indexes, which live in their own
//! database file (`index.db`, derivable from the log, so `synchronous=NORMAL`), and publishes
//! how far it has merged; the writer then forgets those keys beyond the window. Suffixes:
//! `-inline` keeps the payload in the row (else the segment file of `lean`); `-rows` uses the
//! `deliveries` rows themselves as the log (no log tables); `-lsm` merges into a leveled layout
//! (a small level 0 receiving each merge, levels rebuilt sequentially by `INSERT … SELECT …
//! ORDER BY` into a fresh table when they exceed `--l0-keys × --ratio^level`, lookups probing
//! each level) instead of one big sorted index (the naive merge); `-bloom` keeps a Bloom
//! filter over every key in memory (built from the merged index at start), so a key it has
//! not seen is new without a lookup in the merged index.
//!
//! `--preload N` runs every design on a database that already holds N deliveries (their blind
//! indexes, audit rows and, for `lean-log*`, their log rows and merged indexes; the preloaded
//! rows carry an empty payload, since only the index sizes change the per-delivery cost). The
//! preloaded files are built once per schema and copied per round.
//!
//! ```text
//! cargo bench --bench writer_design -- [--design NAME[,NAME…]|all] [--deliveries N]
//!     [--batch N] [--payload-bytes N] [--rounds N] [--dir DIR] [--preload N]
//!     [--merge-keys N] [--window N] [--l0-keys N] [--ratio N] [--recovery N[,N…]]
//! ```

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use hmac::{Hmac, Mac};
use rand::RngCore;
use rusqlite::{params, Connection, TransactionBehavior};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TODAY_SCHEMA: &str = "
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY, source TEXT NOT NULL, event_type TEXT NOT NULL,
        dedup_kind TEXT NOT NULL, dedup_index TEXT NOT NULL, call_ref TEXT,
        received_at TEXT NOT NULL, status TEXT NOT NULL, key_id INTEGER,
        nonce BLOB, ciphertext BLOB, purged_at TEXT, UNIQUE (source, dedup_index));
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE INDEX deliveries_key ON deliveries (key_id);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        outcome TEXT NOT NULL, delivery_id TEXT, source TEXT, call_ref TEXT, remote_addr TEXT,
        detail TEXT NOT NULL, prev_mac TEXT NOT NULL, mac TEXT NOT NULL) STRICT;
    CREATE INDEX audit_log_ts ON audit_log(ts);
    CREATE INDEX audit_log_call_ref ON audit_log(call_ref) WHERE call_ref IS NOT NULL;
    CREATE INDEX audit_log_delivery ON audit_log(delivery_id) WHERE delivery_id IS NOT NULL;
    CREATE INDEX audit_log_action ON audit_log(action, seq);";

const LEAN_SCHEMA: &str = "
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY, source INTEGER NOT NULL, event_type TEXT NOT NULL,
        dedup BLOB NOT NULL, call_ref BLOB, status INTEGER NOT NULL, key_id INTEGER,
        nonce BLOB, segment INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
        ciphertext BLOB, UNIQUE (source, dedup));
    CREATE INDEX deliveries_call_ref ON deliveries (call_ref) WHERE call_ref IS NOT NULL;
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY, delivery INTEGER, action INTEGER NOT NULL,
        prev_mac BLOB NOT NULL, mac BLOB NOT NULL) STRICT;";

/// A bound, not a design: `lean` without its two random-key indexes (the unique dedup index
/// and the call-ref index), which no real design may drop: what the rest costs.
const LEAN_SCHEMA_NO_RANDOM_INDEX: &str = "
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY, source INTEGER NOT NULL, event_type TEXT NOT NULL,
        dedup BLOB NOT NULL, call_ref BLOB, status INTEGER NOT NULL, key_id INTEGER,
        nonce BLOB, segment INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
        ciphertext BLOB);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY, delivery INTEGER, action INTEGER NOT NULL,
        prev_mac BLOB NOT NULL, mac BLOB NOT NULL) STRICT;";

/// `lean-log`: the two blind-index logs, keyed by the delivery's time-ordered integer key, so
/// a batch appends to the last page of each (added to the schema without random indexes).
const LOG_TABLES: &str = "
    CREATE TABLE dedup_log (pos INTEGER PRIMARY KEY, k BLOB NOT NULL) STRICT;
    CREATE TABLE call_ref_log (pos INTEGER PRIMARY KEY, k BLOB NOT NULL) STRICT;";

/// The merged indexes, in `index.db`: `dedup` keys are `source || blind index` (33 bytes,
/// unique per source), `call_ref` keys `call ref || delivery key` (40 bytes). Each level is a
/// table `<index>_l<level>`; the naive merge has one level.
const INDEXES: [&str; 2] = ["dedup", "call_ref"];

/// The first delivery key of a run; preloaded deliveries come before it.
const START: i64 = 1_796_000_000_000;

/// What the request path hands the writer for one delivery (computed before the timing).
struct Delivery {
    uuid: String,
    time_id: i64,
    dedup: [u8; 32],
    call_ref: [u8; 32],
    nonce: [u8; 12],
    ciphertext: Vec<u8>,
    received_at: String,
    detail: String,
}

struct Options {
    designs: Vec<String>,
    deliveries: usize,
    batch: usize,
    payload: usize,
    rounds: usize,
    dir: PathBuf,
    preload: usize,
    merge_keys: usize,
    window: usize,
    l0_keys: usize,
    ratio: usize,
    levels: usize,
    recovery: Vec<usize>,
}

fn options() -> Options {
    let all = [
        "today",
        "today-upsert",
        "lean-inline",
        "lean",
        "lean-1k",
        "lean-no-random-index",
        "lean-log",
        "lean-log-inline",
        "lean-log-rows",
        "lean-log-lsm",
        "lean-log-rows-bloom",
        "lean-log-rows-lsm-bloom",
        "lean-log-rows-inline-lsm-bloom",
    ]
    .map(String::from)
    .to_vec();
    let mut o = Options {
        designs: all.clone(),
        deliveries: 60_000,
        batch: 32,
        payload: 2048,
        rounds: 3,
        dir: std::env::temp_dir(),
        preload: 0,
        merge_keys: 2048,
        window: 4096,
        l0_keys: 4096,
        ratio: 8,
        levels: 4,
        recovery: vec![60_000, 1_000_000],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let number = |v: &str| v.parse::<usize>().unwrap_or(0).clamp(1, 100_000_000);
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--design" if value == "all" => o.designs = all.clone(),
            "--design" => o.designs = value.split(',').map(String::from).collect(),
            "--deliveries" => o.deliveries = number(&value),
            "--batch" => o.batch = number(&value),
            "--payload-bytes" => o.payload = number(&value),
            "--rounds" => o.rounds = number(&value),
            "--dir" => o.dir = PathBuf::from(value),
            "--preload" => o.preload = value.parse().unwrap_or(0).min(100_000_000),
            "--merge-keys" => o.merge_keys = number(&value),
            "--window" => o.window = value.parse().unwrap_or(0).min(100_000_000),
            "--l0-keys" => o.l0_keys = number(&value),
            "--ratio" => o.ratio = number(&value).max(2),
            "--levels" => o.levels = number(&value).clamp(2, 8),
            "--recovery" => o.recovery = value.split(',').map(number).collect(),
            // `cargo bench` passes `--bench` (and no value that matters).
            _ => {}
        }
    }
    o
}

/// What one design name means.
#[derive(Clone, Copy)]
struct Design<'a> {
    name: &'a str,
    lean: bool,
    log: bool,
    inline: bool,
    rows: bool,
    lsm: bool,
    bloom: bool,
    page_size: i64,
}

impl<'a> Design<'a> {
    fn parse(name: &'a str) -> Self {
        let log = name.starts_with("lean-log");
        Design {
            name,
            lean: name.starts_with("lean"),
            log,
            inline: name == "lean-inline" || (log && name.contains("-inline")),
            rows: log && name.contains("-rows"),
            lsm: log && name.contains("-lsm"),
            bloom: log && name.contains("-bloom"),
            page_size: if name == "lean-1k" { 1024 } else { 4096 },
        }
    }

    /// The schema's name (preloads are shared by the designs of one schema) and its text.
    fn schema(&self) -> (&'static str, String) {
        match self.name {
            _ if self.log => ("log", format!("{LEAN_SCHEMA_NO_RANDOM_INDEX}{LOG_TABLES}")),
            "lean-no-random-index" => ("lean-no-random-index", LEAN_SCHEMA_NO_RANDOM_INDEX.into()),
            "lean-1k" => ("lean-1k", LEAN_SCHEMA.into()),
            _ if self.lean => ("lean", LEAN_SCHEMA.into()),
            _ => ("today", TODAY_SCHEMA.into()),
        }
    }

    /// Levels of the merged indexes: one for the naive merge.
    fn levels(&self, o: &Options) -> usize {
        if self.lsm {
            o.levels
        } else {
            1
        }
    }
}

/// This thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Bytes this thread has passed to `write`/`pwrite` so far (`wchar`): the WAL frames a
/// commit writes, whichever connection's WAL it is and whether or not the WAL restarted.
fn thread_written() -> u64 {
    std::fs::read_to_string("/proc/thread-self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The delivery with key `START + i`; preloaded ones (`i < 0`) carry no payload.
fn delivery(rng: &mut impl RngCore, i: i64, payload: usize) -> Delivery {
    let received_at = if i < 0 {
        format!("2026-11-01T00:00:00.{:09}Z", i + 100_000_000)
    } else {
        format!(
            "2026-12-03T15:{:02}:{:02}.{:06}Z",
            i / 60_000 % 60,
            i / 1000 % 60,
            i
        )
    };
    let mut d = Delivery {
        uuid: uuid::Uuid::now_v7().to_string(),
        time_id: (START + i) << 16,
        dedup: [0; 32],
        call_ref: [0; 32],
        nonce: [0; 12],
        ciphertext: vec![0; payload],
        received_at,
        detail: r#"{"event_type":"call.ended","jobs":0,"key_id":1}"#.into(),
    };
    rng.fill_bytes(&mut d.dedup);
    rng.fill_bytes(&mut d.call_ref);
    rng.fill_bytes(&mut d.nonce);
    rng.fill_bytes(&mut d.ciphertext);
    d
}

fn deliveries(o: &Options) -> Vec<Delivery> {
    let mut rng = rand::thread_rng();
    (0..o.deliveries as i64)
        .map(|i| delivery(&mut rng, i, o.payload))
        .collect()
}

/// The log position (delivery key) of the last preloaded delivery: what the preloaded
/// merged indexes hold.
fn preloaded_position(n: usize) -> i64 {
    if n == 0 {
        0
    } else {
        (START - 1) << 16
    }
}

fn dedup_key(dedup: &[u8; 32]) -> [u8; 33] {
    let mut k = [1u8; 33];
    k[1..].copy_from_slice(dedup);
    k
}

fn call_ref_key(call_ref: &[u8], id: i64) -> Vec<u8> {
    let mut k = call_ref.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn open(path: &Path, schema: &str, page_size: i64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Before the first table: the page size of a WAL database is fixed once it has one.
    conn.pragma_update(None, "page_size", page_size)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -8192)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// The merged indexes' database: derived from the log (a lost commit is merged again from
/// the last merged position it records), so `synchronous=NORMAL`: no fsync per merge.
fn open_index(path: &Path, levels: Option<usize>) -> rusqlite::Result<Connection> {
    let mut schema = String::new();
    if let Some(levels) = levels {
        for ix in INDEXES {
            for l in 0..levels {
                schema += &format!("CREATE TABLE {ix}_l{l} (k BLOB PRIMARY KEY) WITHOUT ROWID;");
            }
        }
        schema +=
            "CREATE TABLE merged (one INTEGER PRIMARY KEY CHECK (one = 1), pos INTEGER NOT NULL);
                   INSERT INTO merged VALUES (1, 0);";
    }
    let conn = open(path, &schema, 4096)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// The chain link: HMAC over the record's content and its predecessor's MAC.
fn link(key: &[u8], prev: &[u8; 32], content: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
    mac.update(prev);
    for part in content {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The audit chain's state: its key, the last MAC, the last sequence number.
struct Chain {
    key: [u8; 32],
    prev: [u8; 32],
    seq: i64,
}

fn today_batch(
    conn: &mut Connection,
    upsert: bool,
    chain: &mut Chain,
    batch: &[Delivery],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for d in batch {
        let dedup = hex::encode(d.dedup);
        let call_ref = hex::encode(d.call_ref);
        if !upsert {
            let first: Option<String> = tx
                .prepare_cached("SELECT id FROM deliveries WHERE source = ?1 AND dedup_index = ?2")?
                .query_row(params!["demo", dedup], |r| r.get(0))
                .ok();
            assert!(first.is_none(), "unique bodies");
        }
        // `today-upsert`: the unique index answers the dedup question during the insert.
        let inserted = tx
            .prepare_cached(
                "INSERT INTO deliveries (id, source, event_type, dedup_kind, dedup_index, call_ref,
                                         received_at, status, key_id, nonce, ciphertext)
                 VALUES (?1, 'demo', 'call.ended', 'call_id', ?2, ?3, ?4, 'accepted', 1, ?5, ?6)
                 ON CONFLICT (source, dedup_index) DO NOTHING",
            )?
            .execute(params![
                d.uuid,
                dedup,
                call_ref,
                d.received_at,
                &d.nonce[..],
                d.ciphertext
            ])?;
        assert_eq!(inserted, 1, "unique bodies");
        chain.seq += 1;
        let mac = link(
            &chain.key,
            &chain.prev,
            &[
                d.uuid.as_bytes(),
                call_ref.as_bytes(),
                d.detail.as_bytes(),
                d.received_at.as_bytes(),
            ],
        );
        tx.prepare_cached(
            "INSERT INTO audit_log (seq, ts, actor, action, outcome, delivery_id, source, call_ref,
                                    remote_addr, detail, prev_mac, mac)
             VALUES (?1, ?2, 'source:demo', 'delivery_accepted', 'ok', ?3, 'demo', ?4,
                     '127.0.0.1', ?5, ?6, ?7)",
        )?
        .execute(params![
            chain.seq,
            d.received_at,
            d.uuid,
            call_ref,
            d.detail,
            hex::encode(chain.prev),
            hex::encode(mac)
        ])?;
        chain.prev = mac;
    }
    tx.commit()
}

struct Segment {
    file: File,
    len: u64,
    buf: Vec<u8>,
}

/// How a lean writer answers "seen before?" for a new delivery.
enum Check {
    /// `lean`: an in-memory set of recent keys; the unique index is the guarantee.
    Recent(HashSet<[u8; 32]>),
    /// `lean-log`: the in-memory set of the keys not yet merged, then the merged index.
    Log(Box<LogCheck>),
}

/// The writer's side of `lean-log`: the keys it admitted that the merge has not published
/// yet (plus the last `window` of them), and a read connection on the merged indexes.
struct LogCheck {
    probe: Connection,
    /// One lookup per level of the merged dedup index, the newest level first.
    lookups: Vec<String>,
    set: HashSet<[u8; 32]>,
    order: VecDeque<(i64, [u8; 32])>,
    window: usize,
    /// How far the merge has published: every key at or before it is in the merged index.
    merged: Arc<AtomicI64>,
    /// `-bloom`: a filter over every key admitted (and preloaded); a key it has not seen is
    /// new without a lookup in the merged index.
    bloom: Option<Bloom>,
    /// Lookups made in the merged index.
    probes: u64,
}

/// A Bloom filter over blind indexes (HMAC outputs, uniform: their bytes are the hashes),
/// 10 bits per key, 7 probes: about 1 % false positives at capacity.
struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    fn new(capacity: usize) -> Self {
        Bloom {
            bits: vec![0; (capacity * 10).div_ceil(64).max(1)],
        }
    }

    fn positions(&self, key: &[u8; 32]) -> impl Iterator<Item = usize> {
        let h1 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let h2 = u64::from_le_bytes(key[8..16].try_into().expect("8 bytes")) | 1;
        let m = self.bits.len() as u64 * 64;
        (0..7u64).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    fn insert(&mut self, key: &[u8; 32]) {
        for p in self.positions(key).collect::<Vec<_>>() {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    fn may_contain(&self, key: &[u8; 32]) -> bool {
        self.positions(key)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The filter a start builds from the merged dedup index (every level): keys, ms wall.
fn bloom_from_index(
    index: &Path,
    levels: usize,
    capacity: usize,
) -> rusqlite::Result<(Bloom, usize, f64)> {
    let t0 = Instant::now();
    let conn = Connection::open(index)?;
    let mut bloom = Bloom::new(capacity);
    let mut n = 0;
    for l in 0..levels {
        let mut st = conn.prepare(&format!("SELECT k FROM dedup_l{l}"))?;
        let mut r = st.query([])?;
        while let Some(row) = r.next()? {
            let k = row.get_ref(0)?.as_blob()?;
            bloom.insert(&k[1..].try_into().expect("33-byte key"));
            n += 1;
        }
    }
    Ok((bloom, n, t0.elapsed().as_secs_f64() * 1e3))
}

impl LogCheck {
    fn admit(&mut self, batch: &[Delivery]) -> rusqlite::Result<()> {
        let merged = self.merged.load(Ordering::Acquire);
        while self.order.len() > self.window {
            match self.order.front() {
                Some(&(pos, k)) if pos <= merged => {
                    self.order.pop_front();
                    self.set.remove(&k);
                }
                _ => break,
            }
        }
        // One read snapshot per batch, taken after `merged` was read: it holds that merge.
        let tx = self.probe.transaction()?;
        for d in batch {
            assert!(!self.set.contains(&d.dedup), "unique bodies");
            let k = dedup_key(&d.dedup);
            if self.bloom.as_ref().is_none_or(|b| b.may_contain(&d.dedup)) {
                self.probes += 1;
                for sql in &self.lookups {
                    assert!(!tx.prepare_cached(sql)?.exists([&k[..]])?, "unique bodies");
                }
            }
            if let Some(b) = &mut self.bloom {
                b.insert(&d.dedup);
            }
            self.set.insert(d.dedup);
            self.order.push_back((d.time_id, d.dedup));
        }
        tx.commit()
    }
}

impl Check {
    fn admit(&mut self, batch: &[Delivery]) -> rusqlite::Result<()> {
        match self {
            Check::Recent(set) => {
                for d in batch {
                    assert!(set.insert(d.dedup), "unique bodies");
                }
                Ok(())
            }
            Check::Log(check) => check.admit(batch),
        }
    }
}

/// A lean batch; `logs`: append the blind indexes to the log tables (`lean-log`).
fn lean_batch(
    conn: &mut Connection,
    segment: Option<&mut Segment>,
    check: &mut Check,
    logs: bool,
    chain: &mut Chain,
    batch: &[Delivery],
) -> rusqlite::Result<()> {
    let mut rows = Vec::with_capacity(batch.len());
    check.admit(batch)?;
    let inline = segment.is_none();
    if let Some(segment) = segment {
        segment.buf.clear();
        for d in batch {
            rows.push(segment.len + segment.buf.len() as u64);
            segment.buf.extend_from_slice(&d.ciphertext);
        }
        // The payloads are durable before the rows that point at them commit.
        segment.file.write_all(&segment.buf).expect("segment write");
        segment.file.sync_data().expect("segment fdatasync");
        segment.len += segment.buf.len() as u64;
    } else {
        rows.resize(batch.len(), 0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (d, offset) in batch.iter().zip(rows) {
        // `lean-inline`: the payload stays in the row (segment 0), to tell its share apart.
        let payload: Option<&[u8]> = inline.then_some(&d.ciphertext[..]);
        tx.prepare_cached(
            "INSERT INTO deliveries (id, source, event_type, dedup, call_ref, status, key_id, nonce,
                                     segment, offset, length, ciphertext)
             VALUES (?1, 1, 'call.ended', ?2, ?3, 0, 1, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            d.time_id,
            &d.dedup[..],
            &d.call_ref[..],
            &d.nonce[..],
            i64::from(!inline),
            offset as i64,
            d.ciphertext.len() as i64,
            payload
        ])?;
        if logs {
            tx.prepare_cached("INSERT INTO dedup_log (pos, k) VALUES (?1, ?2)")?
                .execute(params![d.time_id, &dedup_key(&d.dedup)[..]])?;
            tx.prepare_cached("INSERT INTO call_ref_log (pos, k) VALUES (?1, ?2)")?
                .execute(params![d.time_id, call_ref_key(&d.call_ref, d.time_id)])?;
        }
        chain.seq += 1;
        let id = d.time_id.to_be_bytes();
        let mac = link(
            &chain.key,
            &chain.prev,
            &[
                &id,
                &d.call_ref,
                d.detail.as_bytes(),
                d.received_at.as_bytes(),
            ],
        );
        tx.prepare_cached(
            "INSERT INTO audit_log (seq, delivery, action, prev_mac, mac) VALUES (?1, ?2, 1, ?3, ?4)",
        )?
        .execute(params![chain.seq, d.time_id, &chain.prev[..], &mac[..]])?;
        chain.prev = mac;
    }
    tx.commit()
}

/// The logged keys after `from` up to `to`, each index's sorted: from the log tables, or
/// (`-rows`) from the delivery rows themselves.
fn read_log(
    log: &Connection,
    rows: bool,
    from: i64,
    to: i64,
) -> rusqlite::Result<[Vec<Vec<u8>>; 2]> {
    let mut keys: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    if rows {
        let mut st = log.prepare_cached(
            "SELECT id, dedup, call_ref FROM deliveries WHERE id > ?1 AND id <= ?2",
        )?;
        let mut r = st.query([from, to])?;
        while let Some(row) = r.next()? {
            let id: i64 = row.get(0)?;
            let dedup: Vec<u8> = row.get(1)?;
            let mut k = vec![1u8];
            k.extend_from_slice(&dedup);
            keys[0].push(k);
            keys[1].push(call_ref_key(&row.get::<_, Vec<u8>>(2)?, id));
        }
    } else {
        for (ix, name) in INDEXES.iter().enumerate() {
            let mut st = log.prepare_cached(&format!(
                "SELECT k FROM {name}_log WHERE pos > ?1 AND pos <= ?2"
            ))?;
            keys[ix] = st
                .query_map([from, to], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
        }
    }
    keys[0].sort_unstable();
    keys[1].sort_unstable();
    Ok(keys)
}

/// One level rebuild: `rows` rows written into a fresh table. Its CPU is inside the merge
/// thread's; timed here by the clock, since the scheduler's run time of a thread that does
/// not sleep is only brought up to date at each tick.
struct Rebuild {
    index: &'static str,
    into: usize,
    rows: i64,
    wall_ms: f64,
    cpu_ms: f64,
    written: u64,
}

#[derive(Default)]
struct MergeStats {
    cpu_ns: u64,
    /// WAL bytes of the merges and rebuilds (their checkpoints' writes not counted).
    written: u64,
    merges: u64,
    rebuilds: Vec<Rebuild>,
    /// After the run, timed apart: the rebuild of the last level.
    forced: Vec<Rebuild>,
    /// Wall time from the writer's last batch to the last merge published.
    lag_ms: f64,
}

struct Merger {
    log: Connection,
    index: Connection,
    rows: bool,
    /// Rows per level and index.
    counts: Vec<[i64; 2]>,
    l0_keys: i64,
    ratio: i64,
}

impl Merger {
    /// Level `level`'s cap (the last level has none).
    fn cap(&self, level: usize) -> i64 {
        if level + 1 == self.counts.len() {
            i64::MAX
        } else {
            self.l0_keys * self.ratio.pow(level as u32)
        }
    }

    /// Level `level` merged with the next into a fresh table, written in key order.
    fn rebuild(&mut self, ix: usize, level: usize) -> rusqlite::Result<Rebuild> {
        let (name, next) = (INDEXES[ix], level + 1);
        let (t0, c0, w0) = (Instant::now(), thread_cpu_ns(), thread_written());
        let tx = self
            .index
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(&format!(
            "CREATE TABLE {name}_next (k BLOB PRIMARY KEY) WITHOUT ROWID;
             INSERT INTO {name}_next
                 SELECT k FROM (SELECT k FROM {name}_l{level} UNION ALL SELECT k FROM {name}_l{next})
                 ORDER BY k;
             DROP TABLE {name}_l{next};
             ALTER TABLE {name}_next RENAME TO {name}_l{next};
             DELETE FROM {name}_l{level};"
        ))?;
        tx.commit()?;
        let rows = self.counts[level][ix] + self.counts[next][ix];
        self.counts[next][ix] = rows;
        self.counts[level][ix] = 0;
        Ok(Rebuild {
            index: name,
            into: next,
            rows,
            wall_ms: t0.elapsed().as_secs_f64() * 1e3,
            cpu_ms: (thread_cpu_ns() - c0) as f64 / 1e6,
            written: thread_written() - w0,
        })
    }

    /// The keys logged after `from` up to `to` into level 0, the merged position with them
    /// in one transaction; then every level over its cap rebuilt into the next.
    fn merge(&mut self, from: i64, to: i64, stats: &mut MergeStats) -> rusqlite::Result<()> {
        let keys = read_log(&self.log, self.rows, from, to)?;
        let w0 = thread_written();
        let tx = self
            .index
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (ix, ks) in keys.iter().enumerate() {
            let mut st =
                tx.prepare_cached(&format!("INSERT INTO {}_l0 (k) VALUES (?1)", INDEXES[ix]))?;
            for k in ks {
                st.execute([k])?;
            }
            self.counts[0][ix] += ks.len() as i64;
        }
        tx.execute("UPDATE merged SET pos = ?1", [to])?;
        tx.commit()?;
        stats.written += thread_written() - w0;
        for level in 0..self.counts.len() - 1 {
            for ix in 0..INDEXES.len() {
                if self.counts[level][ix] > self.cap(level) {
                    let r = self.rebuild(ix, level)?;
                    stats.written += r.written;
                    stats.rebuilds.push(r);
                }
            }
        }
        self.index
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        stats.merges += 1;
        Ok(())
    }
}

/// The merge thread: after every `merge_keys` committed deliveries (told by the writer, one
/// message per commit; `None` ends it), merge what was logged since the last merge and
/// publish the new merged position.
fn merge_thread(
    mut m: Merger,
    rx: mpsc::Receiver<Option<(i64, usize)>>,
    merged: Arc<AtomicI64>,
    merge_keys: usize,
) -> rusqlite::Result<MergeStats> {
    let mut stats = MergeStats::default();
    let (mut from, mut to, mut pending) = (merged.load(Ordering::Acquire), 0i64, 0usize);
    let c0 = thread_cpu_ns();
    let mut ended = None;
    loop {
        let msg = rx.recv().ok().flatten();
        if let Some((pos, n)) = msg {
            to = pos;
            pending += n;
            if pending < merge_keys {
                continue;
            }
        } else {
            ended = Some(Instant::now());
        }
        if to > from {
            m.merge(from, to, &mut stats)?;
            merged.store(to, Ordering::Release);
            (from, pending) = (to, 0);
        }
        if msg.is_none() {
            break;
        }
    }
    stats.cpu_ns = thread_cpu_ns() - c0;
    stats.lag_ms = ended.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
    if m.counts.len() > 1 {
        for ix in 0..INDEXES.len() {
            let r = m.rebuild(ix, m.counts.len() - 2)?;
            stats.forced.push(r);
        }
    }
    // The lookups measured next read a checkpointed file, as after any merge in the run.
    m.index
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(stats)
}

/// Rows per level of each merged index.
fn level_rows(index: &Path, levels: usize) -> rusqlite::Result<Vec<[i64; 2]>> {
    let conn = Connection::open(index)?;
    let count = |ix: &str, l: usize| {
        conn.query_row(&format!("SELECT count(*) FROM {ix}_l{l}"), [], |r| r.get(0))
    };
    (0..levels)
        .map(|l| Ok([count(INDEXES[0], l)?, count(INDEXES[1], l)?]))
        .collect()
}

/// µs per lookup of an absent key in each level of the merged dedup index (a fresh read
/// connection with the 8 MiB cache, 20 000 random keys per level), with the level's rows.
/// Timed by the clock (the bench's only busy thread then; the scheduler's run time of a
/// thread that does not sleep is only brought up to date at each tick).
fn lookup_costs(index: &Path, levels: usize) -> rusqlite::Result<Vec<(i64, f64)>> {
    let conn = open_index(index, None)?;
    let mut rng = rand::thread_rng();
    let mut out = Vec::new();
    for l in 0..levels {
        let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM dedup_l{l}"), [], |r| {
            r.get(0)
        })?;
        let keys: Vec<[u8; 33]> = (0..20_000)
            .map(|_| {
                let mut k = [0u8; 32];
                rng.fill_bytes(&mut k);
                dedup_key(&k)
            })
            .collect();
        conn.execute_batch("BEGIN")?;
        let mut st = conn.prepare_cached(&format!("SELECT 1 FROM dedup_l{l} WHERE k = ?1"))?;
        let t0 = Instant::now();
        for k in &keys {
            assert!(!st.exists([&k[..]])?, "random keys are new");
        }
        let ns = t0.elapsed().as_nanos() as f64;
        drop(st);
        conn.execute_batch("COMMIT")?;
        out.push((rows, ns / 1000.0 / keys.len() as f64));
    }
    Ok(out)
}

/// What a restart does before it accepts a delivery: the in-memory set rebuilt from the
/// log after the merged position. Returns the keys loaded, wall ms and CPU ms.
fn recover(log: &Path, rows: bool, after: i64) -> rusqlite::Result<(usize, f64, f64)> {
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let conn = Connection::open(log)?;
    let sql = if rows {
        "SELECT id, dedup FROM deliveries WHERE id > ?1 ORDER BY id"
    } else {
        "SELECT pos, k FROM dedup_log WHERE pos > ?1 ORDER BY pos"
    };
    let mut set = HashSet::new();
    let mut order = VecDeque::new();
    let mut st = conn.prepare(sql)?;
    let mut r = st.query([after])?;
    while let Some(row) = r.next()? {
        let pos: i64 = row.get(0)?;
        let k = row.get_ref(1)?.as_blob()?;
        let key: [u8; 32] = k[k.len() - 32..].try_into().expect("32-byte blind index");
        set.insert(key);
        order.push_back((pos, key));
    }
    Ok((
        set.len(),
        t0.elapsed().as_secs_f64() * 1e3,
        (thread_cpu_ns() - c0) as f64 / 1e6,
    ))
}

/// The preloaded files of `design`'s schema (built on first use): `bench.db` holding
/// `o.preload` deliveries and, for `lean-log*`, `index-1.db` (naive) and `index-<levels>.db`
/// (leveled) holding their keys merged.
fn preload(o: &Options, design: &Design) -> PathBuf {
    let (schema_name, schema) = design.schema();
    let levels = if design.log { o.levels } else { 0 };
    let dir = o.dir.join(format!(
        "writer-design-preload-{schema_name}-{}-{levels}-{}",
        o.preload, design.page_size
    ));
    if dir.join("done").exists() {
        return dir;
    }
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("preload directory");
    let mut conn =
        open(&dir.join("bench.db"), &schema, design.page_size).expect("preload database");
    // Built fast (no fsync, a large cache); the B-trees are the same as built one batch at a time.
    conn.pragma_update(None, "synchronous", "OFF")
        .expect("pragma");
    conn.pragma_update(None, "cache_size", -262_144)
        .expect("pragma");
    let mut rng = rand::thread_rng();
    let mut chain = Chain {
        key: [7; 32],
        prev: [0; 32],
        seq: 0,
    };
    let n = o.preload as i64;
    let mut first = -n;
    while first < 0 {
        let last = (first + 10_000).min(0);
        let batch: Vec<Delivery> = (first..last).map(|i| delivery(&mut rng, i, 0)).collect();
        if design.lean {
            let mut check = Check::Recent(HashSet::new());
            lean_batch(&mut conn, None, &mut check, design.log, &mut chain, &batch)
        } else {
            today_batch(&mut conn, true, &mut chain, &batch)
        }
        .expect("preload batch");
        first = last;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    if design.log {
        // The naive merge's index as merges build it (keys arriving in random order); the
        // leveled one with every preloaded key in its last level, as a rebuild writes it.
        for levels in [1, o.levels] {
            let mut index = open_index(&dir.join(format!("index-{levels}.db")), Some(levels))
                .expect("preload index");
            index
                .pragma_update(None, "synchronous", "OFF")
                .expect("pragma");
            index
                .pragma_update(None, "cache_size", -262_144)
                .expect("pragma");
            let keys = read_log(&conn, false, i64::MIN, i64::MAX).expect("preloaded log");
            let tx = index.transaction().expect("preload index");
            for (ix, mut ks) in keys.into_iter().enumerate() {
                if levels == 1 {
                    // `read_log` sorts; the naive index receives random keys in no order.
                    ks.sort_unstable_by_key(|k| k[k.len() - 8..].to_vec());
                }
                let mut st = tx
                    .prepare(&format!(
                        "INSERT INTO {}_l{} (k) VALUES (?1)",
                        INDEXES[ix],
                        levels - 1
                    ))
                    .expect("prepare");
                for k in ks {
                    st.execute([k]).expect("preload key");
                }
            }
            tx.execute(
                "UPDATE merged SET pos = ?1",
                [preloaded_position(o.preload)],
            )
            .expect("merged position");
            tx.commit().expect("preload index");
            index
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
        }
    }
    drop(conn);
    File::create(dir.join("done")).expect("preload marker");
    println!(
        "# preload {schema_name}: {} deliveries built in {:.1} s",
        o.preload,
        started.elapsed().as_secs_f64()
    );
    dir
}

/// Per delivery: writer, checkpoint and merge CPU µs, wall µs, WAL bytes of the writer and
/// of the merge.
#[derive(Clone, Copy, Default)]
struct Figures {
    writer: f64,
    checkpoint: f64,
    merge: f64,
    wall: f64,
    wal: f64,
    merge_wal: f64,
}

impl Figures {
    fn total(&self) -> f64 {
        self.writer + self.checkpoint + self.merge
    }
}

/// One run of one design.
fn run(name: &str, o: &Options, round: usize) -> Figures {
    let design = Design::parse(name);
    let dir = o.dir.join(format!(
        "writer-design-{}-{name}-{round}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let (db, index) = (dir.join("bench.db"), dir.join("index.db"));
    let levels = design.levels(o);
    let schema = if o.preload > 0 {
        let src = preload(o, &design);
        std::fs::copy(src.join("bench.db"), &db).expect("copy preloaded database");
        if design.log {
            std::fs::copy(src.join(format!("index-{levels}.db")), &index).expect("copy index");
        }
        String::new()
    } else {
        if design.log {
            drop(open_index(&index, Some(levels)).expect("index database"));
        }
        design.schema().1
    };
    let mut conn = open(&db, &schema, design.page_size).expect("open bench database");
    let mut segment = Segment {
        file: OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("payload.seg"))
            .expect("segment file"),
        len: 0,
        buf: Vec::new(),
    };
    let data = deliveries(o);
    let mut chain = Chain {
        key: [7; 32],
        prev: [0; 32],
        seq: o.preload as i64,
    };
    let merged = Arc::new(AtomicI64::new(preloaded_position(o.preload)));
    let mut merger = None;
    let mut check = if design.log {
        let (tx, rx) = mpsc::channel();
        let m = Merger {
            log: Connection::open(&db).expect("merge log connection"),
            index: open_index(&index, None).expect("merge index connection"),
            rows: design.rows,
            counts: level_rows(&index, levels).expect("level rows"),
            l0_keys: o.l0_keys as i64,
            ratio: o.ratio as i64,
        };
        let (pub_merged, merge_keys) = (merged.clone(), o.merge_keys);
        merger = Some((
            tx,
            std::thread::spawn(move || merge_thread(m, rx, pub_merged, merge_keys)),
        ));
        Check::Log(Box::new(LogCheck {
            probe: open_index(&index, None).expect("probe connection"),
            lookups: (0..levels)
                .map(|l| format!("SELECT 1 FROM dedup_l{l} WHERE k = ?1"))
                .collect(),
            set: HashSet::new(),
            order: VecDeque::new(),
            window: o.window,
            merged: merged.clone(),
            bloom: design.bloom.then(|| {
                let capacity = 2 * (o.preload + o.deliveries);
                let (bloom, keys, ms) =
                    bloom_from_index(&index, levels, capacity).expect("bloom filter");
                println!("  {name} round {round}: Bloom filter built from the merged index at start: {keys} keys in {ms:.0} ms");
                bloom
            }),
            probes: 0,
        }))
    } else {
        Check::Recent(HashSet::with_capacity(o.deliveries))
    };
    let (mut writer_ns, mut ckpt_ns, mut written, mut wal_frames) = (0u64, 0u64, 0u64, 0i64);
    let started = Instant::now();
    for (n, batch) in data.chunks(o.batch).enumerate() {
        let (w0, segment_before) = (thread_written(), segment.len);
        let t0 = thread_cpu_ns();
        let seg = (!design.inline).then_some(&mut segment);
        if design.lean {
            let logs = design.log && !design.rows;
            lean_batch(&mut conn, seg, &mut check, logs, &mut chain, batch)
        } else {
            today_batch(&mut conn, name == "today-upsert", &mut chain, batch)
        }
        .expect("batch commits");
        writer_ns += thread_cpu_ns() - t0;
        written += thread_written() - w0 - (segment.len - segment_before);
        if let Some((tx, _)) = &merger {
            let last = batch.last().expect("non-empty batch").time_id;
            tx.send(Some((last, batch.len()))).expect("merge thread");
        }
        if n % 64 == 63 {
            let t1 = thread_cpu_ns();
            let (log, _): (i64, i64) = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(1)?, r.get(2)?))
                })
                .expect("checkpoint");
            wal_frames += log;
            ckpt_ns += thread_cpu_ns() - t1;
        }
    }
    let wall = started.elapsed().as_secs_f64() * 1e6;
    let per = o.deliveries as f64;
    let mut figures = Figures {
        writer: writer_ns as f64 / 1000.0 / per,
        checkpoint: ckpt_ns as f64 / 1000.0 / per,
        merge: 0.0,
        wall: wall / per,
        wal: written as f64 / per,
        merge_wal: 0.0,
    };
    if let Check::Log(check) = &check {
        println!(
            "  {name} round {round}: {} of {} deliveries looked up in the merged index",
            check.probes, o.deliveries
        );
    }
    if let Some((tx, handle)) = merger {
        tx.send(None).expect("merge thread");
        let stats = handle.join().expect("merge thread").expect("merges");
        figures.merge = stats.cpu_ns as f64 / 1000.0 / per;
        figures.merge_wal = stats.written as f64 / per;
        println!(
            "  {name} round {round}: {} merges, lag after the last batch {:.0} ms",
            stats.merges, stats.lag_ms
        );
        for r in stats.rebuilds.iter().chain(&stats.forced) {
            println!(
                "  {name} round {round}: {} {} into level {}: {} rows, {:.1} ms wall ({:.2} µs/row), {:.1} ms CPU, {:.1} MB WAL ({:.0} bytes/row)",
                if stats.forced.iter().any(|f| std::ptr::eq(f, r)) { "after the run, last-level rebuild of" } else { "rebuild of" },
                r.index,
                r.into,
                r.rows,
                r.wall_ms,
                r.wall_ms * 1e3 / r.rows.max(1) as f64,
                r.cpu_ms,
                r.written as f64 / 1e6,
                r.written as f64 / r.rows.max(1) as f64
            );
        }
        for (l, (rows, us)) in lookup_costs(&index, levels)
            .expect("lookup costs")
            .into_iter()
            .enumerate()
        {
            println!("  {name} round {round}: lookup of an absent key in dedup level {l} ({rows} rows): {us:.2} µs wall");
        }
    }
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    // For comparison with §12's WAL figure (frames counted by the checkpoints).
    println!(
        "  {name} round {round}: WAL frames counted by the checkpoints {:.0} bytes/delivery",
        wal_frames as f64 * (design.page_size + 24) as f64 / per
    );
    figures
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let o = options();
    println!(
        "# writer_design: {} deliveries, batches of {}, {} payload bytes, {} rounds, preload {}, merge every {} keys, window {}, levels {} (l0 {} keys, ratio {}), dir {}",
        o.deliveries,
        o.batch,
        o.payload,
        o.rounds,
        o.preload,
        o.merge_keys,
        o.window,
        o.levels,
        o.l0_keys,
        o.ratio,
        o.dir.display()
    );
    if o.preload > 0 {
        for name in &o.designs {
            preload(&o, &Design::parse(name));
        }
    }
    let mut results: Vec<(String, Vec<Figures>)> =
        o.designs.iter().map(|d| (d.clone(), Vec::new())).collect();
    for round in 1..=o.rounds {
        // Each round starts one design later, so none always runs first.
        let k = results.len();
        for i in 0..k {
            let (design, rows) = &mut results[(i + round - 1) % k];
            let r = run(design, &o, round);
            println!(
                "{design} round {round}: writer {:.1}, checkpoint {:.1}, merge {:.1}, total {:.1} µs/delivery; wall {:.1} µs/delivery; WAL {:.0} + merge {:.0} bytes/delivery",
                r.writer, r.checkpoint, r.merge, r.total(), r.wall, r.wal, r.merge_wal
            );
            rows.push(r);
        }
    }
    if o.preload > 0 && o.designs.iter().any(|d| Design::parse(d).log) {
        let log = Design::parse("lean-log");
        let src = preload(&o, &log).join("bench.db");
        for &n in o.recovery.iter().filter(|&&n| n <= o.preload) {
            // The position before the last `n` preloaded deliveries.
            let after = ((START - n as i64) << 16) - 1;
            for rows in [false, true] {
                let (keys, wall, cpu) = recover(&src, rows, after).expect("recovery");
                println!(
                    "recovery of the last {n} keys from the {}: {keys} keys in {wall:.0} ms wall, {cpu:.0} ms CPU",
                    if rows { "delivery rows" } else { "log table" }
                );
            }
        }
        let index = preload(&o, &log).join(format!("index-{}.db", o.levels));
        let (_, keys, ms) = bloom_from_index(&index, o.levels, 2 * o.preload).expect("bloom");
        println!(
            "recovery of the Bloom filter from the merged index: {keys} keys in {ms:.0} ms wall"
        );
    }
    println!("| design | writer CPU µs/delivery (rounds) | median | checkpoint CPU | merge CPU | total CPU (median of rounds) | wall µs/delivery | WAL bytes/delivery, writer + merge |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (design, rows) in &results {
        let med = |f: fn(&Figures) -> f64| median(rows.iter().map(f).collect());
        let rounds: Vec<String> = rows.iter().map(|r| format!("{:.1}", r.writer)).collect();
        println!(
            "| {design} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} + {:.0} |",
            rounds.join(", "),
            med(|r| r.writer),
            med(|r| r.checkpoint),
            med(|r| r.merge),
            med(Figures::total),
            med(|r| r.wall),
            med(|r| r.wal),
            med(|r| r.merge_wal)
        );
    }
}
