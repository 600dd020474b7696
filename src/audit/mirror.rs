//! The JSONL mirror: every committed record appended, in sequence order, to daily files
//! `audit.YYYY-MM-DD.jsonl` (UTC date) for shipping to a SIEM, plus periodic signed checkpoints.
//!
//! Several processes write it at once: the server (intake writer, dispatch workers, console)
//! and every CLI command that audits something (`deliveries show`, `dlq retry`, `tokens
//! create`, `backup`, …). A per-process "last sequence written" goes stale as soon as another
//! process appends, which once produced duplicated and out-of-order lines that `audit verify`
//! reported as tampering. So every write follows one protocol, with no state trusted across it:
//!
//! 1. take an exclusive `flock` on `mirror.lock` in the mirror folder (threads of one process
//!    also queue on a mutex);
//! 2. read the last complete line of the newest file: the last mirrored sequence number;
//! 3. append every committed record after it, in order: the caller's own records when they
//!    follow directly, otherwise read from the database (SQLite assigns `seq` inside the write
//!    transaction, so once the caller's records have committed, every lower one has too);
//! 4. when a checkpoint is due, fsync the mirror file, sign the last mirrored record (its MAC
//!    as the database has it) and append the checkpoint;
//! 5. release the lock.
//!
//! So each record is mirrored once, in place, by whichever process gets there first, and a
//! process that died between its commit and its mirror write leaves a gap the next writer
//! fills. A checkpoint only ever names a record already in the mirror, and never one older
//! than the newest checkpoint. The database stays the source of truth.
//!
//! Lines are written whole, one `write` each batch, to files opened in append mode and kept
//! `0600`; the day's file is chosen under the lock, so all processes agree on it (and a clock
//! stepping back never writes into an older day's file). Each line ends in `\n`: a last line
//! without it is a write in progress or one cut short by a crash; the next writer removes such
//! a fragment before appending, and readers ignore it.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ed25519_dalek::SigningKey;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::chain::StoredRecord;
use super::checkpoint::{append_checkpoint, Checkpoint};
use super::record::canonical_json;
use super::source::{ChainReader, ChainRow};
use super::tail::{complete_len, last_lines, FileState};
use super::AuditError;
use crate::crypto::Keyring;
use crate::fsutil::{create_private_dir_all, open_append_private};

const PREFIX: &str = "audit";
const SUFFIX: &str = "jsonl";
/// The lock every mirror and checkpoint writer holds, in the mirror folder.
const LOCK_FILE: &str = "mirror.lock";
/// Most records one locked step copies from the database, so no process holds the lock (and
/// with it the server's intake writer) for long; [`Mirror::catch_up`] loops over steps.
const STEP_RECORDS: usize = 4096;
/// Records per `write` call while copying from the database.
const CHUNK_RECORDS: usize = 256;

/// One mirror (and JSONL export) line: the stored record with `detail` as a JSON object so a
/// SIEM can index it. `v` versions the line format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonLine {
    v: u32,
    /// The PostgreSQL node whose chain holds the record (exports of a cluster only; a mirror
    /// is one node's chain and leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    seq: u64,
    ts: String,
    actor: String,
    action: String,
    outcome: String,
    delivery_id: Option<String>,
    source: Option<String>,
    call_ref: Option<String>,
    remote_addr: Option<String>,
    detail: serde_json::Value,
    prev_mac: String,
    mac: String,
}

/// [`JsonLine`] borrowed from a stored record, for writing: the same fields in the same order.
#[derive(Serialize)]
struct JsonLineRef<'a> {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    seq: u64,
    ts: &'a str,
    actor: &'a str,
    action: &'a str,
    outcome: &'a str,
    delivery_id: Option<&'a str>,
    source: Option<&'a str>,
    call_ref: Option<&'a str>,
    remote_addr: Option<&'a str>,
    detail: LineDetail<'a>,
    prev_mac: &'a str,
    mac: &'a str,
}

