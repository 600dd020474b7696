//! Verification of the database log and the JSONL mirror: walk the chain in order and name the
//! first bad sequence number and what is wrong with it.
//!
//! Both walks stream (constant memory) and share one state machine, [`ChainWalk`], with a
//! one-record lookahead so that "a record is missing here" can be told apart from "two records
//! were swapped" and "an extra record was inserted".

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use super::chain::{StoredRecord, GENESIS_MAC};
use super::checkpoint::{read_checkpoints, Checkpoint};
use super::mirror::{list_mirror_files, JsonLine};
use super::record::Action;
use super::source::{ChainReader, ChainRow, ChainRows};
use super::AuditError;
use crate::crypto::Keyring;

/// How far either side of its position a record with a bad MAC is tried at, to recognise a
/// record that was moved rather than edited.
const REORDER_WINDOW: u64 = 16;

/// What is wrong at the first bad sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The record's content, `prev_mac` or `mac` was altered: its MAC does not verify.
    Modified,
    /// The record's MAC verifies but it does not link to its predecessor.
    BrokenLink,
    /// No record with this sequence number (a gap); `next_found` is what came instead.
    Missing {
        /// The sequence number found in its place, if any.
        next_found: Option<u64>,
    },
    /// An extra record (a forgery or a duplicate) sits where this sequence number belongs.
    Inserted {
        /// The sequence number the extra record claims.
        claimed: u64,
    },
    /// A genuine record from another position sits here: records were swapped or moved.
    Reordered {
        /// The sequence number the record found here really has.
        belongs_at: u64,
    },
    /// A signed checkpoint covers records up to `checkpoint_seq`, but the log ends before it:
    /// the newest records were deleted.
    TruncatedAfterCheckpoint {
        /// The highest checkpointed sequence number.
        checkpoint_seq: u64,
    },
    /// The record at this sequence number differs from the one a signed checkpoint recorded.
    CheckpointMismatch,
    /// A checkpoint line is malformed or not signed with this installation's audit key.
    BadCheckpointSignature {
        /// 1-based line in the checkpoint file.
        line: usize,
    },
    /// The record cannot be read at all (not valid JSON / wrong column types).
    Malformed,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Modified => f.write_str("modified (MAC does not match the record's content)"),
            Self::BrokenLink => f.write_str("modified (prev_mac does not link to the previous record)"),
            Self::Missing { next_found: Some(n) } => {
                write!(f, "missing (gap: the next record present is sequence {n})")
            }
            Self::Missing { next_found: None } => f.write_str("missing"),
            Self::Inserted { claimed } => {
                write!(f, "inserted (an extra record claiming sequence {claimed} is here)")
            }
            Self::Reordered { belongs_at } => {
                write!(f, "reordered (the record of sequence {belongs_at} is here)")
            }
            Self::TruncatedAfterCheckpoint { checkpoint_seq } => write!(
                f,
                "truncated after checkpoint (a signed checkpoint covers up to sequence {checkpoint_seq})"
            ),
            Self::CheckpointMismatch => f.write_str("modified (differs from the signed checkpoint)"),
            Self::BadCheckpointSignature { line } => {
                write!(f, "bad checkpoint signature (checkpoint file line {line})")
            }
            Self::Malformed => f.write_str("modified (record unreadable)"),
        }
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records whose MAC and link verified.
    pub records: u64,
    /// First sequence number present (1 unless purged or a partial mirror).
    pub first_seq: Option<u64>,
    /// Last sequence number present.
    pub last_seq: Option<u64>,
    /// MAC of the last record.
    pub head_mac: Option<String>,
    /// Checkpoints that matched a record.
    pub checkpoints_matched: usize,
    /// Highest checkpointed sequence number, if any.
    pub last_checkpoint_seq: Option<u64>,
    /// Things an auditor should know that are not failures (e.g. no checkpoint file).
    pub warnings: Vec<String>,
}

/// Where an audit purge cut the chain: the chain may start at `through_seq + 1` with
/// `prev_mac == mac`. Taken from the newest `audit_purged` record, which is itself MAC'd.
#[derive(Debug, Clone)]
struct Anchor {
    through_seq: u64,
    mac: String,
}

