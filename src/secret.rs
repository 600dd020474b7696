//! Secrets named in the config by reference (`env:NAME`, `file:PATH`) and held in memory only
//! as zeroize-on-drop bytes that never print.
//!
//! Config files are copied, mailed and committed; the values they point to should not be. So a
//! secret field holds a reference, resolved once at start-up (and on reload), and the resolved
//! bytes never appear in `Debug` output, logs or error messages.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// Resolved secret bytes. Cloning copies into another zeroizing buffer.
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
}

impl Secret {
    /// Wrap bytes that are already in memory (tests, generated dev secrets).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The secret's bytes. Callers keep them on the stack or in zeroizing buffers.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The secret as UTF-8, for schemes whose key is text (e.g. Stripe's whole `whsec_` string).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Where a secret comes from. Literal values are refused: a secret written into the config file
/// is one `git add` away from leaking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME` — an environment variable, read at start-up.
    Env(String),
    /// `file:PATH` — a file (relative paths are relative to the config file's folder); one
    /// trailing newline is ignored. systemd's `LoadCredential=` files are read this way.
    File(PathBuf),
}

/// Why a secret reference could not be parsed or resolved. Messages name the reference, never
/// the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Neither `env:` nor `file:`.
    #[error("must be an `env:NAME` or `file:PATH` reference; secret values do not belong in the config file")]
    NotAReference,
    /// `env:` or `file:` with nothing after it.
    #[error("empty secret reference")]
    Empty,
    /// The environment variable does not exist.
    #[error("env var {0} is not set")]
    EnvMissing(String),
    /// The environment variable exists but holds nothing.
    #[error("env var {0} is empty")]
    EnvEmpty(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    FileUnreadable {
        /// The file as configured.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file holds nothing.
    #[error("secret file {0} is empty")]
    FileEmpty(String),
}

impl SecretRef {
    /// Parse `env:NAME` or `file:PATH`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() {
                return Err(SecretError::Empty);
            }
            Ok(Self::Env(name.to_owned()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SecretError::Empty);
            }
            Ok(Self::File(PathBuf::from(path)))
        } else {
            Err(SecretError::NotAReference)
        }
    }

    /// Read the secret. `base` is the folder relative `file:` paths are taken from.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        match self {
            Self::Env(name) => match std::env::var_os(name) {
                None => Err(SecretError::EnvMissing(name.clone())),
                Some(v) if v.is_empty() => Err(SecretError::EnvEmpty(name.clone())),
                Some(v) => Ok(Secret::new(v.into_encoded_bytes())),
            },
            Self::File(path) => {
                let full = base.join(path);
                let mut bytes = Zeroizing::new(std::fs::read(&full).map_err(|e| {
                    SecretError::FileUnreadable {
                        path: path.display().to_string(),
                        reason: e.kind().to_string(),
                    }
                })?);
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                if bytes.is_empty() {
                    return Err(SecretError::FileEmpty(path.display().to_string()));
                }
                Ok(Secret::new(std::mem::take(&mut *bytes)))
            }
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(n) => write!(f, "env:{n}"),
            Self::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Deserialized as a plain string; whether it is a valid reference is decided during
/// validation so that every bad reference is reported with its key path, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRefText(pub String);

impl<'de> Deserialize<'de> for SecretRefText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_reference_drops_one_trailing_newline_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s"), b"abc \n").expect("write");
        let s = SecretRef::parse("file:s")
            .expect("parse")
            .resolve(dir.path())
            .expect("resolve");
        assert_eq!(s.expose(), b"abc ");
    }

    #[test]
    fn literal_values_are_refused() {
        assert_eq!(SecretRef::parse("hunter2"), Err(SecretError::NotAReference));
        assert_eq!(SecretRef::parse("env:"), Err(SecretError::Empty));
    }

    #[test]
    fn debug_output_never_shows_the_value() {
        let s = Secret::new(b"topsecret".to_vec());
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
