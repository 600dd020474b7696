//! Secrets named in the config by reference (`env:NAME`, `file:PATH`) and held in memory only
//! as zeroize-on-drop bytes that never print.
//!
//! Config files are copied, mailed and committed; the values they point to should not be. So a
//! secret field holds a reference, resolved once at start-up (and on reload), and the resolved
//! bytes never appear in `Debug` output, logs or error messages. The reference syntax and its
//! rules are the handler SDK's ([`wardhook_sdk::secret`]), so sender secrets and handler
//! secrets are written and resolved the same way; here they resolve to bytes, because sender
//! keys need not be text.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

pub mod master_key;

pub use master_key::{MasterKey, MasterKeyError};
pub use wardhook_sdk::secret::{SecretError, SecretRef};

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

    /// Resolve `reference` (relative `file:` paths from `base`).
    pub fn resolve(reference: &SecretRef, base: &Path) -> Result<Self, SecretError> {
        reference.resolve_bytes(base).map(|bytes| Self { bytes })
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
        let s = Secret::resolve(&SecretRef::parse("file:s").expect("parse"), dir.path())
            .expect("resolve");
        assert_eq!(s.expose(), b"abc ");
    }

    #[test]
    fn non_utf8_key_files_resolve_as_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k"), [0xff, 0x00, 0x80]).expect("write");
        let s = Secret::resolve(&SecretRef::parse("file:k").expect("parse"), dir.path())
            .expect("resolve");
        assert_eq!(s.expose(), [0xff, 0x00, 0x80]);
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
