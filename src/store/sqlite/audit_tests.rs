//! Tests of the audit module against real SQLite files and real mirror files in temp dirs.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use chrono::{Duration, TimeZone, Utc};
use rusqlite::{Connection, TransactionBehavior};

use crate::audit::append_at;
use crate::audit::*;
use crate::crypto::{Keyring, MasterKey};

fn keyring() -> Keyring {
    Keyring::from_master(&MasterKey::from_bytes([7; 32]))
}

fn open(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join("wardhook.db")).unwrap();
    super::audit_log::migrate(&conn).unwrap();
    conn
}

/// A varied record: action cycles through every kind, some carry a call ref.
fn sample(i: usize, kr: &Keyring) -> AuditRecord {
    let action = Action::ALL[i % Action::ALL.len()];
    let actor = match i % 4 {
        0 => Actor::sender("nextphone").unwrap(),
        1 => Actor::admin_token("ops-1").unwrap(),
        2 => Actor::cli_user("alice").unwrap(),
        _ => Actor::System,
    };
    AuditRecord::new(actor, action, Outcome::Success)
        .with_delivery_id(ObjectId::from_uuid(uuid::Uuid::from_u128(i as u128 + 1)))
        .with_source(Code::parse("nextphone").unwrap())
        .with_call_ref(CallRef::from_call_id(kr, &format!("call-{}", i % 3)))
        .with_detail(DetailKey::Status, 200u16)
        .with_detail(DetailKey::Handler, Code::parse("crm").unwrap())
        .with_remote_addr(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
}

/// Append `n` sample records, three per transaction, mirroring each batch after commit.
fn fill(
    conn: &mut Connection,
    kr: &Keyring,
    n: usize,
    mirror: Option<&Mirror>,
) -> Vec<StoredRecord> {
    let mut all = Vec::new();
    let mut i = 0;
    while i < n {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let batch: Vec<_> = (i..(i + 3).min(n)).map(|j| sample(j, kr)).collect();
        let appended = append_all(&tx, kr, &batch).unwrap();
        tx.commit().unwrap();
        if let Some(m) = mirror {
            m.write(conn, &appended).unwrap();
        }
        i += batch.len();
        all.extend(appended);
    }
    all
}

/// What an attacker with the sqlite3 shell does first.
fn drop_guards(conn: &Connection) {
    conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .unwrap();
}

fn failed_at(r: Result<VerifyReport, AuditError>) -> (u64, Problem) {
    match r {
        Err(AuditError::VerifyFailed { seq, problem, .. }) => (seq, problem),
        other => panic!("expected a verification failure, got {other:?}"),
    }
}

fn mutate_char(s: &str, i: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[i] = if b[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

#[test]
fn every_action_round_trips_through_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    let tx = conn.transaction().unwrap();
    for (i, action) in Action::ALL.iter().enumerate() {
        let outcome = Outcome::ALL[i % Outcome::ALL.len()];
        let rec = AuditRecord::new(Actor::System, *action, outcome)
            .with_detail(DetailKey::Count, i as i64);
        append(&tx, &kr, &rec).unwrap();
    }
    tx.commit().unwrap();
    let mut seen = Vec::new();
    for_each_record(&conn, &Filter::default(), |r| {
        seen.push((
            Action::parse(&r.action)?,
            Outcome::parse(&r.outcome)?,
            Actor::from_text(&r.actor)?,
        ));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), Action::ALL.len());
    for (i, (action, outcome, actor)) in seen.into_iter().enumerate() {
        assert_eq!(action, Action::ALL[i]);
        assert_eq!(outcome, Outcome::ALL[i % Outcome::ALL.len()]);
        assert_eq!(actor, Actor::System);
    }
    let names: std::collections::HashSet<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(names.len(), Action::ALL.len(), "action names are unique");
    assert!(names
        .iter()
        .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    verify_db(&conn, &kr, None).unwrap();
}

#[test]
fn migrate_is_idempotent_and_actors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(dir.path());
    super::audit_log::migrate(&conn).unwrap();
    for a in [
        Actor::System,
        Actor::sender("nextphone").unwrap(),
        Actor::admin_token("ops-1").unwrap(),
        Actor::cli_user("alice").unwrap(),
    ] {
        assert_eq!(Actor::from_text(&a.to_text()).unwrap(), a);
    }
}

#[test]
fn a_group_commit_chains_every_record_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    let recs = fill(&mut conn, &kr, 10, None);
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(recs[0].prev_mac, GENESIS_MAC);
    for w in recs.windows(2) {
        assert_eq!(w[1].prev_mac, w[0].mac);
    }
    let report = verify_db(&conn, &kr, None).unwrap();
    assert_eq!((report.records, report.last_seq), (10, Some(10)));
    assert_eq!(report.head_mac.as_deref(), Some(recs[9].mac.as_str()));
}

#[test]
fn a_different_key_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(dir.path());
    fill(&mut conn, &keyring(), 3, None);
    let other = Keyring::from_master(&MasterKey::from_bytes([8; 32]));
    assert_eq!(failed_at(verify_db(&conn, &other, None)).0, 1);
}