/// A line's `detail`: the stored JSON as it is, or (tampered, not JSON) the stored text.
#[derive(Serialize)]
#[serde(untagged)]
enum LineDetail<'a> {
    Json(&'a serde_json::value::RawValue),
    Text(&'a str),
}

impl JsonLine {
    /// The line for `r` of `node`'s chain, without trailing newline.
    pub(crate) fn render_on(node: Option<&str>, r: &StoredRecord) -> String {
        let mut out = Vec::with_capacity(256 + r.detail.len());
        Self::render_into(&mut out, node, r);
        // serde_json writes UTF-8 only.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Append the line for `r` of `node`'s chain, without trailing newline, to `out`: the
    /// fields of [`JsonLine`] in its order, borrowed from `r`, with the stored detail (canonical
    /// JSON already) copied in as it is rather than parsed into a tree and printed again.
    pub(crate) fn render_into(out: &mut Vec<u8>, node: Option<&str>, r: &StoredRecord) {
        // A stored detail that is not JSON can only come from tampering; mirror it as a
        // string so verification still fails at exactly this record.
        let detail = match serde_json::from_str::<&serde_json::value::RawValue>(&r.detail) {
            Ok(raw) => LineDetail::Json(raw),
            Err(_) => LineDetail::Text(&r.detail),
        };
        let line = JsonLineRef {
            v: 1,
            node,
            seq: r.seq,
            ts: &r.ts,
            actor: &r.actor,
            action: &r.action,
            outcome: &r.outcome,
            delivery_id: r.delivery_id.as_deref(),
            source: r.source.as_deref(),
            call_ref: r.call_ref.as_deref(),
            remote_addr: r.remote_addr.as_deref(),
            detail,
            prev_mac: &r.prev_mac,
            mac: &r.mac,
        };
        // Writing to a Vec cannot fail, and every field serializes.
        let _ = serde_json::to_writer(out, &line);
    }

    /// Parse a line back into the stored form; `None` if it is not a valid v1 line.
    pub(crate) fn parse(s: &str) -> Option<StoredRecord> {
        let l: Self = serde_json::from_str(s).ok()?;
        if l.v != 1 || !l.detail.is_object() {
            return None;
        }
        Some(StoredRecord {
            seq: l.seq,
            ts: l.ts,
            actor: l.actor,
            action: l.action,
            outcome: l.outcome,
            delivery_id: l.delivery_id,
            source: l.source,
            call_ref: l.call_ref,
            remote_addr: l.remote_addr,
            detail: canonical_json(&l.detail),
            prev_mac: l.prev_mac,
            mac: l.mac,
        })
    }
}

/// The mirror files in `dir`, oldest first (the date in the name sorts lexically).
pub(crate) fn list_mirror_files(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{PREFIX}.")) && name.ends_with(&format!(".{SUFFIX}")) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The day's file name for `date` (UTC), e.g. `audit.2026-11-22.jsonl`.
fn day_file(dir: &Path, date: chrono::NaiveDate) -> PathBuf {
    dir.join(format!("{PREFIX}.{}.{SUFFIX}", date.format("%Y-%m-%d")))
}

/// True for `audit.YYYY-MM-DD.jsonl`: only such files are ever appended to.
fn is_day_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!("{PREFIX}.")))
        .and_then(|n| n.strip_suffix(&format!(".{SUFFIX}")))
        .is_some_and(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
}

/// The last record in `file` before `end` (a complete-line boundary), if any line parses.
fn last_record_in(file: &mut File, end: u64) -> std::io::Result<Option<StoredRecord>> {
    Ok(last_lines(file, end)?
        .iter()
        .find_map(|l| JsonLine::parse(l)))
}

/// Take the exclusive lock, waiting for it; a signal interrupting the wait retries.
fn lock_exclusive(mut file: File) -> std::io::Result<Flock<File>> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(guard) => return Ok(guard),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e.into()),
        }
    }
}

struct CheckpointPolicy {
    path: PathBuf,
    every: u64,
    key: SigningKey,
}

/// What a process remembers between locked steps. Each entry is only trusted while the file it
/// describes is unchanged (same inode, same length): another process appending invalidates it.
#[derive(Default)]
struct MirrorState {
    /// The lock file, kept open between steps.
    lock_file: Option<File>,
    /// (file appended to, its state after our last look, the last sequence number mirrored).
    tail: Option<(PathBuf, FileState, Option<u64>)>,
    /// (checkpoint file state, the newest checkpointed sequence number in it).
    checkpoint: Option<(FileState, Option<u64>)>,
}

/// What one locked step did.
struct Step {
    /// Records appended by this step.
    written: u64,
    /// The checkpoint the step wrote, if one was due.
    checkpoint: Option<Checkpoint>,
}

