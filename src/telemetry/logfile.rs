//! The daily log file: `wardhook.log.YYYY-MM-DD` (UTC) in the configured folder, owner-only.
//!
//! Log lines carry no PHI, but they do carry client addresses, source names and request ids,
//! which are nobody else's business on a shared host; like every other file wardhook writes they
//! are `0600` in a `0700` folder whatever the umask (`crate::fsutil`). `tracing_appender`'s
//! rolling appender names files the same way but creates them with the umask's mode, so the
//! rolling is done here: one writer (the log thread) opens the day's file in append mode through
//! `fsutil` when the date changes.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use chrono::NaiveDate;

use crate::fsutil;

/// Appends to the file of the current UTC day, opening the next day's file at midnight.
#[derive(Debug)]
pub struct DailyFile {
    dir: PathBuf,
    open: Option<(NaiveDate, File)>,
}

impl DailyFile {
    /// The writer for `dir` (created `0700` if missing); today's file is opened at once, so a
    /// folder that cannot be written is reported at start-up rather than at the first line.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fsutil::create_private_dir_all(&dir)?;
        let mut file = Self { dir, open: None };
        file.current()?;
        Ok(file)
    }

    /// The path of the file for `date`.
    pub fn path_for(&self, date: NaiveDate) -> PathBuf {
        self.dir
            .join(format!("wardhook.log.{}", date.format("%Y-%m-%d")))
    }

    fn current(&mut self) -> io::Result<&mut File> {
        let today = chrono::Utc::now().date_naive();
        if self.open.as_ref().map(|(day, _)| *day) != Some(today) {
            let file = fsutil::open_append_private(&self.path_for(today))?;
            self.open = Some((today, file));
        }
        match &mut self.open {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("log file not open")),
        }
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.current()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.open {
            Some((_, file)) => file.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_days_file_and_its_folder_are_owner_only_and_lines_are_appended() {
        let tmp = tempfile::tempdir().expect("temporary folder");
        let dir = tmp.path().join("logs");
        let mut first = DailyFile::new(&dir).expect("log file");
        first.write_all(b"one\n").expect("write");
        first.flush().expect("flush");
        drop(first);
        // A restart appends to the same day's file.
        let mut second = DailyFile::new(&dir).expect("log file");
        second.write_all(b"two\n").expect("write");
        second.flush().expect("flush");
        let path = second.path_for(chrono::Utc::now().date_naive());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
}