#[test]
fn the_triggers_refuse_update_and_unpermitted_delete() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 3, None);
    assert!(conn
        .execute("UPDATE audit_log SET outcome = 'failure' WHERE seq = 2", [])
        .is_err());
    assert!(conn.execute("DELETE FROM audit_log", []).is_err());
    verify_db(&conn, &kr, None).unwrap();
}

const TEXT_COLUMNS: [&str; 11] = [
    "ts",
    "actor",
    "action",
    "outcome",
    "delivery_id",
    "source",
    "call_ref",
    "remote_addr",
    "detail",
    "prev_mac",
    "mac",
];

#[test]
fn editing_any_byte_of_a_database_record_is_detected_at_its_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 10, None);
    drop_guards(&conn);
    let mut cases = 0;
    for col in TEXT_COLUMNS {
        let original: String = conn
            .query_row(
                &format!("SELECT {col} FROM audit_log WHERE seq = 5"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        for i in 0..original.len() {
            let edited = mutate_char(&original, i);
            conn.execute(
                &format!("UPDATE audit_log SET {col} = ?1 WHERE seq = 5"),
                [&edited],
            )
            .unwrap();
            let (seq, problem) = failed_at(verify_db(&conn, &kr, None));
            assert_eq!(seq, 5, "{col}[{i}]: {problem}");
            assert!(
                matches!(problem, Problem::Modified | Problem::BrokenLink),
                "{col}[{i}]: {problem}"
            );
            cases += 1;
        }
        // Setting an optional column to NULL is an edit too.
        if col != "mac" && col != "prev_mac" && col != "ts" && col != "detail" {
            let _ = conn.execute(
                &format!("UPDATE audit_log SET {col} = NULL WHERE seq = 5"),
                [],
            );
            if let Err(e) = verify_db(&conn, &kr, None) {
                assert!(
                    matches!(e, AuditError::VerifyFailed { seq: 5, .. }),
                    "{col}=NULL: {e}"
                );
            }
        }
        conn.execute(
            &format!("UPDATE audit_log SET {col} = ?1 WHERE seq = 5"),
            [&original],
        )
        .unwrap();
        verify_db(&conn, &kr, None).unwrap();
    }
    assert!(cases > 300, "only {cases} byte edits tried");
    // The sequence number itself.
    conn.execute("UPDATE audit_log SET seq = 50 WHERE seq = 5", [])
        .unwrap();
    assert_eq!(failed_at(verify_db(&conn, &kr, None)).0, 5);
}

#[test]
fn deleting_a_database_record_is_reported_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 10, None);
    drop_guards(&conn);
    conn.execute("DELETE FROM audit_log WHERE seq = 5", [])
        .unwrap();
    let (seq, problem) = failed_at(verify_db(&conn, &kr, None));
    assert_eq!(
        (seq, problem),
        (
            5,
            Problem::Missing {
                next_found: Some(6)
            }
        )
    );
}

#[test]
fn swapping_two_database_records_is_reported_as_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 10, None);
    drop_guards(&conn);
    // Swap every column but the sequence number: record 6 now sits at 5 and vice versa.
    let sets = TEXT_COLUMNS
        .map(|c| format!("{c} = (SELECT {c} FROM audit_log b WHERE b.seq = 11 - audit_log.seq)"))
        .join(", ");
    conn.execute(
        &format!("UPDATE audit_log SET {sets} WHERE seq IN (5, 6)"),
        [],
    )
    .unwrap();
    let (seq, problem) = failed_at(verify_db(&conn, &kr, None));
    assert_eq!((seq, problem), (5, Problem::Reordered { belongs_at: 6 }));
}

#[test]
fn inserting_a_forged_database_record_is_reported_as_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 10, None);
    drop_guards(&conn);
    for s in (5..=10).rev() {
        conn.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?1", [s])
            .unwrap();
    }
    conn.execute(
        "INSERT INTO audit_log SELECT 5, ts, 'system', 'payload_read', outcome, delivery_id, source,
         call_ref, remote_addr, detail, prev_mac, mac FROM audit_log WHERE seq = 6",
        [],
    )
    .unwrap();
    let (seq, problem) = failed_at(verify_db(&conn, &kr, None));
    assert_eq!((seq, problem), (5, Problem::Inserted { claimed: 5 }));
}

