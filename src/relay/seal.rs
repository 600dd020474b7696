//! Sealing a delivery to the inside node's public key, and opening it there: HPKE (RFC 9180)
//! in base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305 — the
//! suite of RFC 9180 appendix A.2.
//!
//! The relay holds only the public key, so nothing it stores can be read in the DMZ: each
//! record has its own ephemeral key (`enc`) and ciphertext. The record's relay id is the
//! associated data, so a sealed body cannot be moved to another record without failing to
//! open. Key pairs are named by a key id (the first 8 bytes of SHA-256 of the public key, hex)
//! that travels with each record, so the inside node can hold the old and the new private key
//! side by side while a rotation drains the relay's backlog.
//!
//! Key text: `whrelay-pk1:<base64>` for a public key, `whrelay-sk1:<base64>` for a private
//! key. The prefixes differ so that a private key pasted into a relay's config is recognised
//! and refused (`crate::config::relay`).

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use crate::config::relay::{PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX};

type Kem = X25519HkdfSha256;

/// The HPKE `info` string: binds every record to this protocol and version.
const INFO: &[u8] = b"wardhook relay v1";

/// Why a record could not be sealed or opened. No variant carries record content.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key text is not `whrelay-pk1:`/`whrelay-sk1:` followed by 32 bytes of base64.
    #[error("not a relay key: expected {expected}<base64 of 32 bytes>")]
    BadKeyText {
        /// The prefix that was expected.
        expected: &'static str,
    },
    /// The record names a key id none of the configured private keys has.
    #[error("no private key with id {0} is configured (rotated away too early?)")]
    UnknownKeyId(String),
    /// HPKE refused: the ciphertext, `enc` or associated data was altered, or the wrong key.
    #[error("sealed record does not open: altered, or sealed to another key")]
    Open,
    /// HPKE could not seal (a broken public key).
    #[error("cannot seal: {0}")]
    Seal(String),
}

/// The inside node's public key, as the relay holds it.
#[derive(Clone)]
pub struct PublicKey {
    key: <Kem as hpke::Kem>::PublicKey,
    id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

/// One of the inside node's private keys. Zeroized on drop (the `hpke` key type does that).
pub struct PrivateKey {
    key: <Kem as hpke::Kem>::PrivateKey,
    id: String,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A sealed record as stored and shipped: which key, the encapsulated key and the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The key id of the public key it was sealed to.
    pub key_id: String,
    /// HPKE's encapsulated (ephemeral) public key.
    pub enc: Vec<u8>,
    /// The ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

/// A fresh key pair: (private key text, public key text). The private text is zeroized on drop.
pub fn generate_key_pair() -> (Zeroizing<String>, String) {
    let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
    let (sk, pk) = Kem::gen_keypair(&mut rng);
    let sk_text = Zeroizing::new(format!(
        "{PRIVATE_KEY_PREFIX}{}",
        b64(Zeroizing::new(sk.to_bytes().to_vec()).as_slice())
    ));
    (
        sk_text,
        format!("{PUBLIC_KEY_PREFIX}{}", b64(&pk.to_bytes())),
    )
}

/// The key id of a public key's bytes: the first 8 bytes of its SHA-256, hex.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_key(text: &str, prefix: &'static str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    use base64::Engine as _;
    let bad = || SealError::BadKeyText { expected: prefix };
    let rest = text.trim().strip_prefix(prefix).ok_or_else(bad)?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad())?,
    );
    if bytes.len() != 32 {
        return Err(bad());
    }
    Ok(bytes)
}

impl PublicKey {
    /// Parse `whrelay-pk1:<base64>` (the relay takes the checked bytes from its config).
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let bytes = decode_key(text, PUBLIC_KEY_PREFIX)?;
        Self::from_bytes(&bytes)
    }

    /// From the 32 raw bytes of an X25519 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let key = <Kem as hpke::Kem>::PublicKey::from_bytes(bytes).map_err(|_| {
            SealError::BadKeyText {
                expected: PUBLIC_KEY_PREFIX,
            }
        })?;
        Ok(Self {
            key,
            id: key_id(bytes),
        })
    }

    /// Its key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seal `plaintext` for the record `record_id` (its associated data).
    pub fn seal(&self, record_id: &str, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
        let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
            &OpModeS::Base,
            &self.key,
            INFO,
            plaintext,
            record_id.as_bytes(),
            &mut rng,
        )
        .map_err(|e| SealError::Seal(e.to_string()))?;
        Ok(Sealed {
            key_id: self.id.clone(),
            enc: enc.to_bytes().to_vec(),
            ciphertext,
        })
    }
}