/// Appends committed records to the daily JSONL files and, optionally, writes a signed
/// checkpoint every N records, following the protocol in the module documentation. Share one
/// `Mirror` per process (it is `Sync`); several processes each have their own.
pub struct Mirror {
    dir: PathBuf,
    lock_path: PathBuf,
    checkpoints: Option<CheckpointPolicy>,
    state: Mutex<MirrorState>,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("dir", &self.dir)
            .field(
                "checkpoint_path",
                &self.checkpoints.as_ref().map(|c| &c.path),
            )
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Open (creating if needed, `0700`) the mirror directory and its lock file.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, AuditError> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = open_append_private(&lock_path).map_err(|e| AuditError::MirrorInit {
            path: lock_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            dir,
            lock_path,
            checkpoints: None,
            state: Mutex::new(MirrorState {
                lock_file: Some(lock_file),
                ..MirrorState::default()
            }),
        })
    }

    /// Also write a signed checkpoint to `path` whenever the mirror has grown `every` records
    /// past the newest checkpoint in that file (whichever process mirrored them). `every` of 0
    /// is treated as 1.
    pub fn with_checkpoints(
        mut self,
        path: impl AsRef<Path>,
        every: u64,
        keyring: &Keyring,
    ) -> Self {
        self.checkpoints = Some(CheckpointPolicy {
            path: path.as_ref().to_path_buf(),
            every: every.max(1),
            key: keyring.audit_signing_key(),
        });
        self
    }

    /// The mirror directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mirror `records`, which must have **committed** on `conn`'s database, and any committed
    /// record before them that is not mirrored yet. Records already mirrored (by this or any
    /// other process) are skipped, so a retry after an error is harmless. A large backlog is
    /// copied at most [`STEP_RECORDS`] at a time; the rest follows on later calls. With no
    /// records (a batch that audited nothing) there is nothing to do.
    pub fn write(
        &self,
        conn: &(impl ChainReader + ?Sized),
        records: &[StoredRecord],
    ) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        self.locked(|st| self.step(st, conn, records, false).map(|_| ()))
    }

    /// Mirror every committed record newer than the mirror's last line (at start-up, and after
    /// each audited command: a crash between a commit and its mirror write leaves such
    /// records). Returns how many this call wrote.
    pub fn catch_up(&self, conn: &(impl ChainReader + ?Sized)) -> Result<u64, AuditError> {
        let mut total = 0;
        loop {
            let step = self.locked(|st| self.step(st, conn, &[], false))?;
            total += step.written;
            if step.written < STEP_RECORDS as u64 {
                return Ok(total);
            }
        }
    }

    /// Catch up, then write a checkpoint of the last mirrored record now (at start and stop).
    /// Returns `None` if nothing is mirrored or no checkpoint file is configured.
    pub fn checkpoint_now(
        &self,
        conn: &(impl ChainReader + ?Sized),
    ) -> Result<Option<Checkpoint>, AuditError> {
        if self.checkpoints.is_none() {
            return Ok(None);
        }
        self.catch_up(conn)?;
        self.locked(|st| Ok(self.step(st, conn, &[], true)?.checkpoint))
    }

    /// Run `f` holding the in-process mutex and the cross-process file lock.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut MirrorState) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match st.lock_file.take() {
            Some(file) => file,
            None => open_append_private(&self.lock_path)
                .map_err(|e| AuditError::io(&self.lock_path, e))?,
        };
        let guard = lock_exclusive(file).map_err(|e| AuditError::io(&self.lock_path, e))?;
        let result = f(&mut st);
        if result.is_err() {
            // Whatever failed may have left a file in a state the caches do not describe.
            st.tail = None;
            st.checkpoint = None;
        }
        st.lock_file = match guard.unlock() {
            Ok(file) => Some(file),
            Err((guard, e)) => {
                tracing::warn!(error = %e, "cannot release the audit mirror lock; closing it");
                drop(guard);
                None
            }
        };
        result
    }

    /// The file to append to: today's (UTC), or a newer day's file if one exists (the clock
    /// was stepped back), so lines never go into a file older than one already written.
    fn target_file(&self) -> Result<PathBuf, AuditError> {
        let today = day_file(&self.dir, chrono::Utc::now().date_naive());
        let newest = list_mirror_files(&self.dir)?
            .into_iter()
            .rfind(|p| is_day_file(p));
        Ok(newest.filter(|n| *n > today).unwrap_or(today))
    }

    /// The last mirrored record's sequence number: the last complete line of `target` (whose
    /// complete part ends at `end`), else of the newest older file that has one.
    fn last_mirrored(
        &self,
        target: &Path,
        file: &mut File,
        end: u64,
    ) -> Result<Option<u64>, AuditError> {
        if let Some(r) = last_record_in(file, end).map_err(|e| AuditError::io(target, e))? {
            return Ok(Some(r.seq));
        }
        for path in list_mirror_files(&self.dir)?.iter().rev() {
            if path.as_path() >= target {
                continue;
            }
            let io = |e| AuditError::io(path, e);
            let mut older = File::open(path).map_err(io)?;
            let len = older.metadata().map_err(io)?.len();
            let end = complete_len(&mut older, len).map_err(io)?;
            if let Some(r) = last_record_in(&mut older, end).map_err(io)? {
                return Ok(Some(r.seq));
            }
        }
        Ok(None)
    }

    /// One locked step of the protocol: find the last mirrored record, append what follows it
    /// (`own` when it follows directly, else up to [`STEP_RECORDS`] from the database), then
    /// write a checkpoint if one is due.
    fn step(
        &self,
        st: &mut MirrorState,
        conn: &(impl ChainReader + ?Sized),
        own: &[StoredRecord],
        force_checkpoint: bool,
    ) -> Result<Step, AuditError> {
        let target = self.target_file()?;
        let io = |e| AuditError::io(&target, e);
        let mut file = open_append_private(&target).map_err(io)?;
        let mut state = FileState::of(&file).map_err(io)?;
        let last = match &st.tail {
            Some((path, known, seq)) if *path == target && *known == state => *seq,
            _ => {
                let end = complete_len(&mut file, state.len).map_err(io)?;
                if end < state.len {
                    // A fragment a crash left: appending after it would glue it to a record.
                    file.set_len(end).map_err(io)?;
                    state = FileState::of(&file).map_err(io)?;
                }
                self.last_mirrored(&target, &mut file, end)?
            }
        };
        let after = last.unwrap_or(0);
        let pending: Vec<&StoredRecord> = own.iter().filter(|r| r.seq > after).collect();
        let follows_directly = pending.first().is_some_and(|r| r.seq == after + 1)
            && pending.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        let mut written = 0u64;
        let mut newest: Option<StoredRecord> = None;
        if follows_directly {
            let mut lines = Vec::with_capacity(pending.len() * 768);
            for r in &pending {
                push_line(&mut lines, r);
            }
            file.write_all(&lines).map_err(io)?;
            written = pending.len() as u64;
            newest = pending.last().map(|r| (*r).clone());
        } else if pending.is_empty() && !own.is_empty() {
            // Another process already mirrored the caller's records (and all before them).
        } else {
            let rows = conn.rows_after(after, STEP_RECORDS)?;
            let mut chunk = Vec::new();
            let mut in_chunk = 0;
            for row in rows {
                let ChainRow::Record(r) = row else {
                    return Err(AuditError::InvalidField {
                        field: "stored audit record",
                        rule: "readable (the row's columns were altered)",
                    });
                };
                let r = *r;
                push_line(&mut chunk, &r);
                in_chunk += 1;
                written += 1;
                newest = Some(r);
                if in_chunk == CHUNK_RECORDS {
                    file.write_all(&chunk).map_err(io)?;
                    chunk.clear();
                    in_chunk = 0;
                }
            }
            file.write_all(&chunk).map_err(io)?;
        }
        let last = newest.as_ref().map(|r| r.seq).or(last);
        if written > 0 {
            state = FileState::of(&file).map_err(io)?;
        }
        st.tail = Some((target.clone(), state, last));
        let checkpoint = match last {
            Some(head) => {
                let mac = newest.filter(|r| r.seq == head).map(|r| r.mac);
                self.checkpoint_if_due(st, conn, &file, &target, head, mac, force_checkpoint)?
            }
            None => None,
        };
        Ok(Step {
            written,
            checkpoint,
        })
    }

    /// With a checkpoint policy: sign the last mirrored record `head` when the mirror has grown
    /// `every` records past the newest checkpoint (or `force`), never naming a record older
    /// than that checkpoint. The mirror file is fsync'd first, so a checkpoint never survives a
    /// power cut that the lines it covers did not.
    #[allow(clippy::too_many_arguments)]
    fn checkpoint_if_due(
        &self,
        st: &mut MirrorState,
        conn: &(impl ChainReader + ?Sized),
        mirror_file: &File,
        mirror_path: &Path,
        head: u64,
        mac: Option<String>,
        force: bool,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let Some(policy) = &self.checkpoints else {
            return Ok(None);
        };
        let newest = self.newest_checkpoint(st, &policy.path)?;
        let due = match newest {
            None => force || head >= policy.every,
            Some(c) if head < c => false,
            Some(c) => force || head - c >= policy.every,
        };
        if !due {
            return Ok(None);
        }
        // The MAC as the database has it: a checkpoint vouches for the database's record.
        let mac = match mac {
            Some(m) => m,
            None => {
                let Some(m) = conn.mac_at(head)? else {
                    // Purged from the database since it was mirrored: nothing to vouch for.
                    return Ok(None);
                };
                m
            }
        };
        mirror_file
            .sync_data()
            .map_err(|e| AuditError::io(mirror_path, e))?;
        let cp = Checkpoint::sign(&policy.key, head, &mac);
        let state = append_checkpoint(&policy.path, &cp)?;
        st.checkpoint = Some((state, Some(head)));
        Ok(Some(cp))
    }

    /// The highest sequence number among the last checkpoints in `path` (cached while the file
    /// is unchanged). Lines that do not parse are left to `audit verify` to report.
    fn newest_checkpoint(
        &self,
        st: &mut MirrorState,
        path: &Path,
    ) -> Result<Option<u64>, AuditError> {
        let io = |e| AuditError::io(path, e);
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let state = FileState::of(&file).map_err(io)?;
        if let Some((known, seq)) = &st.checkpoint {
            if *known == state {
                return Ok(*seq);
            }
        }
        let end = complete_len(&mut file, state.len).map_err(io)?;
        let seq = last_lines(&mut file, end)
            .map_err(io)?
            .iter()
            .filter_map(|l| serde_json::from_str::<Checkpoint>(l).ok())
            .map(|c| c.seq)
            .max();
        st.checkpoint = Some((state, seq));
        Ok(seq)
    }
}

