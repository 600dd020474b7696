//! Record encryption: AES-256-GCM with a fresh random 96-bit nonce per record and associated data
//! that names the record's place (table, delivery id, source, key id).
//!
//! Binding the place into the AAD is what makes a ciphertext copied into another row (or another
//! table, or relabelled with another key id) fail to decrypt instead of silently showing the
//! wrong patient's call.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// Length of the random nonce stored next to each ciphertext.
pub const NONCE_LEN: usize = 12;

/// Why a record could not be sealed or opened. Deliberately carries no detail: the only thing a
/// caller may learn is that the ciphertext, its place or its key do not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AeadError {
    /// Wrong key, wrong place (AAD), or a modified ciphertext or nonce.
    #[error("ciphertext does not authenticate under this key and record location")]
    Open,
    /// The stored nonce is not 12 bytes.
    #[error("stored nonce has the wrong length")]
    Nonce,
    /// Encryption failed (only possible for absurdly large plaintexts).
    #[error("encryption failed")]
    Seal,
}

/// Where a ciphertext belongs. Every field goes into the AAD.
#[derive(Debug, Clone, Copy)]
pub struct RecordPlace<'a> {
    /// Which kind of record (`delivery`, `quarantine`, `data_key`): keeps tables apart.
    pub kind: &'static str,
    /// The record's id (delivery id, quarantine id, or period for data keys).
    pub id: &'a str,
    /// The source it arrived on.
    pub source: &'a str,
    /// The data key id the record is sealed under.
    pub key_id: i64,
}

impl RecordPlace<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(48 + self.id.len() + self.source.len());
        aad.extend_from_slice(b"wardhook v1\0");
        for part in [
            self.kind.as_bytes(),
            self.id.as_bytes(),
            self.source.as_bytes(),
        ] {
            // Length-prefixed so that ("ab","c") and ("a","bc") give different AADs.
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&self.key_id.to_be_bytes());
        aad
    }
}

/// A sealed record: the nonce and the ciphertext (with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The random nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
}

/// Encrypt `plaintext` under `key` for `place`, with a fresh random nonce.
pub fn seal(
    key: &[u8; 32],
    place: &RecordPlace<'_>,
    plaintext: &[u8],
) -> Result<Sealed, AeadError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    // The thread's CSPRNG (ChaCha, seeded and periodically reseeded from the OS): random
    // 96-bit nonces need unpredictable, non-repeating bytes, not a system call per seal.
    rand::thread_rng().fill_bytes(&mut nonce);
    let aad = place.aad();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| AeadError::Seal)?;
    Ok(Sealed {
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Decrypt a record; fails unless key, place, nonce and ciphertext all match what was sealed.
pub fn open(
    key: &[u8; 32],
    place: &RecordPlace<'_>,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AeadError> {
    if nonce.len() != NONCE_LEN {
        return Err(AeadError::Nonce);
    }
    let cipher = Aes256Gcm::new(key.into());
    let aad = place.aad();
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| AeadError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(id: &'a str, key_id: i64) -> RecordPlace<'a> {
        RecordPlace {
            kind: "delivery",
            id,
            source: "nextphone",
            key_id,
        }
    }

    #[test]
    fn a_ciphertext_opens_only_in_its_own_place() {
        let key = [3u8; 32];
        let sealed = seal(&key, &place("d1", 1), b"hello").expect("seal");
        let opened = open(&key, &place("d1", 1), &sealed.nonce, &sealed.ciphertext).expect("open");
        assert_eq!(&opened[..], b"hello");
        assert_eq!(
            open(&key, &place("d2", 1), &sealed.nonce, &sealed.ciphertext),
            Err(AeadError::Open)
        );
        assert_eq!(
            open(&key, &place("d1", 2), &sealed.nonce, &sealed.ciphertext),
            Err(AeadError::Open)
        );
        assert_eq!(
            open(
                &[4u8; 32],
                &place("d1", 1),
                &sealed.nonce,
                &sealed.ciphertext
            ),
            Err(AeadError::Open)
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let key = [3u8; 32];
        let a = seal(&key, &place("d1", 1), b"x").expect("seal");
        let b = seal(&key, &place("d1", 1), b"x").expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn nonces_never_repeat_across_threads() {
        // Each thread draws from its own generator: they must not start from the same seed.
        let key = [3u8; 32];
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|_| seal(&key, &place("d1", 1), b"x").expect("seal").nonce)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for nonce in t.join().expect("thread") {
                assert!(all.insert(nonce), "a nonce repeated");
            }
        }
        assert_eq!(all.len(), 8000);
    }
}
