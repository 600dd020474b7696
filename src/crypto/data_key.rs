//! Per-period payload data keys, stored only wrapped by the master-derived key-wrap key.
//!
//! Payloads are not encrypted under a key derived from the master key directly: each period (a
//! UTC day) gets a random data key, and only its wrapped form is written to the database. Purging
//! a period destroys the wrapped key, which makes the copies of that period's payloads left in
//! this database (WAL residue, free pages) unreadable: cryptographic erase per NIST SP 800-88.
//! A backup carries its own copy of the wrapped keys, which the master key still unwraps, so it
//! is not erased by a later purge: backups are disposed of by deleting them (`backup` records
//! which periods each holds; `doctor` warns about those past retention).

use rand::RngCore;
use zeroize::Zeroizing;

use super::aead::{self, AeadError, RecordPlace, Sealed};
use super::Keyring;

/// A random 256-bit payload data key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct DataKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(redacted)")
    }
}

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *bytes);
        Self { bytes }
    }

    /// The raw key, for sealing and opening records.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn place(key_id: i64, period: &str) -> RecordPlace<'_> {
        RecordPlace {
            kind: "data_key",
            id: period,
            source: "",
            key_id,
        }
    }

    /// Wrap this key under the keyring's key-wrap key, bound to its id and period so a wrapped
    /// key cannot be swapped into another slot.
    pub fn wrap(&self, keyring: &Keyring, key_id: i64, period: &str) -> Result<Vec<u8>, AeadError> {
        let sealed = aead::seal(
            keyring.key_wrap_key(),
            &Self::place(key_id, period),
            &*self.bytes,
        )?;
        let mut out = sealed.nonce;
        out.extend_from_slice(&sealed.ciphertext);
        Ok(out)
    }

    /// Unwrap a key written by [`DataKey::wrap`].
    pub fn unwrap_from(
        keyring: &Keyring,
        key_id: i64,
        period: &str,
        wrapped: &[u8],
    ) -> Result<Self, AeadError> {
        if wrapped.len() < aead::NONCE_LEN {
            return Err(AeadError::Nonce);
        }
        let (nonce, ct) = wrapped.split_at(aead::NONCE_LEN);
        let plain = aead::open(
            keyring.key_wrap_key(),
            &Self::place(key_id, period),
            nonce,
            ct,
        )?;
        let bytes = <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| AeadError::Open)?;
        Ok(Self {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// Seal a record under this key.
    pub fn seal(&self, place: &RecordPlace<'_>, plaintext: &[u8]) -> Result<Sealed, AeadError> {
        aead::seal(&self.bytes, place, plaintext)
    }

    /// Open a record sealed under this key.
    pub fn open(
        &self,
        place: &RecordPlace<'_>,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        aead::open(&self.bytes, place, nonce, ciphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn wrapped_key_unwraps_only_in_its_slot_and_under_its_master() {
        let ring = Keyring::from_master(&MasterKey::from_bytes([1; 32]));
        let other = Keyring::from_master(&MasterKey::from_bytes([2; 32]));
        let key = DataKey::generate();
        let wrapped = key.wrap(&ring, 5, "2026-11-22").expect("wrap");
        let back = DataKey::unwrap_from(&ring, 5, "2026-11-22", &wrapped).expect("unwrap");
        assert_eq!(back.expose(), key.expose());
        assert!(DataKey::unwrap_from(&ring, 6, "2026-11-22", &wrapped).is_err());
        assert!(DataKey::unwrap_from(&ring, 5, "2026-11-23", &wrapped).is_err());
        assert!(DataKey::unwrap_from(&other, 5, "2026-11-22", &wrapped).is_err());
    }
}
