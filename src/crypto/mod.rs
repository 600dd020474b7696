//! Key material: the master key on disk and everything derived from it.
//!
//! One master key (32 random bytes, base64, in a file only its owner can read) is the root; the
//! stages that need keys derive their own subkeys from it, so no two purposes ever share a key.

pub mod aead;
mod data_key;
mod keyring;
pub mod phone;

pub use aead::{AeadError, RecordPlace, Sealed};
pub use data_key::DataKey;
pub use keyring::Keyring;

/// Lower-case hex of a MAC or digest. `hex::encode` collects a `char` iterator into its
/// `String` one character at a time; `encode_to_slice` fills bytes from a table, and this runs
/// several times per delivery (blind indexes, the audit chain's MAC).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // Cannot fail: `out` is exactly twice as long as `bytes`.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}
// The configured calling code is a plain setting; the spelling rule that uses it lives here.
pub use crate::config::PhoneCountry;
// The master key is a resolved secret (the config loads it); crypto derives from it.
pub use crate::secret::{MasterKey, MasterKeyError};

#[cfg(test)]
mod tests {
    #[test]
    fn hex_lower_spells_bytes_as_hex_encode_does() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        assert_eq!(super::hex_lower(&bytes), hex::encode(&bytes));
        assert_eq!(super::hex_lower(&[0xAB, 0x01]), "ab01");
        assert_eq!(super::hex_lower(&[]), "");
    }
}
