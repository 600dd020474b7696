//! The store writer's essential work per delivery, in two storage designs, on this machine.
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
//! `/proc/thread-self/schedstat`.
//!
//! Designs in between tell the parts apart: `today-upsert` (today's layout, the dedup
//! answered by the unique index during the insert, `ON CONFLICT DO NOTHING`, instead of a
//! lookup before it), `lean-inline` (the lean rows with the payload kept in the row),
//! `lean-1k` (lean with 1 KiB database pages, so a random index leaf costs a quarter of the WAL
//! bytes) and `lean-no-random-index`, a bound rather than a design: lean without the unique
//! dedup index and the call-ref index, the two B-trees whose inserts land on a random leaf.
//!
//! ```text
//! cargo bench --bench writer_design -- [--design NAME|all] [--deliveries N]
//!     [--batch N] [--payload-bytes N] [--rounds N] [--dir DIR]
//! ```

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hmac::{Hmac, Mac};
use rand::RngCore;
use rusqlite::{params, Connection};
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
}

fn options() -> Options {
    let mut o = Options {
        designs: [
            "today",
            "today-upsert",
            "lean-inline",
            "lean",
            "lean-1k",
            "lean-no-random-index",
        ]
        .map(String::from)
        .to_vec(),
        deliveries: 60_000,
        batch: 32,
        payload: 2048,
        rounds: 3,
        dir: std::env::temp_dir(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        let number = |v: String| v.parse::<usize>().unwrap_or(0).clamp(1, 10_000_000);
        match flag.as_str() {
            "--design" => {
                let v = value();
                if v != "all" {
                    o.designs = vec![v];
                }
            }
            "--deliveries" => o.deliveries = number(value()),
            "--batch" => o.batch = number(value()),
            "--payload-bytes" => o.payload = number(value()),
            "--rounds" => o.rounds = number(value()),
            "--dir" => o.dir = PathBuf::from(value()),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    o
}

/// This thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn deliveries(o: &Options) -> Vec<Delivery> {
    let mut rng = rand::thread_rng();
    let start = 1_796_000_000_000i64;
    (0..o.deliveries)
        .map(|i| {
            let mut d = Delivery {
                uuid: uuid::Uuid::now_v7().to_string(),
                time_id: (start + i as i64) << 16,
                dedup: [0; 32],
                call_ref: [0; 32],
                nonce: [0; 12],
                ciphertext: vec![0; o.payload],
                received_at: format!(
                    "2026-12-03T15:{:02}:{:02}.{:06}Z",
                    i / 60_000 % 60,
                    i / 1000 % 60,
                    i
                ),
                detail: r#"{"event_type":"call.ended","jobs":0,"key_id":1}"#.into(),
            };
            rng.fill_bytes(&mut d.dedup);
            rng.fill_bytes(&mut d.call_ref);
            rng.fill_bytes(&mut d.nonce);
            rng.fill_bytes(&mut d.ciphertext);
            d
        })
        .collect()
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

/// The chain link: HMAC over the record's content and its predecessor's MAC.
fn link(key: &[u8], prev: &[u8; 32], content: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
    mac.update(prev);
    for part in content {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn today_batch(
    conn: &mut Connection,
    upsert: bool,
    key: &[u8],
    prev: &mut [u8; 32],
    seq: &mut i64,
    batch: &[Delivery],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        *seq += 1;
        let mac = link(
            key,
            prev,
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
            *seq,
            d.received_at,
            d.uuid,
            call_ref,
            d.detail,
            hex::encode(*prev),
            hex::encode(mac)
        ])?;
        *prev = mac;
    }
    tx.commit()
}

struct Segment {
    file: File,
    len: u64,
    buf: Vec<u8>,
}

#[allow(clippy::too_many_arguments)]
fn lean_batch(
    conn: &mut Connection,
    segment: Option<&mut Segment>,
    recent: &mut HashSet<[u8; 32]>,
    key: &[u8],
    prev: &mut [u8; 32],
    seq: &mut i64,
    batch: &[Delivery],
) -> rusqlite::Result<()> {
    let mut rows = Vec::with_capacity(batch.len());
    for d in batch {
        assert!(recent.insert(d.dedup), "unique bodies");
    }
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
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        *seq += 1;
        let id = d.time_id.to_be_bytes();
        let mac = link(
            key,
            prev,
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
        .execute(params![*seq, d.time_id, &prev[..], &mac[..]])?;
        *prev = mac;
    }
    tx.commit()
}

/// Writer µs, checkpoint µs, wall µs and WAL bytes, each per delivery.
type Figures = (f64, f64, f64, f64);

/// One run of one design: (writer µs per delivery, checkpoint µs per delivery, wall µs per
/// delivery, WAL bytes per delivery).
fn run(design: &str, o: &Options, round: usize) -> Figures {
    let dir = o.dir.join(format!(
        "writer-design-{}-{design}-{round}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let lean = design.starts_with("lean");
    let schema = match design {
        "lean-no-random-index" => LEAN_SCHEMA_NO_RANDOM_INDEX,
        _ if lean => LEAN_SCHEMA,
        _ => TODAY_SCHEMA,
    };
    let page_size = if design == "lean-1k" { 1024 } else { 4096 };
    let mut conn = open(&dir.join("bench.db"), schema, page_size).expect("open bench database");
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
    let key = [7u8; 32];
    let (mut prev, mut seq) = ([0u8; 32], 0i64);
    let mut recent = HashSet::with_capacity(o.deliveries);
    let (mut writer_ns, mut ckpt_ns, mut wal_frames) = (0u64, 0u64, 0i64);
    let started = Instant::now();
    for (n, batch) in data.chunks(o.batch).enumerate() {
        let t0 = thread_cpu_ns();
        let seg = (design != "lean-inline").then_some(&mut segment);
        if lean {
            lean_batch(
                &mut conn,
                seg,
                &mut recent,
                &key,
                &mut prev,
                &mut seq,
                batch,
            )
        } else {
            today_batch(
                &mut conn,
                design == "today-upsert",
                &key,
                &mut prev,
                &mut seq,
                batch,
            )
        }
        .expect("batch commits");
        let t1 = thread_cpu_ns();
        writer_ns += t1 - t0;
        if n % 64 == 63 {
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
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    let per = o.deliveries as f64;
    // Frames are whole pages plus a 24-byte header.
    (
        writer_ns as f64 / 1000.0 / per,
        ckpt_ns as f64 / 1000.0 / per,
        wall / per,
        wal_frames as f64 * (page_size + 24) as f64 / per,
    )
}

fn main() {
    let o = options();
    println!(
        "# writer_design: {} deliveries, batches of {}, {} payload bytes, {} rounds, dir {}",
        o.deliveries,
        o.batch,
        o.payload,
        o.rounds,
        o.dir.display()
    );
    let mut results: Vec<(String, Vec<Figures>)> =
        o.designs.iter().map(|d| (d.clone(), Vec::new())).collect();
    for round in 1..=o.rounds {
        for (design, rows) in &mut results {
            let r = run(design, &o, round);
            println!(
                "{design} round {round}: writer {:.1} µs/delivery, checkpoint {:.1} µs/delivery, wall {:.1} µs/delivery, WAL {:.0} bytes/delivery",
                r.0, r.1, r.2, r.3
            );
            rows.push(r);
        }
    }
    println!("| design | writer CPU µs/delivery (median) | checkpoint CPU µs/delivery | wall µs/delivery | WAL bytes/delivery |");
    println!("|---|---:|---:|---:|---:|");
    for (design, rows) in &results {
        let med = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!(
            "| {design} | {:.1} | {:.1} | {:.1} | {:.0} |",
            med(|r| r.0),
            med(|r| r.1),
            med(|r| r.2),
            med(|r| r.3)
        );
    }
}