impl PrivateKey {
    /// Parse `whrelay-sk1:<base64>` (resolved from its secret reference).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let bytes = decode_key(text, PRIVATE_KEY_PREFIX)?;
        let key = <Kem as hpke::Kem>::PrivateKey::from_bytes(&bytes).map_err(|_| {
            SealError::BadKeyText {
                expected: PRIVATE_KEY_PREFIX,
            }
        })?;
        let public = Kem::sk_to_pk(&key);
        Ok(Self {
            id: key_id(&public.to_bytes()),
            key,
        })
    }

    /// Its key id (that of its public key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key text that goes into the relay's config.
    pub fn public_key_text(&self) -> String {
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            b64(&Kem::sk_to_pk(&self.key).to_bytes())
        )
    }

    /// Open a record sealed to this key for `record_id`. The plaintext is zeroized on drop.
    pub fn open(&self, record_id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| SealError::Open)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.key,
            &enc,
            INFO,
            &sealed.ciphertext,
            record_id.as_bytes(),
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Open)
    }
}

/// The inside node's private keys (the current one and, during a rotation, older ones).
#[derive(Debug, Default)]
pub struct KeySet(Vec<PrivateKey>);

impl KeySet {
    /// The keys, in config order.
    pub fn new(keys: Vec<PrivateKey>) -> Self {
        Self(keys)
    }

    /// Open a record with the key its key id names.
    pub fn open(&self, record_id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.0
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKeyId(sealed.key_id.clone()))?
            .open(record_id, sealed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_sealed_record_opens_with_its_private_key_only() {
        let (sk, pk) = generate_key_pair();
        let public = PublicKey::parse(&pk).unwrap();
        let private = PrivateKey::parse(&sk).unwrap();
        assert_eq!(public.id(), private.id());
        assert_eq!(private.public_key_text(), pk);
        let sealed = public.seal("rec-1", b"Jane Roe +15550100").unwrap();
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"Jane Roe"));
        assert_eq!(
            private.open("rec-1", &sealed).unwrap().as_slice(),
            b"Jane Roe +15550100"
        );
        // Another record id (associated data), another key, an altered byte: refused.
        assert!(matches!(
            private.open("rec-2", &sealed),
            Err(SealError::Open)
        ));
        let (other_sk, _) = generate_key_pair();
        let other = PrivateKey::parse(&other_sk).unwrap();
        let mut foreign = sealed.clone();
        foreign.key_id = other.id().to_owned();
        assert!(matches!(
            other.open("rec-1", &foreign),
            Err(SealError::Open)
        ));
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert!(matches!(
            private.open("rec-1", &altered),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn a_key_set_opens_records_of_the_old_and_the_new_key_during_rotation() {
        let (old_sk, old_pk) = generate_key_pair();
        let (new_sk, new_pk) = generate_key_pair();
        let old = PublicKey::parse(&old_pk)
            .unwrap()
            .seal("a", b"old")
            .unwrap();
        let new = PublicKey::parse(&new_pk)
            .unwrap()
            .seal("b", b"new")
            .unwrap();
        let both = KeySet::new(vec![
            PrivateKey::parse(&new_sk).unwrap(),
            PrivateKey::parse(&old_sk).unwrap(),
        ]);
        assert_eq!(both.open("a", &old).unwrap().as_slice(), b"old");
        assert_eq!(both.open("b", &new).unwrap().as_slice(), b"new");
        let only_new = KeySet::new(vec![PrivateKey::parse(&new_sk).unwrap()]);
        assert!(matches!(
            only_new.open("a", &old),
            Err(SealError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn key_texts_are_not_interchangeable() {
        let (sk, pk) = generate_key_pair();
        assert!(PublicKey::parse(&sk).is_err());
        assert!(PrivateKey::parse(&pk).is_err());
        assert!(PublicKey::parse("whrelay-pk1:AAAA").is_err());
    }

    /// RFC 9180 appendix A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305,
    /// base mode): the receiver's key pair derives from `ikmR` and the first sequence-0
    /// ciphertext opens to the published plaintext — the suite is the standard one, not a
    /// look-alike.
    #[test]
    fn rfc_9180_a_2_test_vector_opens() {
        let h = |s: &str| hex::decode(s).unwrap();
        let (sk, pk) = Kem::derive_keypair(&h(
            "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df",
        ));
        assert_eq!(
            pk.to_bytes().to_vec(),
            h("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
        );
        assert_eq!(
            sk.to_bytes().to_vec(),
            h("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
        );
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&h(
            "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        ))
        .unwrap();
        let pt = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            &h("4f6465206f6e2061204772656369616e2055726e"),
            &h("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"),
            &h("436f756e742d30"),
        )
        .unwrap();
        assert_eq!(
            pt,
            h("4265617574792069732074727574682c20747275746820626561757479")
        );
    }
}
