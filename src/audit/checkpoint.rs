//! Signed checkpoints: an append-only file of Ed25519-signed `(seq, head mac, time)` lines.
//!
//! A MAC chain alone cannot show that its newest records were cut off: the shorter chain is
//! still valid. A checkpoint commits to the head at some moment, signed with a key derived from
//! the master key and kept outside the database, so a database whose chain ends before (or
//! differs at) a checkpointed sequence number is caught by [`super::verify_db`]. Records written
//! after the newest checkpoint are not covered; write checkpoints often (the mirror does, every N
//! records) and ship the file off-host with the JSONL mirror.
//!
//! Only [`super::Mirror`] appends checkpoints in a running installation, under the mirror's
//! lock and only for records already in the mirror (see `mirror.rs`). The file is `0600`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::chain::format_ts;
use super::tail::FileState;
use super::AuditError;
use crate::crypto::Keyring;

/// One checkpoint line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the head record when the checkpoint was taken.
    pub seq: u64,
    /// That record's MAC.
    pub mac: String,
    /// When the checkpoint was taken (UTC, RFC 3339).
    pub ts: String,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`], hex.
    pub sig: String,
}

impl Checkpoint {
    /// The exact bytes signed: domain, seq, mac and time, newline separated.
    pub fn signed_bytes(seq: u64, mac: &str, ts: &str) -> Vec<u8> {
        format!("wardhook-audit-checkpoint-v1\n{seq}\n{mac}\n{ts}").into_bytes()
    }

    pub(crate) fn sign(key: &SigningKey, seq: u64, mac: &str) -> Self {
        let ts = format_ts(chrono::Utc::now());
        let sig = key.sign(&Self::signed_bytes(seq, mac, &ts));
        Self {
            seq,
            mac: mac.to_owned(),
            ts,
            sig: hex::encode(sig.to_bytes()),
        }
    }

    /// True when the signature is valid under `key`.
    pub fn signature_valid(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.sig) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        key.verify(&Self::signed_bytes(self.seq, &self.mac, &self.ts), &sig)
            .is_ok()
    }
}

/// Append `cp` to the checkpoint file (created `0600`) with `O_APPEND` and fsync, so a crash
/// right after cannot lose a checkpoint that was reported written. Returns the file's state
/// after the append.
pub(crate) fn append_checkpoint(path: &Path, cp: &Checkpoint) -> Result<FileState, AuditError> {
    let mut line = serde_json::to_string(cp).map_err(|e| AuditError::io(path, e.into()))?;
    line.push('\n');
    let mut f = crate::fsutil::open_append_private(path).map_err(|e| AuditError::io(path, e))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_data())
        .and_then(|()| FileState::of(&f))
        .map_err(|e| AuditError::io(path, e))
}

/// Take a checkpoint of the database head now, for a log without a mirror (tests of the
/// database-side checks). With a mirror, [`super::Mirror::checkpoint_now`] is the way: it
/// holds the mirror's lock and names only a record already mirrored.
#[cfg(test)]
pub(crate) fn write_checkpoint(
    conn: &(impl super::source::ChainReader + ?Sized),
    keyring: &Keyring,
    path: &Path,
) -> Result<Option<Checkpoint>, AuditError> {
    let Some((seq, mac, _)) = conn.head()? else {
        return Ok(None);
    };
    let cp = Checkpoint::sign(&keyring.audit_signing_key(), seq, &mac);
    append_checkpoint(path, &cp)?;
    Ok(Some(cp))
}

/// A checkpoint file line that could not be parsed or whose signature is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCheckpoint {
    /// 1-based line number in the checkpoint file.
    pub line: usize,
    /// The sequence number it claims, if it could be read.
    pub seq: Option<u64>,
}

/// Read every checkpoint in the file. `Ok(Err(bad))` names the first line that is malformed or
/// not signed by this keyring's audit key. A missing file reads as no checkpoints. A last line
/// without its newline is an append in progress (or cut short by a crash), not a checkpoint,
/// and is ignored.
pub fn read_checkpoints(
    path: &Path,
    keyring: &Keyring,
) -> Result<Result<Vec<Checkpoint>, BadCheckpoint>, AuditError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(Vec::new())),
        Err(e) => return Err(AuditError::io(path, e)),
    };
    let key = keyring.audit_signing_key().verifying_key();
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| AuditError::io(path, e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        line_no += 1;
        let Ok(line) = std::str::from_utf8(&buf) else {
            return Ok(Err(BadCheckpoint {
                line: line_no,
                seq: None,
            }));
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(line.trim_end()) {
            Ok(cp) if cp.signature_valid(&key) => out.push(cp),
            Ok(cp) => {
                return Ok(Err(BadCheckpoint {
                    line: line_no,
                    seq: Some(cp.seq),
                }))
            }
            Err(_) => {
                return Ok(Err(BadCheckpoint {
                    line: line_no,
                    seq: None,
                }))
            }
        }
    }
    out.sort_by_key(|c| c.seq);
    Ok(Ok(out))
}
