//! The master key file: generation, loading and the permission rules around it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// The 32-byte root key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

/// Why a master key file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// `keygen` never overwrites: losing the old key makes every stored payload unreadable.
    #[error("{0} already exists; refusing to overwrite a master key")]
    Exists(String),
    /// The file could not be read or written.
    #[error("cannot access master key file {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Group or others can read or write the file.
    #[error("master key file {path} has mode {mode:04o}; it must not be readable by group or others (chmod 600)")]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not base64 of exactly 32 bytes.
    #[error(
        "master key file {0} must hold 32 bytes, base64-encoded (as written by `wardhook keygen`)"
    )]
    BadContent(String),
}

impl MasterKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *bytes);
        Self { bytes }
    }

    /// Wrap known bytes (tests and key derivation checks).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The raw key, for deriving subkeys.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Write a new key to `path` with mode 0600, refusing to replace an existing file.
    pub fn generate_file(path: &Path) -> Result<Self, MasterKeyError> {
        let key = Self::generate();
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::fsutil::create_private_dir_all(parent).map_err(|e| MasterKeyError::Io {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        }
        let mut file = crate::fsutil::create_new_private(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                MasterKeyError::Exists(shown.clone())
            } else {
                MasterKeyError::Io {
                    path: shown.clone(),
                    reason: e.to_string(),
                }
            }
        })?;
        let mut text = Zeroizing::new(STANDARD.encode(*key.bytes));
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| MasterKeyError::Io {
                path: shown,
                reason: e.to_string(),
            })?;
        Ok(key)
    }

    /// Read a key file, insisting on owner-only permissions and exactly 32 bytes.
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| MasterKeyError::Io {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::TooOpen { path: shown, mode });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let mut decoded = STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::BadContent(shown.clone()))?;
        let result = <[u8; 32]>::try_from(decoded.as_slice())
            .map(Self::from_bytes)
            .map_err(|_| MasterKeyError::BadContent(shown));
        decoded.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_file_is_owner_only_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k/master.key");
        let key = MasterKey::generate_file(&path).expect("generate");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(MasterKey::load(&path).expect("load").expose(), key.expose());
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        MasterKey::generate_file(&path).expect("first");
        assert!(matches!(
            MasterKey::generate_file(&path),
            Err(MasterKeyError::Exists(_))
        ));
    }

    #[test]
    fn group_readable_or_short_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        MasterKey::generate_file(&path).expect("generate");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            MasterKey::load(&path),
            Err(MasterKeyError::TooOpen { mode: 0o640, .. })
        ));
        std::fs::write(&path, STANDARD.encode([1u8; 16])).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            MasterKey::load(&path),
            Err(MasterKeyError::BadContent(_))
        ));
    }
}
