//! The artifact file format: the content encrypted in chunks as it streams in, so no plaintext
//! ever reaches the disk and no file has to fit in memory.
//!
//! Layout: an 8-byte magic (`WHARTF01`), a random 7-byte nonce prefix, then the chunks of the
//! `aead` crate's STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár: "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance") over AES-256-GCM with a
//! 32-bit big-endian counter: every chunk but the last holds [`CHUNK`] bytes of content plus a
//! 16-byte tag, the last is flagged as last inside its nonce. Reordering, dropping or
//! truncating chunks therefore fails to decrypt — a cut-off file never reads as shorter
//! content. Each chunk's associated data is the artifact id, so a file renamed to another
//! artifact's name does not open.
//!
//! Each file has its own random key ([`FileKey`]); the store keeps that key sealed under the
//! delivery's period data key. Purging the period destroys the data key, so the file key —
//! and with it the file — can no longer be recovered (crypto-shredding, as for payloads).
//!
//! The writer creates a hidden temporary file (`.<id>.partial`, mode `0600`) and renames it to
//! its final name only once the last chunk is written and fsync'd: an interrupted download
//! leaves a partial file of ciphertext under a key that was never stored, which nothing can
//! read and the next attempt deletes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aead::stream::{DecryptorBE32, EncryptorBE32};
use aead::{KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Content bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// GCM tag per chunk.
const TAG: usize = 16;
/// File magic and format version.
const MAGIC: &[u8; 8] = b"WHARTF01";
/// STREAM-BE32 over a 96-bit nonce leaves 7 bytes of prefix.
const PREFIX: usize = 7;
/// Suffix of a file still being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Why an artifact file could not be written or read. No content, ever.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedFileError {
    /// The file system refused (path and OS reason).
    #[error("artifact file {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS reason.
        reason: String,
    },
    /// The file is not an artifact file, was altered or truncated, or the key is wrong.
    #[error("artifact file does not authenticate (altered, truncated or wrong key)")]
    Corrupt,
}

fn io_error(path: &Path, e: &std::io::Error) -> SealedFileError {
    SealedFileError::Io {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    }
}

/// A random per-file key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct FileKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(redacted)")
    }
}

impl FileKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *k);
        Self(k)
    }

    /// A key as unsealed from the store; `None` unless it is 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let k = <[u8; 32]>::try_from(bytes).ok()?;
        Some(Self(Zeroizing::new(k)))
    }

    /// The raw key, for sealing it under the data key.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The final path of artifact `id` in `dir`.
pub fn final_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.wha"))
}

fn partial_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!(".{id}{PARTIAL_SUFFIX}"))
}

/// What a finished write measured over the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Content bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Where the file now is.
    pub path: PathBuf,
}

/// Encrypts content as it arrives into a temporary file; [`SealedWriter::finish`] makes it
/// the artifact's file. Dropped unfinished, the temporary file is removed.
pub struct SealedWriter {
    id: String,
    dir: PathBuf,
    partial: PathBuf,
    file: Option<File>,
    encryptor: Option<EncryptorBE32<Aes256Gcm>>,
    pending: Zeroizing<Vec<u8>>,
    hasher: Sha256,
    size: u64,
}

