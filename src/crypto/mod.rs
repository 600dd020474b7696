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
// The configured calling code is a plain setting; the spelling rule that uses it lives here.
pub use crate::config::PhoneCountry;
// The master key is a resolved secret (the config loads it); crypto derives from it.
pub use crate::secret::{MasterKey, MasterKeyError};