#[test]
fn cutting_the_database_tail_after_a_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let cp_path = dir.path().join("checkpoints.jsonl");
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 10, None);
    let cp = write_checkpoint(&conn, &kr, &cp_path).unwrap().unwrap();
    assert_eq!(cp.seq, 10);
    let report = verify_db(&conn, &kr, Some(&cp_path)).unwrap();
    assert_eq!(
        (report.checkpoints_matched, report.last_checkpoint_seq),
        (1, Some(10))
    );
    drop_guards(&conn);
    conn.execute("DELETE FROM audit_log WHERE seq >= 8", [])
        .unwrap();
    let (seq, problem) = failed_at(verify_db(&conn, &kr, Some(&cp_path)));
    assert_eq!(
        (seq, problem),
        (8, Problem::TruncatedAfterCheckpoint { checkpoint_seq: 10 })
    );
    // Without the checkpoint file the shorter chain is valid: that's why checkpoints exist.
    let report = verify_db(&conn, &kr, None).unwrap();
    assert!(!report.warnings.is_empty());
}

#[test]
fn truncating_and_continuing_the_chain_is_caught_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let cp_path = dir.path().join("checkpoints.jsonl");
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 10, None);
    write_checkpoint(&conn, &kr, &cp_path).unwrap();
    drop_guards(&conn);
    conn.execute("DELETE FROM audit_log WHERE seq >= 8", [])
        .unwrap();
    fill(&mut conn, &kr, 4, None);
    let (seq, problem) = failed_at(verify_db(&conn, &kr, Some(&cp_path)));
    assert_eq!((seq, problem), (10, Problem::CheckpointMismatch));
}

#[test]
fn a_forged_or_edited_checkpoint_is_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let cp_path = dir.path().join("checkpoints.jsonl");
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 5, None);
    write_checkpoint(&conn, &kr, &cp_path).unwrap();
    let text = std::fs::read_to_string(&cp_path).unwrap();
    std::fs::write(&cp_path, text.replace("\"seq\":5", "\"seq\":4")).unwrap();
    let (seq, problem) = failed_at(verify_db(&conn, &kr, Some(&cp_path)));
    assert_eq!(
        (seq, problem),
        (4, Problem::BadCheckpointSignature { line: 1 })
    );
    // Signed with another installation's key.
    let other = Keyring::from_master(&MasterKey::from_bytes([9; 32]));
    std::fs::remove_file(&cp_path).unwrap();
    write_checkpoint(&conn, &other, &cp_path).unwrap();
    let (_, problem) = failed_at(verify_db(&conn, &kr, Some(&cp_path)));
    assert_eq!(problem, Problem::BadCheckpointSignature { line: 1 });
}

// ---- JSONL mirror ----

struct MirrorFixture {
    _dir: tempfile::TempDir,
    mirror_dir: PathBuf,
    cp_path: PathBuf,
    conn: Connection,
}

fn mirrored(n: usize, every: u64) -> MirrorFixture {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mirror_dir = dir.path().join("audit");
    let cp_path = dir.path().join("checkpoints.jsonl");
    let mut conn = open(dir.path());
    let mirror = Mirror::new(&mirror_dir)
        .unwrap()
        .with_checkpoints(&cp_path, every, &kr);
    fill(&mut conn, &kr, n, Some(&mirror));
    MirrorFixture {
        _dir: dir,
        mirror_dir,
        cp_path,
        conn,
    }
}

fn mirror_file(dir: &Path) -> PathBuf {
    let files = list_mirror_files(dir).unwrap();
    assert_eq!(files.len(), 1, "one day's file");
    files[0].clone()
}

fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(path, out).unwrap();
}

#[test]
fn the_mirror_holds_every_record_and_verifies_independently() {
    let fx = mirrored(10, 4);
    let kr = keyring();
    let report = verify_jsonl(&fx.mirror_dir, &kr, Some(&fx.cp_path), false).unwrap();
    assert_eq!((report.records, report.last_seq), (10, Some(10)));
    assert_eq!(
        report.checkpoints_matched, 2,
        "checkpoints at 6 and 9 (batches of 3, every 4)"
    );
    let db = verify_db(&fx.conn, &kr, Some(&fx.cp_path)).unwrap();
    assert_eq!(db.head_mac, report.head_mac);
    // The file name carries the date it was written.
    let name = mirror_file(&fx.mirror_dir)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("audit.") && name.ends_with(".jsonl"),
        "{name}"
    );
}

#[test]
fn editing_any_byte_of_a_mirror_line_is_detected_at_its_sequence_number() {
    let fx = mirrored(10, 100);
    let kr = keyring();
    let path = mirror_file(&fx.mirror_dir);
    let original = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();
    let start: usize = lines[..4].iter().map(|l| l.len()).sum();
    let len = lines[4].len(); // includes the newline
    for i in start..start + len {
        let mut edited = original.clone();
        edited[i] = if edited[i] == b'a' { b'b' } else { b'a' };
        std::fs::write(&path, &edited).unwrap();
        let (seq, problem) = failed_at(verify_jsonl(&fx.mirror_dir, &kr, None, false));
        assert_eq!(
            seq,
            5,
            "byte {} ({:?}): {problem}",
            i - start,
            original[i] as char
        );
    }
    std::fs::write(&path, &original).unwrap();
    verify_jsonl(&fx.mirror_dir, &kr, None, false).unwrap();
}