impl std::fmt::Debug for SealedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedWriter")
            .field("id", &self.id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl SealedWriter {
    /// Start artifact `id` in `dir` (created `0700` if missing) under `key`.
    pub fn create(dir: &Path, id: &str, key: &FileKey) -> Result<Self, SealedFileError> {
        crate::fsutil::create_private_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        let partial = partial_path(dir, id);
        // A leftover of an interrupted attempt with the same id: ciphertext under a lost key.
        let _ = std::fs::remove_file(&partial);
        let mut file =
            crate::fsutil::create_new_private(&partial).map_err(|e| io_error(&partial, &e))?;
        let mut prefix = [0u8; PREFIX];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&prefix);
        file.write_all(&header)
            .map_err(|e| io_error(&partial, &e))?;
        let cipher = Aes256Gcm::new(key.expose().into());
        let encryptor = EncryptorBE32::from_aead(cipher, prefix.as_slice().into());
        Ok(Self {
            id: id.to_owned(),
            dir: dir.to_owned(),
            partial,
            file: Some(file),
            encryptor: Some(encryptor),
            pending: Zeroizing::new(Vec::with_capacity(CHUNK * 2)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Content bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Add content; full chunks are encrypted and written at once.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SealedFileError> {
        self.hasher.update(data);
        self.size = self.size.saturating_add(data.len() as u64);
        self.pending.extend_from_slice(data);
        // Keep at least one byte back: the last chunk must be written with the "last" flag,
        // and only `finish` knows which one that is.
        while self.pending.len() > CHUNK {
            let encryptor = self.encryptor.as_mut().ok_or(SealedFileError::Corrupt)?;
            let sealed = encryptor
                .encrypt_next(Payload {
                    msg: &self.pending[..CHUNK],
                    aad: self.id.as_bytes(),
                })
                .map_err(|_| SealedFileError::Corrupt)?;
            let file = self.file.as_mut().ok_or(SealedFileError::Corrupt)?;
            file.write_all(&sealed)
                .map_err(|e| io_error(&self.partial, &e))?;
            self.pending.drain(..CHUNK);
        }
        Ok(())
    }

    /// Write the last chunk, fsync, rename to the final name and fsync the folder.
    pub fn finish(mut self) -> Result<Written, SealedFileError> {
        let encryptor = self.encryptor.take().ok_or(SealedFileError::Corrupt)?;
        let sealed = encryptor
            .encrypt_last(Payload {
                msg: &self.pending[..],
                aad: self.id.as_bytes(),
            })
            .map_err(|_| SealedFileError::Corrupt)?;
        let mut file = self.file.take().ok_or(SealedFileError::Corrupt)?;
        file.write_all(&sealed)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&self.partial, &e))?;
        drop(file);
        let target = final_path(&self.dir, &self.id);
        std::fs::rename(&self.partial, &target).map_err(|e| io_error(&target, &e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let hasher = std::mem::take(&mut self.hasher);
        Ok(Written {
            size: self.size,
            sha256: hex::encode(hasher.finalize()),
            path: target,
        })
    }
}

impl Drop for SealedWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Remove temporary files left by interrupted downloads (ciphertext under keys that were
/// never stored). Returns how many were removed.
pub fn remove_partials(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Decrypts an artifact file chunk by chunk; the end is authenticated.
pub struct SealedReader {
    id: String,
    file: File,
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    /// The next sealed chunk, read ahead so the last one is known.
    ahead: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for SealedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedReader")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Read up to `n` bytes (fewer only at the end of the file).
fn read_block(file: &mut File, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    Read::by_ref(file).take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl SealedReader {
    /// Open artifact `id`'s file at `path` under `key`.
    pub fn open(path: &Path, id: &str, key: &FileKey) -> Result<Self, SealedFileError> {
        let mut file = File::open(path).map_err(|e| io_error(path, &e))?;
        let header = read_block(&mut file, MAGIC.len() + PREFIX).map_err(|e| io_error(path, &e))?;
        if header.len() != MAGIC.len() + PREFIX || &header[..MAGIC.len()] != MAGIC {
            return Err(SealedFileError::Corrupt);
        }
        let cipher = Aes256Gcm::new(key.expose().into());
        let decryptor = DecryptorBE32::from_aead(cipher, header[MAGIC.len()..].into());
        let ahead = read_block(&mut file, CHUNK + TAG).map_err(|e| io_error(path, &e))?;
        Ok(Self {
            id: id.to_owned(),
            file,
            decryptor: Some(decryptor),
            ahead,
            done: false,
        })
    }

    /// The next chunk of content, `None` after the authenticated last chunk.
    pub fn next_chunk(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, SealedFileError> {
        if self.done {
            return Ok(None);
        }
        let current = std::mem::take(&mut self.ahead);
        let next = read_block(&mut self.file, CHUNK + TAG).map_err(|e| SealedFileError::Io {
            path: self.id.clone(),
            reason: e.kind().to_string(),
        })?;
        let payload = Payload {
            msg: &current[..],
            aad: self.id.as_bytes(),
        };
        let plain = if next.is_empty() {
            self.done = true;
            let decryptor = self.decryptor.take().ok_or(SealedFileError::Corrupt)?;
            decryptor.decrypt_last(payload)
        } else {
            let decryptor = self.decryptor.as_mut().ok_or(SealedFileError::Corrupt)?;
            decryptor.decrypt_next(payload)
        }
        .map_err(|_| SealedFileError::Corrupt)?;
        self.ahead = next;
        Ok(Some(Zeroizing::new(plain)))
    }

    /// The whole content (tests, small files).
    pub fn read_all(mut self) -> Result<Zeroizing<Vec<u8>>, SealedFileError> {
        let mut out = Zeroizing::new(Vec::new());
        while let Some(chunk) = self.next_chunk()? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, id: &str, key: &FileKey, content: &[u8], step: usize) -> Written {
        let mut w = SealedWriter::create(dir, id, key).expect("create");
        for part in content.chunks(step.max(1)) {
            w.write(part).expect("write");
        }
        w.finish().expect("finish")
    }

    #[test]
    fn content_of_every_length_round_trips_with_its_sha256() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = FileKey::generate();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let id = format!("art_{len}");
            let written = write(dir.path(), &id, &key, &content, 10_000);
            assert_eq!(written.size, len as u64);
            assert_eq!(written.sha256, hex::encode(Sha256::digest(&content)));
            let back = SealedReader::open(&written.path, &id, &key)
                .expect("open")
                .read_all()
                .expect("read");
            assert_eq!(&back[..], &content[..], "length {len}");
        }
    }

    #[test]
    fn a_truncated_altered_renamed_or_wrongly_keyed_file_does_not_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = FileKey::generate();
        let content = vec![7u8; 2 * CHUNK + 100];
        let written = write(dir.path(), "art_a", &key, &content, CHUNK);
        let bytes = std::fs::read(&written.path).expect("read");
        let read = |path: &Path, id: &str, key: &FileKey| {
            SealedReader::open(path, id, key).and_then(SealedReader::read_all)
        };
        // Cut after the first full chunk: without the last-chunk flag, this is not an end.
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &bytes[..MAGIC.len() + PREFIX + CHUNK + TAG]).expect("write");
        assert!(matches!(
            read(&cut, "art_a", &key),
            Err(SealedFileError::Corrupt)
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let alt = dir.path().join("alt");
        std::fs::write(&alt, &flipped).expect("write");
        assert!(matches!(
            read(&alt, "art_a", &key),
            Err(SealedFileError::Corrupt)
        ));
        assert!(matches!(
            read(&written.path, "art_b", &key),
            Err(SealedFileError::Corrupt)
        ));
        assert!(matches!(
            read(&written.path, "art_a", &FileKey::generate()),
            Err(SealedFileError::Corrupt)
        ));
    }

    #[test]
    fn files_are_owner_only_and_an_unfinished_write_leaves_nothing() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = FileKey::generate();
        let written = write(dir.path(), "art_m", &key, b"RIFF canary", 3);
        let mode = std::fs::metadata(&written.path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        {
            let mut w = SealedWriter::create(dir.path(), "art_x", &key).expect("create");
            w.write(&vec![1u8; CHUNK * 2]).expect("write");
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["art_m.wha"]);
    }
}