fn anchor_from_detail(detail: &str) -> Option<Anchor> {
    let v: serde_json::Value = serde_json::from_str(detail).ok()?;
    Some(Anchor {
        through_seq: v.get("through_seq")?.as_u64()?,
        mac: v.get("anchor_mac")?.as_str()?.to_owned(),
    })
}

/// One item of a walk: a readable record, or an unreadable one.
enum Entry {
    Record {
        rec: Box<StoredRecord>,
        location: String,
    },
    Malformed {
        location: String,
    },
}

fn fail(seq: u64, problem: Problem, location: impl Into<String>) -> AuditError {
    AuditError::VerifyFailed {
        seq,
        problem,
        location: location.into(),
    }
}

/// The shared chain walk.
fn walk<I>(
    keyring: &Keyring,
    mut it: Peekable<I>,
    anchor: Option<Anchor>,
    checkpoints: &[Checkpoint],
    allow_partial_start: bool,
    genesis: &str,
) -> Result<VerifyReport, AuditError>
where
    I: Iterator<Item = Result<Entry, AuditError>>,
{
    let mut report = VerifyReport {
        last_checkpoint_seq: checkpoints.last().map(|c| c.seq),
        ..VerifyReport::default()
    };
    let start_expected = anchor.as_ref().map_or(1, |a| a.through_seq + 1);
    let (mut expected, mut prev_mac) = match it.peek() {
        None => (start_expected, genesis.to_owned()),
        Some(Err(_)) => match it.next() {
            Some(Err(e)) => return Err(e),
            _ => unreachable!("peeked an error"),
        },
        Some(Ok(Entry::Malformed { location })) => {
            return Err(fail(1, Problem::Malformed, location.clone()))
        }
        Some(Ok(Entry::Record { rec, location })) => {
            if rec.seq == 1 {
                (1, genesis.to_owned())
            } else if let Some(a) = anchor.as_ref().filter(|a| a.through_seq + 1 == rec.seq) {
                (rec.seq, a.mac.clone())
            } else if allow_partial_start {
                report.warnings.push(format!(
                    "verification starts at sequence {} (earlier records not present)",
                    rec.seq
                ));
                (rec.seq, rec.prev_mac.clone())
            } else {
                return Err(fail(
                    start_expected,
                    Problem::Missing {
                        next_found: Some(rec.seq),
                    },
                    location.clone(),
                ));
            }
        }
    };
    let mut cp_idx = 0;
    while let Some(item) = it.next() {
        let (rec, location) = match item? {
            Entry::Malformed { location } => {
                return Err(fail(expected, Problem::Malformed, location))
            }
            Entry::Record { rec, location } => (*rec, location),
        };
        if rec.seq > expected {
            let swapped =
                matches!(it.peek(), Some(Ok(Entry::Record { rec: n, .. })) if n.seq == expected);
            let problem = if swapped {
                Problem::Reordered {
                    belongs_at: rec.seq,
                }
            } else {
                Problem::Missing {
                    next_found: Some(rec.seq),
                }
            };
            return Err(fail(expected, problem, location));
        }
        if rec.seq < expected {
            return Err(fail(
                expected,
                Problem::Inserted { claimed: rec.seq },
                location,
            ));
        }
        if !rec.mac_valid_at(keyring, expected) {
            let lo = expected.saturating_sub(REORDER_WINDOW).max(1);
            let moved = (lo..=expected + REORDER_WINDOW)
                .find(|&s| s != expected && rec.mac_valid_at(keyring, s));
            let problem = if let Some(s) = moved {
                Problem::Reordered { belongs_at: s }
            } else if matches!(it.peek(), Some(Ok(Entry::Record { rec: n, .. })) if n.prev_mac == prev_mac)
            {
                Problem::Inserted { claimed: rec.seq }
            } else {
                Problem::Modified
            };
            return Err(fail(expected, problem, location));
        }
        if rec.prev_mac != prev_mac {
            return Err(fail(expected, Problem::BrokenLink, location));
        }
        while let Some(cp) = checkpoints.get(cp_idx) {
            if cp.seq < expected {
                cp_idx += 1;
            } else if cp.seq == expected {
                if cp.mac != rec.mac {
                    return Err(fail(expected, Problem::CheckpointMismatch, location));
                }
                report.checkpoints_matched += 1;
                cp_idx += 1;
            } else {
                break;
            }
        }
        report.records += 1;
        report.first_seq.get_or_insert(expected);
        report.last_seq = Some(expected);
        expected += 1;
        prev_mac = rec.mac;
    }
    if let Some(cp) = checkpoints.last().filter(|c| c.seq >= expected) {
        return Err(fail(
            expected,
            Problem::TruncatedAfterCheckpoint {
                checkpoint_seq: cp.seq,
            },
            "end of log",
        ));
    }
    if report.records > 0 {
        report.head_mac = Some(prev_mac);
    }
    Ok(report)
}