#[test]
fn deleting_swapping_and_inserting_mirror_lines_are_named() {
    let fx = mirrored(10, 100);
    let kr = keyring();
    let path = mirror_file(&fx.mirror_dir);
    let original = std::fs::read(&path).unwrap();

    edit_lines(&path, |l| {
        l.remove(4);
    });
    assert_eq!(
        failed_at(verify_jsonl(&fx.mirror_dir, &kr, None, false)),
        (
            5,
            Problem::Missing {
                next_found: Some(6)
            }
        )
    );

    std::fs::write(&path, &original).unwrap();
    edit_lines(&path, |l| l.swap(4, 5));
    assert_eq!(
        failed_at(verify_jsonl(&fx.mirror_dir, &kr, None, false)),
        (5, Problem::Reordered { belongs_at: 6 })
    );

    std::fs::write(&path, &original).unwrap();
    edit_lines(&path, |l| {
        let dup = l[3].clone();
        l.insert(4, dup);
    });
    assert_eq!(
        failed_at(verify_jsonl(&fx.mirror_dir, &kr, None, false)),
        (5, Problem::Inserted { claimed: 4 })
    );

    std::fs::write(&path, &original).unwrap();
    edit_lines(&path, |l| {
        let forged = l[4].replace("\"outcome\":\"success\"", "\"outcome\":\"failure\"");
        assert_ne!(forged, l[4]);
        l.insert(4, forged);
    });
    assert_eq!(
        failed_at(verify_jsonl(&fx.mirror_dir, &kr, None, false)),
        (5, Problem::Inserted { claimed: 5 })
    );
}

#[test]
fn cutting_the_mirror_tail_after_a_checkpoint_is_detected() {
    let fx = mirrored(10, 1);
    let kr = keyring();
    let path = mirror_file(&fx.mirror_dir);
    edit_lines(&path, |l| l.truncate(7));
    let (seq, problem) = failed_at(verify_jsonl(&fx.mirror_dir, &kr, Some(&fx.cp_path), false));
    assert_eq!(
        (seq, problem),
        (8, Problem::TruncatedAfterCheckpoint { checkpoint_seq: 10 })
    );
}

#[test]
fn the_mirror_skips_records_already_written_and_catches_up_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mirror_dir = dir.path().join("audit");
    let mut conn = open(dir.path());
    let mirror = Mirror::new(&mirror_dir).unwrap();
    let first = fill(&mut conn, &kr, 4, Some(&mirror));
    mirror.write(&conn, &first).unwrap(); // a retry writes nothing twice
    fill(&mut conn, &kr, 5, None); // "crash" before mirroring these
    drop(mirror);
    let (seq, _) = failed_at(
        verify_jsonl(&mirror_dir, &kr, Some(&dir.path().join("none")), false).and_then(|r| {
            if r.records == 9 {
                Ok(r)
            } else {
                Err(AuditError::VerifyFailed {
                    seq: r.last_seq.unwrap_or(0) + 1,
                    problem: Problem::Missing { next_found: None },
                    location: "test".into(),
                })
            }
        }),
    );
    assert_eq!(seq, 5);
    let mirror = Mirror::new(&mirror_dir).unwrap();
    assert_eq!(mirror.catch_up(&conn).unwrap(), 5);
    assert_eq!(mirror.catch_up(&conn).unwrap(), 0);
    let report = verify_jsonl(&mirror_dir, &kr, None, false).unwrap();
    assert_eq!(report.records, 9);
}

// ---- search and export ----

#[test]
fn search_by_call_ref_finds_all_and_only_that_calls_records() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    let all = fill(&mut conn, &kr, 30, None);
    let wanted = CallRef::from_call_id(&kr, "call-1");
    let expected: Vec<u64> = all
        .iter()
        .filter(|r| r.call_ref.as_deref() == Some(wanted.as_str()))
        .map(|r| r.seq)
        .collect();
    assert_eq!(expected.len(), 10);
    let filter = Filter {
        call_ref: Some(wanted),
        ..Filter::default()
    };
    let mut found = Vec::new();
    for_each_record(&conn, &filter, |r| {
        found.push(r.seq);
        Ok(())
    })
    .unwrap();
    assert_eq!(found, expected);
    assert_eq!(count(&conn, &filter).unwrap(), 10);
    // The stored value is the blind index, never the call id.
    let raw = std::fs::read(dir.path().join("wardhook.db")).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"call-1"));
}

