//! The mirror with several writers: two `Mirror`s over one SQLite file and one mirror folder,
//! as the server and a CLI command have, writing in every order a real run can produce.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::audit::list_mirror_files;
use crate::audit::*;
use crate::crypto::{Keyring, MasterKey};

fn keyring() -> Keyring {
    Keyring::from_master(&MasterKey::from_bytes([9; 32]))
}

/// One "process": its own connection to the shared database and its own mirror.
struct Writer {
    conn: Connection,
    mirror: Mirror,
}

struct Setup {
    dir: tempfile::TempDir,
    audit_dir: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let audit_dir = dir.path().join("audit");
        Self { dir, audit_dir }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("wardhook.db")
    }

    /// A writer; `checkpoint_every` gives it a checkpoint policy (the server has one, CLI
    /// commands do not).
    fn writer(&self, checkpoint_every: Option<u64>) -> Writer {
        let conn = Connection::open(self.db()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        super::audit_log::migrate(&conn).unwrap();
        let mut mirror = Mirror::new(&self.audit_dir).unwrap();
        if let Some(every) = checkpoint_every {
            mirror = mirror.with_checkpoints(
                commands::checkpoint_path(&self.audit_dir),
                every,
                &keyring(),
            );
        }
        Writer { conn, mirror }
    }

    /// `audit verify` on the database, the checkpoints and the mirror.
    fn verify(&self) -> Result<commands::VerifySummary, AuditError> {
        let conn = Connection::open(self.db()).unwrap();
        commands::verify(
            &conn,
            &keyring(),
            &self.audit_dir,
            false,
            false,
            &mut Vec::new(),
        )
    }

    fn mirror_lines(&self) -> usize {
        list_mirror_files(&self.audit_dir)
            .unwrap()
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
            .sum()
    }
}

impl Writer {
    /// Commit `n` records in one transaction; return them (not mirrored yet).
    fn commit(&mut self, n: usize) -> Vec<StoredRecord> {
        let kr = keyring();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let records: Vec<_> = (0..n)
            .map(|_| AuditRecord::new(Actor::System, Action::PayloadRead, Outcome::Success))
            .collect();
        let appended = append_all(&tx, &kr, &records).unwrap();
        tx.commit().unwrap();
        appended
    }

    fn mirror(&self, records: &[StoredRecord]) {
        self.mirror.write(&self.conn, records).unwrap();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn two_writers_interleaving_commits_and_mirror_writes_leave_a_mirror_that_verifies() {
    let s = Setup::new();
    let mut server = s.writer(Some(3));
    let mut cli = s.writer(None);

    // The server commits but is slower to mirror than a CLI command that commits after it.
    let server_first = server.commit(3); // 1..=3
    let cli_first = cli.commit(2); // 4..=5
    cli.mirror(&cli_first);
    server.mirror(&server_first);
    // Each mirrors its own, in turn.
    let r = server.commit(3); // 6..=8
    server.mirror(&r);
    let r = cli.commit(1); // 9
    cli.mirror(&r);
    // Both commit, then one catches up (as the admin paths do) before the other writes.
    let server_late = server.commit(1); // 10
    cli.commit(1); // 11
    cli.mirror.catch_up(&cli.conn).unwrap();
    server.mirror(&server_late);
    // A command that committed but died before mirroring: the next writer fills the gap.
    let _lost = cli.commit(2); // 12..=13
    let r = server.commit(2); // 14..=15
    server.mirror(&r);
    cli.mirror(&r);
    // The server stops: its checkpoint names the head, which is in the mirror.
    let cp = server.mirror.checkpoint_now(&server.conn).unwrap().unwrap();
    assert_eq!(cp.seq, 15);

    let summary = s.verify().unwrap();
    let mirror = summary.mirror.unwrap();
    assert_eq!((mirror.first_seq, mirror.last_seq), (Some(1), Some(15)));
    assert_eq!(mirror.records, 15);
    assert!(mirror.checkpoints_matched >= 3, "{mirror:?}");
    assert!(mirror.warnings.is_empty(), "{:?}", mirror.warnings);
    assert_eq!(s.mirror_lines(), 15, "every record exactly once");

    // Mirror files, checkpoints and the lock are owner-only; the folder too.
    assert_eq!(mode(&s.audit_dir) & 0o077, 0);
    for f in std::fs::read_dir(&s.audit_dir).unwrap() {
        let p = f.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn two_writers_racing_on_threads_leave_a_mirror_that_verifies() {
    let s = Setup::new();
    // Create the schema once before the race.
    drop(s.writer(None));
    let run = |checkpoint_every: Option<u64>, seed: usize| {
        let mut w = s.writer(checkpoint_every);
        for i in 0..120 {
            let r = w.commit(1 + (i + seed) % 3);
            if (i + seed) % 7 == 0 {
                w.mirror.catch_up(&w.conn).unwrap();
            } else {
                w.mirror(&r);
            }
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| run(Some(10), 0));
        scope.spawn(|| run(None, 1));
    });

    let summary = s.verify().unwrap();
    let db = summary.database;
    let mirror = summary.mirror.unwrap();
    assert_eq!(mirror.last_seq, db.last_seq);
    assert_eq!(mirror.records, db.records);
    assert!(mirror.checkpoints_matched > 0);
    assert_eq!(s.mirror_lines() as u64, db.records);
}

#[test]
fn an_incomplete_last_line_is_a_write_in_progress_not_tampering() {
    let s = Setup::new();
    let mut w = s.writer(Some(2));
    let r = w.commit(3);
    w.mirror(&r);
    let file = list_mirror_files(&s.audit_dir).unwrap().pop().unwrap();
    // What a reader without the lock can see mid-write, or what a crash mid-write leaves.
    let full = std::fs::read_to_string(&file).unwrap();
    let fragment = &full.lines().next().unwrap()[..40];
    let mut f = crate::fsutil::open_append_private(&file).unwrap();
    std::io::Write::write_all(&mut f, fragment.as_bytes()).unwrap();

    let mirror = s.verify().unwrap().mirror.unwrap();
    assert_eq!(mirror.records, 3);
    assert!(
        mirror
            .warnings
            .iter()
            .any(|w| w.contains("incomplete last line")),
        "{:?}",
        mirror.warnings
    );

    // The next writer cuts the fragment before appending, instead of gluing a record to it.
    let r = w.commit(2);
    w.mirror(&r);
    let mirror = s.verify().unwrap().mirror.unwrap();
    assert_eq!(mirror.records, 5);
    assert!(mirror.warnings.is_empty(), "{:?}", mirror.warnings);
}

#[test]
fn a_clock_stepped_back_never_writes_into_an_older_days_file() {
    let s = Setup::new();
    let mut w = s.writer(None);
    let r = w.commit(2);
    w.mirror(&r);
    // The records so far went into a file of a day after today (the clock was ahead then).
    let today = list_mirror_files(&s.audit_dir).unwrap().pop().unwrap();
    let later = s.audit_dir.join("audit.2999-12-31.jsonl");
    std::fs::rename(&today, &later).unwrap();

    let r = w.commit(2);
    w.mirror(&r);
    assert_eq!(list_mirror_files(&s.audit_dir).unwrap(), vec![later]);
    assert_eq!(s.verify().unwrap().mirror.unwrap().records, 4);
}
