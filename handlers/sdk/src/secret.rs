//! Secrets inside handler configs (`token = "env:CRM_TOKEN"`), resolved once when the handler is
//! built and held only in zeroize-on-drop memory that never prints.
//!
//! The SDK cannot depend on the `wardhook` crate, so it carries its own small resolver with the
//! same rules: a literal value is refused, because a config file is one `git add` away from a leak.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// Where a secret comes from, as written in a handler's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME` — an environment variable, read when the handler is built.
    Env(String),
    /// `file:PATH` — a file (relative to the config file's folder); one trailing newline is
    /// ignored, so systemd `LoadCredential=` files work as they are.
    File(PathBuf),
}

impl SecretRef {
    /// Parse `env:NAME` or `file:PATH`.
    pub fn parse(reference: &str) -> Result<Self, SecretError> {
        if let Some(name) = reference.strip_prefix("env:") {
            if name.is_empty() {
                return Err(SecretError::Empty);
            }
            Ok(Self::Env(name.to_owned()))
        } else if let Some(path) = reference.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SecretError::Empty);
            }
            Ok(Self::File(PathBuf::from(path)))
        } else {
            Err(SecretError::NotAReference)
        }
    }

    /// Read the secret as text. Relative file paths are taken relative to `base_dir`.
    pub fn resolve(&self, base_dir: &Path) -> Result<SecretValue, SecretError> {
        let mut bytes = self.resolve_bytes(base_dir)?;
        let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            // The rejected bytes are zeroized with the error's buffer below.
            let mut raw = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut raw);
            SecretError::NotText(self.to_string())
        })?;
        Ok(SecretValue::new(text))
    }

    /// Read the secret's raw bytes (keys need not be text). One trailing newline (`\n` or
    /// `\r\n`) of a file is dropped; an empty secret is an error.
    pub fn resolve_bytes(&self, base_dir: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        match self {
            Self::Env(name) => match std::env::var_os(name) {
                None => Err(SecretError::EnvMissing(name.clone())),
                Some(v) if v.is_empty() => Err(SecretError::EnvEmpty(name.clone())),
                Some(v) => Ok(Zeroizing::new(v.into_encoded_bytes())),
            },
            Self::File(path) => {
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                let mut raw = Zeroizing::new(std::fs::read(&full).map_err(|e| {
                    SecretError::FileUnreadable {
                        path: path.display().to_string(),
                        reason: e.kind().to_string(),
                    }
                })?);
                if raw.last() == Some(&b'\n') {
                    raw.pop();
                    if raw.last() == Some(&b'\r') {
                        raw.pop();
                    }
                }
                if raw.is_empty() {
                    return Err(SecretError::FileEmpty(path.display().to_string()));
                }
                Ok(raw)
            }
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A resolved secret. Zeroized on drop; `Debug` prints `SecretValue(redacted)`.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wrap a value already in memory (tests, tokens fetched at run time).
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret text. Keep what you derive from it short-lived.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(redacted)")
    }
}

/// Why a secret reference could not be parsed or read. Messages name the reference, never the
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// The environment variable exists but is empty.
    #[error("env var {0} is empty")]
    EnvEmpty(String),
    /// A text secret (a token, a password) that is not valid UTF-8.
    #[error("secret {0} is not UTF-8 text")]
    NotText(String),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values_are_refused_and_references_parse() {
        assert_eq!(SecretRef::parse("hunter2"), Err(SecretError::NotAReference));
        assert_eq!(SecretRef::parse("env:"), Err(SecretError::Empty));
        assert_eq!(
            SecretRef::parse("env:CRM_TOKEN"),
            Ok(SecretRef::Env("CRM_TOKEN".into()))
        );
    }

    #[test]
    fn file_secret_drops_one_trailing_newline_and_never_prints() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "s3cret\n").expect("write");
        let v = SecretRef::parse("file:tok")
            .expect("parse")
            .resolve(dir.path())
            .expect("resolve");
        assert_eq!(v.expose(), "s3cret");
        assert_eq!(format!("{v:?}"), "SecretValue(redacted)");
    }

    #[test]
    fn missing_env_var_names_the_variable() {
        let err = SecretRef::Env("WARDHOOK_SDK_TEST_SURELY_UNSET".into())
            .resolve(Path::new("."))
            .expect_err("unset");
        assert_eq!(
            err.to_string(),
            "env var WARDHOOK_SDK_TEST_SURELY_UNSET is not set"
        );
    }
}