fn load_checkpoints(
    path: Option<&Path>,
    keyring: &Keyring,
    report_warnings: &mut Vec<String>,
) -> Result<Vec<Checkpoint>, AuditError> {
    let Some(path) = path else {
        report_warnings.push(
            "no checkpoint file given: deletion of the newest records cannot be detected".into(),
        );
        return Ok(Vec::new());
    };
    if !path.exists() {
        report_warnings.push(format!(
            "checkpoint file {} does not exist: deletion of the newest records cannot be detected",
            path.display()
        ));
    }
    match read_checkpoints(path, keyring)? {
        Ok(cps) => Ok(cps),
        Err(bad) => Err(fail(
            bad.seq.unwrap_or(0),
            Problem::BadCheckpointSignature { line: bad.line },
            path.display().to_string(),
        )),
    }
}

/// Verify the database log: every record's MAC and link, the purge anchor, and every signed
/// checkpoint in `checkpoint_path`. Fails with [`AuditError::VerifyFailed`] naming the first bad
/// sequence number.
pub fn verify_db(
    chain: &(impl ChainReader + ?Sized),
    keyring: &Keyring,
    checkpoint_path: Option<&Path>,
) -> Result<VerifyReport, AuditError> {
    let mut warnings = Vec::new();
    // Checkpoints first: they are only written after their records committed, so the snapshot
    // taken below contains every record they mention.
    let checkpoints = load_checkpoints(checkpoint_path, keyring, &mut warnings)?;
    // One read snapshot for the anchor query and the walk, so a purge committed in between
    // cannot make a good log look broken.
    let mut report = chain.in_snapshot(&mut || verify_db_snapshot(chain, keyring, &checkpoints))?;
    report.warnings.splice(0..0, warnings);
    Ok(report)
}

fn verify_db_snapshot(
    chain: &(impl ChainReader + ?Sized),
    keyring: &Keyring,
    checkpoints: &[Checkpoint],
) -> Result<VerifyReport, AuditError> {
    let anchor = chain
        .purge_anchor_detail()?
        .and_then(|d| anchor_from_detail(&d));
    let location = chain.location();
    let rows = ChainRows::new(chain).map(|r| {
        r.map(|row| match row {
            ChainRow::Record(rec) => Entry::Record {
                rec,
                location: location.clone(),
            },
            ChainRow::Malformed => Entry::Malformed {
                location: location.clone(),
            },
        })
    });
    walk(
        keyring,
        rows.peekable(),
        anchor,
        checkpoints,
        false,
        &chain.genesis(),
    )
}

/// Verify one chain fed record by record (the PostgreSQL backend streams each node's chain from
/// an async task): `records` in `seq` order, the first linking to `genesis`. `location` names
/// the chain in the error. No purge anchor and no checkpoints.
pub(crate) fn verify_chain<I>(
    keyring: &Keyring,
    records: I,
    genesis: &str,
    location: &str,
) -> Result<VerifyReport, AuditError>
where
    I: Iterator<Item = Result<StoredRecord, AuditError>>,
{
    let entries = records.map(|r| {
        r.map(|rec| Entry::Record {
            rec: Box::new(rec),
            location: location.to_owned(),
        })
    });
    walk(keyring, entries.peekable(), None, &[], false, genesis)
}