/// Append `r` as one mirror line, with its newline, to `out`.
fn push_line(out: &mut Vec<u8>, r: &StoredRecord) {
    JsonLine::render_into(out, None, r);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(detail: &str) -> StoredRecord {
        StoredRecord {
            seq: 7,
            ts: "2026-12-04T10:00:00.000001Z".into(),
            actor: "sender:demo".into(),
            action: "delivery_received".into(),
            outcome: "accepted".into(),
            delivery_id: Some("01890a5d-ac96-774b-bcce-b302099a8057".into()),
            source: Some("demo".into()),
            call_ref: None,
            remote_addr: Some("127.0.0.1".into()),
            detail: detail.into(),
            prev_mac: "ab".repeat(32),
            mac: "cd".repeat(32),
        }
    }

    /// The line as the owned form serializes it, the stored detail parsed into a tree.
    fn through_tree(node: Option<&str>, r: &StoredRecord) -> String {
        let line = JsonLine {
            v: 1,
            node: node.map(str::to_owned),
            seq: r.seq,
            ts: r.ts.clone(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            outcome: r.outcome.clone(),
            delivery_id: r.delivery_id.clone(),
            source: r.source.clone(),
            call_ref: r.call_ref.clone(),
            remote_addr: r.remote_addr.clone(),
            detail: serde_json::from_str(&r.detail)
                .unwrap_or_else(|_| serde_json::Value::String(r.detail.clone())),
            prev_mac: r.prev_mac.clone(),
            mac: r.mac.clone(),
        };
        serde_json::to_string(&line).expect("serializes")
    }

    #[test]
    fn a_line_is_the_bytes_of_the_record_serialized_whole() {
        let canonical = canonical_json(&serde_json::json!({
            "jobs": 2, "key_id": 3, "note": "quote \" backslash \\ tab \t é 🙂",
            "nested": {"z": [1, 2.5, null, true], "a": "x"}
        }));
        for node in [None, Some("node-b")] {
            let r = record(&canonical);
            let line = JsonLine::render_on(node, &r);
            assert_eq!(line, through_tree(node, &r));
            assert_eq!(JsonLine::parse(&line), Some(r));
        }
    }

    #[test]
    fn a_detail_that_is_not_json_is_mirrored_as_a_string_and_never_parses_back() {
        let r = record("{not json");
        let line = JsonLine::render_on(None, &r);
        assert_eq!(line, through_tree(None, &r));
        assert!(line.contains(r#""detail":"{not json""#), "{line}");
        assert_eq!(JsonLine::parse(&line), None);
    }
}
