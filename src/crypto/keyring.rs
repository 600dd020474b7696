//! Subkeys derived from the master key with HKDF-SHA256, one per purpose.
//!
//! Deriving rather than storing keeps key custody to one file; the distinct `info` labels make the
//! subkeys independent, so a leak of one purpose's key (say, the blind-index key used for lookups)
//! reveals nothing about another's (payload encryption, audit MACs).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::MasterKey;

const INFO_KEY_WRAP: &[u8] = b"wardhook v1 payload key wrapping";
const INFO_BLIND_INDEX: &[u8] = b"wardhook v1 blind index";
const INFO_AUDIT_MAC: &[u8] = b"wardhook v1 audit mac";
const INFO_AUDIT_SIGNING: &[u8] = b"wardhook v1 audit checkpoint signing";

/// The subkeys of one master key. Zeroized on drop.
#[derive(Clone)]
pub struct Keyring {
    key_wrap: Zeroizing<[u8; 32]>,
    blind_index: Zeroizing<[u8; 32]>,
    audit_mac: Zeroizing<[u8; 32]>,
    audit_signing: Zeroizing<[u8; 32]>,
    /// The country calling code national caller numbers are taken to be in (see
    /// [`super::phone`]): part of how the caller-phone index is formed, so intake and search
    /// spell a number the same way.
    phone_country: Option<super::PhoneCountry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(redacted)")
    }
}

fn derive(master: &MasterKey, info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, master.expose());
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(info, &mut *out).is_err() {
        unreachable!("HKDF output length is fixed at 32 bytes");
    }
    out
}

impl Keyring {
    /// Derive every subkey from the master key.
    pub fn from_master(master: &MasterKey) -> Self {
        Self {
            key_wrap: derive(master, INFO_KEY_WRAP),
            blind_index: derive(master, INFO_BLIND_INDEX),
            audit_mac: derive(master, INFO_AUDIT_MAC),
            audit_signing: derive(master, INFO_AUDIT_SIGNING),
            phone_country: None,
        }
    }

    /// The same keyring, taking national caller numbers to be in `country` (`[storage]
    /// phone_country`).
    pub fn with_phone_country(mut self, country: Option<super::PhoneCountry>) -> Self {
        self.phone_country = country;
        self
    }

    /// The key that wraps (encrypts) the random per-period payload data keys.
    pub fn key_wrap_key(&self) -> &[u8; 32] {
        &self.key_wrap
    }

    /// The key for HMAC chaining of audit records.
    pub fn audit_mac_key(&self) -> &[u8; 32] {
        &self.audit_mac
    }

    /// The Ed25519 key that signs audit checkpoints.
    pub fn audit_signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.audit_signing)
    }

    /// A keyed blind index: HMAC-SHA256 under the blind-index key over a domain label and the
    /// value, hex encoded. Lets us look up by an identifier without storing it.
    pub fn blind_index(&self, domain: &str, value: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.blind_index)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        super::hex_lower(&mac.finalize().into_bytes())
    }

    /// The blind index of a sender's call id, the same whatever the source, so an auditor can
    /// search by the id they know.
    pub fn call_ref(&self, call_id: &str) -> String {
        self.blind_index("call_id", call_id.as_bytes())
    }

    /// The blind index of a caller's phone number, after [`super::phone::normalize`] under the
    /// configured country code; `None` when the value is not a phone number. Intake indexes
    /// the number an event names and "find a call" compares the typed one through this, so
    /// the number itself is never stored.
    pub fn caller_ref(&self, phone: &str) -> Option<String> {
        super::phone::normalize(phone, self.phone_country.as_ref())
            .map(|n| self.blind_index("caller_phone", n.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_per_purpose_and_per_master() {
        let a = Keyring::from_master(&MasterKey::from_bytes([7; 32]));
        let b = Keyring::from_master(&MasterKey::from_bytes([8; 32]));
        assert_ne!(a.key_wrap_key(), a.audit_mac_key());
        assert_ne!(a.audit_mac_key(), b.audit_mac_key());
        assert_eq!(a.call_ref("c1"), a.call_ref("c1"));
        assert_ne!(a.call_ref("c1"), b.call_ref("c1"));
        assert_ne!(a.call_ref("c1"), a.blind_index("dedup", b"c1"));
    }

    #[test]
    fn a_caller_phone_is_indexed_by_its_one_spelling() {
        let plain = Keyring::from_master(&MasterKey::from_bytes([7; 32]));
        let us = plain
            .clone()
            .with_phone_country(Some(super::super::PhoneCountry::parse("1").expect("code")));
        let intl = us.caller_ref("+15550101234").expect("a number");
        assert_eq!(us.caller_ref("(555) 010-1234"), Some(intl.clone()));
        assert_eq!(plain.caller_ref("+1 555 010 1234"), Some(intl.clone()));
        assert_ne!(plain.caller_ref("(555) 010-1234"), Some(intl.clone()));
        assert_ne!(Some(intl), Some(us.call_ref("+15550101234")));
        assert_eq!(us.caller_ref("anonymous"), None);
    }
}