#[test]
fn search_filters_by_source_action_actor_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..20 {
        append_at(&tx, &kr, &sample(i, &kr), t0 + Duration::days(i as i64)).unwrap();
    }
    tx.commit().unwrap();
    let n = |f: Filter| count(&conn, &f).unwrap();
    assert_eq!(
        n(Filter {
            action: Some(Action::PayloadRead),
            ..Filter::default()
        }),
        1
    );
    assert_eq!(
        n(Filter {
            actor: Some(Code::parse("alice").unwrap()),
            ..Filter::default()
        }),
        5
    );
    assert_eq!(
        n(Filter {
            actor: Some(Code::parse("cli_user:alice").unwrap()),
            ..Filter::default()
        }),
        5
    );
    assert_eq!(
        n(Filter {
            actor: Some(Code::parse("system").unwrap()),
            ..Filter::default()
        }),
        5
    );
    assert_eq!(
        n(Filter {
            source: Some(Code::parse("nextphone").unwrap()),
            ..Filter::default()
        }),
        20
    );
    assert_eq!(
        n(Filter {
            source: Some(Code::parse("vapi").unwrap()),
            ..Filter::default()
        }),
        0
    );
    let range = Filter {
        since: Some(t0 + Duration::days(5)),
        until: Some(t0 + Duration::days(10)),
        ..Filter::default()
    };
    assert_eq!(n(range), 5, "since inclusive, until exclusive");
}

/// Peak resident memory of this process so far, in KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A sink that counts and discards, so the test itself holds nothing.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
    lines: u64,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct RecordingProgress {
    total: u64,
    advances: u64,
    finished: u64,
}

impl Progress for RecordingProgress {
    fn start(&mut self, total: u64) {
        self.total = total;
    }
    fn advance(&mut self, _: u64) {
        self.advances += 1;
    }
    fn finish(&mut self, done: u64) {
        self.finished = done;
    }
}

#[test]
fn exporting_100k_records_streams_in_bounded_memory() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    let tx = conn.transaction().unwrap();
    let rec = sample(1, &kr);
    for _ in 0..N {
        append(&tx, &kr, &rec).unwrap();
    }
    tx.commit().unwrap();
    // Small page cache so SQLite's own memory doesn't mask ours.
    conn.execute_batch("PRAGMA cache_size = -2000;").unwrap();

    let before = vm_hwm_kib();
    let mut sink = CountingSink::default();
    let mut progress = RecordingProgress::default();
    let n = export(
        &conn,
        &Filter::default(),
        ExportFormat::Jsonl,
        &mut sink,
        &mut progress,
    )
    .unwrap();
    let after = vm_hwm_kib();

    assert_eq!(n, N as u64);
    assert_eq!(sink.lines, N as u64);
    assert_eq!(
        (progress.total, progress.advances, progress.finished),
        (N as u64, N as u64, N as u64)
    );
    assert!(
        sink.bytes > 40 * 1024 * 1024,
        "the export is {} bytes",
        sink.bytes
    );
    if let (Some(b), Some(a)) = (before, after) {
        // Holding the export in memory would raise the peak by more than the 40+ MiB written.
        // Saturating: the kernel's VmHWM folds in per-CPU RSS counters lazily, so a later
        // reading can be a little below an earlier one.
        let grew = a.saturating_sub(b);
        assert!(
            grew < 16 * 1024,
            "peak RSS grew by {grew} KiB during export"
        );
    }

    let mut csv = CountingSink::default();
    let n = export(
        &conn,
        &Filter::default(),
        ExportFormat::Csv,
        &mut csv,
        &mut (),
    )
    .unwrap();
    assert_eq!(
        (n, csv.lines),
        (N as u64, N as u64 + 1),
        "header + one line per record"
    );
}

#[test]
fn csv_export_quotes_the_detail_column_and_jsonl_export_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 3, None);
    let mut out = Vec::new();
    export(
        &conn,
        &Filter::default(),
        ExportFormat::Csv,
        &mut out,
        &mut (),
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seq,ts,actor,action,outcome,delivery_id,source,call_ref,remote_addr,detail,prev_mac,mac"
    );
    assert!(lines
        .next()
        .unwrap()
        .contains(r#""{""handler"":""crm"",""status"":200}""#));

    let export_dir = dir.path().join("export");
    std::fs::create_dir(&export_dir).unwrap();
    let mut f = std::fs::File::create(export_dir.join("audit.export.jsonl")).unwrap();
    export(
        &conn,
        &Filter::default(),
        ExportFormat::Jsonl,
        &mut f,
        &mut (),
    )
    .unwrap();
    drop(f);
    assert_eq!(
        verify_jsonl(&export_dir, &kr, None, false).unwrap().records,
        3
    );
}

// ---- retention ----

#[test]
fn purge_refuses_records_younger_than_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 3, None);
    let tx = conn.transaction().unwrap();
    let cutoff = Utc::now() - Duration::days(365 * 5);
    let err = purge_older_than(&tx, &kr, Retention::default(), cutoff, Actor::System).unwrap_err();
    assert!(
        matches!(err, AuditError::RetentionViolation { days: 2196, .. }),
        "{err}"
    );
    // A shorter configured retention allows it (and deletes nothing here: all records are new).
    let report = purge_older_than(
        &tx,
        &kr,
        Retention { days: 365 },
        Utc::now() - Duration::days(400),
        Actor::System,
    )
    .unwrap();
    assert_eq!((report.deleted, report.through_seq), (0, None));
    tx.commit().unwrap();
    verify_db(&conn, &kr, None).unwrap();
}

