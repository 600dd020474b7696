//! Owner-only files and folders, whatever the umask.
//!
//! Every file wardhook creates that holds records, payloads or keys (the database and its
//! `-wal`/`-shm`, the audit mirror and checkpoints, exports, backups, emergency archives, the
//! master key, private keys) is created through this module, so the rule lives in one place:
//! files are `0600`, folders wardhook creates are `0700`. The mode given to `open(2)` is only an
//! upper bound (the umask removes bits), and a file that already exists keeps its mode, so each
//! helper also sets the mode explicitly on the open file.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file holding records, payloads or keys.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// The mode of every folder wardhook creates for such files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Give the open file exactly `mode` (fchmod), unless it already has it.
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    let current = file.metadata()?.permissions().mode() & 0o7777;
    if current != mode {
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Create a new file with exactly `mode`; fails with `AlreadyExists` if `path` exists, so
/// nothing is ever written through a file (or symlink) someone else prepared.
pub fn create_new_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    set_mode(&file, mode)?;
    Ok(file)
}

/// Create a new owner-only (`0600`) file; fails with `AlreadyExists` if `path` exists.
/// For `--out` files: exports, backups, archives, keys.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    create_new_with_mode(path, PRIVATE_FILE_MODE)
}

/// Open `path` for appending (and reading its end), creating it owner-only if missing; an
/// existing file with a looser mode (e.g. written by an older version) is tightened to `0600`.
pub fn open_append_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    set_mode(&file, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Make sure `path` exists as an owner-only file without changing its content: created empty
/// with `0600` if missing, tightened to `0600` (by path) if it exists. Used before SQLite opens
/// a database, because SQLite creates the main file `0644` (less the umask) and gives `-wal`,
/// `-shm` and `-journal` the main file's mode.
///
/// An existing file is never opened here: closing any descriptor of a SQLite database drops
/// every POSIX lock this process holds on it, which would let another process reset the WAL
/// under a connection that is still open (lost commits).
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    match create_new_private(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
            if current != PRIVATE_FILE_MODE {
                std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_FILE_MODE))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Write `bytes` to `path` (replacing its content) as an owner-only file.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    set_mode(&file, PRIVATE_FILE_MODE)?;
    file.write_all(bytes)
}

/// Create `dir` and any missing parents with `0700`. Folders that already exist keep their
/// mode: an operator may have set up e.g. `/var/lib/wardhook` for a group on purpose.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn every_helper_leaves_an_owner_only_file_even_over_a_loose_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let loose = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, b"old").unwrap();
            std::fs::set_permissions(&p, Permissions::from_mode(0o666)).unwrap();
            p
        };
        let new = dir.path().join("new");
        create_new_private(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        assert_eq!(
            create_new_private(&new).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );

        let appended = loose("appended");
        open_append_private(&appended)
            .unwrap()
            .write_all(b"+")
            .unwrap();
        assert_eq!(mode(&appended), 0o600);
        assert_eq!(std::fs::read(&appended).unwrap(), b"old+");

        let ensured = loose("ensured");
        ensure_private_file(&ensured).unwrap();
        assert_eq!(mode(&ensured), 0o600);
        assert_eq!(std::fs::read(&ensured).unwrap(), b"old");
        let fresh = dir.path().join("fresh.db");
        ensure_private_file(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let written = loose("written");
        write_private(&written, b"new").unwrap();
        assert_eq!(mode(&written), 0o600);
        assert_eq!(std::fs::read(&written).unwrap(), b"new");

        let public = dir.path().join("ca.crt");
        create_new_with_mode(&public, 0o644).unwrap();
        assert_eq!(mode(&public), 0o644);
    }

    #[test]
    fn created_folders_are_owner_only_and_existing_ones_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o750)).unwrap();
        let deep = dir.path().join("a/b");
        create_private_dir_all(&deep).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(dir.path()), 0o750);
        create_private_dir_all(&deep).unwrap();
    }
}