/// Streams every line of the mirror files in name (= date) order. A file's last line without
/// its newline is a write in progress (a writer holds the mirror lock; this reader does not)
/// or one a crash cut short: it is not a record yet, so it is noted in `warnings` and skipped.
struct JsonlEntries<'w> {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, BufReader<File>, usize)>,
    warnings: &'w mut Vec<String>,
}

impl<'w> JsonlEntries<'w> {
    fn new(files: Vec<PathBuf>, warnings: &'w mut Vec<String>) -> Self {
        Self {
            files: files.into_iter(),
            current: None,
            warnings,
        }
    }
}

impl Iterator for JsonlEntries<'_> {
    type Item = Result<Entry, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let path = self.files.next()?;
                match File::open(&path) {
                    Ok(f) => self.current = Some((path, BufReader::new(f), 0)),
                    Err(e) => return Some(Err(AuditError::io(path, e))),
                }
            }
            let (path, reader, line_no) = self.current.as_mut()?;
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Err(e) => return Some(Err(AuditError::io(path.clone(), e))),
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(_) if buf.last() != Some(&b'\n') => {
                    self.warnings.push(format!(
                        "{}:{}: incomplete last line (being written, or cut short by a crash) not counted",
                        path.display(),
                        *line_no + 1
                    ));
                    self.current = None;
                    continue;
                }
                Ok(_) => {
                    *line_no += 1;
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let location = format!("{}:{}", path.display(), line_no);
                    let parsed = std::str::from_utf8(&buf)
                        .ok()
                        .and_then(|s| JsonLine::parse(s.trim_end_matches(['\n', '\r'])));
                    return Some(Ok(match parsed {
                        Some(rec) => Entry::Record {
                            rec: Box::new(rec),
                            location,
                        },
                        None => Entry::Malformed { location },
                    }));
                }
            }
        }
    }
}

/// Verify the JSONL mirror in `dir` independently of the database (e.g. on the SIEM side, with
/// the same master key). Safe while writers append: the checkpoints are read first, and a
/// checkpoint is only written after the lines it covers; an incomplete last line is skipped
/// with a warning. `allow_partial_start` accepts files whose first record is not the start
/// of the chain (older files archived away); otherwise that is reported as missing records.
pub fn verify_jsonl(
    dir: &Path,
    keyring: &Keyring,
    checkpoint_path: Option<&Path>,
    allow_partial_start: bool,
) -> Result<VerifyReport, AuditError> {
    verify_jsonl_from(
        dir,
        keyring,
        checkpoint_path,
        allow_partial_start,
        GENESIS_MAC,
    )
}

/// [`verify_jsonl`] for a chain whose first record links to `genesis` (a PostgreSQL node's).
pub(crate) fn verify_jsonl_from(
    dir: &Path,
    keyring: &Keyring,
    checkpoint_path: Option<&Path>,
    allow_partial_start: bool,
    genesis: &str,
) -> Result<VerifyReport, AuditError> {
    let mut warnings = Vec::new();
    let checkpoints = load_checkpoints(checkpoint_path, keyring, &mut warnings)?;
    let files = list_mirror_files(dir)?;
    if files.is_empty() {
        warnings.push(format!("no audit mirror files in {}", dir.display()));
    }
    // First pass: the newest purge anchor (purge records are MAC-checked in the second pass).
    let mut anchor = None;
    let mut first_pass_warnings = Vec::new();
    for entry in JsonlEntries::new(files.clone(), &mut first_pass_warnings) {
        if let Entry::Record { rec, .. } = entry? {
            if rec.action == Action::AuditPurged.as_str() {
                if let Some(a) = anchor_from_detail(&rec.detail) {
                    anchor = Some(a);
                }
            }
        }
    }
    let mut line_warnings = Vec::new();
    let mut report = walk(
        keyring,
        JsonlEntries::new(files, &mut line_warnings).peekable(),
        anchor,
        &checkpoints,
        allow_partial_start,
        genesis,
    )?;
    warnings.extend(line_warnings);
    report.warnings.splice(0..0, warnings);
    Ok(report)
}