#[test]
fn purge_deletes_the_old_prefix_records_itself_and_the_rest_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let cp_path = dir.path().join("checkpoints.jsonl");
    let mirror_dir = dir.path().join("audit");
    let mirror = Mirror::new(&mirror_dir).unwrap();
    let mut conn = open(dir.path());
    let old = Utc.with_ymd_and_hms(2018, 3, 1, 0, 0, 0).unwrap();
    let tx = conn.transaction().unwrap();
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(append_at(&tx, &kr, &sample(i, &kr), old + Duration::days(i as i64)).unwrap());
    }
    tx.commit().unwrap();
    mirror.write(&conn, &written).unwrap();
    write_checkpoint(&conn, &kr, &cp_path).unwrap(); // at seq 5, soon purged
    fill(&mut conn, &kr, 5, Some(&mirror));

    let tx = conn.transaction().unwrap();
    let cutoff = Utc.with_ymd_and_hms(2019, 1, 1, 0, 0, 0).unwrap();
    let report = purge_older_than(
        &tx,
        &kr,
        Retention::default(),
        cutoff,
        Actor::cli_user("alice").unwrap(),
    )
    .unwrap();
    tx.commit().unwrap();
    mirror
        .write(&conn, std::slice::from_ref(&report.record))
        .unwrap();
    assert_eq!((report.deleted, report.through_seq), (5, Some(5)));
    assert_eq!(report.record.action, "audit_purged");
    assert!(report.record.detail.contains("\"through_seq\":5"));

    write_checkpoint(&conn, &kr, &cp_path).unwrap();
    let db = verify_db(&conn, &kr, Some(&cp_path)).unwrap();
    assert_eq!(
        (db.first_seq, db.last_seq, db.records),
        (Some(6), Some(11), 6)
    );
    // The mirror still has the whole history, and verifies from 1.
    let mirror_report = verify_jsonl(&mirror_dir, &kr, Some(&cp_path), false).unwrap();
    assert_eq!(mirror_report.records, 11);

    // Deleting more of the prefix by hand is not explained by the anchor.
    drop_guards(&conn);
    conn.execute("DELETE FROM audit_log WHERE seq = 6", [])
        .unwrap();
    assert_eq!(failed_at(verify_db(&conn, &kr, Some(&cp_path))).0, 6);
}

// ---- PHI canaries ----

const CANARIES: &[&str] = &[
    "Jane Q. Patient",
    "+1-555-867-5309",
    "555-867-5309",
    "5558675309",
    "(555) 867-5309",
    "jane.patient@example.com",
    "1980-04-12",
    "123 Main St, Springfield",
    "Patient reports chest pain since Tuesday",
    "SSN 123-45-6789",
    "123-45-6789",
    "4111111111111111",
    "",
    "a-very-long-identifier-that-keeps-going-and-going-past-sixty-four-characters",
];

#[test]
fn no_phi_canary_is_accepted_by_any_field_constructor() {
    let kr = keyring();
    for canary in CANARIES {
        assert!(Code::parse(canary).is_err(), "Code accepted {canary:?}");
        assert!(
            ObjectId::parse(canary).is_err(),
            "ObjectId accepted {canary:?}"
        );
        assert!(
            CallRef::parse(canary).is_err(),
            "CallRef accepted {canary:?}"
        );
        assert!(Digest::parse(canary).is_err(), "Digest accepted {canary:?}");
        assert!(
            FilePath::parse(canary).is_err(),
            "FilePath accepted {canary:?}"
        );
        // Names, sentences, e-mail and formatted phone numbers cannot be a path's segment.
        if canary.contains([' ', '@', '+', '(', ',']) {
            assert!(
                FilePath::parse(&format!("/srv/{canary}")).is_err(),
                "FilePath accepted a segment {canary:?}"
            );
        }
        assert!(
            DetailValue::host(canary).is_err(),
            "host accepted {canary:?}"
        );
        assert!(Actor::sender(canary).is_err());
        assert!(Actor::admin_token(canary).is_err());
        assert!(Actor::cli_user(canary).is_err());
        // The one path from a call id into a record is its blind index.
        let r = CallRef::from_call_id(&kr, canary);
        assert!(!r.as_str().contains(canary) || canary.is_empty());
        // Error messages don't echo the value.
        let msg = Code::parse(canary).unwrap_err().to_string();
        assert!(canary.is_empty() || !msg.contains(canary), "{msg}");
    }
}

