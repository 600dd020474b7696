//! The JSONL mirror: every committed record appended to daily files `audit.YYYY-MM-DD.jsonl`
//! for shipping to a SIEM, plus periodic signed checkpoints.
//!
//! Uses `tracing-appender`'s [`RollingFileAppender`] as a plain blocking [`Write`] sink: each
//! record is one `write` of one complete line, so nothing is buffered in memory or dropped under
//! load (the `non_blocking` wrapper would drop lines when its queue fills). The database stays
//! the source of truth; [`Mirror::catch_up`] refills lines lost to a crash between commit and
//! mirror write.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tracing_appender::rolling::{RollingFileAppender, Rotation};

use super::chain::{StoredRecord, COLUMNS};
use super::checkpoint::{append_checkpoint, Checkpoint};
use super::record::canonical_json;
use super::AuditError;
use crate::crypto::Keyring;

const PREFIX: &str = "audit";
const SUFFIX: &str = "jsonl";

/// One mirror (and JSONL export) line: the stored record with `detail` as a JSON object so a
/// SIEM can index it. `v` versions the line format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonLine {
    v: u32,
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

impl JsonLine {
    /// The line for `r`, without trailing newline.
    pub(crate) fn render(r: &StoredRecord) -> String {
        let line = Self {
            v: 1,
            seq: r.seq,
            ts: r.ts.clone(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            outcome: r.outcome.clone(),
            delivery_id: r.delivery_id.clone(),
            source: r.source.clone(),
            call_ref: r.call_ref.clone(),
            remote_addr: r.remote_addr.clone(),
            // A stored detail that is not JSON can only come from tampering; mirror it as a
            // string so verification still fails at exactly this record.
            detail: serde_json::from_str(&r.detail)
                .unwrap_or_else(|_| serde_json::Value::String(r.detail.clone())),
            prev_mac: r.prev_mac.clone(),
            mac: r.mac.clone(),
        };
        serde_json::to_string(&line).unwrap_or_default()
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

/// The sequence number of the last complete line in the newest non-empty mirror file.
fn last_mirrored_seq(dir: &Path) -> Result<Option<u64>, AuditError> {
    for path in list_mirror_files(dir)?.iter().rev() {
        let mut f = std::fs::File::open(path).map_err(|e| AuditError::io(path, e))?;
        let len = f.metadata().map_err(|e| AuditError::io(path, e))?.len();
        // A record line is well under 2 KiB; 64 KiB from the end always holds the last one.
        let start = len.saturating_sub(64 * 1024);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| AuditError::io(path, e))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)
            .map_err(|e| AuditError::io(path, e))?;
        let text = String::from_utf8_lossy(&tail);
        if let Some(rec) = text.lines().rev().find_map(JsonLine::parse) {
            return Ok(Some(rec.seq));
        }
    }
    Ok(None)
}

struct CheckpointPolicy {
    path: PathBuf,
    every: u64,
    key: SigningKey,
}

struct MirrorState {
    appender: RollingFileAppender,
    last_seq: Option<u64>,
    since_checkpoint: u64,
}

/// Appends committed records to the daily JSONL files and, optionally, writes a signed
/// checkpoint every N records. Share one `Mirror` per process (it is `Sync`).
pub struct Mirror {
    dir: PathBuf,
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
    /// Open (creating if needed) the mirror directory. Remembers the last sequence number
    /// already mirrored, so records are never written twice.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, AuditError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let appender = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(PREFIX)
            .filename_suffix(SUFFIX)
            .build(&dir)
            .map_err(|e| AuditError::MirrorInit {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        let last_seq = last_mirrored_seq(&dir)?;
        Ok(Self {
            dir,
            checkpoints: None,
            state: Mutex::new(MirrorState {
                appender,
                last_seq,
                since_checkpoint: 0,
            }),
        })
    }

    /// Also write a signed checkpoint to `path` after every `every` mirrored records (at the
    /// end of the batch that crosses the threshold). `every` of 0 is treated as 1.
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

    /// Append records that have **committed**, in commit (sequence) order. Records at or below
    /// the last mirrored sequence number are skipped, so a retry after an error is harmless.
    pub fn write(&self, records: &[StoredRecord]) -> Result<(), AuditError> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last_written = None;
        for r in records {
            if st.last_seq.is_some_and(|l| r.seq <= l) {
                continue;
            }
            let mut line = JsonLine::render(r);
            line.push('\n');
            st.appender
                .write_all(line.as_bytes())
                .map_err(|e| AuditError::io(&self.dir, e))?;
            st.last_seq = Some(r.seq);
            st.since_checkpoint += 1;
            last_written = Some(r);
        }
        if let (Some(policy), Some(r)) = (&self.checkpoints, last_written) {
            if st.since_checkpoint >= policy.every {
                append_checkpoint(&policy.path, &Checkpoint::sign(&policy.key, r.seq, &r.mac))?;
                st.since_checkpoint = 0;
            }
        }
        Ok(())
    }

    /// Write a checkpoint of the last mirrored record now (e.g. at shutdown). Returns `None`
    /// if nothing has been mirrored or no checkpoint file is configured.
    pub fn checkpoint_now(&self, conn: &Connection) -> Result<Option<Checkpoint>, AuditError> {
        let Some(policy) = &self.checkpoints else {
            return Ok(None);
        };
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((seq, mac, _)) = super::chain::head(conn)? else {
            return Ok(None);
        };
        let cp = Checkpoint::sign(&policy.key, seq, &mac);
        append_checkpoint(&policy.path, &cp)?;
        st.since_checkpoint = 0;
        Ok(Some(cp))
    }

    /// Mirror every database record newer than the last mirrored one (call at start-up: a crash
    /// between a commit and its mirror write leaves such records). Returns how many were written.
    pub fn catch_up(&self, conn: &Connection) -> Result<u64, AuditError> {
        let after = {
            let st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.last_seq.unwrap_or(0)
        };
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq"
        ))?;
        let mut rows = stmt.query([after])?;
        let mut n = 0;
        let mut batch = Vec::with_capacity(256);
        while let Some(row) = rows.next()? {
            batch.push(StoredRecord::from_row(row)?);
            if batch.len() == 256 {
                self.write(&batch)?;
                n += batch.len() as u64;
                batch.clear();
            }
        }
        n += batch.len() as u64;
        self.write(&batch)?;
        Ok(n)
    }
}
