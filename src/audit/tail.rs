//! Reading the end of an append-only line file (a mirror file, the checkpoint file) without
//! reading all of it.
//!
//! Every writer appends whole lines, each ending in `\n`, in one `write`. A last line without
//! its `\n` is therefore a write still in progress (seen by a reader without the lock) or one a
//! crash cut short: it is never a record, and both the writers and `audit verify` ignore it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

/// How much of a file's end is read to find its last line. A record line is well under 2 KiB.
const TAIL_BYTES: u64 = 64 * 1024;

/// Identity and size of a file: while these are unchanged, nothing was appended to it, so what
/// a process learnt about its end is still true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileState {
    dev: u64,
    ino: u64,
    pub(crate) len: u64,
}

impl FileState {
    pub(crate) fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
        })
    }
}

/// The length of the file up to and including its last `\n` (0 if it has none): everything
/// after it is an incomplete line.
pub(crate) fn complete_len(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; TAIL_BYTES as usize];
    while end > 0 {
        let start = end.saturating_sub(TAIL_BYTES);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The complete lines in the last [`TAIL_BYTES`] before `end`, newest first. The first line of
/// the window may be cut at its start; callers parse each line and skip what does not parse.
pub(crate) fn last_lines(file: &mut File, end: u64) -> std::io::Result<Vec<String>> {
    let start = end.saturating_sub(TAIL_BYTES);
    let mut buf = vec![0u8; (end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().rev().map(str::to_owned).collect())
}