#[test]
fn no_canary_reaches_the_database_or_mirror_files() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mirror_dir = dir.path().join("audit");
    let mirror = Mirror::new(&mirror_dir).unwrap();
    let mut conn = open(dir.path());
    // A call whose id is itself a canary: only its blind index is stored.
    let tx = conn.transaction().unwrap();
    let rec = AuditRecord::new(
        Actor::sender("nextphone").unwrap(),
        Action::DeliveryAccepted,
        Outcome::Success,
    )
    .with_call_ref(CallRef::from_call_id(&kr, "CANARY-CALL-5558675309"));
    let appended = append(&tx, &kr, &rec).unwrap();
    tx.commit().unwrap();
    mirror.write(&conn, &[appended]).unwrap();
    fill(&mut conn, &kr, 12, Some(&mirror));
    drop(conn);
    let mut files = vec![dir.path().join("wardhook.db")];
    files.extend(list_mirror_files(&mirror_dir).unwrap());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for canary in CANARIES.iter().chain(&["CANARY-CALL", "5558675309"]) {
            if canary.len() < 4 {
                continue;
            }
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{canary:?} found in {}",
                f.display()
            );
        }
    }
}

// ---- CLI command functions ----

fn audit_setup(n: usize) -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let audit_dir = dir.path().join("audit");
    let mut conn = open(dir.path());
    let mirror = Mirror::new(&audit_dir).unwrap().with_checkpoints(
        commands::checkpoint_path(&audit_dir),
        4,
        &kr,
    );
    fill(&mut conn, &kr, n, Some(&mirror));
    (dir, audit_dir, conn)
}

#[test]
fn audit_verify_command_checks_database_mirror_and_their_agreement() {
    let (_dir, audit_dir, conn) = audit_setup(9);
    let kr = keyring();
    let mut out = Vec::new();
    let summary = commands::verify(&conn, &kr, &audit_dir, false, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("database: OK, 9 records"), "{text}");
    assert!(text.contains("mirror: OK, 9 records"), "{text}");
    assert_eq!(summary.mirror.unwrap().head_mac, summary.database.head_mac);

    // The newest record (after the last checkpoint) deleted from the database only: the
    // mirror still has it.
    drop_guards(&conn);
    conn.execute("DELETE FROM audit_log WHERE seq = 9", [])
        .unwrap();
    let err = commands::verify(&conn, &kr, &audit_dir, false, false, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, AuditError::VerifyFailed { seq: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("at sequence 9"), "{err}");
    // Database-only verification can't see it: the checkpoint is at 6.
    commands::verify(&conn, &kr, &audit_dir, true, false, &mut Vec::new()).unwrap();
}

#[test]
fn audit_search_command_finds_a_call_by_its_id_without_printing_it() {
    let (_dir, _audit_dir, conn) = audit_setup(12);
    let kr = keyring();
    let args = commands::SearchArgs {
        call_id: Some("call-2".into()),
        ..commands::SearchArgs::default()
    };
    let mut out = Vec::new();
    assert_eq!(commands::search(&conn, &kr, &args, &mut out).unwrap(), 4);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1 + 4 + 1, "header, 4 records, total");
    assert!(!text.contains("call-2"));
    let bad = commands::SearchArgs {
        action: Some("payload_read; DROP TABLE audit_log".into()),
        ..commands::SearchArgs::default()
    };
    assert!(commands::search(&conn, &kr, &bad, &mut Vec::new()).is_err());
}

#[test]
fn audit_export_command_writes_csv_and_reports_progress_only_for_large_ranges() {
    let (_dir, _audit_dir, conn) = audit_setup(6);
    let kr = keyring();
    let args = commands::SearchArgs {
        since: Some("2000-01-01".into()),
        until: Some("2999-01-01T00:00:00Z".into()),
        ..commands::SearchArgs::default()
    };
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let n = commands::export(
        &conn,
        &kr,
        ExportFormat::Csv,
        &args,
        &mut out,
        &mut progress,
    )
    .unwrap();
    assert_eq!(n, 6);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 7);
    assert!(progress.is_empty());

    let mut p = commands::CounterProgress::new(Vec::new(), 10);
    p.start(20_000);
    for i in 1..=20_000 {
        p.advance(i);
    }
    p.finish(20_000);
    let text = String::from_utf8(p_into_sink(p)).unwrap();
    assert!(text.contains("10000/20000 records (50%)"), "{text}");
    assert!(text.ends_with("20000/20000 records (100%)\n"), "{text}");
}

fn p_into_sink(p: commands::CounterProgress<Vec<u8>>) -> Vec<u8> {
    p.into_inner()
}

#[test]
fn times_parse_as_rfc3339_or_utc_dates() {
    let t = commands::parse_time("2026-07-01").unwrap();
    assert_eq!(t, Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap());
    let t = commands::parse_time("2026-07-01T02:00:00+02:00").unwrap();
    assert_eq!(t, Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap());
    assert!(commands::parse_time("last tuesday").is_err());
}

#[test]
fn verify_runs_inside_a_callers_transaction_and_warns_when_the_mirror_lags() {
    let (_dir, audit_dir, mut conn) = audit_setup(6);
    let kr = keyring();
    fill(&mut conn, &kr, 2, None); // committed, not mirrored yet
    {
        let tx = conn.transaction().unwrap();
        assert_eq!(verify_db(&tx, &kr, None).unwrap().records, 8);
        tx.commit().unwrap();
    }
    let mut out = Vec::new();
    commands::verify(&conn, &kr, &audit_dir, false, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("2 newer records not mirrored yet"), "{text}");
}

/// Time bounds are found by bisecting on `seq`: with a purged prefix (a gap before the first
/// row), equal times (a clock that stepped back is clamped), and bounds before, between, on
/// and after the records, the answer is the first record at or after the time, as a scan of
/// `ts` finds it.
#[test]
fn a_time_is_found_as_the_first_sequence_number_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..40i64 {
        // Minutes 0, 0, 2, 2, 4, …, then a clock stepped back for the last ten.
        let at = if i < 30 {
            t0 + Duration::minutes(i / 2 * 2)
        } else {
            t0
        };
        append_at(&tx, &kr, &sample(i as usize, &kr), at).unwrap();
    }
    tx.commit().unwrap();
    drop_guards(&conn);
    conn.execute("DELETE FROM audit_log WHERE seq <= 7", [])
        .unwrap();
    let scan = |ts: &str| -> Option<i64> {
        conn.query_row(
            "SELECT min(seq) FROM audit_log NOT INDEXED WHERE ts >= ?1",
            [ts],
            |r| r.get(0),
        )
        .unwrap()
    };
    for minute in -1..=32 {
        for second in [0, 30] {
            let ts = format_ts(t0 + Duration::minutes(minute) + Duration::seconds(second));
            assert_eq!(
                super::audit_log::first_seq_at_or_after(&conn, &ts).unwrap(),
                scan(&ts),
                "{ts}"
            );
        }
    }
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        super::audit_log::first_seq_at_or_after(&open(empty.path()), &format_ts(t0)).unwrap(),
        None
    );
}

/// No index on `ts`; a time-bounded search reads a `seq` range, and a search for one action
/// other than the intake's reads `audit_log_action`, which holds no intake record.
#[test]
fn searches_by_time_and_action_read_ranges_not_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 60, None);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!indexes.iter().any(|i| i == "audit_log_ts"), "{indexes:?}");
    let plan = |filter: &Filter| -> String {
        let (clause, params) = super::audit_log::where_clause(&conn, filter);
        let mut stmt = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT seq FROM audit_log{clause}"
            ))
            .unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let now = Utc::now();
    let since = plan(&Filter {
        since: Some(now - Duration::hours(1)),
        until: Some(now + Duration::hours(1)),
        ..Filter::default()
    });
    assert!(since.contains("INTEGER PRIMARY KEY"), "{since}");
    let action = plan(&Filter {
        action: Some(Action::PayloadRead),
        ..Filter::default()
    });
    assert!(action.contains("audit_log_action"), "{action}");
    let indexed_intake: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log INDEXED BY audit_log_action
             WHERE action = 'payload_read' AND action NOT IN ('delivery_accepted', 'delivery_duplicate')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        indexed_intake,
        count(
            &conn,
            &Filter {
                action: Some(Action::PayloadRead),
                ..Filter::default()
            }
        )
        .unwrap() as i64
    );
    // Intake actions are searched too, along `seq`.
    for a in [Action::DeliveryAccepted, Action::DeliveryDuplicate] {
        let expected: i64 = conn
            .query_row(
                "SELECT count(*) FROM audit_log NOT INDEXED WHERE action = ?1",
                [a.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert!(expected > 0);
        let filter = Filter {
            action: Some(a),
            ..Filter::default()
        };
        assert_eq!(count(&conn, &filter).unwrap() as i64, expected);
    }
}

/// A database whose `audit_log_action` indexed every record (and had an index on `ts`) gets the
/// partial index on open, once, with the same answers.
#[test]
fn the_old_audit_indexes_are_replaced_once() {
    let dir = tempfile::tempdir().unwrap();
    let kr = keyring();
    let mut conn = open(dir.path());
    fill(&mut conn, &kr, 30, None);
    conn.execute_batch(
        "DROP INDEX audit_log_action;
         CREATE INDEX audit_log_action ON audit_log(action, seq);
         CREATE INDEX audit_log_ts ON audit_log(ts);",
    )
    .unwrap();
    super::audit_log::migrate(&conn).unwrap();
    let sql = |name: &str| -> Option<String> {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .ok()
    };
    let partial = sql("audit_log_action").unwrap();
    assert!(partial.contains("WHERE action NOT IN"), "{partial}");
    assert_eq!(sql("audit_log_ts"), None);
    // Idempotent: a second open keeps the index as it is (same root page: not rebuilt).
    let root = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'audit_log_action'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let before = root(&conn);
    conn.execute_batch("CREATE TABLE filler (x); INSERT INTO filler VALUES (randomblob(10000));")
        .unwrap();
    super::audit_log::migrate(&conn).unwrap();
    assert_eq!(root(&conn), before);
    let filter = Filter {
        action: Some(Action::PayloadRead),
        ..Filter::default()
    };
    assert_eq!(count(&conn, &filter).unwrap(), 1);
}
